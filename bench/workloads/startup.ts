// SPDX-License-Identifier: Apache-2.0
// The shim's own critical path, without containerd in the way: the bench plays containerd and runs
// the `start` action in a minimal bundle (config.json, runtime), sends the daemon its first RPC
// (Connect), shuts it down (Shutdown RPC, no containers), then runs the `delete` action
// (runc delete --force of a container that does not exist, like after a normal teardown).
// The bundle's `log` fifo is held open for reading, as containerd does.
// `node -e 0` is timed in the same loop as the floor.
// A second loop gives every cycle a containerd address of its own (-address and TTRPC_ADDRESS
// under the scratch dir, nothing listening on either), as containerd's shim conformance suite
// does with a new daemon per test: for ours, whether its standby pool serves an address it has
// not seen (it does: the address is job input, not part of the pool key).
import { existsSync, mkdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fullPath, listProcesses, procEnviron, removePoolLitter, shimSocketPath } from '../../test/support/containerd.js';
import { TaskClient } from '../../test/support/taskclient.js';
import { FifoReader, mkfifo } from '../../test/support/fifo.js';
import { addMetric, countFailure, log, newId, order, perShim, waitQuiet, type Ctx } from '../lib/ctx.js';
import { findShimDaemons, timedRun, waitGone } from '../lib/proc.js';
import type { Shim } from '../lib/shims.js';
import { BootstrapParams, BootstrapResult } from '../../src/gen/containerd/runtime/bootstrap/v1/bootstrap.js';

const NS = 'benchstartup';

export interface StartupSample {
  id: string;
  startPid: number;
  daemonPid: number;
  deletePid: number;
  /** Epoch ms (performance.timeOrigin + now) of the spawn of `start`, the Connect reply, the end of `delete`. */
  t0Epoch: number;
  readyEpoch: number;
  deleteEndEpoch: number;
  startMs: number;
  readyMs: number;
  deleteMs: number;
}

/**
 * One start → first RPC → Shutdown → delete cycle of `shim` against containerd address `address`.
 * With `bootstrap`, `start` gets containerd 2.3's protobuf BootstrapParams on stdin and its answer
 * is read as containerd 2.3 reads it (a BootstrapResult, else the plain address).
 */
export async function startupCycle(
  shim: Pick<Shim, 'name' | 'path'>, address: string, ttrpcAddress: string, dir: string, env: NodeJS.ProcessEnv = {},
  o: { bootstrap?: boolean } = {},
): Promise<StartupSample> {
  const id = newId(shim.name, 'su');
  const bundle = join(dir, NS, id);
  mkdirSync(bundle, { recursive: true });
  writeFileSync(join(bundle, 'config.json'), '{}');
  writeFileSync(join(bundle, 'runtime'), 'runc');
  // containerd holds the bundle's `log` fifo open for reading; the daemon writes its log there.
  const logReader = new FifoReader(mkfifo(join(bundle, 'log')));
  const shimEnv = { ...process.env, PATH: fullPath(), TTRPC_ADDRESS: ttrpcAddress, ...env };
  const common = ['-namespace', NS, '-address', address, '-publish-binary', '/usr/bin/containerd', '-id', id];
  try {
    const t0 = performance.now();
    const t0Epoch = performance.timeOrigin + t0;
    const input = o.bootstrap ? Buffer.from(BootstrapParams.encode(BootstrapParams.fromPartial({
      instanceId: id, namespace: NS, containerdTtrpcAddress: ttrpcAddress, containerdGrpcAddress: address, containerdBinary: '/usr/bin/containerd',
    })).finish()) : undefined;
    const st = await timedRun(shim.path, [...common, 'start'], { cwd: bundle, env: shimEnv, timeoutMs: 20_000, input });
    if (st.code !== 0 || st.stderr !== '') throw new Error(`start: exit ${st.code}: ${st.stderr}`);
    const answer = startAnswer(st.stdout);
    const client = await TaskClient.connect(answer.address, NS, answer.version);
    let readyMs: number;
    let daemonPid = -1;
    try {
      await client.connect(id).catch((e: Error) => {
        // An unknown id is answered with a ttrpc error (NotFound): the daemon is serving.
        if (!/not ?found|NotFound|code/i.test(String(e.message))) throw e;
      });
      readyMs = performance.now() - t0;
      const daemon = findShimDaemons(address, new Set([id])).get(id);
      daemonPid = daemon?.pid ?? -1;
      await client.shutdown(id).catch(() => undefined); // the reply may be cut by the exit
      if (daemon && !(await waitGone(daemon.pid, 10_000))) throw new Error(`daemon ${daemon.pid} did not exit after Shutdown`);
    } finally {
      client.close();
    }
    const del = await timedRun(shim.path, [...common, 'delete'], { cwd: bundle, env: shimEnv, timeoutMs: 20_000 });
    if (del.code !== 0) throw new Error(`delete: exit ${del.code}: ${del.stderr}`);
    return {
      id, startPid: st.pid, daemonPid, deletePid: del.pid, t0Epoch, readyEpoch: t0Epoch + readyMs,
      deleteEndEpoch: performance.timeOrigin + performance.now(), startMs: st.wallMs, readyMs, deleteMs: del.wallMs,
    };
  } finally {
    logReader.close();
    rmSync(bundle, { recursive: true, force: true });
    rmSync(`/run/containerd/runc/${NS}/${id}`, { recursive: true, force: true });
  }
}

