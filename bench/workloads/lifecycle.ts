// SPDX-License-Identifier: Apache-2.0
// Cold container lifecycle: `ctr run --rm --runtime <shim> <busybox> <id> echo hi`, wall time and
// time to the first byte of output. Three shim executions per container (start, daemon, delete).
import { addMetric, countFailure, ctrTimed, log, newId, order, perShim, waitQuiet, type Ctx } from '../lib/ctx.js';

export async function lifecycle(ctx: Ctx): Promise<void> {
  const wall = perShim(ctx);
  const ttfb = perShim(ctx);
  const total = ctx.sizes.warmup + ctx.sizes.lifecycleIters;
  for (let i = 0; i < total; i++) {
    for (const shim of order(ctx.shims, i)) {
      await waitQuiet(ctx);
      const id = newId(shim.name, 'lc');
      ctx.c.track(ctx.ns, id);
      const r = await ctrTimed(ctx, ['run', '--rm', '--runtime', shim.path, ctx.image, id, 'echo', 'hi'], { timeoutMs: 60_000 });
      if (r.code !== 0 || r.stdout !== 'hi\n') {
        countFailure(ctx, 'lifecycle', shim.name);
        log(`lifecycle ${shim.name}: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr.slice(0, 500)}`);
        continue;
      }
      if (i < ctx.sizes.warmup) continue;
      wall[shim.name].push(r.wallMs);
      ttfb[shim.name].push(r.firstByteMs);
    }
  }
  addMetric(ctx, {
    workload: 'lifecycle', metric: 'ctr run --rm echo hi', unit: 'ms', better: 'lower',
    how: 'wall time of `ctr run --rm --runtime <shim> busybox <id> echo hi` (spawn of ctr → exit with stdout/stderr at EOF); ' +
      'includes containerd creating the bundle/snapshot, the shim\'s `start`, daemon, runc create/start, exit, Delete, Shutdown and the `delete` action. Warm-up runs discarded.',
  }, wall);
  addMetric(ctx, {
    workload: 'lifecycle', metric: 'first byte of output', unit: 'ms', better: 'lower',
    how: 'same runs: spawn of ctr → first byte ("hi") on ctr\'s stdout (container output copied by the shim from the container\'s pipe to ctr\'s stdout FIFO).',
  }, ttfb);
}
