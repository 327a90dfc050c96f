// SPDX-License-Identifier: Apache-2.0
// Opt-in shared daemons (SHIM_SHARED=1 in containerd's environment, docs/shared-daemon.md): one
// Node process serves the shim sockets of several containers, each with its own Task service,
// state and events. What containerd and ctr see must be what they see of one daemon per
// container: outputs, exit codes, events, and nothing left; what changes is only how many
// processes there are, and that a dying daemon takes all its tenants with it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pidAlive, startContainerd, waitFor, waitForNoLeftovers, NOTHING_LEFT, type Containerd } from '../support/containerd.js';
import { ensureBusyboxImage } from '../support/image.js';
import { OUR_SHIM } from '../support/shims.js';
import { listenerPid, stalePosts } from '../support/shared.js';

const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
const NS = 'default';

/** The pid of the process listening on the shim socket of `id` (read from its bundle's ./address). */
function servingPid(c: Containerd, id: string): number | undefined {
  try { return listenerPid(fs.readFileSync(path.join(c.state, 'io.containerd.runtime.v2.task', NS, id, 'address'), 'utf8').replace(/^unix:\/\//, '')); } catch { return undefined; }
}

describe('shared daemons (SHIM_SHARED=1, our shim)', { skip: process.env.SHIM_UNDER_TEST === 'reference' }, () => {
  let c: Containerd;
  let image: string;
  before(async () => {
    // SHIM_SHARED_TENANTS=3: the bound is reached with few containers.
    // SHIM_SHARED_IDLE_MS: an idle daemon waits 3 s for its next tenant, then exits.
    c = await startContainerd({ env: { SHIM_SHARED: '1', SHIM_SHARED_TENANTS: '3', SHIM_SHARED_IDLE_MS: '3000', SHIM_TEST_POOL: `shared-${unique}` } });
    image = await ensureBusyboxImage(c);
  });
  after(async () => { await c?.stop(); });

  const runDetached = async (id: string) => {
    await c.ctr(['run', '-d', '--null-io', '--runtime', OUR_SHIM, image, id, 'sleep', '100000']);
    return (await waitFor(() => servingPid(c, id), 5000))!;
  };
  const remove = async (id: string) => {
    await c.ctr(['task', 'kill', '-s', 'KILL', id], { allowFail: true });
    await waitFor(async () => (await c.ctr(['task', 'rm', id], { allowFail: true })).code === 0 || undefined, 10_000);
    await c.ctr(['container', 'rm', id]);
  };

  it('serves up to the bound of containers from one process, each with its own exits, and exits after the last', { timeout: 120_000 }, async () => {
    const ids = ['a', 'b', 'c', 'd'].map((x) => `sh-${unique}-${x}`);
    const pids: number[] = [];
    for (const id of ids) pids.push(await runDetached(id));
    // Three tenants in the first daemon; the fourth start found it full and got a daemon of its own.
    assert.equal(pids[1], pids[0], 'the second container joined the first one\'s daemon');
    assert.equal(pids[2], pids[0], 'the third too');
    assert.notEqual(pids[3], pids[0], 'the fourth found it full');
    // The launcher offered the second and third `start` to the shared daemon, which ran them
    // in-process (no Node boot for them): its log says so for each.
    const logged = c.logTail(1 << 20);
    for (const id of ids.slice(1, 3)) assert.match(logged, new RegExp(`shim started \\(shared, start run by the launcher\\)"[^\\n]*${id}`), `${id}'s start ran in the shared daemon`);

    // A short container joins while the first daemon has room again (after one leaves), and
    // gets its own output and exit status.
    await remove(ids[0]);
    assert.ok(pidAlive(pids[0]), 'removing one tenant leaves the daemon serving the others');
    const short = `sh-${unique}-short`;
    const r = await c.ctr(['run', '--rm', '--runtime', OUR_SHIM, image, short, 'sh', '-c', 'echo out; echo err >&2; exit 7'], { allowFail: true });
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, 'out\n');
    // Others still answer, with their own state.
    const ls = (await c.ctr(['task', 'ls'])).stdout;
    for (const id of ids.slice(1)) assert.match(ls, new RegExp(`${id}\\s+\\d+\\s+RUNNING`));
    const ex = await c.ctr(['task', 'exec', '--exec-id', 'e1', ids[1], 'sh', '-c', 'exit 5'], { allowFail: true });
    assert.equal(ex.code, 5);

    for (const id of ids.slice(1)) await remove(id);
    await waitFor(() => (!pidAlive(pids[0]) && !pidAlive(pids[3])) || undefined, 10_000);
    assert.deepEqual(await waitForNoLeftovers(c, [...ids, short]), { ...NOTHING_LEFT });
    assert.deepEqual(stalePosts(), [], 'no shared post left');
  });

  it('a daemon whose last tenant left waits on its post for the next one, showing no container, then exits', { timeout: 60_000 }, async () => {
    const first = `sh-${unique}-idle1`;
    const next = `sh-${unique}-idle2`;
    const d = await runDetached(first);
    await remove(first);
    // Idle: alive, no -id in its command line (ps and leftover checks see no container), cwd /.
    const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
    assert.ok(argv.includes('-shared') && !argv.includes('-id'), `idle title: ${argv.join(' ')}`);
    assert.equal(fs.readlinkSync(`/proc/${d}/cwd`), '/');
    assert.equal(await runDetached(next), d, 'the next container joined the idle daemon');
    assert.ok(fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').includes(next), 'it shows that container again');
    await remove(next);
    await waitFor(() => !pidAlive(d) || undefined, 10_000);
    assert.deepEqual(await waitForNoLeftovers(c, [first, next]), { ...NOTHING_LEFT });
    assert.deepEqual(stalePosts(), [], 'no shared post left');
  });

  it('pods (groups) are tenants: two pods of two containers share one daemon, one socket per pod', { timeout: 120_000 }, async () => {
    const pods = [0, 1].map((p) => ({ group: `pod${p}-${unique}`, ids: [0, 1].map((i) => `sh-${unique}-p${p}c${i}`) }));
    const pids = new Map<string, number>();
    for (const pod of pods) {
      for (const id of pod.ids) {
        await c.ctr(['run', '-d', '--null-io', '--annotation', `io.containerd.runc.v2.group=${pod.group}`, '--runtime', OUR_SHIM, image, id, 'sleep', '100000']);
        pids.set(id, (await waitFor(() => servingPid(c, id), 5000))!);
      }
    }
    const all = pods.flatMap((p) => p.ids);
    assert.equal(new Set(pids.values()).size, 1, `one daemon for both pods: ${JSON.stringify([...pids])}`);
    const sockets = all.map((id) => fs.readFileSync(path.join(c.state, 'io.containerd.runtime.v2.task', NS, id, 'address'), 'utf8'));
    assert.equal(sockets[0], sockets[1], 'a pod\'s containers share its socket');
    assert.notEqual(sockets[0], sockets[2], 'each pod has its own socket');
    for (const id of all) await remove(id);
    assert.deepEqual(await waitForNoLeftovers(c, all), { ...NOTHING_LEFT });
    await waitFor(() => !pidAlive(pids.get(all[0])!) || undefined, 10_000);
  });

  it('a containerd restart: every tenant of a shared daemon is reloaded and served', { timeout: 120_000 }, async () => {
    const ids = ['r1', 'r2', 'r3'].map((x) => `sh-${unique}-${x}`);
    const pids: number[] = [];
    for (const id of ids) pids.push(await runDetached(id));
    assert.equal(new Set(pids).size, 1, 'one daemon');
    await c.restart();
    const ls = (await c.ctr(['task', 'ls'])).stdout;
    for (const id of ids) assert.match(ls, new RegExp(`${id}\\s+\\d+\\s+RUNNING`), `${id} after the restart`);
    for (const [i, id] of ids.entries()) {
      const ex = await c.ctr(['task', 'exec', '--exec-id', `x${i}`, id, 'sh', '-c', `exit ${i + 2}`], { allowFail: true });
      assert.equal(ex.code, i + 2, `${id} serves exec after the restart`);
    }
    assert.ok(pidAlive(pids[0]), 'the same daemon');
    for (const id of ids) await remove(id);
    assert.deepEqual(await waitForNoLeftovers(c, ids), { ...NOTHING_LEFT });
  });

  it('a daemon killed with three tenants: each gets its exit, containerd cleans each up, nothing is left', { timeout: 120_000 }, async () => {
    const ids = ['k1', 'k2', 'k3'].map((x) => `sh-${unique}-${x}`);
    const events = c.ctrSpawn(['events']);
    let seen = '';
    events.stdout?.on('data', (d: Buffer) => { seen += d.toString(); });
    try {
      const pids: number[] = [];
      for (const id of ids) pids.push(await runDetached(id));
      assert.deepEqual(new Set(pids).size, 1, 'one daemon');
      process.kill(pids[0], 'SIGKILL');
      // containerd runs `delete` for every socket the daemon served: each task exits (137) and is deleted.
      for (const id of ids) {
        await waitFor(() => new RegExp(`/tasks/exit .*"container_id":"${id}".*"exit_status":137`).test(seen) || undefined, 20_000);
        await waitFor(() => new RegExp(`/tasks/delete .*"container_id":"${id}"`).test(seen) || undefined, 20_000);
      }
      for (const id of ids) await c.ctr(['container', 'rm', id]);
      assert.deepEqual(await waitForNoLeftovers(c, ids), { ...NOTHING_LEFT });
    } finally {
      events.kill();
    }
  });
});

/** Tenants of the killed daemon: the default bound, or SHARED_KILL_TENANTS (up to the maximum, 32) by hand. */
const KILL_N = Number(process.env.SHARED_KILL_TENANTS) || 8;

describe('a shared daemon at its bound killed (our shim)', { skip: process.env.SHIM_UNDER_TEST === 'reference' }, () => {
  let c: Containerd;
  let image: string;
  before(async () => {
    c = await startContainerd({ env: { SHIM_SHARED: '1', SHIM_SHARED_TENANTS: String(KILL_N), SHIM_TEST_POOL: `shared8-${unique}` } });
    image = await ensureBusyboxImage(c);
  });
  after(async () => { await c?.stop(); });

  it(`${KILL_N} tenants: containerd's ${KILL_N} \`delete\`s each finish within its 5 s cleanup deadline (exit 137, not 255)`, { timeout: 300_000 }, async (t) => {
    const ids = Array.from({ length: KILL_N }, (_, i) => `sh8-${unique}-${i}`);
    const events = c.ctrSpawn(['events']);
    let seen = '';
    events.stdout?.on('data', (d: Buffer) => { seen += d.toString(); });
    try {
      const pids = new Set<number>();
      for (const id of ids) {
        await c.ctr(['run', '-d', '--null-io', '--runtime', OUR_SHIM, image, id, 'sleep', '100000']);
        pids.add((await waitFor(() => servingPid(c, id), 5000))!);
      }
      assert.equal(pids.size, 1, `one daemon serves all ${KILL_N}`);
      const t0 = Date.now();
      process.kill([...pids][0], 'SIGKILL');
      for (const id of ids) await waitFor(() => new RegExp(`/tasks/delete .*"container_id":"${id}"`).test(seen) || undefined, 30_000);
      t.diagnostic(`daemon killed → last /tasks/delete: ${Date.now() - t0} ms for ${ids.length} tenants`);
      for (const id of ids) {
        const exit = new RegExp(`/tasks/exit .*"container_id":"${id}".*"exit_status":(\\d+)`).exec(seen);
        assert.equal(exit?.[1], '137', `${id}: its delete finished in time (255 means it missed containerd's deadline)`);
      }
      for (const id of ids) await c.ctr(['container', 'rm', id]);
      assert.deepEqual(await waitForNoLeftovers(c, ids), { ...NOTHING_LEFT });
    } finally {
      events.kill();
    }
  });
});
