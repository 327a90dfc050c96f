// SPDX-License-Identifier: Apache-2.0
// How shim daemons look to the node's tools (ps, pgrep -f, /proc), side by side with the Go shim:
// comm `containerd-shim` and the command line `<binary> -namespace NS -id ID -address ADDR`
// (src/shim/identity.ts), for each way one of ours comes to be: booted by the launcher for the
// job (empty pool), a standby adopted for the start, and spawned by a Node `start`
// (SHIM_STANDBY=0). And the installable wrapper dist/bin/containerd-shim-runc-v2 (written by
// scripts/bundle.sh) copied elsewhere under another name: it runs containers and prints its
// version, and the daemons it starts show the copy's path.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { listProcesses, procEnviron, startContainerd, waitFor, waitForNoLeftovers, NOTHING_LEFT, type Containerd } from '../support/containerd.js';
import { ensureBusyboxImage } from '../support/image.js';
import { REFERENCE_SHIM, REPO_ROOT, shimsUnderTest } from '../support/shims.js';
import { runShim, waitGone } from '../support/shimproc.js';

const NS = 'default';
const CTR_MS = 40_000;
const T = { timeout: 120_000 };
const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
let seq = 0;
const newId = (what: string) => `idn-${what}-${unique}-${++seq}`;

const which = new Set(shimsUnderTest().map((s) => s.name));
const WRAPPER = path.join(REPO_ROOT, 'dist', 'bin', 'containerd-shim-runc-v2');

interface Title {
  comm: string;
  /** /proc/PID/cmdline split at NULs, without the NUL padding a title shorter than its room leaves. */
  argv: string[];
  /** Bytes of NUL padding after the title (0 when arg_end could be moved, or for Go). */
  padding: number;
}

function titleOf(pid: number): Title {
  const raw = fs.readFileSync(`/proc/${pid}/cmdline`);
  let end = raw.length;
  while (end > 0 && raw[end - 1] === 0) end--;
  return {
    comm: fs.readFileSync(`/proc/${pid}/comm`, 'utf8').replace(/\n$/, ''),
    argv: raw.subarray(0, end).toString('utf8').split('\0'),
    padding: raw.length - end - 1,
  };
}

function exec(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve) => execFile(cmd, args, (_e, stdout) => resolve(String(stdout))));
}

/** What `ps -o comm=,args=` and `pgrep -f -x` say of `pid` with the title `argv`. */
async function tools(pid: number, argv: string[]): Promise<{ ps: string; pgrep: boolean }> {
  const ps = (await exec('ps', ['-o', 'comm=,args=', '-p', String(pid)])).trim();
  const pattern = argv.join(' ').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pids = (await exec('pgrep', ['-f', '-x', pattern])).split('\n').filter(Boolean).map(Number);
  return { ps, pgrep: pids.includes(pid) };
}

/**
 * The Go shim's daemon line for this containerd and container: what every daemon must show
 * (`-debug` when containerd runs at debug level, as it does under SHIM_TEST_DEBUG).
 */
function expected(binary: string, c: Containerd, id: string): string[] {
  return [binary, '-namespace', NS, '-id', id, '-address', c.address, ...(process.env.SHIM_TEST_DEBUG ? ['-debug'] : [])];
}

async function assertLooksLikeGo(pid: number, binary: string, c: Containerd, id: string, what: string): Promise<Title & { ps: string }> {
  const want = expected(binary, c, id);
  const t = titleOf(pid);
  assert.equal(t.comm, 'containerd-shim', `${what}: comm`);
  assert.deepEqual(t.argv, want, `${what}: cmdline`);
  const seen = await tools(pid, want);
  assert.equal(seen.ps, `containerd-shim ${want.join(' ')}`, `${what}: ps -o comm,args`);
  assert.ok(seen.pgrep, `${what}: pgrep -f -x finds it by the Go shim's command line`);
  return { ...t, ps: seen.ps };
}

