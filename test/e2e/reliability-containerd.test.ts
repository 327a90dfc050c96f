// SPDX-License-Identifier: Apache-2.0
// Reliability with a real containerd driving our shim: the shim SIGKILLed while its container
// runs (containerd runs `delete`, which cleans up and reports 137), and containerd itself
// restarted while containers run (the shim keeps serving, containerd reconnects, exits that
// happened meanwhile are still reported to it).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startContainerd, leftovers, waitFor, waitForNoLeftovers, type Containerd } from '../support/containerd.js';
import { ensureBusyboxImage } from '../support/image.js';
import { OUR_SHIM } from '../support/shims.js';
import { mkfifo } from '../support/fifo.js';
import { isAlive, figures, formatFigures, sleep, settle, standbysOf } from '../support/reliability.js';

// containerd at debug level logs every event a shim forwards ("event forwarded").
process.env.SHIM_TEST_DEBUG = '1';

const NS = `relctd${process.pid}`;
const CTR_MS = 40_000;
let c: Containerd;
let image: string;
let shared: string;
const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
let seq = 0;
const newId = (what: string) => `rel-${what}-${unique}-${++seq}`;

before(async () => {
  c = await startContainerd();
  image = await ensureBusyboxImage(c, [NS]);
  shared = fs.mkdtempSync(path.join(c.dir, 'shared-'));
}, { timeout: 120_000 });

after(async () => {
  // Standby daemons our shims left for this containerd: stop() kills them; remove their posts.
  const posts = c ? standbysOf(c.ttrpcAddress).map((s) => s.post) : [];
  await c?.stop();
  for (const p of posts) fs.rmSync(p, { force: true });
  try { fs.rmdirSync(`/run/containerd/runc/${NS}`); } catch { /* not empty, or never made */ }
}, { timeout: 60_000 });

function ctr(args: string[], allowFail = true) {
  return c.ctr(['-n', NS, ...args], { timeoutMs: CTR_MS, allowFail });
}

async function taskRow(id: string): Promise<{ pid: number; status: string } | undefined> {
  const r = await ctr(['task', 'ls']);
  for (const line of r.stdout.split('\n').slice(1)) {
    const [task, pid, status] = line.trim().split(/\s+/);
    if (task === id && pid !== undefined) return { pid: Number(pid), status: status };
  }
  return undefined;
}

function ppid(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** `ctr events`, subscribed before it returns. */
async function eventWatcher(): Promise<{ text: () => string; stop: () => Promise<void> }> {
  const proc: ChildProcess = c.ctrSpawn(['events']);
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const marker = `relsync${unique}${++seq}`;
  const ok = await waitFor(async () => {
    await c.ctr(['namespaces', 'create', marker], { allowFail: true });
    await c.ctr(['namespaces', 'remove', marker], { allowFail: true });
    return waitFor(() => out.includes(marker), 1000);
  }, 15_000, 0);
  assert.ok(ok, 'ctr events subscribed');
  return {
    text: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.pid) try { process.kill(proc.pid, 'SIGTERM'); } catch { /* gone */ }
      await exited;
    },
  };
}

function events(text: string, id: string): { topic: string; event: Record<string, unknown> }[] {
  const res: { topic: string; event: Record<string, unknown> }[] = [];
  for (const line of text.split('\n')) {
    const m = /^\S+ \S+ [+-]\d{4} \S+ (\S+) (\/\S+) ?(.*)$/.exec(line.trim());
    if (!m || m[1] !== NS) continue;
    let event: Record<string, unknown> = {};
    try { event = JSON.parse(m[3] || '{}') as Record<string, unknown>; } catch { /* not json */ }
    if (event.container_id === id || event.id === id) res.push({ topic: m[2], event });
  }
  return res;
}

