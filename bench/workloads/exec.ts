// SPDX-License-Identifier: Apache-2.0
// Exec latency into a running container: `ctr task exec --exec-id <n> <id> true`.
import { addMetric, countFailure, ctrOk, ctrTimed, log, newId, order, perShim, removeContainers, waitQuiet, type Ctx } from '../lib/ctx.js';

export async function execLatency(ctx: Ctx): Promise<void> {
  const lat = perShim(ctx);
  const ids = new Map<string, string>();
  try {
    for (const shim of ctx.shims) {
      const id = newId(shim.name, 'ex');
      ctx.c.track(ctx.ns, id);
      ids.set(shim.name, id);
      await ctrOk(ctx, ['run', '-d', '--null-io', '--runtime', shim.path, ctx.image, id, 'sleep', '100000']);
    }
    const total = ctx.sizes.warmup + ctx.sizes.execIters;
    for (let i = 0; i < total; i++) {
      for (const shim of order(ctx.shims, i)) {
        await waitQuiet(ctx);
        const r = await ctrTimed(ctx, ['task', 'exec', '--exec-id', `e${i}`, ids.get(shim.name)!, 'true'], { timeoutMs: 30_000 });
        if (r.code !== 0) {
          countFailure(ctx, 'exec', shim.name);
          log(`exec ${shim.name}: exit ${r.code}: ${r.stderr.slice(0, 500)}`);
          continue;
        }
        if (i >= ctx.sizes.warmup) lat[shim.name].push(r.wallMs);
      }
    }
  } finally {
    await removeContainers(ctx, [...ids.values()]);
  }
  addMetric(ctx, {
    workload: 'exec', metric: 'ctr task exec … true', unit: 'ms', better: 'lower',
    how: 'wall time of `ctr task exec --exec-id e<n> <id> true` into a running `sleep` container of that shim (Exec + Start RPCs, runc exec, exit, Delete of the exec; ctr attaches FIFOs for its stdio).',
  }, lat);
}
