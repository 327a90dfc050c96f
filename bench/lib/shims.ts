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

/** Workloads where a shared daemon differs from one daemon per container: density and churn. */
const SHARED_WORKLOADS = ['memory', 'churn'];

/**
 * A wrapper that runs ours with SHIM_SHARED=1, as an operator opting in sets it in containerd's
 * environment (docs/shared-daemon.md). Written under bench/out (not tracked).
 */
function sharedWrapper(): string {
  const dir = join(REPO_ROOT, 'bench', 'out', 'bin', 'ours-shared');
  const path = join(dir, 'containerd-shim-runc-v2');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, `#!/bin/sh\nSHIM_SHARED=1 exec ${OUR_SHIM} "$@"\n`);
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
    if (name === 'ours-shared') {
      return { name, path: sharedWrapper(), only: SHARED_WORKLOADS, description: `ours with SHIM_SHARED=1 (opt-in shared daemons, up to 8 containers or pods per daemon; ${SHARED_WORKLOADS.join(' and ')} only)` };
    }
    const v = variant(name);
    if (!v) throw new Error(`BENCH_SHIMS: unknown shim ${name}; known: reference, ours, ours-shared, ${VARIANTS.map((x) => x.name).join(', ')}`);
    const path = variantBinary(name);
    if (!existsSync(path)) throw new Error(`${path} is missing: run \`node dist/bench/experiments/build.js\` first`);
    return { name, path, description: v.description };
  });
}
