// SPDX-License-Identifier: Apache-2.0
// The standby's warm-up runs the codecs and a ttrpc round trip in-process; it must work, leave
// nothing behind and be repeatable (a standby that fails to warm is only colder).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { warmCodecs, warmDelete, warmTtrpc, warmUp } from '../../src/shim/warmup.js';

function openSockets(): number {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try { return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:'); } catch { return false; }
  }).length;
}

test('warmCodecs runs every Task message, event and the runc options through its codec', () => {
  assert.ok(warmCodecs() >= 40, 'all the Task API and event messages');
});

test('warmTtrpc: a round trip and an event over a private path socket, twice, leaving no socket open or behind', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warm-'));
  try {
    const before = openSockets();
    await warmTtrpc(dir);
    await warmTtrpc(dir);
    // The peers' sockets close as their close events run: wait for that (bounded), then check.
    for (const deadline = Date.now() + 2000; openSockets() !== before && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(openSockets(), before);
    assert.deepEqual(fs.readdirSync(dir), [], 'the socket file is removed');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('warmDelete runs the delete action on a scratch bundle and removes it', () => {
  const before = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('shim-warmup-')).length;
  warmDelete();
  assert.equal(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('shim-warmup-')).length, before);
});

test('warmUp never throws, even when a step fails (a standby that cannot warm is only colder)', async () => {
  // A socket dir below a regular file: the ttrpc step fails there (ENOTDIR).
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'warm-')), 'file');
  fs.writeFileSync(file, '');
  try {
    const unusable = path.join(file, 'sockets');
    await assert.rejects(warmTtrpc(unusable), 'the ttrpc step does fail there');
    await warmUp(unusable);
    await warmUp();
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
});
