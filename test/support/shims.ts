// SPDX-License-Identifier: Apache-2.0
// Which shim binaries the end-to-end tests run against.
//
//   REFERENCE_SHIM  containerd's own Go shim of the daemon under test: Debian's `containerd`
//                   package's /usr/bin/containerd-shim-runc-v2 for 1.6 (the default), or the one
//                   beside the daemon selected by SHIM_DAEMON (test/support/daemons.ts).
//   OUR_SHIM        this repository's bin/containerd-shim-runc-v2 (runs dist/src/shim/main.js).
//
// SHIM_UNDER_TEST=ours|reference restricts shimsUnderTest() to one of them.

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { selectedDaemon, type Daemon } from './daemons.js';

export const REFERENCE_SHIM = selectedDaemon().shim;

/** The repository root: the nearest ancestor of this file that holds a package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

export const REPO_ROOT = repoRoot();
export const OUR_SHIM = join(REPO_ROOT, 'bin', 'containerd-shim-runc-v2');

export type ShimName = 'reference' | 'ours';
export interface ShimUnderTest {
  name: ShimName;
  /** Absolute path, passed as `ctr run --runtime <path>` (containerd 1.6+ accepts a path). */
  path: string;
}

/** Both shims, or the one named by SHIM_UNDER_TEST (ours|reference); the reference is `daemon`'s own. */
export function shimsUnderTest(daemon?: Daemon): ShimUnderTest[] {
  const all: ShimUnderTest[] = [
    { name: 'reference', path: daemon ? daemon.shim : REFERENCE_SHIM },
    { name: 'ours', path: OUR_SHIM },
  ];
  const only = (process.env.SHIM_UNDER_TEST ?? '').trim();
  if (only === '' || only === 'all' || only === 'both') return all;
  const picked = all.filter((s) => s.name === only);
  if (picked.length === 0) {
    throw new Error(`SHIM_UNDER_TEST=${only}: expected "ours" or "reference"`);
  }
  return picked;
}
