// SPDX-License-Identifier: Apache-2.0
// Interference: what one container's heavy stdio does to another's RPCs. Container B idles;
// container A copies N MiB of zeros to ctr's stdout; meanwhile the bench execs into B again and
// again. With one daemon per container (the reference, ours) A and B share only the CPUs; with
// a shared daemon (ours-shared) they share one event loop, which is what docs/shared-daemon.md
// asks to measure before anyone turns it on.
import { addMetric, countFailure, ctrOk, ctrTimed, log, newId, order, perShim, removeContainers, waitQuiet, type Ctx } from '../lib/ctx.js';

export async function interference(ctx: Ctx): Promise<void> {
  const mib = ctx.sizes.throughputMiB;
  const alone = perShim(ctx);
  const loaded = perShim(ctx);
  const rounds = ctx.sizes.throughputIters;
  const execInto = async (shim: string, id: string, n: string) => {
    const r = await ctrTimed(ctx, ['task', 'exec', '--exec-id', n, id, 'true'], { timeoutMs: 30_000 });
    if (r.code === 0) return r.wallMs;
    countFailure(ctx, 'interference', shim);
    log(`interference ${shim}: exec exit ${r.code}: ${r.stderr.slice(0, 300)}`);
    return undefined;
  };
  for (let round = 0; round < rounds; round++) {
    for (const shim of order(ctx.shims, round)) {
      await waitQuiet(ctx);
      const b = newId(shim.name, 'ifb');
      ctx.c.track(ctx.ns, b);
      try {
        // B first: a shared daemon made for B takes A too.
        await ctrOk(ctx, ['run', '-d', '--null-io', '--runtime', shim.path, ctx.image, b, 'sleep', '100000']);
        let n = 0;
        for (let i = 0; i < 5; i++) {
          const ms = await execInto(shim.name, b, `a${n++}`);
          if (ms !== undefined && i > 0) alone[shim.name].push(ms);
        }
        const a = newId(shim.name, 'ifa');
        ctx.c.track(ctx.ns, a);
        let copying = true;
        const copy = ctrTimed(ctx, ['run', '--rm', '--runtime', shim.path, ctx.image, a, 'dd', 'if=/dev/zero', 'bs=1M', `count=${mib}`],
          { keepBytes: 0, timeoutMs: 600_000 }).finally(() => { copying = false; });
        // Execs that start and end while A is copying (the first 100 ms left out: A's own start).
        await new Promise((r) => setTimeout(r, 100));
        while (copying) {
          const ms = await execInto(shim.name, b, `l${n++}`);
          if (ms !== undefined && copying) loaded[shim.name].push(ms);
        }
        const r = await copy;
        if (r.code !== 0 || r.stdoutBytes !== mib * 1024 * 1024) {
          countFailure(ctx, 'interference', shim.name);
          log(`interference ${shim.name}: copy exit ${r.code}, ${r.stdoutBytes} bytes: ${r.stderr.slice(0, 300)}`);
        }
      } finally {
        await removeContainers(ctx, [b]);
      }
    }
  }
  const how = `container B runs \`sleep\`; \`ctr task exec --exec-id <n> B true\` wall time`;
  addMetric(ctx, { workload: 'interference', metric: 'exec into B, nothing else running', unit: 'ms', better: 'lower', how: `${how}, 4 per round before A starts.` }, alone);
  addMetric(ctx, {
    workload: 'interference', metric: `exec into B while A copies ${mib} MiB to ctr`, unit: 'ms', better: 'lower',
    how: `${how}, back to back while container A of the same shim runs \`dd if=/dev/zero bs=1M count=${mib}\` to ctr's stdout (read and dropped by the bench); only execs that ended before A did. For ours-shared, A and B are served by one daemon.`,
  }, loaded);
}