/** The same cycles, each against a containerd address of its own (see the top of this file). */
async function newAddressCycles(ctx: Ctx, dir: string): Promise<{ start: Record<string, number[]>; ready: Record<string, number[]> }> {
  const start = perShim(ctx);
  const ready = perShim(ctx);
  const root = join(ctx.tmp, 'na');
  /** Per-cycle directory name → the shim it was made for. */
  const shimOf = new Map<string, string>();
  const total = ctx.sizes.warmup + ctx.sizes.startupIters;
  try {
    for (let i = 0; i < total; i++) {
      for (const [k, shim] of order(ctx.shims.map((s, j) => [j, s] as const), i)) {
        const name = `${k}-${i}`;
        shimOf.set(name, shim.name);
        mkdirSync(join(root, name), { recursive: true });
        const address = join(root, name, 'c.sock');
        await waitQuiet(ctx);
        try {
          const s = await startupCycle(shim, address, `${address}.ttrpc`, dir);
          const socket = shimSocketPath(address, NS, s.id);
          if (existsSync(socket)) {
            countFailure(ctx, 'startup-leftovers', shim.name);
            log(`startup (new address) ${shim.name}: socket ${socket} left after delete`);
            rmSync(socket, { force: true });
          }
          if (i < ctx.sizes.warmup) continue;
          start[shim.name].push(s.startMs);
          ready[shim.name].push(s.readyMs);
        } catch (e) {
          countFailure(ctx, 'startup', shim.name);
          log(`startup (new address) ${shim.name}: ${(e as Error).message}`);
        }
      }
    }
  } finally {
    const r = await reapScratchShims(root, (n) => shimOf.get(n));
    for (const [shim, n] of Object.entries(r.leftovers)) countFailure(ctx, 'startup-leftovers', shim, n);
    if (r.standbys) ctx.notes.push(`startup, new -address each: ${r.standbys} idle standby process(es) of the per-cycle addresses were left and killed after the loop (not counted as leftovers).`);
  }
  return { start, ready };
}

/**
 * Processes that still refer to the per-cycle addresses under `root`, in argv or environment.
 * An idle standby of our pool (argv `-standby …`; an adopted one shows the daemon's command
 * line instead) would retire by itself after its idle period, but until then it counts against
 * the machine's bound on standbys and would boot or wait beside the workloads that follow: it
 * is killed and not counted. Any other process is a leftover, counted for the shim whose
 * directory it names, and killed too. The posts, boot claims and warm-up sockets of the killed
 * standbys go with them, as the containerd harness does (test/support/containerd.ts).
 */
async function reapScratchShims(root: string, shimOf: (name: string) => string | undefined): Promise<{ standbys: number; leftovers: Record<string, number> }> {
  const prefix = root + '/';
  const leftovers: Record<string, number> = {};
  const posts = new Set<string>();
  const killed = new Set<number>();
  let standbys = 0;
  for (let round = 0; round < 3; round++) {
    const procs = listProcesses().filter((p) => p.pid !== process.pid && !killed.has(p.pid) &&
      (p.argv.some((a) => a.includes(prefix)) || procEnviron(p.pid).some((e) => e.includes(prefix))));
    if (procs.length === 0) break;
    for (const p of procs) {
      const i = p.argv.indexOf('-standby');
      if (i >= 0) {
        standbys++;
        if (p.argv[i + 1]) posts.add(p.argv[i + 1]);
      } else {
        const ref = [...p.argv, ...procEnviron(p.pid)].find((a) => a.includes(prefix)) ?? '';
        const shim = shimOf(ref.slice(ref.indexOf(prefix) + prefix.length).split('/')[0]) ?? 'unknown';
        leftovers[shim] = (leftovers[shim] ?? 0) + 1;
        let cwd = '?';
        try { cwd = readlinkSync(`/proc/${p.pid}/cwd`); } catch { /* gone */ }
        log(`startup (new address) ${shim}: leftover pid ${p.pid} (cwd ${cwd}): ${p.argv.filter((a) => a !== '').join(' ')}`);
      }
      try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
      killed.add(p.pid);
    }
    for (const p of procs) await waitGone(p.pid, 3000);
  }
  removePoolLitter(posts, killed);
  return { standbys, leftovers };
}

/** `start`'s answer as containerd 2.3 reads it: a protobuf BootstrapResult, else a plain address. */
function startAnswer(out: string): { address: string; version: 2 | 3 } {
  const text = out.trim();
  if (text.startsWith('unix://') || text.startsWith('/')) return { address: text, version: 2 };
  const r = BootstrapResult.decode(Buffer.from(out, 'utf8'));
  return { address: r.address, version: r.version === 3 ? 3 : 2 };
}

