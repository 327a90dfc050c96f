// SPDX-License-Identifier: Apache-2.0
// Pure logic of the task service: state rules, runc error extraction, mount options, exit matching.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkInit, checkExec } from '../../src/task/state.js';
import { lastRuncError } from '../../src/runc/logjson.js';
import { parseMountOptions, compactLowerdirs, mountsUnder, mountOne } from '../../src/sys/mount.js';
import { ExitMatcher } from '../../src/task/exits.js';
import { Process } from '../../src/task/process.js';
import { isValidIdentifier } from '../../src/task/identifiers.js';
import { Code, TtrpcError } from '../../src/ttrpc/index.js';
import { killError } from '../../src/task/container.js';
import { RuncError } from '../../src/runc/runc.js';

function errOf(fn: () => void): TtrpcError {
  try { fn(); } catch (e) { return e as TtrpcError; }
  throw new Error('expected an error');
}

test('init state machine: the reference error texts', () => {
  assert.equal(errOf(() => checkInit('start', 'running')).message, 'cannot start a running process');
  assert.equal(errOf(() => checkInit('delete', 'running')).message, 'cannot delete a running process');
  assert.equal(errOf(() => checkInit('pause', 'created')).message, 'cannot pause task in created state');
  assert.equal(errOf(() => checkInit('exec', 'stopped')).message, 'cannot exec in a stopped state');
  const e = errOf(() => checkInit('delete', 'deleted'));
  assert.equal(e.code, Code.NotFound);
  assert.equal(e.message, 'cannot delete a deleted process: not found');
  assert.doesNotThrow(() => checkInit('start', 'created'));
  assert.doesNotThrow(() => checkInit('delete', 'stopped'));
  assert.doesNotThrow(() => checkInit('kill', 'stopped'));
});

test('exec state machine: kill before start is a failed precondition, after exit not found', () => {
  const a = errOf(() => checkExec('kill', 'created'));
  assert.equal(a.code, Code.FailedPrecondition);
  assert.equal(a.message, 'process not created: failed precondition');
  const b = errOf(() => checkExec('kill', 'stopped'));
  assert.equal(b.code, Code.NotFound);
  assert.equal(b.message, 'process already finished: not found');
  assert.equal(errOf(() => checkExec('start', 'stopped')).message, 'cannot start a stopped process');
  assert.equal(errOf(() => checkExec('resize', 'stopped')).message, 'cannot resize a stopped container');
});

test('runc log: the last error-level message wins, garbage lines are skipped', () => {
  const log = [
    '{"level":"info","msg":"hello","time":"t"}',
    '{"level":"error","msg":"first","time":"t"}',
    'not json',
    '{"level":"error","msg":"  runc create failed: unable to start container process: exec: \\"foo\\": executable file not found in $PATH  ","time":"t"}',
    '{"level":"warning","msg":"later","time":"t"}',
  ].join('\n');
  assert.equal(lastRuncError(log), 'runc create failed: unable to start container process: exec: "foo": executable file not found in $PATH');
  assert.equal(lastRuncError(''), undefined);
});

test('kill errors are classified as the reference does', () => {
  const k = (out: string) => killError(new RuncError('exit status 1: ' + out, 1, out));
  assert.equal(k('container not running').message, 'process already finished: not found');
  assert.equal(k('No such process').code, Code.NotFound);
  assert.equal(k('container "x" does not exist').message, 'no such container: not found');
  assert.equal(k('permission denied').code, Code.Unknown);
});

test('mount options: flags and data split as containerd does', () => {
  const p = parseMountOptions(['ro', 'nosuid', 'rbind', 'index=off', 'lowerdir=/a:/b']);
  assert.equal(p.flags, 0x1 | 0x2 | 0x1000 | 0x4000);
  assert.deepEqual(p.data, ['index=off', 'lowerdir=/a:/b']);
  assert.equal(parseMountOptions(['ro', 'rw']).flags, 0);
  assert.equal(parseMountOptions(['loop']).loop, true);
});