/** Stops containerd (SIGKILL) and, after `whileDown`, starts it again on the same config and state. */
async function restartContainerd(whileDown: () => Promise<void>): Promise<void> {
  const inst = c as unknown as {
    pid: number; exited: Promise<void>; hasExited: boolean; resolveExited: () => void;
    start(): void; waitReady(ms: number): Promise<void>;
  };
  process.kill(inst.pid, 'SIGKILL');
  await inst.exited;
  await whileDown();
  inst.hasExited = false;
  inst.exited = new Promise((r) => { inst.resolveExited = r; });
  inst.start();
  await inst.waitReady(20_000);
}

describe('reliability with a real containerd', () => {
  test('the shim SIGKILLed: containerd runs `delete`, reports exit 137, and nothing is left behind', { timeout: 90_000 }, async (t) => {
    const id = newId('kill9');
    const watcher = await eventWatcher();
    try {
      const r = await c.ctr(['-n', NS, 'run', '-d', '--runtime', OUR_SHIM, image, id, 'sleep', '100000'], { timeoutMs: CTR_MS, allowFail: true });
      assert.equal(r.code, 0, r.stderr);
      const row = await taskRow(id);
      assert.equal(row?.status, 'RUNNING');
      const init = row.pid;
      const shimPid = ppid(init);
      const bundle = path.join(c.state, 'io.containerd.runtime.v2.task', NS, id);
      // Our daemon shows the Go shim's command line, with our binary's path (src/shim/identity.ts).
      assert.equal(fs.readFileSync(`/proc/${shimPid}/cmdline`, 'utf8').split('\0')[0], fs.realpathSync(OUR_SHIM), 'the init is a child of our shim');
      const live = leftovers(c, [{ namespace: NS, id }]);
      assert.ok(live.mounts.includes(path.join(bundle, 'rootfs')));
      process.kill(shimPid, 'SIGKILL');
      await waitFor(() => events(watcher.text(), id).some((e) => e.topic === '/tasks/delete'), 20_000);
      const evs = events(watcher.text(), id);
      const exit = evs.find((e) => e.topic === '/tasks/exit');
      assert.equal(exit?.event.exit_status, 137, `containerd reports 137: ${JSON.stringify(evs)}`);
      assert.equal(exit?.event.pid, init);
      const gone = await settle(() => isAlive(init), (a) => !a, 10_000);
      assert.equal(gone, false, 'the container was killed by `delete`');
      assert.equal(await taskRow(id), undefined, 'the task is gone');
      await ctr(['container', 'rm', id], false);
      const left = await waitForNoLeftovers(c, [{ namespace: NS, id }], 10_000);
      t.diagnostic(`shim ${shimPid} SIGKILLed: containerd published ${evs.map((e) => e.topic).join(', ')} (exit ${exit?.event.exit_status}); left: ${JSON.stringify(left)}`);
      assert.deepEqual({ ...left, shims: [] }, { shims: [], mounts: [], taskDirs: [], runcStateDirs: [], sockets: [], cgroups: [] },
        'no mount, bundle, runc state, socket or cgroup left');
    } finally {
      await watcher.stop();
    }
  });

  test('containerd restarted while containers run: the shim keeps serving, containerd reconnects, the exit that happened meanwhile is reported', { timeout: 120_000 }, async (t) => {
    const id1 = newId('outage');
    const id2 = newId('survivor');
    const go = mkfifo(path.join(shared, `go-${id1}`));
    const run = (id: string, args: string[]) => c.ctr(['-n', NS, 'run', '-d', '--runtime', OUR_SHIM,
      '--mount', `type=bind,src=${shared},dst=/shared,options=rbind:rw`, image, id, ...args], { timeoutMs: CTR_MS, allowFail: true });
    assert.equal((await run(id1, ['sh', '-c', `read x < /shared/${path.basename(go)}; exit 7`])).code, 0);
    assert.equal((await run(id2, ['sleep', '100000'])).code, 0);
    const r1 = (await taskRow(id1))!;
    const r2 = (await taskRow(id2))!;
    const shim1 = ppid(r1.pid);
    const shim2 = ppid(r2.pid);
    const before1 = figures(shim1);
    let logFrom = 0;
    await restartContainerd(async () => {
      // While containerd is down: the container exits (status 7); its shim reaps it and queues the events.
      fs.closeSync(fs.openSync(go, fs.constants.O_RDWR | fs.constants.O_NONBLOCK));
      await settle(() => isAlive(r1.pid), (a) => !a, 10_000);
      await settle(() => fs.existsSync(`/proc/${r1.pid}`), (e) => !e, 10_000); // reaped by its shim
      logFrom = fs.statSync(c.logPath).size;
    });
    assert.ok(isAlive(shim1) && isAlive(shim2), 'both shims outlived containerd');

    // containerd reconnected to the running shims: state, exec and kill go through.
    assert.equal((await taskRow(id1))?.status, 'STOPPED', 'the exit that happened while containerd was down is known');
    assert.equal((await taskRow(id2))?.status, 'RUNNING');
    const ex = await ctr(['task', 'exec', '--exec-id', 'after', id2, 'sh', '-c', 'echo still-serving']);
    assert.equal(ex.stdout, 'still-serving\n', `exec through the reconnected shim: ${ex.stderr}`);
    // The /tasks/exit the shim could not deliver while containerd was down was forwarded after.
    const forwarded = () => fs.readFileSync(c.logPath, 'utf8').slice(logFrom).split('\n')
      .filter((l) => l.includes('event forwarded') && l.includes(`ns=${NS}`));
    await waitFor(() => forwarded().some((l) => l.includes('topic=/tasks/exit')), 15_000, 200);
    const exitsForwarded = forwarded().filter((l) => l.includes('topic=/tasks/exit'));
    // (The shim retries opening its log fifo at most once a second while containerd is away.)
    await sleep(1200);
    assert.ok(exitsForwarded.length >= 1, 'the queued /tasks/exit reached containerd after its restart');
    // Its status, as containerd sees it.
    const del = await ctr(['task', 'delete', id1]);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stderr, /exit with non-zero exit code 7/);
    // The shim's own log reaches containerd again after the restart (containerd re-opened the fifo).
    const shimLines = () => fs.readFileSync(c.logPath, 'utf8').slice(logFrom).split('\n').filter((l) => l.includes(' runtime=io.containerd.runc.v2'));
    await ctr(['task', 'kill', '-s', 'SIGKILL', id2], false);
    await waitFor(async () => (await taskRow(id2))?.status === 'STOPPED', 10_000, 100);
    await waitFor(() => shimLines().length > 0, 5000, 100);
    await ctr(['task', 'delete', id2]);
    await ctr(['container', 'rm', id1], false);
    await ctr(['container', 'rm', id2], false);
    const left = await waitForNoLeftovers(c, [{ namespace: NS, id: id1 }, { namespace: NS, id: id2 }], 10_000);
    const shimsGone = await settle(() => [shim1, shim2].filter(isAlive), (l) => l.length === 0, 10_000);
    // Both shims logged during the outage (shim 1 its container's exit) and after it (delete, shutdown).
    const logged = shimLines();
    const fromShim1 = logged.filter((l) => l.includes(` id=${id1}`));
    t.diagnostic(`containerd restarted: shims ${shim1}, ${shim2} kept running (shim1 before: ${formatFigures(before1)}); ` +
      `${exitsForwarded.length} /tasks/exit forwarded after the restart; ctr task delete -> exit code 7; exec after restart OK; ` +
      `${logged.length} shim log lines (${fromShim1.length} from shim 1) reached containerd after the restart`);
    assert.ok(fromShim1.length > 0, "the log of a shim that logged while containerd was down reaches the restarted containerd");
    assert.deepEqual({ ...left, shims: [] }, { shims: [], mounts: [], taskDirs: [], runcStateDirs: [], sockets: [], cgroups: [] });
    assert.deepEqual(shimsGone, [], 'both shims exited after delete');
  });
});
