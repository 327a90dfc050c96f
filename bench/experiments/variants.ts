// SPDX-License-Identifier: Apache-2.0
// Experimental variants of our shim, one lever at a time. `build.ts` writes, for each, a wrapper
// binary bench/experiments/out/bin/<name>/containerd-shim-runc-v2 (a /bin/sh script like
// bin/containerd-shim-runc-v2), which the bench runs as one more shim (BENCH_SHIMS=ours,<name>).
// Nothing in src/ or bin/ is changed: the variants run the same compiled code, bundled or not,
// with different Node/V8 flags.

export type Program =
  /** dist/src/shim/main.js as tsc compiles it (one ESM file per module, ~100 files). */
  | 'dist'
  /** dist/shim/main.js: the project's own bundle (scripts/bundle.sh: esbuild, one chunk per mode), what bin/ runs after `npm run build`. */
  | 'split'
  /** esbuild: one ESM file, dynamic imports kept lazy (bench/experiments/out/bundle/main.mjs). */
  | 'bundle'
  /** The same, minified. */
  | 'bundle-min'
  /** The project's split bundle, but with pino replaced by experiments/pino-lite.ts (esbuild alias). */
  | 'split-pinolite'
  /** One CommonJS file (no ESM loader at run time), per-mode init still lazy. */
  | 'cjs'
  /** One CJS file with every mode evaluated at build time, in a V8 startup snapshot. */
  | 'snapshot';

export interface Variant {
  name: string;
  program: Program;
  /** Extra node flags (they reach the daemon too: `start` re-executes node with process.execArgv). */
  flags: string[];
  description: string;
}

// Flag variants apply one flag set to what `ours` runs (the project's split bundle), so each
// differs from `ours` in exactly one lever.
export const VARIANTS: Variant[] = [
  { name: 'ours-unbundled', program: 'dist', flags: [], description: 'tsc output dist/src/shim/main.js, not bundled (~100 ESM files; the state before scripts/bundle.sh)' },
  { name: 'ours-bundle', program: 'bundle', flags: [], description: 'esbuild single-file ESM bundle of dist/src/shim/main.js (no chunks; per-mode init stays lazy)' },
  { name: 'ours-bundle-min', program: 'bundle-min', flags: [], description: 'the same bundle, minified' },
  { name: 'ours-pinolite', program: 'split-pinolite', flags: [], description: 'the project bundle (split) with pino replaced by a 60-line JSON-lines logger (bench/experiments/pino-lite.ts)' },
  { name: 'ours-cjs', program: 'cjs', flags: [], description: 'single-file CommonJS bundle (node runs it without the ESM loader); per-mode init stays lazy' },
  { name: 'ours-snapshot', program: 'snapshot', flags: [], description: 'V8 startup snapshot (node --build-snapshot) of a CJS bundle with all modes pre-evaluated' },
  { name: 'ours-semi1', program: 'split', flags: ['--max-semi-space-size=1'], description: 'ours + --max-semi-space-size=1 (MiB; young generation capped)' },
  { name: 'ours-old16', program: 'split', flags: ['--max-old-space-size=16'], description: 'ours + --max-old-space-size=16 (MiB; old generation capped)' },
  { name: 'ours-size', program: 'split', flags: ['--optimize-for-size'], description: 'ours + --optimize-for-size' },
  { name: 'ours-lite', program: 'split', flags: ['--lite-mode', '--no-expose-wasm'], description: 'ours + --lite-mode (no optimizing JIT, lazy feedback allocation; --no-expose-wasm silences V8\'s stderr warning, which would corrupt `start`\'s output)' },
  { name: 'ours-jitless', program: 'split', flags: ['--jitless', '--no-expose-wasm'], description: 'ours + --jitless (interpreter only; + --no-expose-wasm, see lite)' },
  { name: 'ours-pool1', program: 'split', flags: ['--v8-pool-size=1'], description: 'ours + --v8-pool-size=1 (one V8 platform worker thread instead of 4)' },
  {
    name: 'ours-combo', program: 'snapshot', flags: ['--max-semi-space-size=1', '--v8-pool-size=1'],
    description: 'snapshot + --max-semi-space-size=1 + --v8-pool-size=1',
  },
];

export function variant(name: string): Variant | undefined {
  return VARIANTS.find((v) => v.name === name);
}
