// SPDX-License-Identifier: Apache-2.0
// The shim's own critical path, without containerd in the way: the bench plays containerd and runs
// the `start` action in a minimal bundle (config.json, runtime), sends the daemon its first RPC
// (Connect), shuts it down (Shutdown RPC, no containers), then runs the `delete` action
// (runc delete --force of a container that does not exist, like after a normal teardown).
// The bundle's `log` fifo is held open for reading, as containerd does.
// `node -e 0` is timed in the same loop as the floor.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fullPath } from '../../test/support/containerd.js';
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
  const base = 'the bench plays containerd: minimal bundle (config.json `{}`, runtime `runc`, a `log` fifo the bench reads), the shim executed as containerd does (`-namespace -address -publish-binary -id … start`, cwd = bundle, TTRPC_ADDRESS set, stdin /dev/null)';
  addMetric(ctx, { workload: 'startup', metric: '`start` action', unit: 'ms', better: 'lower', how: `${base}; spawn → exit with stdout at EOF (what containerd waits for).` }, start);
  addMetric(ctx, { workload: 'startup', metric: '`start` → daemon answers 1st RPC', unit: 'ms', better: 'lower', how: `${base}; spawn of \`start\` → the daemon's reply to a Connect RPC sent right after \`start\` exits (containerd sends Create at that point).` }, ready);
  addMetric(ctx, { workload: 'startup', metric: '`start` → 1st RPC, containerd 2.3 bootstrap', unit: 'ms', better: 'lower', how: `${base}, but stdin a protobuf BootstrapParams as containerd 2.3 writes it and the answer read as 2.3 reads it (BootstrapResult → task v3; the reference runs it only on containerd 2.3, older Go shims fail start on the params). Compare with the row above: the bootstrap must cost nothing.` }, readyBootstrap);
  addMetric(ctx, { workload: 'startup', metric: 'daemon ready after `start` exits', unit: 'ms', better: 'lower', how: 'the difference of the two above: daemon boot left on the critical path after `start` returned.' }, afterStart);
  addMetric(ctx, { workload: 'startup', metric: '`delete` action', unit: 'ms', better: 'lower', how: `${base}; after Shutdown, \`… delete\` wall time (runc delete --force of a missing container, unmount, DeleteResponse on stdout).` }, del);
  ctx.floors.push({
    what: '`node -e 0` startup', unit: 'ms', samples: nodeE0, compare: ['startup', '`start` action'],
    how: `wall time of \`${process.execPath} -e 0\`, timed in the same loop as the startup cycles.`,
  });
}
