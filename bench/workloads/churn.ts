// SPDX-License-Identifier: Apache-2.0
// Churn: create/start/exit/delete cycles (`ctr run --rm ... true`) at each concurrency level of
// the sizes (churnConcurrencies), every level its own pair of rows.
import { performance } from 'node:perf_hooks';
import { leftovers } from '../../test/support/containerd.js';
import { addMetric, countFailure, ctrTimed, log, newId, order, perShim, waitQuiet, type Ctx } from '../lib/ctx.js';
import { findShimDaemons, pool, sleep } from '../lib/proc.js';

export async function churn(ctx: Ctx): Promise<void> {
  const n = ctx.sizes.churnPerRound;
  const levels = ctx.sizes.churnConcurrencies.map((conc) => ({ conc, rate: perShim(ctx), cycle: perShim(ctx) }));
  for (const s of ctx.shims) { ctx.failures.churn ??= {}; ctx.failures.churn[s.name] ??= 0; }
  for (let round = 0; round < ctx.sizes.churnRounds; round++) {
    for (const { conc, rate, cycle } of levels) {
      for (const shim of order(ctx.shims, round)) {
        await waitQuiet(ctx);
        const ids = Array.from({ length: n }, () => newId(shim.name, 'ch'));
        const t0 = performance.now();
        await pool(ids, conc, async (id) => {
          ctx.c.track(ctx.ns, id);
          const r = await ctrTimed(ctx, ['run', '--rm', '--runtime', shim.path, ctx.image, id, 'true'], { timeoutMs: 60_000 });
          if (r.code !== 0) {
            countFailure(ctx, 'churn', shim.name);
            log(`churn ${shim.name} ${id} (${conc} at a time): exit ${r.code ?? r.signal}: ${r.stderr.slice(0, 300)}`);
            return;
          }
          cycle[shim.name].push(r.wallMs);
        });
        const secs = (performance.now() - t0) / 1000;
        rate[shim.name].push(n / secs);
        // Nothing may be left: no daemon, socket, mount, task dir, runc state or cgroup of these ids.
        await sleep(200);
        const left = leftovers(ctx.c, ids);
        const daemons = findShimDaemons(ctx.c.address, new Set(ids)).size;
        const leaked = left.shims.length + left.mounts.length + left.taskDirs.length + left.runcStateDirs.length + left.sockets.length + daemons;
        if (leaked) {
          countFailure(ctx, 'churn-leftovers', shim.name, leaked);
          log(`churn ${shim.name} (${conc} at a time): leftovers ${JSON.stringify(left)}`);
        }
      }
    }
  }
  for (const { conc, rate, cycle } of levels) {
    addMetric(ctx, {
      workload: 'churn', metric: `containers/s (${n}/round × ${ctx.sizes.churnRounds}, ${conc} at a time)`, unit: '1/s', better: 'higher',
      how: `rounds of ${n} \`ctr run --rm --runtime <shim> busybox <id> true\`, ${conc} in flight (each round runs every level, ${ctx.sizes.churnConcurrencies.join(' then ')} in flight, each shim once per level); rate = ${n} / round wall time (one sample per round). Failures (non-zero ctr exit) and leftovers after each round (shim processes, sockets, mounts, task dirs, runc state) are counted under Failures.`,
    }, rate);
    addMetric(ctx, {
      workload: 'churn', metric: `cycle latency under ${conc}× concurrency`, unit: 'ms', better: 'lower',
      how: `wall time of each \`ctr run --rm … true\` in the churn rounds with ${conc} in flight.`,
    }, cycle);
  }
}
