// SPDX-License-Identifier: Apache-2.0
// The shims the bench runs: the reference Go shim, ours, and experimental variants of ours
// (bench/experiments/variants.ts, built by bench/experiments/build.ts).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { OUR_SHIM, REFERENCE_SHIM, REPO_ROOT } from '../../test/support/shims.js';
import { VARIANTS, variant } from '../experiments/variants.js';

export interface Shim {
  name: string;
  /** Absolute path of the executable (`ctr run --runtime <path>`). */
  path: string;
  description: string;
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

/** Shims named in BENCH_SHIMS (comma-separated; default "reference,ours"). */
export function selectShims(spec = process.env.BENCH_SHIMS ?? 'reference,ours'): Shim[] {
  const names = spec.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return names.map((name) => {
    if (name === 'reference') return { name, path: REFERENCE_SHIM, description: `containerd's Go shim (${REFERENCE_SHIM})` };
    if (name === 'ours') return { name, path: OUR_SHIM, description: `bin/containerd-shim-runc-v2 → node ${ourProgram().slice(REPO_ROOT.length + 1)}` };
    const v = variant(name);
    if (!v) throw new Error(`BENCH_SHIMS: unknown shim ${name}; known: reference, ours, ${VARIANTS.map((x) => x.name).join(', ')}`);
    const path = variantBinary(name);
    if (!existsSync(path)) throw new Error(`${path} is missing: run \`node dist/bench/experiments/build.js\` first`);
    return { name, path, description: v.description };
  });
}
