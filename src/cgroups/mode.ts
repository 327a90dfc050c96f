// SPDX-License-Identifier: Apache-2.0
/**
 * cgroup mode detection (task-api.md §10, runc-and-io.md §7.1).
 *
 * The reference checks the filesystem magic of /sys/fs/cgroup (cgroup2 ⇒
 * "unified"). Node has no statfs, so we use the documented proxy: a cgroup2
 * root has `cgroup.controllers`; a tmpfs with per-controller v1 mounts does
 * not. Hybrid hosts (v1 controllers plus a controller-less cgroup2 at
 * /sys/fs/cgroup/unified) are treated like legacy ones: stats are v1.
 */

import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * - `unified`: pure cgroup v2 (`<root>/cgroup.controllers` exists).
 * - `hybrid`: v1 controllers, plus cgroup2 mounted at `<root>/unified`.
 * - `legacy`: v1 only.
 * - `unavailable`: `<root>` does not exist or holds nothing.
 */
export type CgroupMode = 'unified' | 'hybrid' | 'legacy' | 'unavailable';

let cachedDefault: CgroupMode | undefined;

/** Detects the cgroup mode of `root` (default /sys/fs/cgroup; cached for the default root). */
export function cgroupMode(root: string = DEFAULT_CGROUP_ROOT): CgroupMode {
  if (root === DEFAULT_CGROUP_ROOT && cachedDefault !== undefined) return cachedDefault;
  const mode = detect(root);
  if (root === DEFAULT_CGROUP_ROOT) cachedDefault = mode;
  return mode;
}

function detect(root: string): CgroupMode {
  if (existsSync(join(root, 'cgroup.controllers'))) return 'unified';
  if (existsSync(join(root, 'unified', 'cgroup.controllers'))) return 'hybrid';
  try {
    if (readdirSync(root).length > 0) return 'legacy';
  } catch {
    /* fall through */
  }
  return 'unavailable';
}

/** True when stats and OOM monitoring must use cgroup v2 (unified mode). */
export function isUnified(root: string = DEFAULT_CGROUP_ROOT): boolean {
  return cgroupMode(root) === 'unified';
}
