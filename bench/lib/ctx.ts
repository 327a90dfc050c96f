// SPDX-License-Identifier: Apache-2.0
// Shared state of one benchmark run and helpers for the workloads.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { CTR, fullPath, type Containerd } from '../../test/support/containerd.js';
import type { Floor, Metric } from './report.js';
import type { Shim } from './shims.js';
import type { Sizes } from './sizes.js';
import { timedRun, pool, type Timed, type TimedOptions } from './proc.js';

export interface Ctx {
  c: Containerd;
  image: string;
  ns: string;
  shims: Shim[];
  sizes: Sizes;
  quick: boolean;
  /** Scratch dir (log files, fake bundles) removed at the end. */
  tmp: string;
  metrics: Metric[];
  floors: Floor[];
  failures: Record<string, Record<string, number>>;
  notes: string[];
}

const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
let seq = 0;
/** Container ids unique across containerd instances (runc state is keyed by id only). */
export function newId(shim: string, what: string): string {
  return `bn-${what}-${shim.replace(/[^a-z0-9]/gi, '')}-${unique}-${++seq}`;
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${(performance.now() / 1000).toFixed(1)}s] ${msg}\n`);
}

/** Order of the shims in iteration i: rotated, so no shim always runs first (A B, B A, ...). */
export function order<T>(items: T[], i: number): T[] {
  const k = i % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function ctrEnv(c: Containerd): NodeJS.ProcessEnv {
  return { ...process.env, PATH: fullPath(), CONTAINERD_SNAPSHOTTER: c.snapshotter };
}

/** `ctr --address <sock> -n <ns> ...args`, timed. Container ids in run/create args are tracked for cleanup. */
export function ctrTimed(ctx: Ctx, args: string[], o: TimedOptions = {}): Promise<Timed> {
  return timedRun(CTR, ['--address', ctx.c.address, '-n', ctx.ns, ...args], { env: ctrEnv(ctx.c), timeoutMs: 120_000, ...o });
}

/** Runs a ctr command and throws on failure. */
export async function ctrOk(ctx: Ctx, args: string[], o: TimedOptions = {}): Promise<Timed> {
  const r = await ctrTimed(ctx, args, o);
  if (r.code !== 0) throw new Error(`ctr ${args.join(' ')}: exit ${r.code ?? r.signal}${r.timedOut ? ' (timeout)' : ''}\n${r.stdout.slice(0, 2000)}${r.stderr.slice(0, 2000)}`);
  return r;
}

export function addMetric(ctx: Ctx, m: Omit<Metric, 'samples'>, samples: Record<string, number[]>): void {
  ctx.metrics.push({ ...m, samples });
}

export function countFailure(ctx: Ctx, workload: string, shim: string, n = 1): void {
  ctx.failures[workload] ??= {};
  ctx.failures[workload][shim] = (ctx.failures[workload][shim] ?? 0) + n;
}

/** Per-shim sample arrays. */
export function perShim(ctx: Ctx): Record<string, number[]> {
  return Object.fromEntries(ctx.shims.map((s) => [s.name, [] as number[]]));
}

/** Kills and removes containers (task delete --force, container delete), `limit` at a time; errors ignored. */
export async function removeContainers(ctx: Ctx, ids: string[], limit = 4): Promise<void> {
  await pool(ids, limit, async (id) => {
    await ctrTimed(ctx, ['task', 'delete', '--force', id], { timeoutMs: 30_000 });
    await ctrTimed(ctx, ['container', 'delete', id], { timeoutMs: 30_000 });
  });
}

// ---------------------------------------------------------------------------------------------
// Waiting for a quiet machine: this host may be shared (other test suites); a sample taken while
// something else burns the CPUs says little. Before each sample the bench waits until the whole
// machine was less than QUIET_BUSY busy over a 200 ms window (bench itself is idle then), for at
// most maxWaitMs; samples taken after giving up are counted in `noisySamples`.

const QUIET_BUSY = Number(process.env.BENCH_QUIET_BUSY || 0.3);
export const quietStats = { samples: 0, waitedMs: 0, noisySamples: 0 };

function cpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = v[3] + (v[4] ?? 0);
  return { busy: total - idle, total };
}

export async function waitQuiet(ctx: Ctx): Promise<void> {
  if (process.env.BENCH_WAIT_QUIET === '0') return;
  const maxWaitMs = ctx.quick ? 1000 : 15_000;
  const t0 = performance.now();
  quietStats.samples++;
  for (;;) {
    const a = cpuTimes();
    await new Promise((r) => setTimeout(r, 200));
    const b = cpuTimes();
    const busy = (b.busy - a.busy) / Math.max(1, b.total - a.total);
    if (busy < QUIET_BUSY) break;
    if (performance.now() - t0 > maxWaitMs) {
      quietStats.noisySamples++;
      break;
    }
  }
  quietStats.waitedMs += performance.now() - t0;
}
