// SPDX-License-Identifier: Apache-2.0
// Tests for the native addon (src/sys/native.ts). They must run as root
// (subreaper, mount, pidfd of our own children are fine unprivileged, but
// mount is not).

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';

import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EXIT_RECORD_SIZE,
  MNT_DETACH,
  MS_BIND,
  MS_NODEV,
  MS_NOSUID,
  acceptRecvFd,
  addonPath,
  dup,
  eventfd,
  getWinsize,
  isNativeError,
  listenUnix,
  mount,
  mountInDir,
  nativeConstants,
  parseExitRecords,
  parseWatchTokens,
  peerCred,
  pidfdOpen,
  pidfdSendSignal,
  pipe,
  prctl,
  sendFd,
  setChildSubreaper,
  setCloexec,
  setNonBlocking,
  setWinsize,
  spawn,
  startFdWatcher,
  startReaper,
  umount2,
  unwatchFd,
  watchFd,
  type ExitRecord,
  type NativeError,
  type SpawnOptions,
} from '../../src/sys/native.js';
import * as native from '../../src/sys/native.js';

const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;
const ENV = ['PATH=/usr/local/bin:/usr/bin:/bin'];

// ---------------------------------------------------------------------------
// helpers

/** Collects exit records from the reaper pipe. */
class Exits {
  readonly all: ExitRecord[] = [];
  private rest: Buffer = Buffer.alloc(0);
  private waiters = new Map<number, Array<(r: ExitRecord) => void>>();
  private readonly sock: net.Socket;

  constructor(fd: number) {
    this.sock = new net.Socket({ fd, readable: true, writable: false });
    this.sock.unref(); // the reaper pipe never closes
    this.sock.on('data', (chunk: Buffer) => {
      const { records, rest } = parseExitRecords(Buffer.concat([this.rest, chunk]));
      this.rest = rest;
      for (const r of records) {
        this.all.push(r);
        const ws = this.waiters.get(r.pid);
        if (ws) {
          this.waiters.delete(r.pid);
          for (const w of ws) w(r);
        }
      }
    });
  }

  count(pid: number): number {
    return this.all.filter((r) => r.pid === pid).length;
  }

  wait(pid: number, timeoutMs = 10_000): Promise<ExitRecord> {
    const seen = this.all.find((r) => r.pid === pid);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no exit record for pid ${pid}`)), timeoutMs);
      const ws = this.waiters.get(pid) ?? [];
      ws.push((r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.waiters.set(pid, ws);
    });
  }
}

/** Collects tokens from the fd-watcher pipe. */
class Tokens {
  readonly all: number[] = [];
  private rest: Buffer = Buffer.alloc(0);
  private listeners: Array<() => void> = [];

  constructor(fd: number) {
    const sock = new net.Socket({ fd, readable: true, writable: false });
    sock.unref();
    sock.on('data', (chunk: Buffer) => {
      const { tokens, rest } = parseWatchTokens(Buffer.concat([this.rest, chunk]));
      this.rest = rest;
      this.all.push(...tokens);
      for (const l of this.listeners.splice(0)) l();
    });
  }

  /** Resolves once `token` has been seen `n` times in total. */
  async waitFor(token: number, n: number, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.all.filter((t) => t === token).length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`token ${token} not seen ${n} time(s)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.listeners.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

function readAll(fd: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = new net.Socket({ fd, readable: true, writable: false });
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', reject);
    sock.on('close', () => resolve(Buffer.concat(chunks).toString()));
  });
}

let exits: Exits;

interface RunResult {
  pid: number;
  status: number;
  out: string;
}

/** Spawns `args` with stdout+stderr on a fresh pipe; resolves with the output and exit status. */
async function run(args: string[], extra: Partial<SpawnOptions> = {}, fds?: (w: number) => number[]): Promise<RunResult> {
  const [r, w] = pipe();
  let pid: number;
  try {
    pid = spawn({ file: args[0], args, env: ENV, fds: fds ? fds(w) : [-1, w, w], ...extra });
  } catch (err) {
    fs.closeSync(r);
    throw err;
  } finally {
    fs.closeSync(w);
  }
  const out = await readAll(r);
  const rec = await exits.wait(pid);
  return { pid, status: rec.status, out };
}

