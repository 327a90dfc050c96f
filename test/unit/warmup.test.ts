// The standby's warm-up runs the codecs and a ttrpc round trip in-process; it must work, leave
// nothing behind and be repeatable (a standby that fails to warm is only colder).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { warmCodecs, warmTtrpc, warmUp } from '../../src/shim/warmup.js';

function openSockets(): number {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try { return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:'); } catch { return false; }
  }).length;
}

test('warmCodecs runs every Task message, event and the runc options through its codec', () => {
  assert.ok(warmCodecs() >= 40, 'all the Task API and event messages');
});

test('warmTtrpc: a round trip and an event over an abstract socket, twice, leaving no socket open', async () => {
  const before = openSockets();
  await warmTtrpc();
  await warmTtrpc();
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(openSockets(), before);
});

test('warmUp never throws', async () => {
  await warmUp();
});
