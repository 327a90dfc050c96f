// SPDX-License-Identifier: Apache-2.0
// The test plays containerd: it runs our shim's `start`, talks ttrpc to the daemon, receives its
// events on a stand-in of containerd's events service, and runs the `delete` action at the end.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { TaskClient, FakeEvents } from '../support/taskclient.js';
import { makeBusyboxRootfs, makeBundle } from '../support/rootfs.js';
import { mkfifo, FifoReader } from '../support/fifo.js';
import { runShim, waitGone, mountedUnder, repoRoot, OUR_SHIM_BIN } from '../support/shimproc.js';
import { Status } from '../../src/gen/containerd/types/task.js';
import { DeleteResponse } from '../../src/gen/containerd/task/v2/shim.js';
import * as E from '../../src/gen/containerd/events/task.js';
import { Code } from '../../src/ttrpc/index.js';
import { POOL_SIZE } from '../../src/pool/constants.js';
import { claimPath, warmupSocketPath } from '../../src/pool/claim.js';
import { baseOf, poolBase, postsOf } from '../../src/pool/key.js';
import { withTitleRoom } from '../../src/pool/spawn.js';

const NS = `shimtest${process.pid}`;
const T_OPTS = { timeout: 60_000 };

describe('shim driven directly over ttrpc (the test plays containerd)', () => {
  let tmp: string;
  let rootfsSrc: string;
  let events: FakeEvents;
  let env: NodeJS.ProcessEnv;
  const grpcAddress = () => path.join(tmp, 'containerd.sock');

  before(async () => {
    tmp = fs.mkdtempSync('/tmp/sd-');
    rootfsSrc = makeBusyboxRootfs(path.join(tmp, 'rootfs-src'));
    events = new FakeEvents(path.join(tmp, 'ttrpc.sock'));
    await events.listen();
    env = { ...process.env, TTRPC_ADDRESS: events.path, SHIM_TEST_POOL: events.path };
  });

  after(async () => {
    await stopStandbys(standbys());
    await events.close();
    // Whatever a failed test left mounted must not stay behind.
    for (const m of mountedUnder(tmp).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(`/run/containerd/runc/${NS}`, { recursive: true, force: true });
  });

  /** A bundle as containerd lays it out: config.json, empty rootfs/, a log fifo it reads. */
  function bundleFor(id: string, args: string[], o: { hostPid?: boolean } = {}) {
    const bundle = makeBundle(path.join(tmp, NS, id), { args, hostPid: o.hostPid });
    const log = new FifoReader(mkfifo(path.join(bundle, 'log')));
    return { bundle, log };
  }

  async function startShim(id: string, bundle: string, grpc = grpcAddress(), e = env) {
    const r = await runShim(['-namespace', NS, '-address', grpc, '-publish-binary', '/usr/bin/containerd', '-id', id, 'start'], { cwd: bundle, env: e });
    assert.equal(r.stderr, '', 'start writes nothing on stderr');
    assert.equal(r.code, 0);
    const address = r.stdout.toString('utf8');
    assert.match(address, /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    assert.equal(fs.readFileSync(path.join(bundle, 'address'), 'utf8'), address, 'address file has no newline');
    return address;
  }

  test('create, start, wait, delete, shutdown: exit status, output and the four events in order', T_OPTS, async () => {
    const id = 'c1';
    const { bundle, log } = bundleFor(id, ['sh', '-c', 'echo hello; echo oops >&2; exit 3']);
    const address = await startShim(id, bundle);
    const client = await TaskClient.connect(address, NS);
    const out = new FifoReader(mkfifo(path.join(tmp, `${id}-stdout`)));
    const err = new FifoReader(mkfifo(path.join(tmp, `${id}-stderr`)));
    try {
      const { shimPid } = await client.connect(id);
      // Like the reference's daemon: its own process group, the caller's session (so it shares
      // the caller's scheduler autogroup), and GOMAXPROCS=4 for the runc it runs.
      const [, , pgrp, session] = statFields(shimPid);
      assert.equal(pgrp, shimPid, 'own process group');
      assert.equal(session, statFields(process.pid)[3], "containerd's session");
      assert.ok(fs.readFileSync(`/proc/${shimPid}/environ`, 'utf8').split('\0').includes('GOMAXPROCS=4'));
      const created = await client.create({
        id, bundle,
        rootfs: [{ type: 'bind', source: rootfsSrc, target: '', options: ['rbind', 'ro'] }],
        stdout: path.join(tmp, `${id}-stdout`), stderr: path.join(tmp, `${id}-stderr`),
      });
      assert.ok(created.pid > 0);
      assert.deepEqual(mountedUnder(path.join(bundle, 'rootfs')), [path.join(bundle, 'rootfs')], 'rootfs mounted');
      assert.equal((await client.state(id)).status, Status.CREATED);
      const started = await client.start(id);
      assert.equal(started.pid, created.pid);
      const waited = await client.wait(id);
      assert.equal(waited.exitStatus, 3);
      assert.ok(waited.exitedAt && waited.exitedAt.seconds > 1_600_000_000n);
      assert.equal(await out.until((t) => t.includes('hello\n')), 'hello\n');
      assert.equal(await err.until((t) => t.includes('oops\n')), 'oops\n');
      const st = await client.state(id);
      assert.equal(st.status, Status.STOPPED);
      assert.equal(st.exitStatus, 3);
      const del = await client.delete(id);
      assert.equal(del.exitStatus, 3);
      assert.equal(del.pid, created.pid);
      assert.deepEqual(mountedUnder(path.join(bundle, 'rootfs')), [], 'rootfs unmounted by Delete');
      await assert.rejects(client.state(id), (e: { code: Code; message: string }) => e.code === Code.NotFound && e.message === 'container not created: not found');
      await client.shutdown(id).catch(() => undefined);
      assert.ok(await waitGone(shimPid), 'daemon exits after Shutdown');
      assert.equal(fs.existsSync(address.slice('unix://'.length)), false, 'socket removed');

      await events.until((envs) => envs.some((e) => e.topic === '/tasks/delete' && e.namespace === NS));
      const mine = events.envelopes.filter((e) => e.namespace === NS);
      assert.deepEqual(mine.map((e) => e.topic), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
      const exit = E.TaskExit.decode(mine[2].event!.value);
      assert.equal(mine[2].event!.typeUrl, 'containerd.events.TaskExit');
      assert.deepEqual([exit.containerId, exit.id, exit.pid, exit.exitStatus], [id, id, created.pid, 3]);
      const createEv = E.TaskCreate.decode(mine[0].event!.value);
      assert.equal(createEv.bundle, bundle);
      assert.equal(createEv.pid, created.pid);
      const delEv = E.TaskDelete.decode(mine[3].event!.value);
      assert.deepEqual([delEv.containerId, delEv.pid, delEv.exitStatus], [id, created.pid, 3]);

      const d = await runShim(['-namespace', NS, '-address', grpcAddress(), '-publish-binary', '/usr/bin/containerd', '-id', id, '-bundle', bundle, 'delete'], { cwd: bundle, env });
      assert.equal(d.code, 0, d.stderr);
      const resp = DeleteResponse.decode(d.stdout);
      assert.equal(resp.exitStatus, 137);
      assert.equal(resp.pid, created.pid);
      assert.ok(log.text.length > 0, 'the daemon logged to the log fifo');
    } finally {
      client.close();
      out.close(); err.close(); log.close();
    }
  });

  test('a killed long-running container reports 128+signal, and exec runs beside it', T_OPTS, async () => {
    const id = 'c2';
    const { bundle, log } = bundleFor(id, ['sleep', '1000']);
    const address = await startShim(id, bundle);
    const client = await TaskClient.connect(address, NS);
    const out = new FifoReader(mkfifo(path.join(tmp, `${id}-exec-out`)));
    try {
      const { shimPid } = await client.connect(id);
      await client.create({ id, bundle, rootfs: [{ type: 'bind', source: rootfsSrc, target: '', options: ['rbind', 'ro'] }] });
      await client.start(id);
      assert.equal((await client.state(id)).status, Status.RUNNING);
      const stats = await client.stats(id);
      assert.match(stats.stats?.typeUrl ?? '', /^io\.containerd\.cgroups\.v[12]\.Metrics$/);
      assert.ok((stats.stats?.value.length ?? 0) > 0, 'metrics carry data');
      const spec = { args: ['sh', '-c', 'echo from-exec; exit 5'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } };
      await client.exec({ id, execId: 'e1', stdout: path.join(tmp, `${id}-exec-out`), spec: { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(spec)) } });
      await assert.rejects(client.exec({ id, execId: 'e1', spec: { typeUrl: 'x', value: Buffer.from('{}') } }), (e: { code: Code }) => e.code === Code.AlreadyExists);
      const ex = await client.start(id, 'e1');
      assert.ok(ex.pid > 0);
      assert.equal((await client.wait(id, 'e1')).exitStatus, 5);
      assert.equal(await out.until((t) => t.includes('from-exec\n')), 'from-exec\n');
      await client.delete(id, 'e1');
      await client.kill(id, 9);
      assert.equal((await client.wait(id)).exitStatus, 137);
      await assert.rejects(client.kill(id, 9), (e: { code: Code }) => e.code === Code.NotFound);
      assert.equal((await client.delete(id)).exitStatus, 137);
      await client.shutdown(id).catch(() => undefined);
      assert.ok(await waitGone(shimPid));
      await events.until((envs) => envs.filter((e) => e.namespace === NS && e.topic === '/tasks/delete').length >= 2);
      const topics = events.envelopes.filter((e) => e.namespace === NS).slice(4).map((e) => e.topic);
      assert.deepEqual(topics, ['/tasks/create', '/tasks/start', '/tasks/exec-added', '/tasks/exec-started', '/tasks/exit', '/tasks/exit', '/tasks/delete']);
    } finally {
      client.close();
      out.close(); log.close();
    }
  });

  const argvOf = (pid: number) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');

  /** state, ppid, pgrp, session of a process (the fields after "(comm)" in /proc/<pid>/stat). */
  function statFields(pid: number): [string, number, number, number] {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [f[0], Number(f[1]), Number(f[2]), Number(f[3])];
  }

  /**
   * SIGTERM standbys and wait for them; one killed while still booting leaves its post's
   * `.booting` claim behind (a later standby sweeps it after 10 s; the test does not wait).
   * Resolves whether each one exited.
   */
  async function stopStandbys(pids: number[]): Promise<boolean[]> {
    const posts = new Set<string>();
    const gone: boolean[] = [];
    for (const pid of pids) {
      try {
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        const post = argv[argv.indexOf('-standby') + 1];
        if (post) for (const p of postsOf(baseOf(post))) posts.add(p);
        process.kill(pid, 'SIGTERM');
      } catch { /* gone */ }
      gone.push(await waitGone(pid, 5000));
      fs.rmSync(warmupSocketPath(pid), { force: true });
    }
    for (const p of posts) fs.rmSync(claimPath(p), { force: true });
    return gone;
  }

  /** The suite's environment with a standby pool of its own (the pool serves every address of one environment). */
  const ownPool = (tag: string): NodeJS.ProcessEnv => ({ ...env, SHIM_TEST_POOL: `${events.path}-${tag}` });

  /** Idle standby daemons booted for this test's events endpoint. */
  function standbys(): number[] {
    const out: number[] = [];
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
        if (!argv.includes('-standby')) continue;
        if (!fs.readFileSync(`/proc/${d}/environ`, 'utf8').split('\0').includes(`TTRPC_ADDRESS=${events.path}`)) continue;
        if (fs.readlinkSync(`/proc/${d}/cwd`) === '/') out.push(Number(d));
      } catch { /* gone */ }
    }
    return out;
  }

  test('the next start hands its socket to the pre-booted standby daemon, which serves the container', T_OPTS, async () => {
    const grpc = path.join(tmp, 'containerd-standby.sock');
    const earlier = new Set(standbys()); // the other tests' pools
    const pool = ownPool('standby');
    const a = bundleFor('c3', ['sh', '-c', 'exit 4']);
    const addrA = await startShim('c3', a.bundle, grpc, pool);
    const deadline = Date.now() + 20_000;
    let ready: number[] = [];
    const fresh = () => standbys().filter((p) => !earlier.has(p));
    while (Date.now() < deadline && (ready = fresh()).length < POOL_SIZE) await new Promise((r) => setTimeout(r, 50));
    assert.equal(ready.length, POOL_SIZE, 'the standby pool booted');
    // Wait until each listens on its post (its control socket, named after `-standby`).
    const postsOf = ready.map((pid) => { const argv = argvOf(pid); return argv[argv.indexOf('-standby') + 1]; });
    while (Date.now() < deadline && !postsOf.every((p) => fs.existsSync(p))) await new Promise((r) => setTimeout(r, 50));
    assert.ok(postsOf.every((p) => fs.existsSync(p)), 'the standbys listen on their posts');
    const b = bundleFor('c4', ['sh', '-c', 'exit 6']);
    const addrB = await startShim('c4', b.bundle, grpc, pool);
    const ca = await TaskClient.connect(addrA, NS);
    const cb = await TaskClient.connect(addrB, NS);
    try {
      const pidB = (await cb.connect('c4')).shimPid;
      assert.ok(ready.includes(pidB), 'a standby became c4\'s daemon');
      assert.equal(fs.readlinkSync(`/proc/${pidB}/cwd`), b.bundle, 'it works in c4\'s bundle');
      for (const [c, id, code] of [[ca, 'c3', 4], [cb, 'c4', 6]] as const) {
        await c.create({ id, bundle: path.join(tmp, NS, id), rootfs: [{ type: 'bind', source: rootfsSrc, target: '', options: ['rbind', 'ro'] }] });
        await c.start(id);
        assert.equal((await c.wait(id)).exitStatus, code);
        await c.delete(id);
        await c.shutdown(id).catch(() => undefined);
      }
      assert.ok(await waitGone(pidB), 'the adopted daemon exits after Shutdown like any other');
    } finally {
      ca.close(); cb.close(); a.log.close(); b.log.close();
      for (const ok of await stopStandbys(fresh())) assert.ok(ok, 'an idle standby retires on SIGTERM');
    }
  });
  test('with no standby up, the launcher boots one for the job: a start makes it the daemon, a delete leaves it as a pool standby', T_OPTS, async () => {
    const earlier = new Set(standbys());
    // A pool of its own: empty.
    const a = bundleFor('c5', ['sh', '-c', 'exit 0']);
    const addr = await startShim('c5', a.bundle, path.join(tmp, 'containerd-direct.sock'), ownPool('direct'));
    const c = await TaskClient.connect(addr, NS);
    try {
      const pid = (await c.connect('c5')).shimPid;
      // It shows the Go shim's daemon line (src/shim/identity.ts), not its `-standby … -job-fd 3`.
      assert.deepEqual(argvOf(pid).slice(0, 7), [fs.realpathSync(OUR_SHIM_BIN), '-namespace', NS, '-id', 'c5', '-address', path.join(tmp, 'containerd-direct.sock')],
        'the daemon booted for this start shows the Go shim\'s daemon line');
      assert.equal(fs.readlinkSync(`/proc/${pid}/cwd`), a.bundle);
      await c.create({ id: 'c5', bundle: a.bundle, rootfs: [{ type: 'bind', source: rootfsSrc, target: '', options: ['rbind', 'ro'] }] });
      await c.start('c5');
      assert.equal((await c.wait('c5')).exitStatus, 0);
      await c.delete('c5');
      await c.shutdown('c5').catch(() => undefined);
      assert.ok(await waitGone(pid));
    } finally {
      c.close(); a.log.close();
    }
    // Another empty pool, and a `delete`: the process booted for it stays as a standby.
    const b = bundleFor('c6', ['true']);
    fs.writeFileSync(path.join(b.bundle, 'runtime'), ''); // as Create leaves it (`runc`)
    const grpc2 = path.join(tmp, 'containerd-direct2.sock');
    const d = await runShim(['-namespace', NS, '-address', grpc2, '-publish-binary', '/usr/bin/containerd', '-id', 'c6', '-bundle', b.bundle, 'delete'], { cwd: b.bundle, env: ownPool('direct2') });
    b.log.close();
    assert.equal(d.code, 0, d.stderr);
    assert.equal(DeleteResponse.decode(d.stdout).exitStatus, 137);
    const deadline = Date.now() + 20_000;
    let kept: number[] = [];
    while (Date.now() < deadline && (kept = standbys().filter((p) => !earlier.has(p) && argvOf(p).includes('-job-fd'))).length === 0) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(kept.length, 1, 'the delete job\'s process went on as a standby (cwd /, not the bundle)');
    for (const ok of await stopStandbys(standbys().filter((p) => !earlier.has(p)))) assert.ok(ok);
  });
  test('when the Node process booted for a job fails before taking it, the launcher runs the job in Node itself', T_OPTS, async () => {
    const earlier = new Set(standbys());
    // A node that refuses to be the launcher's direct standby, and is node otherwise.
    const fakeNode = path.join(tmp, 'node-no-direct');
    fs.writeFileSync(fakeNode, `#!/bin/sh\ncase "$*" in *-job-fd*) exit 3;; esac\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
    const a = bundleFor('c7', ['true']);
    const grpc = path.join(tmp, 'containerd-fallback.sock');
    const r = await runShim(['-namespace', NS, '-address', grpc, '-publish-binary', '/usr/bin/containerd', '-id', 'c7', 'start'],
      { cwd: a.bundle, env: { ...env, SHIM_NODE: fakeNode } });
    assert.equal(r.code, 0, r.stderr);
    const c = await TaskClient.connect(r.stdout.toString('utf8'), NS);
    try {
      const pid = (await c.connect('c7')).shimPid;
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      assert.ok(!argv.includes('-job-fd') && argv.includes('-id') && argv.includes('c7'), 'a daemon spawned by the Node start');
      await c.shutdown('c7').catch(() => undefined);
      assert.ok(await waitGone(pid));
    } finally {
      c.close(); a.log.close();
      await stopStandbys(standbys().filter((p) => !earlier.has(p)));
    }
  });
  test('one pool serves every containerd address: a standby booted for one daemon serves another, as a fresh shim would', T_OPTS, async () => {
    // The standby boots with another containerd's variables (as one spawned by that daemon's
    // shim does); the start comes from this test's (events.path, another -address).
    const mark = `cross-${process.pid}`;
    const elsewhere = path.join(tmp, 'elsewhere.sock.ttrpc');
    const main = path.join(repoRoot(), 'dist', 'shim', 'main.js');
    const jobEnv = { ...env, SHIM_TEST_POOL: mark };
    const bootEnv = { ...jobEnv, TTRPC_ADDRESS: elsewhere, GRPC_ADDRESS: path.join(tmp, 'elsewhere.sock'), NAMESPACE: 'elsewhere' };
    const post = `${poolBase({ uid: 0, gid: 0, entry: main, env: bootEnv })}-0`;
    assert.equal(post, `${poolBase({ uid: 0, gid: 0, entry: main, env: jobEnv })}-0`, 'the addresses key no pool');
    // Room for the daemon's command line, as every standby the pool spawns has (spawn.ts).
    const child = spawn(process.execPath, withTitleRoom(['--no-warnings', main, '-standby', post]), { env: bootEnv, stdio: 'ignore', cwd: '/' });
    const marked = () => fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
      try { return fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`SHIM_TEST_POOL=${mark}`); } catch { return false; }
    });
    const id = 'c9';
    const { bundle, log } = bundleFor(id, ['true']);
    try {
      const deadline = Date.now() + 20_000;
      while (!fs.existsSync(post) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(fs.existsSync(post), 'the standby took its post');
      const grpc = path.join(tmp, 'containerd-other.sock');
      const r = await runShim(['-namespace', NS, '-address', grpc, '-publish-binary', '/usr/bin/containerd', '-id', id, 'start'], { cwd: bundle, env: jobEnv });
      assert.equal(r.code, 0, r.stderr);
      const client = await TaskClient.connect(r.stdout.toString('utf8'), NS);
      try {
        const { shimPid } = await client.connect(id);
        assert.equal(shimPid, child.pid, 'the standby became the daemon');
        const argv = fs.readFileSync(`/proc/${shimPid}/cmdline`, 'utf8').split('\0');
        assert.equal(argv[argv.indexOf('-address') + 1], grpc, "it shows this job's -address");
        await client.create({ id, bundle, rootfs: [{ type: 'bind', source: rootfsSrc, target: '', options: ['rbind', 'ro'] }] });
        await client.start(id);
        assert.equal((await client.wait(id)).exitStatus, 0);
        await client.delete(id);
        // Its events go to this job's containerd (TTRPC_ADDRESS from the offer), in order.
        await events.until((envs) => envs.some((e) => e.topic === '/tasks/delete' && E.TaskDelete.decode(e.event!.value).containerId === id));
        const mine = events.envelopes.filter((e) => e.namespace === NS && ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete'].includes(e.topic))
          .filter((e) => (e.topic === '/tasks/create' ? E.TaskCreate : e.topic === '/tasks/start' ? E.TaskStart : e.topic === '/tasks/exit' ? E.TaskExit : E.TaskDelete).decode(e.event!.value).containerId === id);
        assert.deepEqual(mine.map((e) => e.topic), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
        await client.shutdown(id).catch(() => undefined);
        assert.ok(await waitGone(shimPid), 'daemon exits after Shutdown');
      } finally {
        client.close();
      }
      const d = await runShim(['-namespace', NS, '-address', grpc, '-publish-binary', '/usr/bin/containerd', '-id', id, '-bundle', bundle, 'delete'], { cwd: bundle, env: jobEnv });
      assert.equal(d.code, 0, d.stderr);
    } finally {
      log.close();
      if (child.exitCode === null) child.kill('SIGKILL');
      await stopStandbys(marked());
      fs.rmSync(post, { force: true });
      fs.rmSync(claimPath(post), { force: true });
    }
  });

});