function fdFlags(fd: number): number {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s+([0-7]+)$/m.exec(info);
  assert.ok(m, `no flags in fdinfo of ${fd}`);
  return parseInt(m[1], 8);
}

function assertCloexec(fd: number): void {
  assert.ok(fdFlags(fd) & O_CLOEXEC, `fd ${fd} is not close-on-exec`);
}

function openFds(): string[] {
  return fs.readdirSync('/proc/self/fd');
}

function expectErrno(fn: () => unknown, code: string, syscall?: string): NativeError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(isNativeError(caught), `expected a ${code} error, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (syscall !== undefined) assert.equal(caught.syscall, syscall);
  assert.equal(typeof caught.errno, 'number');
  assert.ok(caught.errno < 0);
  return caught;
}

function hasPython(): boolean {
  try {
    const pid = spawn({ file: 'python3', args: ['python3', '-c', ''], env: envFromProcess(), fds: [-1, -1, -1] });
    void exits.wait(pid);
    return true;
  } catch {
    return false;
  }
}

function envFromProcess(): string[] {
  return Object.entries(process.env).map(([k, v]) => `${k}=${v ?? ''}`);
}

// ---------------------------------------------------------------------------

before(() => {
  setChildSubreaper();
  exits = new Exits(startReaper());
});

describe('module', () => {
  test('constants match the compiled addon', () => {
    const c = nativeConstants();
    const ts = native as unknown as Record<string, unknown>;
    for (const [name, value] of Object.entries(c)) {
      assert.equal(ts[name], value, name);
    }
    assert.equal(EXIT_RECORD_SIZE, 24);
  });

  test('addon path is inside the package', () => {
    assert.ok(fs.existsSync(addonPath()));
  });

  test('parseExitRecords decodes records and keeps the partial tail', () => {
    const buf = Buffer.alloc(EXIT_RECORD_SIZE * 2 + 5);
    buf.writeUInt32LE(1234, 0);
    buf.writeInt32LE(137, 4);
    buf.writeBigInt64LE(1700000000n, 8);
    buf.writeUInt32LE(999_999_999, 16);
    buf.writeUInt32LE(7, 24);
    buf.writeInt32LE(-1, 28);
    const { records, rest } = parseExitRecords(buf);
    assert.deepEqual(records, [
      { pid: 1234, status: 137, exitedAt: { seconds: 1700000000n, nanos: 999_999_999 } },
      { pid: 7, status: -1, exitedAt: { seconds: 0n, nanos: 0 } },
    ]);
    assert.equal(rest.length, 5);
  });

  test('loading in a worker thread is refused', async () => {
    const modUrl = new URL('../../src/sys/native.js', import.meta.url).href;
    const w = new Worker(
      `import(${JSON.stringify(modUrl)}).then((m) => { try { m.pipe(); process.exit(1); } catch (e) { process.exit(/main thread/.test(e.message) ? 0 : 2); } });`,
      { eval: true },
    );
    const code = await new Promise<number>((resolve) => w.on('exit', resolve));
    assert.equal(code, 0);
  });
});

describe('prctl', () => {
  test('returns the result of integer options', () => {
    const PR_GET_DUMPABLE = 3;
    assert.ok([0, 1, 2].includes(prctl(PR_GET_DUMPABLE)));
  });

  test('errors carry code, errno, syscall and a readable message', () => {
    const err = expectErrno(() => prctl(0x7fff_0000), 'EINVAL', 'prctl');
    assert.equal(err.errno, -22);
    assert.match(err.message, /^prctl: EINVAL \(Invalid argument\)/);
  });

  test('rejects non-integer arguments with TypeError', () => {
    assert.throws(() => prctl(1.5), TypeError);
  });
});

describe('reaper and spawn', () => {
  test('startReaper is idempotent and its fd is close-on-exec', () => {
    const fd = startReaper();
    assert.equal(startReaper(), fd);
    assert.ok(Number.isInteger(fd) && fd > 2);
    assertCloexec(fd);
  });

  test('exit code is reported', async () => {
    const t0 = BigInt(Date.now()) / 1000n;
    const pid = spawn({ file: '/bin/sh', args: ['sh', '-c', 'exit 7'], env: ENV, fds: [-1, -1, -1] });
    const rec = await exits.wait(pid);
    assert.equal(rec.status, 7);
    assert.ok(rec.exitedAt.seconds >= t0 && rec.exitedAt.seconds <= t0 + 10n);
    assert.ok(rec.exitedAt.nanos >= 0 && rec.exitedAt.nanos < 1e9);
  });

  test('a process killed by SIGKILL reports 137', async () => {
    const pid = spawn({ file: '/bin/sleep', args: ['sleep', '100'], env: ENV, fds: [-1, -1, -1] });
    process.kill(pid, 'SIGKILL');
    assert.equal((await exits.wait(pid)).status, 137);
  });

  test('orphans are reaped through the subreaper and leave no zombie', async () => {
    const { pid, status, out } = await run(['/bin/sh', '-c', 'sleep 0.2 & echo $!; exit 0']);
    assert.equal(status, 0);
    const orphan = Number(out.trim());
    assert.ok(orphan > 0, `bad orphan pid ${out}`);
    const rec = await exits.wait(orphan);
    assert.equal(rec.status, 0);
    assert.equal(exits.count(pid), 1);
    assert.equal(exits.count(orphan), 1);
    assert.equal(fs.existsSync(`/proc/${pid}`), false);
    assert.equal(fs.existsSync(`/proc/${orphan}`), false);
  });

  test('stdout is a real pipe and no other fd leaks into the child', async () => {
    const r1 = await run(['/bin/readlink', '/proc/self/fd/1']);
    assert.equal(r1.status, 0);
    assert.match(r1.out, /^pipe:\[\d+\]\n$/);
    // ls itself holds one more fd: the /proc/self/fd directory it is listing.
    const r2 = await run(['/bin/ls', '-l', '/proc/self/fd']);
    assert.equal(r2.status, 0);
    const fds = new Map<number, string>();
    for (const m of r2.out.matchAll(/ (\d+) -> (.*)$/gm)) fds.set(Number(m[1]), m[2]);
    assert.deepEqual([...fds.keys()].slice(0, 3), [0, 1, 2], r2.out);
    assert.equal(fds.get(0), '/dev/null');
    assert.match(fds.get(1)!, /^pipe:/);
    const extra = [...fds.entries()].filter(([fd]) => fd > 2);
    assert.ok(extra.length <= 1, r2.out);
    for (const [, target] of extra) assert.match(target, /^\/proc\/\d+\/fd$/, r2.out);
  });

  test('fd map works when sources overlap targets', async () => {
    // Child fd 1 := the pipe, child fd 3 := parent fd 1: the parent's fd 1 must
    // not be clobbered by the first dup2 before it is copied to 3.
    const parentStdout = fs.readlinkSync('/proc/self/fd/1');
    const { status, out } = await run(
      ['/bin/sh', '-c', 'readlink /proc/self/fd/3; readlink /proc/self/fd/4; readlink /proc/self/fd/0'],
      {},
      (w) => [-1, w, w, 1, w],
    );
    assert.equal(status, 0);
    const [l3, l4, l0] = out.trim().split('\n');
    assert.equal(l3, parentStdout);
    assert.match(l4, /^pipe:/);
    assert.equal(l0, '/dev/null');
  });

  test('signal dispositions and mask are reset in the child', async () => {
    const { out } = await run(['/bin/cat', '/proc/self/status']);
    assert.match(out, /^SigBlk:\s+0+$/m);
    assert.match(out, /^SigIgn:\s+0+$/m);
  });

  test('env, cwd and PATH search', async () => {
    const tmp = fs.realpathSync(os.tmpdir());
    const r = await run(['sh', '-c', 'echo "$FOO"; pwd'], { env: [...ENV, 'FOO=bar baz'], cwd: tmp });
    assert.equal(r.status, 0);
    assert.equal(r.out, `bar baz\n${tmp}\n`);
    // No PATH in env: the default PATH is searched.
    const r2 = await run(['true'], { env: [] });
    assert.equal(r2.status, 0);
  });

  test('setsid and setpgid', async () => {
    const stat = async (extra: Partial<SpawnOptions>) => {
      const { pid, out } = await run(['/bin/cat', '/proc/self/stat'], extra);
      // fields after "(comm)": state ppid pgrp session
      const f = out.slice(out.lastIndexOf(')') + 2).split(' ');
      return { pid, pgrp: Number(f[2]), sid: Number(f[3]) };
    };
    const s = await stat({ setsid: true });
    assert.equal(s.sid, s.pid);
    assert.equal(s.pgrp, s.pid);
    const g = await stat({ setpgid: true });
    assert.equal(g.pgrp, g.pid);
    assert.notEqual(g.sid, g.pid);
    const n = await stat({});
    const self = fs.readFileSync('/proc/self/stat', 'utf8');
    const selfFields = self.slice(self.lastIndexOf(')') + 2).split(' ');
    assert.equal(n.pgrp, Number(selfFields[2])); // inherited
    assert.equal(n.sid, Number(selfFields[3]));
  });

  test('spawn failures throw and the failed child is still reaped', async () => {
    const fdsBefore = openFds().length;
    const e1 = expectErrno(
      () => spawn({ file: '/nonexistent/binary', args: ['x'], env: ENV, fds: [-1, -1, -1] }),
      'ENOENT',
      'execve',
    );
    assert.equal(e1.path, '/nonexistent/binary');
    assert.match(e1.message, /^execve: ENOENT \(No such file or directory\) '\/nonexistent\/binary'/);
    assert.equal((await exits.wait(e1.pid!)).status, 127);

    const e2 = expectErrno(
      () => spawn({ file: 'no-such-command-here', args: ['x'], env: ENV, fds: [] }),
      'ENOENT',
      'execve',
    );
    assert.equal((await exits.wait(e2.pid!)).status, 127);

    const e3 = expectErrno(
      () => spawn({ file: '/bin/true', args: ['true'], env: ENV, fds: [-1], cwd: '/nonexistent-dir' }),
      'ENOENT',
      'chdir',
    );
    assert.equal(e3.path, '/nonexistent-dir');
    await exits.wait(e3.pid!);

    const e4 = expectErrno(
      () => spawn({ file: '/bin/true', args: ['true'], env: ENV, fds: [-1, 98765] }),
      'EBADF',
      'dup',
    );
    await exits.wait(e4.pid!);

    // Not executable (no x bit at all: EACCES even for root).
    const noexec = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'native-spawn-')), 'noexec');
    fs.writeFileSync(noexec, '#!/bin/sh\n', { mode: 0o644 });
    const e5 = expectErrno(() => spawn({ file: noexec, args: ['x'], env: ENV, fds: [] }), 'EACCES', 'execve');
    await exits.wait(e5.pid!);
    // Executable but not a valid binary: ENOEXEC (no /bin/sh fallback).
    fs.writeFileSync(noexec, 'garbage');
    fs.chmodSync(noexec, 0o755);
    const e6 = expectErrno(() => spawn({ file: noexec, args: ['x'], env: ENV, fds: [] }), 'ENOEXEC', 'execve');
    await exits.wait(e6.pid!);
    fs.rmSync(path.dirname(noexec), { recursive: true });

    assert.throws(() => spawn({ file: '/bin/tr\0ue', args: [], env: [], fds: [] }), TypeError);
    assert.throws(() => spawn({ file: '/bin/true', args: [], env: [], fds: [1.5] }), TypeError);
    assert.throws(() => spawn({ file: '/bin/true', args: [], env: [], fds: [-2] }), TypeError);
    assert.equal(openFds().length, fdsBefore);
  });

  test('without the reaper a failed spawn is waited for by spawn itself', async () => {
    const script = `
      const fs = require('fs');
      const b = require(${JSON.stringify(addonPath())});
      let pid = 0;
      try { b.spawn({ file: '/nonexistent', args: ['x'], env: [], fds: [] }); } catch (e) { pid = e.pid; }
      process.stdout.write(String(pid) + ' ' + fs.existsSync('/proc/' + pid));`;
    const { status, out } = await run([process.execPath, '-e', script], {}, (w) => [-1, w, 2]);
    assert.equal(status, 0);
    const [pid, exists] = out.split(' ');
    assert.ok(Number(pid) > 0, out);
    assert.equal(exists, 'false');
  });

  test('200 quick children: every exit arrives exactly once', async () => {
    const pids: number[] = [];
    for (let i = 0; i < 200; i++) {
      pids.push(spawn({ file: '/bin/true', args: ['true'], env: ENV, fds: [-1, -1, -1] }));
    }
    assert.equal(new Set(pids).size, 200);
    const recs = await Promise.all(pids.map((p) => exits.wait(p)));
    assert.ok(recs.every((r) => r.status === 0));
    // The reaper writes its records into one pipe in the order it reaps: once the exit of a
    // child spawned after all 200 were reaped has arrived, any second record of theirs has too.
    const marker = spawn({ file: '/bin/true', args: ['true'], env: ENV, fds: [-1, -1, -1] });
    await exits.wait(marker);
    for (const p of pids) assert.equal(exits.count(p), 1, `pid ${p}`);
  });

  test('pdeathsig kills the child when its parent exits', async () => {
    // A node child spawns `sleep` with pdeathsig=SIGKILL and exits; the sleep
    // is killed, re-parented to us (subreaper) and reaped here.
    const script = `
      const b = require(${JSON.stringify(addonPath())});
      const pid = b.spawn({ file: '/bin/sleep', args: ['sleep', '100'], env: [], fds: [-1, -1, -1], pdeathsig: 9 });
      process.stdout.write(String(pid));`;
    const { status, out } = await run([process.execPath, '-e', script], {}, (w) => [-1, w, 2]);
    assert.equal(status, 0);
    const grandchild = Number(out);
    assert.ok(grandchild > 0);
    assert.equal((await exits.wait(grandchild)).status, 137);
  });

  test('no zombie children remain', () => {
    const zombies: number[] = [];
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      let stat: string;
      try {
        stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      } catch {
        continue;
      }
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (f[0] === 'Z' && Number(f[1]) === process.pid) zombies.push(Number(name));
    }
    assert.deepEqual(zombies, []);
  });
});

describe('pidfd', () => {
  test('signal through a pidfd, ESRCH after reaping', async () => {
    const pid = spawn({ file: '/bin/sleep', args: ['sleep', '100'], env: ENV, fds: [-1, -1, -1] });
    const pidfd = pidfdOpen(pid);
    try {
      assertCloexec(pidfd);
      pidfdSendSignal(pidfd, 0);
      pidfdSendSignal(pidfd, 15);
      assert.equal((await exits.wait(pid)).status, 143);
      expectErrno(() => pidfdSendSignal(pidfd, 15), 'ESRCH', 'pidfd_send_signal');
    } finally {
      fs.closeSync(pidfd);
    }
    expectErrno(() => pidfdOpen(pid), 'ESRCH', 'pidfd_open');
  });
});

describe('mount', () => {
  let tmp: string;
  before(() => {
    tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'native-mnt-')));
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const mountPoints = () =>
    fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [pre, post] = l.split(' - ');
        return { point: pre.split(' ')[4], fstype: post.split(' ')[0] };
      });

  test('tmpfs mount shows up in mountinfo and umount2 removes it', () => {
    const dir = path.join(tmp, 'tmpfs');
    fs.mkdirSync(dir);
    mount('tmpfs', dir, 'tmpfs', MS_NOSUID | MS_NODEV, 'size=1m,mode=0755');
    try {
      assert.ok(mountPoints().some((m) => m.point === dir && m.fstype === 'tmpfs'));
      fs.writeFileSync(path.join(dir, 'f'), 'x');
    } finally {
      umount2(dir, 0);
    }
    assert.ok(!mountPoints().some((m) => m.point === dir));
    assert.equal(fs.existsSync(path.join(dir, 'f')), false);
    const err = expectErrno(() => umount2(dir, 0), 'EINVAL', 'umount2');
    assert.equal(err.path, dir);
  });

  test('mount errors', () => {
    const err = expectErrno(() => mount('tmpfs', path.join(tmp, 'missing'), 'tmpfs', 0, null), 'ENOENT', 'mount');
    assert.match(err.message, /^mount: ENOENT \(No such file or directory\) '/);
    expectErrno(() => mount(null, tmp, 'no-such-fs', 0, null), 'ENODEV', 'mount');
  });

  test('mountInDir resolves relative paths against dir only', () => {
    const cwd = process.cwd();
    fs.mkdirSync(path.join(tmp, 'src'));
    fs.mkdirSync(path.join(tmp, 'dst'));
    fs.writeFileSync(path.join(tmp, 'src', 'hello'), 'world');
    mountInDir(tmp, 'src', 'dst', null, MS_BIND, null);
    try {
      assert.equal(fs.readFileSync(path.join(tmp, 'dst', 'hello'), 'utf8'), 'world');
      assert.equal(process.cwd(), cwd);
      assert.equal(fs.realpathSync('.'), fs.realpathSync(cwd));
    } finally {
      umount2(path.join(tmp, 'dst'), MNT_DETACH);
    }
    expectErrno(() => mountInDir(path.join(tmp, 'nope'), 'src', 'dst', null, MS_BIND, null), 'ENOENT', 'chdir');
  });

  test('mountInDir with a relative overlay lowerdir list', (t) => {
    for (const d of ['l1', 'l2', 'up', 'work', 'merged']) fs.mkdirSync(path.join(tmp, d));
    fs.writeFileSync(path.join(tmp, 'l1', 'a'), '1');
    fs.writeFileSync(path.join(tmp, 'l2', 'b'), '2');
    try {
      mountInDir(tmp, 'overlay', 'merged', 'overlay', 0, 'lowerdir=l1:l2,upperdir=up,workdir=work');
    } catch (err) {
      if (isNativeError(err) && ['ENODEV', 'EINVAL', 'EPERM', 'EOPNOTSUPP'].includes(err.code)) {
        t.skip(`overlay unavailable here: ${err.message}`);
        return;
      }
      throw err;
    }
    try {
      assert.deepEqual(fs.readdirSync(path.join(tmp, 'merged')).sort(), ['a', 'b']);
    } finally {
      umount2(path.join(tmp, 'merged'), 0);
    }
  });
});

describe('unix sockets', () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'native-sock-'));
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  function connect(p: string): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const c = net.connect(p);
      c.once('connect', () => resolve(c));
      c.once('error', reject);
    });
  }

  function handleFd(s: net.Socket): number {
    const fd = (s as unknown as { _handle: { fd: number } })._handle.fd;
    assert.ok(fd > 2);
    return fd;
  }

  test('listenUnix errors: EADDRINUSE, ENAMETOOLONG; abstract names work', () => {
    const p = path.join(tmp, 'busy.sock');
    const fd = listenUnix(p, 1);
    try {
      assertCloexec(fd);
      expectErrno(() => listenUnix(p, 1), 'EADDRINUSE', 'bind');
    } finally {
      fs.closeSync(fd);
    }
    expectErrno(() => listenUnix('/' + 'x'.repeat(200), 1), 'ENAMETOOLONG');
    const a = listenUnix(`\0native-test-${process.pid}`, 1);
    fs.closeSync(a);
  });

  test('acceptRecvFd receives one fd and the name (sendFd as sender)', async () => {
    const p = path.join(tmp, 'console.sock');
    const lfd = listenUnix(p, 4);
    const sent = fs.openSync('/dev/null', 'r');
    const client = await connect(p);
    try {
      sendFd(handleFd(client), sent, '/dev/pts/42');
      const before = openFds().length;
      const { fd, name } = acceptRecvFd(lfd, 2000);
      assert.equal(name, '/dev/pts/42');
      assert.notEqual(fd, sent);
      assertCloexec(fd);
      assert.equal(fs.readlinkSync(`/proc/self/fd/${fd}`), '/dev/null');
      fs.closeSync(fd);
      assert.equal(openFds().length, before); // the connection was closed
      // The server closed the connection: the client sees EOF.
      await new Promise((resolve) => client.once('end', resolve).resume());
    } finally {
      client.destroy();
      fs.closeSync(sent);
      fs.closeSync(lfd);
    }
  });

  test('acceptRecvFd times out without a connection or without a message', async () => {
    const p = path.join(tmp, 'timeout.sock');
    const lfd = listenUnix(p, 4);
    try {
      const t0 = Date.now();
      const e = expectErrno(() => acceptRecvFd(lfd, 150), 'ETIMEDOUT', 'accept');
      assert.ok(Date.now() - t0 >= 140, e.message);
      const client = await connect(p);
      const before = openFds().length;
      expectErrno(() => acceptRecvFd(lfd, 100), 'ETIMEDOUT', 'recvmsg');
      assert.equal(openFds().length, before);
      client.destroy();
    } finally {
      fs.closeSync(lfd);
    }
  });

  test('acceptRecvFd rejects a message without an fd', async () => {
    const p = path.join(tmp, 'nofd.sock');
    const lfd = listenUnix(p, 4);
    const client = await connect(p);
    try {
      await new Promise<void>((resolve) => client.write('hello', () => resolve()));
      const before = openFds().length;
      const e = expectErrno(() => acceptRecvFd(lfd, 2000), 'EINVAL', 'recvmsg');
      assert.match(e.message, /exactly one SCM_RIGHTS/);
      assert.equal(openFds().length, before);
    } finally {
      client.destroy();
      fs.closeSync(lfd);
    }
  });

  test('acceptRecvFd with a foreign sender (python3): one fd ok, two fds rejected', async (t) => {
    if (!hasPython()) {
      t.skip('python3 not available');
      return;
    }
    const script = [
      'import os, socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
      's.connect(sys.argv[1])',
      'fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(int(sys.argv[2]))]',
      'socket.send_fds(s, [b"/dev/ptmx"], fds)',
      's.recv(1)',
    ].join('\n');
    const p = path.join(tmp, 'py.sock');
    const lfd = listenUnix(p, 4);
    try {
      for (const n of [1, 2]) {
        const pid = spawn({ file: 'python3', args: ['python3', '-c', script, p, String(n)], env: envFromProcess(), fds: [-1, -1, 2] });
        const before = openFds().length;
        if (n === 1) {
          const { fd, name } = acceptRecvFd(lfd, 10_000);
          assert.equal(name, '/dev/ptmx');
          assertCloexec(fd);
          fs.closeSync(fd);
        } else {
          const e = expectErrno(() => acceptRecvFd(lfd, 10_000), 'EINVAL', 'recvmsg');
          assert.match(e.message, /with 2 fd\(s\)/);
        }
        assert.equal(openFds().length, before);
        assert.equal((await exits.wait(pid)).status, 0);
      }
    } finally {
      fs.closeSync(lfd);
    }
  });

  test('peerCred on an accepted connection is our own pid/uid/gid', async () => {
    const p = path.join(tmp, 'peer.sock');
    const lfd = listenUnix(p, 4);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen({ fd: lfd }, resolve));
    try {
      const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      const client = await connect(p);
      const conn = await accepted;
      const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
      assert.deepEqual(peerCred(handleFd(conn)), me);
      assert.deepEqual(peerCred(handleFd(client)), me);
      client.destroy();
      conn.destroy();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expectErrno(() => peerCred(0x7ff0), 'EBADF', 'getsockopt');
  });
});

describe('terminal', () => {
  test('setWinsize round trip on a pty master', (t) => {
    let fd: number;
    try {
      fd = fs.openSync('/dev/ptmx', fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    } catch (err) {
      t.skip(`cannot open /dev/ptmx: ${String(err)}`);
      return;
    }
    try {
      setWinsize(fd, 40, 120);
      assert.deepEqual(getWinsize(fd), { rows: 40, cols: 120 });
      setWinsize(fd, 0, 0);
      assert.deepEqual(getWinsize(fd), { rows: 0, cols: 0 });
    } finally {
      fs.closeSync(fd);
    }
    const [r, w] = pipe();
    expectErrno(() => setWinsize(r, 1, 1), 'ENOTTY', 'ioctl');
    fs.closeSync(r);
    fs.closeSync(w);
  });
});

describe('fds', () => {
  test('pipe, setNonBlocking, setCloexec, dup', () => {
    const [r, w] = pipe();
    try {
      assertCloexec(r);
      assertCloexec(w);
      assert.equal(fdFlags(r) & O_NONBLOCK, 0);
      setNonBlocking(r, true);
      assert.ok(fdFlags(r) & O_NONBLOCK);
      assert.equal(fdFlags(w) & O_NONBLOCK, 0); // separate open file description
      setNonBlocking(r, false);
      assert.equal(fdFlags(r) & O_NONBLOCK, 0);
      setCloexec(w, false);
      assert.equal(fdFlags(w) & O_CLOEXEC, 0);
      setCloexec(w, true);
      assertCloexec(w);
      const d = dup(r);
      assert.ok(d !== r);
      assertCloexec(d);
      assert.equal(fs.readlinkSync(`/proc/self/fd/${d}`), fs.readlinkSync(`/proc/self/fd/${r}`));
      fs.closeSync(d);
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
    expectErrno(() => setCloexec(0x7ff0, true), 'EBADF', 'fcntl');
  });
});

describe('eventfd watcher', () => {
  let tokens: Tokens;
  before(() => {
    tokens = new Tokens(startFdWatcher());
  });

  const one = () => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(1n);
    return b;
  };

  test('startFdWatcher is idempotent and close-on-exec', () => {
    const fd = startFdWatcher();
    assert.equal(startFdWatcher(), fd);
    assertCloexec(fd);
  });

  test('a readable eventfd yields its token and the counter is consumed', async () => {
    const efd = eventfd(0, EFD_CLOEXEC);
    const efd2 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      assertCloexec(efd);
      assert.ok(fdFlags(efd2) & O_NONBLOCK);
      watchFd(efd, 42);
      watchFd(efd2, 0xfffffffe);
      fs.writeSync(efd, one());
      await tokens.waitFor(42, 1);
      // Consumed by the watcher: a non-blocking read finds nothing.
      setNonBlocking(efd, true);
      assert.throws(() => fs.readSync(efd, Buffer.alloc(8)), { code: 'EAGAIN' });
      setNonBlocking(efd, false);
      fs.writeSync(efd, one());
      fs.writeSync(efd2, one());
      await tokens.waitFor(42, 2);
      await tokens.waitFor(0xfffffffe, 1);

      assert.equal(unwatchFd(efd), true);
      assert.equal(unwatchFd(efd), false);
      fs.writeSync(efd, one());
      // The watcher reports what one epoll_wait returns together: had efd still been watched,
      // its token would have come with or before the first of two later rounds on efd2.
      for (const n of [2, 3]) {
        fs.writeSync(efd2, one());
        await tokens.waitFor(0xfffffffe, n);
      }
      assert.equal(tokens.all.filter((t) => t === 42).length, 2);
      assert.equal(unwatchFd(efd2), true);
    } finally {
      fs.closeSync(efd);
      fs.closeSync(efd2);
    }
  });

  test('watchFd errors', () => {
    expectErrno(() => watchFd(0x7ff0, 1), 'EBADF', 'epoll_ctl');
    assert.throws(() => watchFd(3, -1), TypeError);
  });
});