test('overlay lowerdirs are rewritten relative to their common parent', () => {
  const r = compactLowerdirs(['index=off', 'lowerdir=/var/lib/s/snapshots/10/fs:/var/lib/s/snapshots/9/fs', 'upperdir=/u']);
  assert.equal(r.cwd, '/var/lib/s/snapshots');
  assert.deepEqual(r.data, ['index=off', 'upperdir=/u', 'lowerdir=10/fs:9/fs']);
});

test('mounts under a directory are listed deepest first', () => {
  assert.deepEqual(mountsUnder('/b/rootfs', ['/', '/b/rootfs', '/b/rootfs/proc', '/b/rootfsx', '/b/rootfs/proc/sys']),
    ['/b/rootfs/proc/sys', '/b/rootfs/proc', '/b/rootfs']);
});

test('exit matching: an exit that arrives before its pid is known is kept while a start is in flight', () => {
  const m = new ExitMatcher();
  const gone = 0x7ffffff0; // above any pid_max: no process can have it
  const exit = { pid: gone, status: 3, exitedAt: { seconds: 1n, nanos: 0 } };
  m.begin();
  assert.equal(m.match(exit), undefined);
  const p = new Process('c', 'e', { stdin: '', stdout: '', stderr: '', terminal: false });
  p.pid = gone;
  assert.deepEqual(m.track(p), exit);
  m.end();
});

test('exit matching: a kept exit is not handed to a process whose pid is in use again (recycled), nor are runc exits kept', () => {
  const m = new ExitMatcher();
  m.begin();
  assert.equal(m.match({ pid: process.pid, status: 3, exitedAt: { seconds: 1n, nanos: 0 } }), undefined);
  const p = Object.assign(new Process('c', 'e', { stdin: '', stdout: '', stderr: '', terminal: false }), { pid: process.pid });
  assert.equal(m.track(p), undefined, 'stale: the pid belongs to a live process now');
  assert.equal(m.match({ pid: process.pid, status: 9, exitedAt: { seconds: 2n, nanos: 0 } }), p, 'its own exit still matches');
  const gone = 0x7ffffff1;
  assert.equal(m.match({ pid: gone, status: 1, exitedAt: { seconds: 1n, nanos: 0 }, spawned: true }), undefined);
  assert.equal(m.track(Object.assign(new Process('c', 'f', p.stdio), { pid: gone })), undefined, 'a runc exit is never kept');
  m.end();
});

test('exit matching: unknown pids are dropped when no start is in flight; tracked pids match once', () => {
  const m = new ExitMatcher();
  const p = new Process('c', '', { stdin: '', stdout: '', stderr: '', terminal: false });
  p.pid = 10;
  assert.equal(m.track(p), undefined);
  assert.equal(m.match({ pid: 11, status: 0, exitedAt: { seconds: 1n, nanos: 0 } }), undefined);
  assert.equal(m.match({ pid: 10, status: 0, exitedAt: { seconds: 1n, nanos: 0 } }), p);
  assert.equal(m.match({ pid: 10, status: 0, exitedAt: { seconds: 1n, nanos: 0 } }), undefined);
  m.begin(); m.end();
  assert.equal(m.track(Object.assign(new Process('c', 'x', p.stdio), { pid: 11 })), undefined);
});

test('identifiers: no path traversal or separators', () => {
  assert.equal(isValidIdentifier('abc-1.2_3'), true);
  for (const bad of ['', '..', '../x', 'a/b', '.a', 'a..b', 'a'.repeat(77), 'a b']) assert.equal(isValidIdentifier(bad), false, bad);
});

