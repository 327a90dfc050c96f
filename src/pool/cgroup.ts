// SPDX-License-Identifier: Apache-2.0
// Where standbys live: in the cgroup(s) containerd started the shim that booted them in, never
// in a container's or pod's. A standby records its cgroups when it boots (before any adoption
// moves it into a `shim_cgroup`), and a standby it spawns later — possibly as a pod's daemon,
// by then in that pod's `shim_cgroup` — is moved back there at once, so the pod is never charged
// for it. On adoption `start` moves the standby into the requested `shim_cgroup`, as a fresh shim.
import fs from 'node:fs';
import path from 'node:path';
import { locateCgroup, type CgroupLocation } from '../cgroups/locate.js';

let home: CgroupLocation | undefined;

/** Remember this process's cgroups as the pool's home (once, at a standby's boot). */
export function recordHome(): void {
  home ??= locateCgroup(process.pid);
}

/** The cgroup.procs files of the home cgroups ([] when none was recorded). */
function homeProcsFiles(loc = home): string[] {
  if (!loc) return [];
  const dirs = loc.version === 2 ? [loc.dir] : [...new Set(loc.dirs.values())];
  return dirs.map((d) => path.join(d, 'cgroup.procs'));
}

/**
 * Move `pid` (a standby just spawned) into the home cgroups. Best effort: without the rights
 * (an unprivileged shim) it stays where it was born, as with no pool.
 */
export function placeAtHome(pid: number): void {
  for (const f of homeProcsFiles()) {
    try { fs.writeFileSync(f, String(pid)); } catch { /* not permitted, or the cgroup is gone */ }
  }
}
