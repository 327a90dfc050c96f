// SPDX-License-Identifier: Apache-2.0
// runSync (the `delete` action's way to run runc): the addon's vfork spawn plus a blocking,
// bounded wait. Its own test file: waitChild refuses to run once a reaper thread exists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSync } from '../../src/sys/runsync.js';

const env = ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'];

test('exit status and stdout+stderr captured together', () => {
  const r = runSync('/bin/sh', ['-c', 'echo out; echo err >&2; exit 3'], env, 5000);
  assert.equal(r.status, 3);
  assert.equal(r.output, 'out\nerr\n');
  assert.equal(r.error, undefined);
});

test('a name without a slash is looked up on PATH; death by signal is 128+n', () => {
  assert.equal(runSync('sh', ['-c', 'kill -TERM $$'], env, 5000).status, 143);
});

test('past the timeout the command is killed and reported', () => {
  const t = performance.now();
  const r = runSync('/bin/sleep', ['5'], env, 100);
  assert.ok(performance.now() - t < 2000);
  assert.equal(r.status, 137);
  assert.match(r.error ?? '', /did not finish within 100 ms and was killed/);
});

test('a missing binary is an error, not a throw', () => {
  const r = runSync('/nonexistent/runc', [], env, 1000);
  assert.equal(r.status, -1);
  assert.match(r.error ?? '', /ENOENT/);
});

test('a background grandchild holding the output pipe does not make it wait', () => {
  const t = performance.now();
  const r = runSync('/bin/sh', ['-c', 'sleep 2 & echo hi'], env, 5000);
  assert.ok(performance.now() - t < 1500, 'returned when the child exited');
  assert.equal(r.status, 0);
  assert.equal(r.output, 'hi\n');
});
