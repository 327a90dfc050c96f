// SPDX-License-Identifier: Apache-2.0
// `npm run bench`: runs each workload with the reference Go shim and ours (and, on request,
// experimental variants of ours) against one private containerd, interleaved so machine drift
// cancels, and writes bench/out/latest.md and latest.json (bench/out/ is not tracked).
//
// Environment:
//   BENCH_QUICK=1          smoke sizes (about 1/10 of the iterations, 64 MiB throughput)
//   BENCH_SHIMS=a,b,...    shims to compare (default reference,ours,ours-shared; variants: bench/experiments/variants.ts)
//   BENCH_WORKLOADS=a,b    subset of: startup,lifecycle,detached,exec,throughput,interference,memory,churn
//   BENCH_SIZES='{"lifecycleIters":10}'  overrides of individual sizes (see lib/sizes.ts)
//   BENCH_OUT=name         results file name (default latest) in BENCH_OUT_DIR (default bench/out)
//   SHIM_DAEMON=1.7|2.1|2.3  another containerd (scripts/daemons.sh; default 1.6), with its own Go
//                          shim as the reference (test/support/daemons.ts)
// Exit status 1 if any workload failed or leaked (results are written anyway).
import { execFileSync } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONTAINERD, startContainerd } from '../test/support/containerd.js';
import { ensureBusyboxImage } from '../test/support/image.js';
import { REPO_ROOT } from '../test/support/shims.js';
import { log, quietStats, type Ctx } from './lib/ctx.js';
import { FULL, QUICK, type Sizes } from './lib/sizes.js';
import { renderJson, renderMarkdown, type Results } from './lib/report.js';
import { selectShims } from './lib/shims.js';
import { churn } from './workloads/churn.js';
import { detached } from './workloads/detached.js';
import { execLatency } from './workloads/exec.js';
import { interference } from './workloads/interference.js';
import { lifecycle } from './workloads/lifecycle.js';
import { memory } from './workloads/memory.js';
import { startup } from './workloads/startup.js';
import { throughput } from './workloads/throughput.js';

const WORKLOADS: Record<string, (ctx: Ctx) => Promise<void>> = {
  startup, lifecycle, detached, exec: execLatency, throughput, interference, memory, churn,
};

function version(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000 }).split('\n')[0].trim();
  } catch {
    return 'unknown';
  }
}

export async function main(): Promise<number> {
  const quick = process.env.BENCH_QUICK === '1' || process.env.BENCH_QUICK === 'true';
  const sizes: Sizes = { ...(quick ? QUICK : FULL), ...(JSON.parse(process.env.BENCH_SIZES || '{}') as Partial<Sizes>) };
  const shims = selectShims();
  const names = (process.env.BENCH_WORKLOADS || Object.keys(WORKLOADS).join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (!WORKLOADS[n]) throw new Error(`BENCH_WORKLOADS: unknown workload ${n}; known: ${Object.keys(WORKLOADS).join(', ')}`);
  const outDir = process.env.BENCH_OUT_DIR || join(REPO_ROOT, 'bench', 'out');
  const outName = process.env.BENCH_OUT || 'latest';

  log(`shims: ${shims.map((s) => s.name).join(', ')}; workloads: ${names.join(', ')}; ${quick ? 'quick' : 'full'} sizes`);
  const c = await startContainerd();
  const tmp = mkdtempSync('/tmp/bench-');
  const ctx: Ctx = {
    c, image: '', ns: 'default', shims, sizes, quick, tmp, metrics: [], floors: [], failures: {}, notes: [],
  };
  const t0 = Date.now();
  const load: Record<string, string> = {};
  try {
    ctx.image = await ensureBusyboxImage(c);
    for (const n of names) {
      log(`workload ${n} ...`);
      const t = Date.now();
      const before = loadavg()[0];
      try {
        // A shim limited to some workloads (ours-shared) sits the others out.
        await WORKLOADS[n]({ ...ctx, shims: shims.filter((s) => !s.only || s.only.includes(n)) });
      } catch (e) {
        ctx.failures[n] ??= {};
        ctx.failures[n].error = (ctx.failures[n].error ?? 0) + 1;
        ctx.notes.push(`workload ${n} aborted: ${(e as Error).message.split('\n')[0]}`);
        log(`workload ${n} failed: ${(e as Error).stack}`);
      }
      load[n] = `${before.toFixed(2)} → ${loadavg()[0].toFixed(2)}`;
      log(`workload ${n} done in ${((Date.now() - t) / 1000).toFixed(1)} s (load ${load[n]})`);
    }
  } finally {
    await c.stop();
    rmSync(tmp, { recursive: true, force: true });
  }

  const cg = existsSync('/sys/fs/cgroup/cgroup.controllers') ? 'cgroup v2' : 'cgroup v1';
  const results: Results = {
    meta: {
      date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      mode: quick ? 'quick' : 'full',
      durationSec: Math.round((Date.now() - t0) / 1000),
      cpu: cpus()[0]?.model ?? 'unknown',
      cpus: cpus().length,
      memGiB: Math.round(totalmem() / 2 ** 30),
      kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      node: process.version,
      containerd: version(CONTAINERD, ['--version']).split(' ').slice(-2).join(' '),
      runc: version('runc', ['--version']).replace(/^runc version /, ''),
      snapshotter: c.snapshotter,
      cgroups: cg,
      sizes,
      workloads: names,
      commit: version('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']),
      uncommittedInSrcBinNative: version('sh', ['-c', `git -C '${REPO_ROOT}' status --porcelain -- src bin native scripts | wc -l`]),
      loadavg1mBeforeAfter: load,
      quiet: { ...quietStats, waitedMs: Math.round(quietStats.waitedMs), threshold: Number(process.env.BENCH_QUIET_BUSY || 0.3) },
    },
    shims: shims.map((s) => ({ name: s.name, path: s.path, description: s.description })),
    metrics: ctx.metrics,
    floors: ctx.floors,
    failures: ctx.failures,
    notes: ctx.notes,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, `${outName}.json`), JSON.stringify(renderJson(results), null, 2) + '\n');
  writeFileSync(join(outDir, `${outName}.md`), renderMarkdown(results));
  log(`wrote ${join(outDir, outName)}.{md,json} in ${results.meta.durationSec} s`);
  const failed = Object.values(ctx.failures).some((per) => Object.values(per).some((n) => n > 0));
  return failed ? 1 : 0;
}

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