export async function startup(ctx: Ctx): Promise<void> {
  const start = perShim(ctx);
  const ready = perShim(ctx);
  const afterStart = perShim(ctx);
  const del = perShim(ctx);
  const readyBootstrap = perShim(ctx);
  const nodeE0: number[] = [];
  const dir = join(ctx.tmp, 'startup');
  const total = ctx.sizes.warmup + ctx.sizes.startupIters;
  for (let i = 0; i < total; i++) {
    for (const shim of order(ctx.shims, i)) {
      await waitQuiet(ctx);
      try {
        const s = await startupCycle(shim, ctx.c.address, ctx.c.ttrpcAddress, dir);
        if (i < ctx.sizes.warmup) continue;
        start[shim.name].push(s.startMs);
        ready[shim.name].push(s.readyMs);
        afterStart[shim.name].push(s.readyMs - s.startMs);
        del[shim.name].push(s.deleteMs);
      } catch (e) {
        countFailure(ctx, 'startup', shim.name);
        log(`startup ${shim.name}: ${(e as Error).message}`);
      }
      // Only containerd 2.3's own Go shim reads BootstrapParams; older ones fail `start` on them
      // (they take the params for a runtime-options Any of an unknown type). Ours reads both.
      if (shim.name === 'reference' && ctx.c.daemon.name !== '2.3') continue;
      await waitQuiet(ctx);
      try {
        const b = await startupCycle(shim, ctx.c.address, ctx.c.ttrpcAddress, dir, {}, { bootstrap: true });
        if (i >= ctx.sizes.warmup) readyBootstrap[shim.name].push(b.readyMs);
      } catch (e) {
        countFailure(ctx, 'startup', shim.name);
        log(`startup (bootstrap) ${shim.name}: ${(e as Error).message}`);
      }
    }
    const n = await timedRun(process.execPath, ['-e', '0']);
    if (i >= ctx.sizes.warmup) nodeE0.push(n.wallMs);
  }
  // After the loop above, so its standbys (if any) and the pool's machine-wide bound are as before.
  const fresh = await newAddressCycles(ctx, dir);
  const base = 'the bench plays containerd: minimal bundle (config.json `{}`, runtime `runc`, a `log` fifo the bench reads), the shim executed as containerd does (`-namespace -address -publish-binary -id … start`, cwd = bundle, TTRPC_ADDRESS set, stdin /dev/null)';
  addMetric(ctx, { workload: 'startup', metric: '`start` action', unit: 'ms', better: 'lower', how: `${base}; spawn → exit with stdout at EOF (what containerd waits for).` }, start);
  addMetric(ctx, { workload: 'startup', metric: '`start` → daemon answers 1st RPC', unit: 'ms', better: 'lower', how: `${base}; spawn of \`start\` → the daemon's reply to a Connect RPC sent right after \`start\` exits (containerd sends Create at that point).` }, ready);
  addMetric(ctx, { workload: 'startup', metric: '`start` → 1st RPC, containerd 2.3 bootstrap', unit: 'ms', better: 'lower', how: `${base}, but stdin a protobuf BootstrapParams as containerd 2.3 writes it and the answer read as 2.3 reads it (BootstrapResult → task v3; the reference runs it only on containerd 2.3, older Go shims fail start on the params). Compare with the row above: the bootstrap must cost nothing.` }, readyBootstrap);
  addMetric(ctx, { workload: 'startup', metric: 'daemon ready after `start` exits', unit: 'ms', better: 'lower', how: 'the difference of the two above: daemon boot left on the critical path after `start` returned.' }, afterStart);
  addMetric(ctx, { workload: 'startup', metric: '`delete` action', unit: 'ms', better: 'lower', how: `${base}; after Shutdown, \`… delete\` wall time (runc delete --force of a missing container, unmount, DeleteResponse on stdout).` }, del);
  const freshHow = `${base}, but every cycle with a containerd address of its own, as containerd's shim conformance suite has (a new daemon per test): \`-address <scratch>/na/<shim#>-<iteration>/c.sock\` and TTRPC_ADDRESS=<that>.ttrpc, nothing listening on either (a cycle sends only Connect and Shutdown, no event is published), \`delete\` with the same address; in a loop of its own after the cycles above. For ours this measures whatever its standby pool does for an address it has not served before (the address is job input, not part of the pool key: a standby of the same environment serves it); the idle standbys the cycles leave behind are killed after the loop (not counted), any other process still referring to those addresses is counted under Failures (startup-leftovers)`;
  addMetric(ctx, { workload: 'startup', metric: '`start` action, new -address each', unit: 'ms', better: 'lower', how: `${freshHow}; spawn of \`start\` → exit with stdout at EOF.` }, fresh.start);
  addMetric(ctx, { workload: 'startup', metric: '`start` → daemon answers 1st RPC, new -address each', unit: 'ms', better: 'lower', how: `${freshHow}; spawn of \`start\` → the daemon's reply to Connect.` }, fresh.ready);
  ctx.floors.push({
    what: '`node -e 0` startup', unit: 'ms', samples: nodeE0, compare: ['startup', '`start` action'],
    how: `wall time of \`${process.execPath} -e 0\`, timed in the same loop as the startup cycles.`,
  });
}
