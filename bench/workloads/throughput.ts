// SPDX-License-Identifier: Apache-2.0
// Stdout throughput: the container writes N MiB of zeros to stdout; the shim copies them from the
// container's pipe into ctr's stdout FIFO; ctr copies them to its stdout, a pipe the bench counts.
import { addMetric, countFailure, ctrTimed, log, newId, order, perShim, waitQuiet, type Ctx } from '../lib/ctx.js';

export async function throughput(ctx: Ctx): Promise<void> {
  const mib = ctx.sizes.throughputMiB;
  const want = mib * 1024 * 1024;
  const rate = perShim(ctx);
  const wallRate = perShim(ctx);
  // One small warm-up per shim (not counted).
  for (const shim of ctx.shims) {
    const id = newId(shim.name, 'tpw');
    ctx.c.track(ctx.ns, id);
    await ctrTimed(ctx, ['run', '--rm', '--runtime', shim.path, ctx.image, id, 'dd', 'if=/dev/zero', 'bs=1M', 'count=16'], { keepBytes: 0 });
  }
  for (let i = 0; i < ctx.sizes.throughputIters; i++) {
    for (const shim of order(ctx.shims, i)) {
      await waitQuiet(ctx);
      const id = newId(shim.name, 'tp');
      ctx.c.track(ctx.ns, id);
      const r = await ctrTimed(ctx, ['run', '--rm', '--runtime', shim.path, ctx.image, id, 'dd', 'if=/dev/zero', 'bs=1M', `count=${mib}`],
        { keepBytes: 0, timeoutMs: 600_000 });
      if (r.code !== 0 || r.stdoutBytes !== want) {
        countFailure(ctx, 'throughput', shim.name);
        log(`throughput ${shim.name}: exit ${r.code}, ${r.stdoutBytes} of ${want} bytes: ${r.stderr.slice(0, 500)}`);
        continue;
      }
      rate[shim.name].push(want / 1e6 / ((r.lastByteMs - r.firstByteMs) / 1000));
      wallRate[shim.name].push(want / 1e6 / (r.wallMs / 1000));
    }
  }
  const what = `\`ctr run --rm --runtime <shim> busybox <id> dd if=/dev/zero bs=1M count=${mib}\` with ctr's stdout piped to the bench, which counts the bytes (checked = ${mib} MiB)`;
  addMetric(ctx, {
    workload: 'throughput', metric: `stdout ${mib} MiB, first→last byte`, unit: 'MB/s', better: 'higher',
    how: `${what}; MB/s = bytes / 10^6 / (last byte − first byte arrival at the bench).`,
  }, rate);
  addMetric(ctx, {
    workload: 'throughput', metric: `stdout ${mib} MiB, whole run`, unit: 'MB/s', better: 'higher',
    how: `${what}; MB/s = bytes / 10^6 / wall time of the whole ctr run (includes the container lifecycle).`,
  }, wallRate);
}