/** Pid of the daemon serving container `id`: the parent of its init. */
async function daemonOf(c: Containerd, id: string): Promise<number> {
  const r = await c.ctr(['-n', NS, 'task', 'ls'], { timeoutMs: CTR_MS });
  const line = r.stdout.split('\n').map((l) => l.trim().split(/\s+/)).find((f) => f[0] === id);
  assert.ok(line, `task ${id} listed`);
  const stat = fs.readFileSync(`/proc/${line[1]}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** Our idle standbys for containerd `c` (argv `-standby POST`, its TTRPC_ADDRESS, cwd /); `listening`: only those holding their post. */
function standbys(c: Containerd, listening = true): number[] {
  const mark = `TTRPC_ADDRESS=${c.ttrpcAddress}`;
  return listProcesses()
    .filter((p) => {
      const i = p.argv.indexOf('-standby');
      if (i < 0 || !procEnviron(p.pid).includes(mark)) return false;
      try { return fs.readlinkSync(`/proc/${p.pid}/cwd`) === '/' && (!listening || fs.statSync(p.argv[i + 1]).isSocket()); } catch { return false; }
    })
    .map((p) => p.pid);
}

async function stopTask(c: Containerd, id: string): Promise<void> {
  await c.ctr(['-n', NS, 'task', 'delete', '-f', id], { timeoutMs: CTR_MS, allowFail: true });
  await c.ctr(['-n', NS, 'container', 'delete', id], { timeoutMs: CTR_MS, allowFail: true });
}

describe('a shim daemon looks like the Go shim\'s to ps, pgrep and /proc', () => {
  let c: Containerd;
  let image: string;
  let tmp: string;
  /** A copy of the installable wrapper, elsewhere and under another name. */
  let copy: string;
  const ids: string[] = [];
  before(async () => {
    c = await startContainerd();
    image = await ensureBusyboxImage(c);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'shim-identity-'));
    copy = path.join(tmp, 'containerd-shim-runc-tsv2');
    fs.copyFileSync(WRAPPER, copy);
    fs.chmodSync(copy, 0o755);
  });
  after(async () => {
    for (const id of ids) await stopTask(c, id).catch(() => undefined);
    await c?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const runDetached = async (runtime: string, what: string): Promise<{ id: string; pid: number }> => {
    const id = newId(what);
    ids.push(id);
    const r = await c.ctr(['-n', NS, 'run', '-d', '--runtime', runtime, image, id, 'sleep', '1000'], { timeoutMs: CTR_MS, allowFail: true });
    assert.equal(r.code, 0, r.stderr);
    return { id, pid: await daemonOf(c, id) };
  };

  it('the Go shim: comm containerd-shim, cmdline <binary> -namespace NS -id ID -address ADDR', { ...T, skip: !which.has('reference') }, async (t) => {
    const { id, pid } = await runDetached(REFERENCE_SHIM, 'go');
    const go = await assertLooksLikeGo(pid, fs.realpathSync(REFERENCE_SHIM), c, id, 'Go shim');
    assert.equal(go.padding, 0);
    t.diagnostic(`ps: ${go.ps}`);
    await stopTask(c, id);
    // Through a symlink, the path shown is the link's target (os.Executable reads /proc/self/exe).
    const link = path.join(tmp, 'go-link', 'containerd-shim-runc-v2');
    fs.mkdirSync(path.dirname(link));
    fs.symlinkSync(REFERENCE_SHIM, link);
    const linked = await runDetached(link, 'go-link');
    await assertLooksLikeGo(linked.pid, fs.realpathSync(REFERENCE_SHIM), c, linked.id, 'Go shim through a symlink');
    await stopTask(c, linked.id);
  });

  it('ours, through a copy of dist/bin/containerd-shim-runc-v2 named containerd-shim-runc-tsv2: booted for the job, then a standby adopted', { ...T, skip: !which.has('ours') }, async (t) => {
    // A fresh containerd: no standby yet, so the launcher boots Node for this start.
    assert.deepEqual(standbys(c, false), []);
    const first = await runDetached(copy, 'boot');
    const booted = await assertLooksLikeGo(first.pid, copy, c, first.id, 'booted for the job');
    // The pool fills once containerd is quiet; the next start goes to one of those standbys.
    assert.ok(await waitFor(() => standbys(c).length > 0, 20_000, 100), 'a standby holds a post');
    // Booting or listening: whichever takes the job was a standby before it (a process booted
    // for the job would be new).
    const pool = standbys(c, false);
    const second = await runDetached(copy, 'adopted');
    assert.ok(pool.includes(second.pid), `the daemon (${second.pid}) was a standby (${pool.join(', ')})`);
    const adopted = await assertLooksLikeGo(second.pid, copy, c, second.id, 'adopted standby');
    t.diagnostic(`ps: ${booted.ps}`);
    t.diagnostic(`ps: ${adopted.ps}`);
    t.diagnostic(`NUL padding after the title: ${booted.padding} / ${adopted.padding} bytes (0 when arg_end could be moved)`);
    // Go's daemon is named after its binary too: both are `containerd-shim` (15 bytes).
    await stopTask(c, first.id);
    await stopTask(c, second.id);
    assert.deepEqual(await waitForNoLeftovers(c, [first.id, second.id]), { ...NOTHING_LEFT });
  });

  it('ours, spawned by a Node start (SHIM_STANDBY=0), through a symlink to the copy: same identity, the link resolved as Go does', { ...T, skip: !which.has('ours') }, async () => {
    const bundle = fs.mkdtempSync(path.join(tmp, 'bundle-'));
    fs.writeFileSync(path.join(bundle, 'config.json'), '{}');
    const id = newId('node');
    const address = path.join(tmp, 'containerd.sock');
    const env = { ...process.env, SHIM_STANDBY: '0', TTRPC_ADDRESS: path.join(tmp, 'containerd.sock.ttrpc') };
    const link = path.join(tmp, 'our-link', 'containerd-shim-runc-v2');
    fs.mkdirSync(path.dirname(link));
    fs.symlinkSync(copy, link);
    const r = await runShim(['-namespace', NS, '-address', address, '-id', id, 'start'], { cwd: bundle, env, bin: link });
    assert.equal(r.code, 0, r.stderr);
    const sock = r.stdout.toString('utf8').replace(/^unix:\/\//, '');
    // The daemon is the process (with our environment) whose cwd is the bundle.
    const pid = await waitFor(() => listProcesses().find((p) => {
      try { return fs.readlinkSync(`/proc/${p.pid}/cwd`) === bundle && procEnviron(p.pid).includes(`TTRPC_ADDRESS=${env.TTRPC_ADDRESS}`); } catch { return false; }
    })?.pid, 10_000);
    assert.ok(pid, 'the daemon is up');
    try {
      await waitFor(() => titleOf(pid).comm === 'containerd-shim', 10_000);
      const want = [copy, '-namespace', NS, '-id', id, '-address', address];
      assert.deepEqual(titleOf(pid).argv, want);
      const seen = await tools(pid, want);
      assert.equal(seen.ps, `containerd-shim ${want.join(' ')}`);
      assert.ok(seen.pgrep);
    } finally {
      process.kill(pid, 'SIGTERM');
      assert.ok(await waitGone(pid));
      fs.rmSync(sock, { force: true });
    }
  });

  it('the copy prints its version under its own name', { ...T, skip: !which.has('ours') }, async () => {
    const r = await runShim(['-v'], { cwd: tmp, bin: copy });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.toString('utf8'), /^(.*\/)?containerd-shim-runc-tsv2:\n {2}Version: /);
  });
});
