// SPDX-License-Identifier: Apache-2.0
// A detached container: time to RUNNING and time to the first byte of output.
import { mkdirSync, statSync, watch } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { EventWatcher } from '../lib/events.js';
import { addMetric, countFailure, ctrTimed, log, newId, order, perShim, removeContainers, waitQuiet, type Ctx } from '../lib/ctx.js';

/** Resolves with performance.now() when `file` (in `dir`) first has data; NaN on timeout. */
function firstData(dir: string, file: string, timeoutMs: number): { done: Promise<number>; cancel(): void } {
  let resolve!: (t: number) => void;
  const done = new Promise<number>((r) => { resolve = r; });
  const check = () => {
    try {
      if (statSync(file).size > 0) finish(performance.now());
    } catch { /* not created yet */ }
  };
  const watcher = watch(dir, () => check());
  const timer = setTimeout(() => finish(NaN), timeoutMs);
  let finished = false;
  function finish(t: number) {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    watcher.close();
    resolve(t);
  }
  return { done, cancel: () => finish(NaN) };
}

export async function detached(ctx: Ctx): Promise<void> {
  const ret = perShim(ctx);
  const created = perShim(ctx);
  const running = perShim(ctx);
  const ttfb = perShim(ctx);
  const events = new EventWatcher(ctx.c);
  await events.ready();
  const dir = join(ctx.tmp, 'detached-logs');
  mkdirSync(dir, { recursive: true });
  const total = ctx.sizes.warmup + ctx.sizes.detachedIters;
  try {
    for (let i = 0; i < total; i++) {
      for (const shim of order(ctx.shims, i)) {
        await waitQuiet(ctx);
        const id = newId(shim.name, 'dt');
        ctx.c.track(ctx.ns, id);
        const logFile = join(dir, `${id}.log`);
        const fb = firstData(dir, logFile, 30_000);
        const t0 = performance.now();
        const r = await ctrTimed(ctx, ['run', '-d', '--log-uri', `file://${logFile}`, '--runtime', shim.path, ctx.image, id,
          'sh', '-c', 'echo hi; exec sleep 100000']);
        if (r.code !== 0) {
          fb.cancel();
          countFailure(ctx, 'detached', shim.name);
          log(`detached ${shim.name}: exit ${r.code}: ${r.stderr.slice(0, 500)}`);
          await removeContainers(ctx, [id]);
          continue;
        }
        const [tCreate, tStart, tByte] = await Promise.all([
          events.wait('/tasks/create', id), events.wait('/tasks/start', id), fb.done,
        ]);
        await removeContainers(ctx, [id]);
        events.forget(id);
        if (![tCreate, tStart, tByte].every(Number.isFinite)) {
          countFailure(ctx, 'detached', shim.name);
          log(`detached ${shim.name}: missing event or output (create ${tCreate}, start ${tStart}, byte ${tByte})`);
          continue;
        }
        if (i < ctx.sizes.warmup) continue;
        ret[shim.name].push(r.wallMs);
        created[shim.name].push(tCreate - t0);
        running[shim.name].push(tStart - t0);
        ttfb[shim.name].push(tByte - t0);
      }
    }
  } finally {
    events.stop();
  }
  const base = 'container `ctr run -d --log-uri file://<tmp>/<id>.log --runtime <shim> busybox <id> sh -c "echo hi; exec sleep 100000"`; times from the spawn of ctr';
  addMetric(ctx, {
    workload: 'detached', metric: '/tasks/create event', unit: 'ms', better: 'lower',
    how: `${base} to the arrival of the /tasks/create event line on a \`ctr events\` subscriber started before (shim start + daemon boot + Create RPC incl. runc create).`,
  }, created);
  addMetric(ctx, {
    workload: 'detached', metric: 'RUNNING (/tasks/start event)', unit: 'ms', better: 'lower',
    how: `${base} to the arrival of its /tasks/start event on \`ctr events\` (published by the shim after runc start; the task is RUNNING).`,
  }, running);
  addMetric(ctx, {
    workload: 'detached', metric: 'ctr run -d returns', unit: 'ms', better: 'lower',
    how: `${base} to ctr's exit (it returns after the Start RPC, i.e. the task is RUNNING as containerd sees it).`,
  }, ret);
  addMetric(ctx, {
    workload: 'detached', metric: 'first byte of output', unit: 'ms', better: 'lower',
    how: `${base} until the log file (written by the shim's file:// logger) is non-empty, seen by an inotify watch (fs.watch) on its directory.`,
  }, ttfb);
}
