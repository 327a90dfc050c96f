// SPDX-License-Identifier: Apache-2.0
// The standby pool's hand-over protocol (docs/standby-protocol.md) under faults: either side
// killed or stalled at every step, peers of a foreign uid or gid, a containerd restarted with
// the same and with another configuration, and zombies after many starts. The test plays containerd: it runs the
// shim binary (launcher first) for `delete` and `start` jobs, with a stand-in runc that records
// each call, so "ran exactly once" is a count.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { FakeEvents, TaskClient } from '../support/taskclient.js';
import { makeBundle } from '../support/rootfs.js';
import { waitGone, repoRoot, OUR_SHIM_BIN } from '../support/shimproc.js';
import { DeleteResponse } from '../../src/gen/containerd/task/v2/shim.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import { Any } from '../../src/gen/google/protobuf/any.js';
import { ACCEPT_TIMEOUT_MS, COMMIT_TIMEOUT_MS, MAX_STANDBYS, MSG_ACCEPT, POST_DIR } from '../../src/pool/constants.js';
import { claimPath, standbysOnMachine, warmupSocketPath } from '../../src/pool/claim.js';
import { baseOf, poolBase, postsOf } from '../../src/pool/key.js';
import { withTitleRoom } from '../../src/pool/spawn.js';

const NS = `pooltest${process.pid}`;
const MAIN = path.join(repoRoot(), 'dist', 'shim', 'main.js');
const T = { timeout: 120_000 };
/** Longer than the peer's limit at that step, so the stall crosses it. */
const STALL_PAST_ACCEPT = ACCEPT_TIMEOUT_MS + 1500;
const STALL_PAST_COMMIT = COMMIT_TIMEOUT_MS + 1500;

const skip = process.env.SHIM_UNDER_TEST === 'reference' ? 'the pool is ours alone' : process.getuid?.() !== 0 ? 'needs root (posts live in /run/containerd/s)' : false;

