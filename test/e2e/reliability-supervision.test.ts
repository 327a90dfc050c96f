// SPDX-License-Identifier: Apache-2.0
// Reliability: supervision. The reaper under stress (many containers and execs exiting at once,
// execs that exit before runc has returned their pid), orphans re-parented to the shim, runc
// itself exiting or misbehaving, and pid reuse (a late Kill or State never reaches a recycled pid).
// Every exit must be delivered exactly once with the right status, no zombie may stay, and no
// call may hang. Sizes: CI by default, larger with SHIM_STRESS=full.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  ShimLab, stressSize, figures, formatFigures, settle, within, pool, childrenOf, workChildren, zombiesOf, isAlive, wchan,
  fdKinds, crashLines, sleep, exitEvents, uniqueId,
} from '../support/reliability.js';
import { TaskClient } from '../support/taskclient.js';
import { FifoReader, mkfifo } from '../support/fifo.js';
import { OUR_SHIM_BIN } from '../support/shimproc.js';
import { Status } from '../../src/gen/containerd/types/task.js';
import { TaskDelete } from '../../src/gen/containerd/events/task.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import { Code } from '../../src/ttrpc/index.js';

const RPC_MS = 30_000;
let lab: ShimLab;

before(async () => { lab = await ShimLab.create('relsup'); });
after(async () => { await lab.cleanup(); });

/** Opens and closes a fifo read-write: every reader blocked in open() then reads EOF. */
function releaseBarrier(fifo: string): void {
  fs.closeSync(fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK));
}

function sharedMount(dir: string) {
  return [{ destination: '/shared', type: 'bind', source: dir, options: ['rbind', 'rw'] }];
}

function runcOptions(binaryName: string) {
  return { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from(Options.encode(Options.fromPartial({ binaryName })).finish()) };
}

