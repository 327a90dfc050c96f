// SPDX-License-Identifier: Apache-2.0
// The process title: native setProcessTitle (native/src/title.cc) rewrites a process's own
// /proc/PID/cmdline and comm within the room execve gave it; takeShimIdentity
// (src/shim/identity.ts) uses it to show the Go shim's daemon line; withTitleRoom (pool.ts)
// gives spawned shims that room, which the flag parser must not mistake for an action. Each case
// runs in a child Node process, whose title it may rewrite.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseFlags } from '../../src/shim/flags.js';
import { withTitleRoom } from '../../src/pool/spawn.js';
import { TITLE_ROOM } from '../../src/pool/constants.js';

const DIST_SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');
const NATIVE = pathToFileURL(path.join(DIST_SRC, 'sys', 'native.js')).href;
const IDENTITY = pathToFileURL(path.join(DIST_SRC, 'shim', 'identity.js')).href;

interface ChildReport {
  result: { room: number; written: number; exact: boolean; named: boolean };
  argvAfter: string[];
  argvBefore: string[];
  cmdline: string;
  comm: string;
  environBefore: string;
  environAfter: string;
  threadComms: string[];
}

/** Runs `body` (ES module code with `native` and `report(result)` in scope) in node with `args`. */
function inChild(body: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildReport {
  const script = `
    import fs from 'node:fs';
    import * as native from ${JSON.stringify(NATIVE)};
    const argvBefore = [...process.argv];
    const environBefore = fs.readFileSync('/proc/self/environ', 'latin1');
    const report = (result) => {
      const threadComms = fs.readdirSync('/proc/self/task').map((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trimEnd());
      process.stdout.write(JSON.stringify({
        result, argvBefore, argvAfter: [...process.argv], environBefore, threadComms,
        cmdline: fs.readFileSync('/proc/self/cmdline', 'latin1'),
        comm: fs.readFileSync('/proc/self/comm', 'utf8').trimEnd(),
        environAfter: fs.readFileSync('/proc/self/environ', 'latin1'),
      }));
    };
    ${body}
  `;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'title-test-'));
  try {
    const file = path.join(dir, 'child.mjs');
    fs.writeFileSync(file, script);
    const r = spawnSync(process.execPath, [file, ...args], { encoding: 'utf8', env, timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as ChildReport;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The title followed by NUL padding only (or exactly the title, when arg_end could be moved). */
function assertShows(raw: string, title: string[], exact: boolean): void {
  const want = title.map((a) => `${a}\0`).join('');
  if (exact) assert.equal(raw, want);
  else {
    assert.equal(raw.slice(0, want.length), want);
    assert.match(raw.slice(want.length), /^\0*$/);
  }
}

describe('setProcessTitle', () => {
  const title = ['/opt/shim/bin/containerd-shim-runc-v2', '-namespace', 'default', '-id', 'c1', '-address', '/run/containerd/containerd.sock'];

  test('writes the title as NUL-separated arguments, sets comm, leaves process.argv and environ alone', () => {
    const pad = new Array<string>(400).fill('');
    const r = inChild(`report(native.setProcessTitle(${JSON.stringify(title)}, 'containerd-shim-runc-v2'));`, pad);
    const bytes = title.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);
    assert.equal(r.result.written, bytes);
    assert.ok(r.result.room > 400 && r.result.room > bytes, `room ${r.result.room}`);
    assert.equal(r.result.named, true);
    assertShows(r.cmdline, title, r.result.exact);
    if (!r.result.exact) assert.equal(r.cmdline.length, r.result.room, 'the rest of the room is NULs');
    assert.equal(r.comm, 'containerd-shim', 'the kernel keeps 15 bytes of the name');
    assert.deepEqual(r.argvAfter, r.argvBefore);
    assert.equal(r.environAfter, r.environBefore);
  });

  test('a title longer than the room is cut, ends in a NUL and never spills into the environment', () => {
    const long = ['/x', 'y'.repeat(5000)];
    const r = inChild(`report(native.setProcessTitle(${JSON.stringify(long)}, ''));`, []);
    assert.equal(r.result.written, r.result.room);
    assert.equal(r.result.exact, true);
    assert.equal(r.cmdline.length, r.result.room);
    assert.equal(r.cmdline, `${long.join('\0')}`.slice(0, r.result.room - 1) + '\0');
    assert.equal(r.environAfter, r.environBefore);
    assert.equal(r.comm, 'node', 'an empty name leaves comm alone');
  });

  test('a second, shorter title replaces the first entirely', () => {
    const r = inChild(`
      native.setProcessTitle(['first-title-that-is-long', 'with', 'several', 'arguments'], '');
      report(native.setProcessTitle(['second'], 'second'));
    `, new Array<string>(100).fill(''));
    assertShows(r.cmdline, ['second'], r.result.exact);
    assert.equal(r.comm, 'second');
  });

  test('rejects what is not an array of NUL-free strings', () => {
    const r = inChild(`
      const errors = [];
      for (const bad of [[1], ['a\\0b'], 42]) {
        try { native.setProcessTitle(bad, ''); errors.push('none'); } catch (e) { errors.push(e.name); }
      }
      report(errors);
    `, []);
    assert.deepEqual(r.result, ['TypeError', 'TypeError', 'TypeError']);
  });
});

describe('takeShimIdentity', () => {
  test('shows the Go shim daemon line for the binary in SHIM_ARGV0 (symlinks resolved), on every thread Node named', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'identity-test-'));
    try {
      const bin = path.join(dir, 'containerd-shim-runc-tsv2');
      fs.writeFileSync(bin, '#!/bin/sh\n', { mode: 0o755 });
      const link = path.join(dir, 'link');
      fs.symlinkSync(bin, link);
      const flags = { namespace: 'k8s.io', id: 'pod-1', address: '/run/containerd/containerd.sock', debug: true };
      const r = inChild(`
        const { takeShimIdentity } = await import(${JSON.stringify(IDENTITY)});
        takeShimIdentity(${JSON.stringify(flags)});
        report(null);
      `, withTitleRoom(['node', 'main.js']).slice(2), { ...process.env, SHIM_ARGV0: link });
      const want = [bin, '-namespace', 'k8s.io', '-id', 'pod-1', '-address', '/run/containerd/containerd.sock', '-debug'];
      assert.deepEqual(r.cmdline.replace(/\0+$/, '').split('\0'), want);
      assert.equal(r.comm, 'containerd-shim');
      assert.deepEqual(r.threadComms.filter((c) => c === 'node'), [], `thread names: ${r.threadComms.join(', ')}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without SHIM_ARGV0 (Node run by hand) nothing changes', () => {
    const env = { ...process.env };
    delete env.SHIM_ARGV0;
    const r = inChild(`
      const { takeShimIdentity } = await import(${JSON.stringify(IDENTITY)});
      takeShimIdentity({ namespace: 'n', id: 'i', address: '/a', debug: false });
      report(null);
    `, ['x'], env);
    assert.equal(r.comm, 'node');
    assert.match(r.cmdline, /child\.mjs\0x\0$/);
  });
});

describe('withTitleRoom', () => {
  test('pads the arguments to TITLE_ROOM bytes with empty ones, never cuts', () => {
    const argv = ['/usr/bin/node', '--no-warnings', '/opt/shim/dist/shim/main.js', '-standby', '/run/containerd/s/standby-0123456789abcdef-0'];
    const padded = withTitleRoom(argv);
    assert.deepEqual(padded.slice(0, argv.length), argv);
    assert.ok(padded.slice(argv.length).every((a) => a === ''));
    assert.equal(padded.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0), TITLE_ROOM);
    const big = ['x'.repeat(TITLE_ROOM)];
    assert.deepEqual(withTitleRoom(big), big);
  });

  test('the room fits the longest Go daemon line with a binary path of 700 bytes', () => {
    const id = 'i'.repeat(76);
    const line = ['/' + 'b'.repeat(699), '-namespace', id, '-id', id, '-address', '/' + 'a'.repeat(106), '-debug'];
    assert.ok(line.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0) <= TITLE_ROOM);
  });

  test('the flag parser stops at the padding: a daemon or standby still has no action', () => {
    const daemon = parseFlags(withTitleRoom(['-namespace', 'ns', '-id', 'c1', '-address', '/run/c.sock', '-debug']));
    assert.equal(daemon.action, '');
    assert.equal(daemon.namespace, 'ns');
    assert.equal(daemon.id, 'c1');
    assert.equal(daemon.debug, true);
    const standby = parseFlags(withTitleRoom(['-standby', '/run/containerd/s/standby-x-0', '-job-fd', '3']));
    assert.equal(standby.action, '');
    assert.equal(standby.standby, '/run/containerd/s/standby-x-0');
    assert.equal(standby.jobFd, '3');
  });
});