test('standby boot claims: one claimant per post, a dead owner\'s claim is taken over, release frees it', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { spawnSync } = await import('node:child_process');
  const { claimBoot, passClaim, releaseBoot, postServed } = await import('../../src/pool/claim.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'claims-'));
  try {
    const post = path.join(dir, 'standby-x-0');
    assert.equal(postServed(post), false);
    assert.equal(claimBoot(post), true);
    assert.equal(postServed(post), true, 'a standby is booting for it');
    assert.equal(claimBoot(post), false, 'a live owner\'s claim holds');
    // An old claim file of a live owner still holds: no clock decides (a clock step cannot free it).
    const old = new Date(Date.now() - 3_600_000);
    fs.utimesSync(`${post}.booting`, old, old);
    assert.equal(claimBoot(post), false, 'age does not make a claim stale');
    // Passed to a process that has exited: stale, whatever its age.
    const gone = spawnSync('true').pid;
    passClaim(post, gone);
    assert.equal(postServed(post), false, 'a dead owner\'s claim serves nothing');
    assert.equal(claimBoot(post), true, 'and is taken over');
    releaseBoot(post);
    assert.equal(fs.existsSync(`${post}.booting`), false);
    assert.equal(claimBoot(post), true);
    releaseBoot(post);
    releaseBoot(post); // idempotent
    assert.deepEqual(fs.readdirSync(dir), [], 'no temp file left behind');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writePrivateTemp: exclusive 0600 files with distinct names', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { writePrivateTemp } = await import('../../src/runc/runc.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptmp-'));
  try {
    const a = writePrivateTemp(dir, 'runc-process', '{"a":1}');
    const b = writePrivateTemp(dir, 'runc-process', '{}');
    assert.notEqual(a, b);
    assert.equal(fs.readFileSync(a, 'utf8'), '{"a":1}');
    assert.equal(fs.statSync(a).mode & 0o777, 0o600);
    assert.match(path.basename(a), /^runc-process-\d+-\d+-[0-9a-z]+$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("daemon environment: GOMAXPROCS=4 always; one malloc arena unless containerd chose, forgotten after exec", async () => {
  const { daemonEnv, scrubMallocEnv } = await import('../../src/pool/spawn.js');
  const e = daemonEnv({ PATH: '/bin', GOMAXPROCS: '2' });
  assert.equal(e.GOMAXPROCS, '4');
  assert.equal(e.MALLOC_ARENA_MAX, '1');
  scrubMallocEnv(e);
  assert.deepEqual(e, { PATH: '/bin', GOMAXPROCS: '4' });
  const own = daemonEnv({ MALLOC_ARENA_MAX: '8' });
  assert.equal(own.MALLOC_ARENA_MAX, '8');
  scrubMallocEnv(own);
  assert.equal(own.MALLOC_ARENA_MAX, '8', "containerd's own setting stays");
});

test('sweepLitter: claims of dead owners and warm-up sockets of dead processes go, live ones stay', async () => {
  const fs = await import('node:fs');
  const { spawnSync } = await import('node:child_process');
  const { claimBoot, passClaim, sweepLitter, warmupSocketPath } = await import('../../src/pool/claim.js');
  const dir = '/run/containerd/s';
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tag = `sweeptest${process.pid}`;
  const dead = `${dir}/standby-${tag}-0`;
  const live = `${dir}/standby-${tag}-1`;
  const deadWarm = warmupSocketPath(4_194_304 + 1000); // above any pid_max: never a live pid
  const liveWarm = warmupSocketPath(process.pid);
  try {
    for (const f of [deadWarm, liveWarm]) fs.writeFileSync(f, '');
    assert.ok(claimBoot(dead) && claimBoot(live));
    passClaim(dead, spawnSync('true').pid);
    sweepLitter();
    assert.equal(fs.existsSync(`${dead}.booting`), false);
    assert.equal(fs.existsSync(`${live}.booting`), true);
    assert.equal(fs.existsSync(deadWarm), false);
    assert.equal(fs.existsSync(liveWarm), true);
  } finally {
    for (const f of [`${dead}.booting`, `${live}.booting`, deadWarm, liveWarm]) fs.rmSync(f, { force: true });
  }
});

test('mounts: X-containerd.* options (containerd 2.2+ mount manager) are refused before any mount(2)', () => {
  assert.throws(
    () => mountOne({ type: 'overlay', source: 'overlay', target: '', options: ['lowerdir=/a', 'X-containerd.mkdir.path=/x'] }, '/nonexistent-target'),
    { message: 'mount option "X-containerd.mkdir.path=/x" is for containerd\'s mount manager, not for the shim: invalid argument' },
  );
});