describe('reliability: supervision', () => {
  test('many containers and execs exit at once: every exit once, right status, no zombie, no hang', { timeout: 240_000 }, async (t) => {
    const C = stressSize(4, 16);
    const B = stressSize(6, 16); // execs per container released together by a barrier
    const Q = stressSize(6, 16); // execs per container that exit at once (often before runc exec returns)
    const barrierDir = path.join(lab.tmp, 'barrier');
    fs.mkdirSync(barrierDir);
    const go = mkfifo(path.join(barrierDir, 'go'));
    const ids = Array.from({ length: C }, (_, i) => uniqueId(`burst${i}`));
    const bundles = ids.map((id) => lab.bundle(id, { args: ['sleep', '100000'], mounts: sharedMount(barrierDir) }));
    const shim = await lab.startShim(ids[0], bundles[0]);
    const { client } = shim;
    // Warm-up: one container with an exec, so lazily opened things (the events connection, the
    // OOM watcher) are in the baseline.
    const warm = uniqueId('burstwarm');
    await client.create({ id: warm, bundle: lab.bundle(warm, { args: ['sleep', '100000'], mounts: sharedMount(barrierDir) }), rootfs: lab.rootfs });
    await client.start(warm);
    await client.exec({ id: warm, execId: 'w', spec: ShimLab.execSpec(['true']) });
    await client.start(warm, 'w');
    await client.wait(warm, 'w');
    await client.delete(warm, 'w');
    await client.kill(warm, 9);
    await client.wait(warm);
    await client.delete(warm);
    const base = await settle(() => figures(shim.pid), (f) => f.children === 0);

    await pool(ids, 4, async (id, i) => {
      await within(client.create({ id, bundle: bundles[i], rootfs: lab.rootfs }), RPC_MS, `Create ${id}`);
      await within(client.start(id), RPC_MS, `Start ${id}`);
    });
    const initPids = new Map<string, number>();
    for (const id of ids) initPids.set(id, (await client.state(id)).pid);

    // Expected status of every process; barrier execs block in open() of the fifo, quick ones exit at once.
    type P = { id: string; execId: string; status: number; barrier: boolean; pid?: number };
    const procs: P[] = [];
    ids.forEach((id, ci) => {
      for (let k = 0; k < B; k++) procs.push({ id, execId: `b${k}`, status: 1 + ((ci * B + k) % 120), barrier: true });
      for (let k = 0; k < Q; k++) procs.push({ id, execId: `q${k}`, status: 130 + ((ci * Q + k) % 120), barrier: false });
    });
    const waits = new Map<P, Promise<{ exitStatus: number }>>();
    // More connections, as containerd opens one per task.
    const clients = [client, await lab.connect(shim), await lab.connect(shim)];
    await pool(procs, 8, async (p, i) => {
      const c = clients[i % clients.length];
      const script = p.barrier ? `read x < /shared/go; exit ${p.status}` : `exit ${p.status}`;
      await within(c.exec({ id: p.id, execId: p.execId, spec: ShimLab.execSpec(['sh', '-c', script]) }), RPC_MS, `Exec ${p.execId}`);
      waits.set(p, c.wait(p.id, p.execId)); // Wait before Start: it must be released by the exit
      p.pid = (await within(c.start(p.id, p.execId), RPC_MS, `Start ${p.execId}`)).pid;
    });
    const blocked = procs.filter((p) => p.barrier);
    const ready = await settle(() => blocked.filter((p) => wchan(p.pid!) === 'wait_for_partner').length, (n) => n === blocked.length, 20_000);
    assert.equal(ready, blocked.length, 'every barrier exec is blocked on the barrier');
    const during = figures(shim.pid);
    releaseBarrier(go);

    const results = await within(Promise.all(procs.map((p) => waits.get(p)!)), 60_000, 'Wait of every exec');
    procs.forEach((p, i) => assert.equal(results[i].exitStatus, p.status, `${p.id}/${p.execId} status`));
    // Then the inits, all at once (killing them earlier would take the execs down with 137).
    await Promise.all(ids.map((id) => within(client.kill(id, 9), RPC_MS, `Kill ${id}`)));
    for (const id of ids) assert.equal((await within(client.wait(id), RPC_MS, `Wait ${id}`)).exitStatus, 137);

    const total = procs.length + ids.length;
    await lab.events.until((envs) => exitEvents(envs, lab.namespace).filter((e) => ids.includes(e.containerId)).length >= total);
    await sleep(300); // a duplicate would arrive right behind
    const exits = lab.exits().filter((e) => ids.includes(e.containerId));
    assert.equal(exits.length, total, 'one /tasks/exit per process');
    const seen = new Map<string, number>();
    for (const e of exits) seen.set(`${e.containerId}/${e.id}`, (seen.get(`${e.containerId}/${e.id}`) ?? 0) + 1);
    assert.ok([...seen.values()].every((n) => n === 1), 'no process reported twice');
    for (const p of procs) {
      const e = exits.find((x) => x.containerId === p.id && x.id === p.execId);
      assert.ok(e, `exit event of ${p.id}/${p.execId}`);
      assert.deepEqual([e.pid, e.exitStatus], [p.pid, p.status], `exit event of ${p.id}/${p.execId}`);
    }
    for (const id of ids) {
      const e = exits.find((x) => x.containerId === id && x.id === id);
      assert.deepEqual([e?.pid, e?.exitStatus], [initPids.get(id), 137], `init exit of ${id}`);
    }

    const zombies = await settle(() => zombiesOf(shim.pid).length, (n) => n === 0);
    assert.equal(zombies, 0, 'no zombie under the shim');
    await pool(procs, 8, (p) => within(client.delete(p.id, p.execId), RPC_MS, `Delete ${p.execId}`));
    for (const id of ids) await within(client.delete(id), RPC_MS, `Delete ${id}`);
    for (const c of clients.slice(1)) c.close();
    const end = await settle(() => figures(shim.pid), (f) => f.children === 0 && f.fds === base.fds);
    t.diagnostic(`burst: ${C} containers, ${procs.length} execs (${blocked.length} released together, ${procs.length - blocked.length} exiting at once), ${total} exits`);
    t.diagnostic(`shim before: ${formatFigures(base)}`);
    t.diagnostic(`shim during: ${formatFigures(during)}`);
    t.diagnostic(`shim after:  ${formatFigures(end)}`);
    assert.equal(end.children, 0, 'no child left');
    assert.equal(end.fds, base.fds, 'fds back to the starting count');
    assert.deepEqual(crashLines(shim.log.text), []);
  });

  test('orphans re-parented to the shim (host pid namespace) are reaped and never reported', { timeout: 60_000 }, async (t) => {
    const barrierDir = path.join(lab.tmp, 'barrier-orphans');
    fs.mkdirSync(barrierDir);
    const go = mkfifo(path.join(barrierDir, 'go'));
    const id = uniqueId('orphans');
    // The init backgrounds two children and exits once released; its children become orphans.
    const script = '(sleep 1000 &); (sleep 1001 &); read x < /shared/go; exit 3';
    const bundle = lab.bundle(id, { args: ['sh', '-c', script], hostPid: true, mounts: sharedMount(barrierDir) });
    const shim = await lab.startShim(id, bundle);
    const { client } = shim;
    await client.create({ id, bundle, rootfs: lab.rootfs });
    const { pid: init } = await client.start(id);
    const adopted = () => childrenOf(shim.pid).filter((c) => ['sleep\u00001000\u0000', 'sleep\u00001001\u0000'].includes(cmdline(c)));
    const orphans = await settle(adopted, (l) => l.length === 2);
    assert.equal(orphans.length, 2, 'the backgrounded children were re-parented to the shim');
    // An exec that backgrounds a child that exits on its own (status 9) after the exec (status 4).
    await client.exec({ id, execId: 'x1', spec: ShimLab.execSpec(['sh', '-c', '(usleep 300000; exit 9) & exit 4']) });
    const { pid: execPid } = await client.start(id, 'x1');
    assert.equal((await within(client.wait(id, 'x1'), RPC_MS, 'Wait x1')).exitStatus, 4);
    // The exec's backgrounded child, re-parented to the shim, exits with 9 and is reaped.
    await settle(() => childrenOf(shim.pid).filter((c) => c !== init && !orphans.includes(c)), (l) => l.length === 0, 10_000);
    releaseBarrier(go);
    assert.equal((await within(client.wait(id), RPC_MS, 'Wait init')).exitStatus, 3);
    // The shim's kill-all (host pid namespace) took the orphans down; they were reaped.
    const left = await settle(() => workChildren(shim.pid), (l) => l.length === 0);
    assert.deepEqual(left, [], 'no child left under the shim');
    for (const o of orphans) assert.equal(isAlive(o), false, `orphan ${o} gone`);
    await client.delete(id, 'x1');
    await client.delete(id);
    // Events go out in order: once the /tasks/delete is in, any exit published before it is too.
    await lab.events.until((envs) => envs.some((e) => e.namespace === lab.namespace && e.topic === '/tasks/delete' &&
      TaskDelete.decode(e.event!.value).containerId === id));
    const exits = lab.exits().filter((e) => e.containerId === id);
    assert.deepEqual(exits.map((e) => [e.id, e.pid, e.exitStatus]), [['x1', execPid, 4], [id, init, 3]],
      'only the init and the exec are reported, once each; the orphans (9, 137) are not');
    assert.deepEqual(zombiesOf(shim.pid), []);
    t.diagnostic(`orphans: ${orphans.length} adopted by the shim and reaped, 1 self-exiting orphan ignored; shim ${formatFigures(figures(shim.pid))}`);
    await client.shutdown(id).catch(() => undefined);
  });

  test('runc itself exiting oddly: leaving a child holding its output, or dying from a signal, never hangs a call', { timeout: 60_000 }, async (t) => {
    const wrapper = path.join(lab.tmp, 'odd-runc');
    fs.writeFileSync(wrapper, [
      '#!/bin/sh',
      'for a; do case "$a" in',
      '  pause) (sleep 2) & exit 0 ;;   # exits 0, a child keeps its stdout/stderr pipe open',
      '  resume) kill -KILL $$ ;;       # dies from SIGKILL',
      'esac; done',
      'exec /usr/sbin/runc "$@"',
      '',
    ].join('\n'), { mode: 0o755 });
    const id = uniqueId('oddrunc');
    const bundle = lab.bundle(id, { args: ['sleep', '100000'] });
    const shim = await lab.startShim(id, bundle);
    const { client } = shim;
    await client.create({ id, bundle, rootfs: lab.rootfs, options: runcOptions(wrapper) });
    await client.start(id);
    const t0 = Date.now();
    await within(client.pause(id), 10_000, 'Pause through a runc that leaves a child behind');
    const pauseMs = Date.now() - t0;
    await assert.rejects(within(client.resume(id), 10_000, 'Resume through a runc killed by SIGKILL'),
      (e: Error) => /137/.test(e.message), 'runc killed by a signal: an error with status 137');
    // The shim still works: kill the container (its exit handling runs `resume` again, which dies again).
    await within(client.kill(id, 9), RPC_MS, 'Kill');
    assert.equal((await within(client.wait(id), RPC_MS, 'Wait')).exitStatus, 137);
    await within(client.delete(id), RPC_MS, 'Delete');
    // The runc's child (sleep 2) was re-parented to the shim and reaped.
    const left = await settle(() => workChildren(shim.pid), (l) => l.length === 0, 8000);
    assert.deepEqual(left, [], 'no child or zombie left');
    t.diagnostic(`odd runc: Pause answered after ${pauseMs} ms with runc's child still holding the pipe; Resume failed with 137; shim ${formatFigures(figures(shim.pid))}`);
    await client.shutdown(id).catch(() => undefined);
  });

  test('a runc that never exits is killed after the time limit: the call fails, the shim keeps serving', { timeout: 60_000 }, async (t) => {
    const wrapper = path.join(lab.tmp, 'hung-runc');
    fs.writeFileSync(wrapper, [
      '#!/bin/sh',
      'for a; do case "$a" in',
      '  pause) exec sleep 100000 ;;   # never returns',
      'esac; done',
      'exec /usr/sbin/runc "$@"',
      '',
    ].join('\n'), { mode: 0o755 });
    const id = uniqueId('hungrunc');
    const bundle = lab.bundle(id, { args: ['sleep', '100000'] });
    // A daemon of its own (no standby), with a short limit.
    const shim = await lab.startShim(id, bundle, { env: { SHIM_STANDBY: '0', SHIM_RUNC_TIMEOUT_MS: '1500' } });
    const { client } = shim;
    await client.create({ id, bundle, rootfs: lab.rootfs, options: runcOptions(wrapper) });
    await client.start(id);
    const t0 = Date.now();
    await assert.rejects(within(client.pause(id), 10_000, 'Pause through a runc that hangs'),
      (e: Error) => /did not finish within 1.5 s/.test(e.message), 'a clear error once runc is killed');
    const ms = Date.now() - t0;
    assert.ok(ms >= 1400, `waited for the limit (${ms} ms)`);
    assert.equal((await within(client.state(id), RPC_MS, 'State')).status, 2, 'still RUNNING and still served');
    await within(client.kill(id, 9), RPC_MS, 'Kill');
    assert.equal((await within(client.wait(id), RPC_MS, 'Wait')).exitStatus, 137);
    await within(client.delete(id), RPC_MS, 'Delete');
    const left = await settle(() => workChildren(shim.pid), (l) => l.length === 0, 8000);
    assert.deepEqual(left, [], 'the hung runc was killed and reaped');
    t.diagnostic(`hung runc: Pause failed after ${ms} ms; shim ${formatFigures(figures(shim.pid))}`);
    await client.shutdown(id).catch(() => undefined);
  });

  test('pid reuse: Kill and State of an exited process never reach the process that got its pid', { timeout: 90_000 }, async (t) => {
    const id = uniqueId('pidreuse');
    const ns = await daemonInPidNamespace(id, lab.bundle(id, { args: ['sleep', '100000'] }));
    const { client, daemon } = ns;
    try {
      await client.create({ id, bundle: ns.bundle });
      const { pid: initPid } = await client.start(id);
      await client.exec({ id, execId: 'e1', spec: ShimLab.execSpec(['sleep', '100000']) });
      const { pid: execPid } = await client.start(id, 'e1');
      const pidfdsRunning = fdKinds(daemon).pidfd ?? 0;
      assert.equal(pidfdsRunning, 2, 'one pidfd per tracked process (init + exec)');
      await client.kill(id, 9, { execId: 'e1' }); // a live exec is signalled through its pidfd
      assert.equal((await client.wait(id, 'e1')).exitStatus, 137);
      assert.equal(fdKinds(daemon).pidfd ?? 0, 1, "the exec's pidfd is released at its exit");

      const victim1 = await pidTaker(daemon, execPid);
      try {
        await assert.rejects(client.kill(id, 9, { execId: 'e1' }), (e: { code: Code }) => e.code === Code.NotFound, 'late Kill of the exec');
        const st = await client.state(id, 'e1');
        assert.deepEqual([st.status, st.pid, st.exitStatus], [Status.STOPPED, execPid, 137], 'State of the exec is its own exit');
        await sleep(200);
        assert.ok(isAlive(victim1.hostPid), `the process that now has pid ${execPid} was not signalled`);
      } finally {
        victim1.stop();
      }

      await client.kill(id, 9);
      assert.equal((await client.wait(id)).exitStatus, 137);
      const victim2 = await pidTaker(daemon, initPid);
      try {
        await assert.rejects(client.kill(id, 9), (e: { code: Code }) => e.code === Code.NotFound, 'late Kill of the init');
        // --all goes by the container's cgroup (runc), which the new process is not in: a no-op.
        await client.kill(id, 9, { all: true });
        const st = await client.state(id);
        assert.deepEqual([st.status, st.pid, st.exitStatus], [Status.STOPPED, initPid, 137]);
        await sleep(200);
        assert.ok(isAlive(victim2.hostPid), `the process that now has pid ${initPid} was not signalled`);
      } finally {
        victim2.stop();
      }
      assert.equal(fdKinds(daemon).pidfd ?? 0, 0, 'no pidfd held once both exited');
      await client.delete(id, 'e1');
      await client.delete(id);
      t.diagnostic(`pid reuse: exec pid ${execPid} and init pid ${initPid} handed to new processes; late Kill -> NotFound, State -> STOPPED/137, both new processes untouched; pidfds held: 2 while running, 0 after`);
      assert.deepEqual(crashLines(ns.log.text), []);
    } finally {
      ns.stop();
    }
  });

  test('pid reuse: an unknown exit kept while a start is in flight is never matched to a later process that got the same pid', { timeout: 90_000 }, async (t) => {
    // A runc wrapper whose `exec` of "fake" plays a worst case: while the start is in flight an
    // orphan the shim adopted exits (status 3) and is reaped; then the exec's process is started
    // with that very pid (ns_last_pid) and written to the pid file, as runc would.
    const dir = fs.mkdtempSync(path.join(lab.tmp, 'stale-'));
    const wrapper = path.join(dir, 'runc');
    fs.writeFileSync(wrapper, [
      '#!/bin/sh',
      'prev=; pidfile=; isexec=',
      'for a; do [ "$prev" = --pid-file ] && pidfile=$a; [ "$a" = exec ] && isexec=1; prev=$a; done',
      'case "$isexec$pidfile" in',
      '  1*/fake.pid)',
      `    x=$( (sh -c 'exit 3' </dev/null >/dev/null 2>&1 & echo $!) )`,
      `    echo $x > ${dir}/orphan`,
      '    while [ -e /proc/$x ]; do sleep 0.01; done',
      '    sleep 0.3',
      '    echo $((x - 1)) > /proc/sys/kernel/ns_last_pid',
      '    sleep 100000 </dev/null >/dev/null 2>&1 &',
      '    echo $! > "$pidfile"',
      '    exit 0 ;;',
      'esac',
      'exec /usr/sbin/runc "$@"',
      '',
    ].join('\n'), { mode: 0o755 });
    const id = uniqueId('stale');
    const ns = await daemonInPidNamespace(id, lab.bundle(id, { args: ['sleep', '100000'] }));
    const { client } = ns;
    try {
      await client.create({ id, bundle: ns.bundle, options: runcOptions(wrapper) });
      await client.start(id);
      await client.exec({ id, execId: 'fake', spec: ShimLab.execSpec(['sleep', '100000']) });
      const { pid } = await client.start(id, 'fake');
      const orphan = Number(fs.readFileSync(path.join(dir, 'orphan'), 'utf8'));
      assert.equal(pid, orphan, 'the exec got the pid of the orphan that exited during its start');
      let settled: number | undefined;
      const waited = client.wait(id, 'fake').then((r) => { settled = r.exitStatus; return r; });
      await sleep(500);
      assert.equal(settled, undefined, "the orphan's exit (3) was not taken for the exec's");
      assert.equal((await client.state(id, 'fake')).status, Status.RUNNING);
      await client.kill(id, 9, { execId: 'fake' });
      assert.equal((await within(waited, 10_000, 'Wait fake')).exitStatus, 137, 'its own exit is reported');
      await client.kill(id, 9);
      await client.wait(id);
      t.diagnostic(`stale exit: orphan pid ${orphan} exited (3) during the exec's start; the exec that got pid ${pid} was reported only at its own exit (137)`);
      assert.deepEqual(crashLines(ns.log.text), []);
    } finally {
      ns.stop();
    }
  });
});