describe('standby pool: exactly-once hand-over under faults', { skip }, () => {
  let tmp: string;
  let events: FakeEvents;
  let env: NodeJS.ProcessEnv;
  let seq = 0;

  before(async () => {
    tmp = fs.mkdtempSync('/tmp/pool-');
    events = new FakeEvents(path.join(tmp, 'ttrpc.sock'));
    await events.listen();
    env = { ...process.env, TTRPC_ADDRESS: events.path };
    delete env.SHIM_STANDBY;
  });

  after(async () => {
    for (const pid of ours()) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    await events.close();
    for (const n of fs.readdirSync('/run/containerd/s')) if (n.includes(`warmup-`) && !fs.existsSync(`/proc/${n.slice(7)}`)) fs.rmSync(`/run/containerd/s/${n}`, { force: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** Every process of this test's shims: environ names our events socket. */
  function ours(): number[] {
    const out: number[] = [];
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
      try {
        if (fs.readFileSync(`/proc/${d}/environ`, 'utf8').split('\0').includes(`TTRPC_ADDRESS=${events.path}`)) out.push(Number(d));
      } catch { /* gone */ }
    }
    return out;
  }

  function argvOf(pid: number): string[] {
    try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); } catch { return []; }
  }

  /** The processes serving posts of the pool at `base` (standbys), and of a container id (daemons). */
  const standbysOf = (base: string) => ours().filter((p) => argvOf(p).some((a) => a.startsWith(`${base}-`)));
  const daemonsOf = (id: string) => ours().filter((p) => { const a = argvOf(p); return a.includes('-id') && a[a.indexOf('-id') + 1] === id && !a.includes('-standby'); });

  /**
   * A case of its own: a containerd address, a pool (the pool serves every address of one
   * environment, so SHIM_TEST_POOL gives the case its own) and a bundle whose runtime records
   * its calls.
   */
  function newCase(extraEnv: NodeJS.ProcessEnv = {}) {
    const n = ++seq;
    const address = path.join(tmp, `containerd-${n}.sock`);
    const id = `c${n}`;
    const bundle = makeBundle(path.join(tmp, NS, id), { args: ['true'] });
    const calls = path.join(tmp, `calls-${n}`);
    const runtime = path.join(tmp, `runtime-${n}`);
    fs.writeFileSync(runtime, `#!/bin/sh\necho "$*" >> ${calls}\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(bundle, 'runtime'), runtime);
    const caseEnv = { ...env, SHIM_TEST_POOL: `${NS}-${n}`, ...extraEnv };
    const base = poolBase({ uid: 0, gid: 0, entry: MAIN, env: caseEnv });
    const count = () => { try { return fs.readFileSync(calls, 'utf8').split('\n').filter((l) => / delete --force /.test(l)).length; } catch { return 0; } };
    return { n, id, address, bundle, base, env: caseEnv, count };
  }
  type Case = ReturnType<typeof newCase>;

  /** Boot a standby on post 0 of the case's pool (with a fault of its own), and wait for it to listen. */
  async function bootStandby(c: Case, fault?: string, index = 0): Promise<ChildProcess> {
    const post = `${c.base}-${index}`;
    const child = spawn(process.execPath, withTitleRoom(['--no-warnings', MAIN, '-standby', post]), {
      env: { ...c.env, ...(fault ? { SHIM_FAULT_STANDBY: fault } : {}) }, stdio: 'ignore', cwd: '/',
    });
    const deadline = Date.now() + 30_000;
    while (!fs.existsSync(post) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    assert.ok(fs.existsSync(post), 'the standby listens on its post');
    return child;
  }

  function job(c: Case, action: 'delete' | 'start', fault?: string, input?: Uint8Array) {
    const args = ['-namespace', NS, '-address', c.address, '-publish-binary', '/usr/bin/containerd', '-id', c.id];
    if (action === 'delete') args.push('-bundle', c.bundle);
    return runShimRaw([...args, action], c.bundle, { ...c.env, ...(fault ? { SHIM_FAULT_SENDER: fault } : {}) }, input);
  }

  /** runShim, but a launcher killed by a signal is an answer too (signal set). */
  function runShimRaw(args: string[], cwd: string, e: NodeJS.ProcessEnv, input?: Uint8Array): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(OUR_SHIM_BIN, args, { cwd, env: e, stdio: ['pipe', 'pipe', 'pipe'] });
      child.stdin.on('error', () => undefined); // a launcher killed by a fault may be gone before its stdin is written
      const out: Buffer[] = [];
      let err = '';
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
      child.stdin.end(input ?? Buffer.alloc(0));
      let answers = 0;
      child.on('exit', (code, signal) => {
        answers++;
        assert.equal(answers, 1, 'containerd gets one answer');
        resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
      });
    });
  }

  /** End the case: every process of its pool and daemon gone, its posts and claims removed, no fd left open by a survivor. */
  async function cleanup(c: Case): Promise<void> {
    // Rounds: a standby may have spawned a refill just after a listing; once it is gone, its
    // refills are all visible to the next one.
    for (let round = 0; round < 5; round++) {
      const pids = [...standbysOf(c.base), ...daemonsOf(c.id)];
      if (pids.length === 0) break;
      for (const pid of pids) {
        try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
        assert.ok(await waitGone(pid, 10_000), `process ${pid} of case ${c.n} exits`);
        fs.rmSync(warmupSocketPath(pid), { force: true });
      }
    }
    assert.deepEqual([...standbysOf(c.base), ...daemonsOf(c.id)], [], `nothing of case ${c.n} is left`);
    for (const p of postsOf(c.base)) { fs.rmSync(p, { force: true }); fs.rmSync(claimPath(p), { force: true }); }
  }

  /** Wait until nothing of the case's pool is still booting or running a job. */
  async function settle(c: Case, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    let last = -1;
    while (Date.now() < deadline) {
      const now = c.count();
      const busy = postsOf(c.base).some((p) => fs.existsSync(claimPath(p)));
      if (!busy && now === last) return;
      last = now;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  const fdCount = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;

  // The delete job under every fault. `runs`: how many times the job may have run (the sender
  // never runs it again after RUNNING, so a standby dying after that point is a failed job,
  // as a shim dying mid-job: one answer, at most one run).
  const standbyFaults: [string, { code: number; runs: number[] }][] = [
    ['offer:kill', { code: 0, runs: [1] }],
    ['accept:kill', { code: 0, runs: [1] }],
    ['commit:kill', { code: 0, runs: [1] }],
    ['running:kill', { code: 1, runs: [0] }],
    ['status:kill', { code: 1, runs: [1] }],
    [`offer:stall:${STALL_PAST_ACCEPT}`, { code: 0, runs: [1] }],
    [`accept:stall:${STALL_PAST_ACCEPT}`, { code: 0, runs: [1] }],
    [`commit:stall:${STALL_PAST_ACCEPT}`, { code: 0, runs: [1] }],
    [`status:stall:${STALL_PAST_ACCEPT}`, { code: 0, runs: [1] }],
  ];
  for (const [fault, want] of standbyFaults) {
    test(`delete, standby fault ${fault}: exit ${want.code}, ran ${want.runs.join(' or ')} time(s), nothing left`, T, async () => {
      const c = newCase();
      try {
        const s = await bootStandby(c, fault);
        const r = await job(c, 'delete');
        assert.equal(r.code, want.code, r.stderr);
        if (want.code === 0) assert.equal(DeleteResponse.decode(r.stdout).exitStatus, 137);
        else assert.match(r.stderr, /the standby shim died during delete/);
        await settle(c, 8000);
        assert.ok(want.runs.includes(c.count()), `runtime delete ran ${c.count()} time(s)`);
        if (fault.includes('stall')) assert.equal(s.exitCode, null, 'a stalled standby lives on');
      } finally {
        await cleanup(c);
      }
    });
  }

  const senderFaults: [string, { killed: boolean; runs: number[] }][] = [
    ['connect:kill', { killed: true, runs: [0] }],
    ['offer:kill', { killed: true, runs: [0] }],
    ['accept:kill', { killed: true, runs: [0] }],
    ['commit:kill', { killed: true, runs: [0, 1] }],
    ['running:kill', { killed: true, runs: [1] }],
    [`offer:stall:${STALL_PAST_ACCEPT}`, { killed: false, runs: [1] }],
    [`accept:stall:${STALL_PAST_COMMIT}`, { killed: false, runs: [1] }],
    [`commit:stall:${STALL_PAST_ACCEPT}`, { killed: false, runs: [1] }],
  ];
  for (const [fault, want] of senderFaults) {
    test(`delete, launcher fault ${fault}: ${want.killed ? 'killed' : 'exit 0'}, ran ${want.runs.join(' or ')} time(s), the standby stays usable`, T, async () => {
      const c = newCase();
      try {
        const s = await bootStandby(c);
        const fds = fdCount(s.pid!);
        const r = await job(c, 'delete', fault);
        if (want.killed) assert.equal(r.signal, 'SIGKILL');
        else assert.equal(r.code, 0, r.stderr);
        await settle(c, COMMIT_TIMEOUT_MS + 3000);
        assert.ok(want.runs.includes(c.count()), `runtime delete ran ${c.count()} time(s)`);
        // The standby dropped what an abandoned offer carried, and takes the next job.
        if (s.exitCode === null && fs.existsSync(`${c.base}-0`)) {
          assert.equal(fdCount(s.pid!), fds, 'the standby keeps no fd of the offer');
          const before = c.count();
          const again = await job(c, 'delete');
          assert.equal(again.code, 0, again.stderr);
          assert.equal(c.count(), before + 1);
        }
      } finally {
        await cleanup(c);
      }
    });
  }

  test('start, standby killed before RUNNING: the launcher boots a process for it; one daemon serves', T, async () => {
    const c = newCase();
    try {
      await bootStandby(c, 'accept:kill');
      const r = await job(c, 'start');
      assert.equal(r.code, 0, r.stderr);
      const client = await TaskClient.connect(r.stdout.toString(), NS);
      const pid = (await client.connect(c.id)).shimPid;
      assert.deepEqual(daemonsOf(c.id), [pid], 'exactly one daemon for the container');
      await client.shutdown(c.id).catch(() => undefined);
      client.close();
      assert.ok(await waitGone(pid));
    } finally {
      await cleanup(c);
    }
  });

  test('start, launcher killed after COMMIT: no daemon is left serving nobody', T, async () => {
    const c = newCase();
    try {
      const s = await bootStandby(c);
      const r = await job(c, 'start', 'running:kill');
      assert.equal(r.signal, 'SIGKILL');
      // The standby ran the start, found nobody to answer, and went away.
      assert.ok(await waitGone(s.pid!, 10_000), 'the standby that ran it exits');
      assert.deepEqual(daemonsOf(c.id), []);
    } finally {
      await cleanup(c);
    }
  });

  test('a standby that a pod\'s daemon spawns lives in the home cgroup, not the pod\'s shim_cgroup', T, async () => {
    const c = newCase();
    const cg = `/pooltest-${process.pid}-shim`;
    /** The memory cgroup of a process (v1), or its unified one (v2). */
    const cgroupOf = (pid: number | 'self') => {
      const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
      return (lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l)) ?? lines.find((l) => l.startsWith('0::')) ?? '').replace(/^[^:]*:[^:]*:/, '');
    };
    const home = cgroupOf('self');
    const options = Any.encode({ typeUrl: 'containerd.runc.v1.Options', value: Options.encode(Options.fromPartial({ shimCgroup: cg })).finish() }).finish();
    // The pod's cgroup, as a CRI pod's exists before its shim starts (a v1 cpuset needs its cpus and mems).
    const roots = fs.existsSync('/sys/fs/cgroup/cgroup.controllers') ? ['/sys/fs/cgroup']
      : fs.readdirSync('/sys/fs/cgroup').map((d) => `/sys/fs/cgroup/${d}`).filter((d) => !fs.lstatSync(d).isSymbolicLink() && fs.existsSync(`${d}/cgroup.procs`));
    for (const root of roots) {
      fs.mkdirSync(`${root}${cg}`, { recursive: true });
      for (const f of ['cpuset.cpus', 'cpuset.mems']) if (fs.existsSync(`${root}/${f}`)) fs.writeFileSync(`${root}${cg}/${f}`, fs.readFileSync(`${root}/${f}`));
    }
    try {
      // Both posts held: the adopted standby refills its post once containerd is quiet, that
      // is, from inside the shim_cgroup it was moved into.
      const s0 = await bootStandby(c, undefined, 0);
      await bootStandby(c, undefined, 1);
      const r = await job(c, 'start', undefined, options);
      assert.equal(r.code, 0, r.stderr);
      const client = await TaskClient.connect(r.stdout.toString(), NS);
      const daemon = (await client.connect(c.id)).shimPid;
      assert.equal(daemon, s0.pid, 'the standby on post 0 became the daemon');
      assert.equal(cgroupOf(daemon), cg, 'the daemon moved into its shim_cgroup');
      const deadline = Date.now() + 30_000;
      let refilled: number[] = [];
      while (Date.now() < deadline && (refilled = standbysOf(c.base).filter((p) => p !== daemon && argvOf(p).includes(`${c.base}-0`))).length === 0) {
        await new Promise((res) => setTimeout(res, 50));
      }
      assert.equal(refilled.length, 1, 'the daemon refilled post 0');
      // The daemon moves the refill home right after spawning it: once the refill holds its
      // post (it booted, which takes far longer), the move is done.
      while (Date.now() < deadline && !fs.existsSync(`${c.base}-0`)) await new Promise((res) => setTimeout(res, 50));
      assert.ok(fs.existsSync(`${c.base}-0`), 'the refill took post 0');
      assert.equal(cgroupOf(refilled[0]), home, 'the refill lives where the pool began');
      await client.shutdown(c.id).catch(() => undefined);
      client.close();
      assert.ok(await waitGone(daemon));
    } finally {
      await cleanup(c);
      for (const root of roots) try { fs.rmdirSync(`${root}${cg}`); } catch { /* still busy */ }
    }
  });

  test('foreign peers: a standby does not take an offer from another uid or gid; the launcher does not offer to one', T, async () => {
    const c = newCase();
    try {
      const s = await bootStandby(c);
      const post = `${c.base}-0`;
      // Past the first fence (the modes), to meet the second (SO_PEERCRED).
      const modes = ['/run/containerd', '/run/containerd/s'].map((d) => [d, fs.statSync(d).mode & 0o7777] as const);
      fs.chmodSync(post, 0o666);
      for (const [d] of modes) fs.chmodSync(d, 0o711);
      try {
        for (const [uid, gid] of [[65534, 0], [0, 65534]]) {
          // A client of that uid and gid (SO_PEERCRED is taken at connect) offering a delete job
          // with /dev/null as stdio; it prints the first byte it gets back (-1: none).
          const script = `import socket,os,array,json
os.setgid(${gid}); os.setuid(${uid})
s=socket.socket(socket.AF_UNIX); s.connect(${JSON.stringify(post)})
fd=os.open('/dev/null',os.O_RDWR)
m=json.dumps({'kind':'job','argv':['-namespace',${JSON.stringify(NS)},'-address',${JSON.stringify(c.address)},'-id',${JSON.stringify(c.id)},'delete'],'cwd':${JSON.stringify(c.bundle)},'ppid':1}).encode()
try:
  s.sendmsg([m],[(socket.SOL_SOCKET,socket.SCM_RIGHTS,array.array('i',[fd,fd,fd]))])
  b=s.recv(1)
except OSError: b=b''
print(b[0] if b else -1)`;
          const out = spawnSync('python3', ['-c', script], { encoding: 'utf8', timeout: 10_000 });
          assert.equal(out.status, 0, out.stderr);
          assert.notEqual(Number(out.stdout.trim()), MSG_ACCEPT, `uid ${uid} gid ${gid} is not accepted`);
        }
      } finally {
        for (const [d, m] of modes) fs.chmodSync(d, m);
        fs.chmodSync(post, 0o600);
      }
      assert.equal(c.count(), 0, 'nothing ran for them');
      const r = await job(c, 'delete');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(c.count(), 1, 'and the standby still serves its own');
      assert.equal(s.exitCode, null);
    } finally {
      await cleanup(c);
    }
    // The launcher: a post held by a listener of another uid or gid gets no offer; the job runs
    // in a process booted for it.
    for (const [uid, gid] of [[65534, 0], [0, 65534]]) {
      const d = newCase();
      const post = `${d.base}-0`;
      const py = `import socket,os
s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(post)}); os.chmod(${JSON.stringify(post)},0o666)
os.setgid(${gid}); os.setuid(${uid}); s.listen(8)
print('ready',flush=True)
c,_=s.accept(); c.settimeout(5)
try: d=c.recv(4096)
except Exception: d=b''
print('seen', len(d), flush=True)`;
      const fake = spawn('python3', ['-c', py], { stdio: ['ignore', 'pipe', 'inherit'] });
      let said = '';
      fake.stdout.on('data', (b: Buffer) => { said += b.toString(); });
      try {
        while (!said.includes('ready') && fake.exitCode === null) await new Promise((r) => fake.stdout.once('data', r));
        const r = await job(d, 'delete');
        assert.equal(r.code, 0, r.stderr);
        assert.equal(d.count(), 1, 'the delete ran once, elsewhere');
        await new Promise<void>((resolve) => { if (fake.exitCode !== null) resolve(); else fake.once('exit', () => resolve()); });
        assert.match(said, /seen 0\n/, `the listener of uid ${uid} gid ${gid} was sent nothing`);
      } finally {
        fake.kill('SIGKILL');
        fs.rmSync(post, { force: true });
        await cleanup(d);
      }
    }
  });

  test('a containerd restarted: with the same configuration the pool serves it; with another, no stale standby serves a job, stale ones exit', T, async () => {
    const idle = { SHIM_STANDBY_IDLE_SECONDS: '4' };
    const old = newCase({ SHIM_TEST_CONFIG: 'one', ...idle });
    const s = await bootStandby(old);
    // A restart replaces containerd's ttrpc socket.
    await events.close();
    events = new FakeEvents(events.path);
    await events.listen();
    // The same configuration: the standby serves the restarted daemon's job.
    let r = await job(old, 'delete');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(old.count(), 1);
    assert.equal(s.exitCode, null, 'the standby ran it and waits for the next');
    // Another environment (what a new config changes): another pool.
    const fresh = { ...old, env: { ...old.env, SHIM_TEST_CONFIG: 'two' } };
    fresh.base = poolBase({ uid: 0, gid: 0, entry: MAIN, env: fresh.env });
    assert.notEqual(fresh.base, old.base, 'another configuration keys another pool');
    try {
      r = await job(fresh, 'delete');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(old.count(), 2);
      const ran = standbysOf(fresh.base);
      assert.ok(ran.length >= 1 && !ran.includes(s.pid!), 'the job ran in a process of the new configuration');
      assert.ok(ran.every((p) => fs.readFileSync(`/proc/${p}/environ`, 'utf8').includes('SHIM_TEST_CONFIG=two')));
      assert.ok(await waitGone(s.pid!, 15_000), 'the stale standby, which no start can claim, retires when idle');
    } finally {
      await cleanup(old);
      await cleanup(fresh);
    }
  });

  test('a process booted for a delete stays on as a standby only within the machine\'s bound', T, async () => {
    // Fill the machine up to MAX_STANDBYS with listeners on posts of a pool nobody uses.
    const fakes: net.Server[] = [];
    for (let i = 0; standbysOnMachine() < MAX_STANDBYS; i++) {
      const srv = net.createServer();
      await new Promise<void>((resolve, reject) => srv.listen(`${POST_DIR}/standby-full${process.pid}x${i}-0`, resolve).once('error', reject));
      fakes.push(srv);
    }
    const c = newCase();
    try {
      const r = await job(c, 'delete'); // an empty pool: a process is booted for the job
      assert.equal(r.code, 0, r.stderr);
      assert.equal(c.count(), 1);
      // It either takes a post (the bug) or exits; nothing else ends the wait.
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && standbysOf(c.base).length > 0 && !postsOf(c.base).some((p) => fs.existsSync(p))) {
        await new Promise((res) => setTimeout(res, 50));
      }
      assert.deepEqual(postsOf(c.base).filter((p) => fs.existsSync(p)), [], 'no post taken beyond the bound');
      assert.deepEqual(standbysOf(c.base), [], 'the process booted for the job exited');
    } finally {
      for (const srv of fakes) await new Promise((res) => srv.close(res));
      await cleanup(c);
    }
  });

  test('a standby running with other Node flags takes no post of the launcher\'s pool', T, async () => {
    const c = newCase();
    const post = `${c.base}-0`;
    // The launcher's pool (its NODE_FLAG only); this process runs Node with one flag more.
    const child = spawn(process.execPath, withTitleRoom(['--no-warnings', '--max-semi-space-size=1', MAIN, '-standby', post]), { env: c.env, stdio: 'ignore', cwd: '/' });
    try {
      const code = await new Promise<number | null>((resolve) => {
        const t = setTimeout(() => resolve(-1), 20_000);
        child.once('exit', (n) => { clearTimeout(t); resolve(n); });
      });
      assert.equal(code, 0, 'it exits at once instead of serving');
      assert.equal(fs.existsSync(post), false, 'and never took the post');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await cleanup(c);
    }
  });

  test('the launcher and the TypeScript side name the same pool', T, async () => {
    const c = newCase();
    try {
      const r = await job(c, 'delete'); // an empty pool: the process booted for it stays as a standby
      assert.equal(r.code, 0, r.stderr);
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && !postsOf(c.base).some((p) => fs.existsSync(p))) await new Promise((res) => setTimeout(res, 50));
      const kept = standbysOf(c.base);
      assert.ok(kept.length >= 1, 'a standby of the pool the TypeScript side names');
      const post = argvOf(kept[0])[argvOf(kept[0]).indexOf('-standby') + 1];
      assert.equal(baseOf(post), c.base);
    } finally {
      await cleanup(c);
    }
  });

  for (const pool of [true, false]) {
    const starts = Number(process.env.SHIM_POOL_STARTS) || 500;
    test(`no zombies after ${starts} starts ${pool ? 'with' : 'without'} a pool`, { timeout: 900_000 }, async (t) => {
      const c = newCase(pool ? {} : { SHIM_STANDBY: '0' });
      try {
        for (let i = 0; i < starts; i++) {
          const r = await job(c, 'start');
          assert.equal(r.code, 0, r.stderr);
          const client = await TaskClient.connect(r.stdout.toString(), NS);
          await client.shutdown(c.id).catch(() => undefined);
          client.close();
          // The next start must not find this daemon's socket still served.
          for (const pid of daemonsOf(c.id)) await waitGone(pid, 10_000);
        }
        // A zombie's environ reads empty: look for zombies whose parent is one of ours.
        const zombies = () => {
          const parents = new Set(ours());
          const out: number[] = [];
          for (const d of fs.readdirSync('/proc')) {
            if (!/^\d+$/.test(d)) continue;
            try {
              const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
              const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
              if (f[0] === 'Z' && parents.has(Number(f[1]))) out.push(Number(d));
            } catch { /* gone */ }
          }
          return out;
        };
        // A standby waits for what it spawned in its watch (every 5 s) and after each job.
        const deadline = Date.now() + 12_000;
        while (zombies().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
        assert.deepEqual(zombies(), [], 'no zombie of ours');
        t.diagnostic(`${starts} starts; standbys now: ${standbysOf(c.base).length}`);
      } finally {
        await cleanup(c);
      }
    });
  }
});
