// SPDX-License-Identifier: Apache-2.0
// The shims the bench runs: the reference Go shim, ours, and experimental variants of ours
// (bench/experiments/variants.ts, built by bench/experiments/build.ts).
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OUR_SHIM, REFERENCE_SHIM, REPO_ROOT } from '../../test/support/shims.js';
import { VARIANTS, variant } from '../experiments/variants.js';

export interface Shim {
  name: string;
  /** Absolute path of the executable (`ctr run --runtime <path>`). */
  path: string;
  description: string;
  /** The workloads it runs in (all when unset). */
  only?: string[];
}

/** Workloads where a shared daemon differs from one daemon per container: density, churn, and what tenants do to each other. */
const SHARED_WORKLOADS = ['interference', 'memory', 'churn'];

/**
 * Ours with something set in containerd's environment, as an operator sets it: a two-line
 * wrapper around bin/containerd-shim-runc-v2 (the launcher path, unlike the flag variants),
 * written under bench/out (not tracked).
 */
const ENV_SHIMS: Record<string, { env: Record<string, string>; only?: string[]; description: string }> = {
  'ours-shared': {
    env: { SHIM_SHARED: '1' }, only: SHARED_WORKLOADS,
    description: `ours with SHIM_SHARED=1 (opt-in shared daemons, up to 8 containers or pods per daemon; ${SHARED_WORKLOADS.join(' and ')} only)`,
  },
  'ours-nopool': { env: { SHIM_STANDBY: '0' }, description: 'ours with SHIM_STANDBY=0: no standby pool, every start and delete boots Node' },
  'ours-refill-idle': {
    env: { SHIM_POOL_REFILL: 'idle' },
    description: 'ours with SHIM_POOL_REFILL=idle: a standby taken from an empty pool is replaced only once containerd is quiet, never at once',
  },
};

function envWrapper(name: string, env: Record<string, string>): string {
  const dir = join(REPO_ROOT, 'bench', 'out', 'bin', name);
  const path = join(dir, 'containerd-shim-runc-v2');
  mkdirSync(dir, { recursive: true });
  const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ');
  writeFileSync(path, `#!/bin/sh\n${vars} exec ${OUR_SHIM} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/** The JS entry bin/containerd-shim-runc-v2 runs: always the bundle (one build, one path). */
function ourProgram(): string {
  return join(REPO_ROOT, 'dist', 'shim', 'main.js');
}

/** The module holding the daemon (serve) code that ours loads: a chunk of the bundle, or the tsc output. */
export function ourServeModule(): string {
  const main = ourProgram();
  if (main.includes('/dist/shim/')) {
    const chunk = readdirSync(join(REPO_ROOT, 'dist', 'shim')).find((f) => /^serve-.*\.js$/.test(f));
    if (chunk) return join(REPO_ROOT, 'dist', 'shim', chunk);
  }
  return join(REPO_ROOT, 'dist', 'src', 'shim', 'serve.js');
}

export const EXPERIMENTS_OUT = join(REPO_ROOT, 'bench', 'experiments', 'out');

export function variantBinary(name: string): string {
  return join(EXPERIMENTS_OUT, 'bin', name, 'containerd-shim-runc-v2');
}

/** Shims named in BENCH_SHIMS (comma-separated; default "reference,ours,ours-shared"). */
export function selectShims(spec = process.env.BENCH_SHIMS ?? 'reference,ours,ours-shared'): Shim[] {
  const names = spec.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return names.map((name) => {
    if (name === 'reference') return { name, path: REFERENCE_SHIM, description: `containerd's Go shim (${REFERENCE_SHIM})` };
    if (name === 'ours') return { name, path: OUR_SHIM, description: `bin/containerd-shim-runc-v2 → node ${ourProgram().slice(REPO_ROOT.length + 1)}` };
    const e = ENV_SHIMS[name];
    if (e) return { name, path: envWrapper(name, e.env), only: e.only, description: e.description };
    const v = variant(name);
    if (!v) throw new Error(`BENCH_SHIMS: unknown shim ${name}; known: reference, ours, ${Object.keys(ENV_SHIMS).join(', ')}, ${VARIANTS.map((x) => x.name).join(', ')}`);
    const path = variantBinary(name);
    if (!existsSync(path)) throw new Error(`${path} is missing: run \`node dist/bench/experiments/build.js\` first`);
    return { name, path, description: v.description };
  });
}