/**
 * Runs the daemon (serve mode, -socket) in a fresh pid and mount namespace, so the test can hand
 * a dead process's pid to a new one by writing /proc/sys/kernel/ns_last_pid there. The container
 * uses the busybox tree as its root directly (no rootfs mount in the private mount namespace).
 */
async function daemonInPidNamespace(id: string, bundle: string) {
  const cfgFile = path.join(bundle, 'config.json');
  const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  cfg.root = { path: lab.rootfsSrc, readonly: true };
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  const log = new FifoReader(mkfifo(path.join(bundle, 'log')));
  const socket = path.join(lab.tmp, `${id}.sock`);
  const unshare: ChildProcess = spawn('unshare', ['--pid', '--fork', '--mount-proc', OUR_SHIM_BIN,
    '-namespace', lab.namespace, '-id', id, '-socket', socket], { cwd: bundle, env: lab.env, stdio: 'ignore' });
  lab.trackPid(unshare.pid!);
  lab.track(id);
  const c = await settle(() => fs.existsSync(socket) ? childrenOf(unshare.pid!) : [], (l) => l.length === 1, 10_000);
  const daemon = c[0];
  lab.trackPid(daemon);
  const client = await TaskClient.connect(socket, lab.namespace);
  assert.equal((await client.connect(id)).shimPid, 1, 'the daemon is pid 1 of its namespace');
  const stop = () => {
    client.close();
    try { process.kill(daemon, 'SIGKILL'); } catch { /* gone */ }
    log.close();
  };
  return { client, daemon, bundle, log, stop };
}

function cmdline(pid: number): string {
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return ''; }
}

/**
 * Starts a process that gets pid `want` in the pid namespace of `nsPid` (ns_last_pid = want - 1,
 * then fork). Returns its host pid and a stop function (kills it by pid).
 */
async function pidTaker(nsPid: number, want: number): Promise<{ hostPid: number; stop: () => void }> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const child = spawn('nsenter', ['-t', String(nsPid), '-p', '-m', 'sh', '-c',
      'echo $(($1 - 1)) > /proc/sys/kernel/ns_last_pid; sleep 1000 & echo $!; wait', 'sh', String(want)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
    const out = await new Promise<string>((resolve) => {
      let s = '';
      child.stdout.on('data', (d: Buffer) => { s += d.toString(); if (s.includes('\n')) resolve(s.trim()); });
      child.once('exit', () => resolve(s.trim()));
    });
    const sh = await settle(() => childrenOf(child.pid!), (l) => l.length === 1, 3000);
    const sleepPid = await settle(() => (sh[0] ? childrenOf(sh[0]) : []), (l) => l.length === 1, 3000);
    const hostPid = sleepPid[0];
    const stop = () => { try { process.kill(hostPid, 'SIGKILL'); } catch { /* gone */ } };
    if (Number(out) === want && hostPid) return { hostPid, stop };
    stop();
  }
  throw new Error(`could not hand pid ${want} to a new process`);
}
