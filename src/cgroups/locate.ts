// SPDX-License-Identifier: Apache-2.0
/**
 * Finding a process's cgroup(s) from /proc/<pid>/cgroup (runc-and-io.md §7.1).
 *
 * Each line of that file is `hierarchy-id:controller-list:path`:
 *   - cgroup v2: a single `0::/some/path` line → `<cgroupRoot>/some/path`;
 *   - cgroup v1: one line per mounted hierarchy, e.g. `4:memory:/k8s.io/x`,
 *     `3:cpu,cpuacct:/k8s.io/x`, `1:name=systemd:/k8s.io/x`. A controller's
 *     directory is `<cgroupRoot>/<controller>/<path>`. Co-mounted controllers
 *     are normally mounted at `<cgroupRoot>/cpu,cpuacct` with `cpu` and
 *     `cpuacct` symlinks (systemd); if the per-controller name does not exist
 *     the joined name is used. Named hierarchies (`name=systemd`) live at
 *     `<cgroupRoot>/systemd` and are keyed `systemd`.
 *
 * Paths are taken as relative to the hierarchy roots mounted under
 * `<cgroupRoot>` (true for a shim in the host cgroup namespace, and inside a
 * private cgroup namespace whose cgroupfs is mounted from that namespace).
 */

import { existsSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { DEFAULT_CGROUP_ROOT, isUnified } from './mode.js';

const DEFAULT_PROC_ROOT = '/proc';

/** One line of /proc/<pid>/cgroup. */
export interface ProcCgroupEntry {
  /** Hierarchy id (0 for the cgroup2 hierarchy). */
  id: number;
  /** Controllers as listed (e.g. `['cpu', 'cpuacct']`, `['name=systemd']`, `[]` for v2). */
  controllers: string[];
  /** The raw comma-joined controller field (`cpu,cpuacct`). */
  controllerField: string;
  /** Cgroup path inside the hierarchy, starting with `/`. */
  path: string;
}

/** Parses the text of /proc/<pid>/cgroup; malformed lines are skipped. */
export function parseProcCgroup(text: string): ProcCgroupEntry[] {
  const out: ProcCgroupEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line === '') continue;
    const c1 = line.indexOf(':');
    if (c1 < 0) continue;
    const c2 = line.indexOf(':', c1 + 1);
    if (c2 < 0) continue; // the path itself may contain ':', so split on the first two only
    const id = Number(line.slice(0, c1));
    if (!Number.isInteger(id) || id < 0) continue;
    const controllerField = line.slice(c1 + 1, c2);
    const path = line.slice(c2 + 1);
    if (!path.startsWith('/')) continue;
    out.push({ id, controllerField, controllers: controllerField === '' ? [] : controllerField.split(','), path });
  }
  return out;
}

/** The cgroup2 path (`0::<path>` line), if any. */
export function unifiedPath(entries: readonly ProcCgroupEntry[]): string | undefined {
  return entries.find((e) => e.id === 0 && e.controllerField === '')?.path;
}

/** Joins a cgroup path (absolute inside its hierarchy) below a mount directory. */
function cgroupDir(mountDir: string, cgroupPath: string): string {
  // posix.normalize collapses '//' and '/./'; joining keeps it under mountDir
  // for paths as the kernel prints them.
  const p = posix.normalize('/' + cgroupPath);
  return p === '/' ? mountDir : join(mountDir, p);
}

/** The key used for a v1 controller: `name=systemd` → `systemd`, others unchanged. */
function controllerKey(controller: string): string {
  return controller.startsWith('name=') ? controller.slice('name='.length) : controller;
}

/**
 * Maps every v1 controller to its absolute directory. A controller whose
 * hierarchy is not mounted under `cgroupRoot` (neither `<root>/<name>` nor
 * `<root>/<joined list>` exists) is left out. `exists` is injectable for tests.
 */
export function v1Dirs(
  entries: readonly ProcCgroupEntry[],
  cgroupRoot: string = DEFAULT_CGROUP_ROOT,
  exists: (path: string) => boolean = existsSync,
): Map<string, string> {
  const dirs = new Map<string, string>();
  for (const e of entries) {
    if (e.id === 0 && e.controllerField === '') continue; // the cgroup2 line
    for (const c of e.controllers) {
      const key = controllerKey(c);
      if (key === '') continue;
      const candidates = [join(cgroupRoot, key)];
      const joined = e.controllers.length > 1 ? e.controllers.map(controllerKey).join(',') : undefined;
      if (joined !== undefined) candidates.push(join(cgroupRoot, joined));
      if (e.controllerField !== key && e.controllerField !== joined) candidates.push(join(cgroupRoot, e.controllerField));
      const mount = candidates.find((m) => exists(m));
      if (mount !== undefined) dirs.set(key, cgroupDir(mount, e.path));
    }
  }
  return dirs;
}

/** The absolute v2 directory of a process, from its `0::` line. */
export function v2Dir(entries: readonly ProcCgroupEntry[], cgroupRoot: string = DEFAULT_CGROUP_ROOT): string | undefined {
  const p = unifiedPath(entries);
  return p === undefined ? undefined : cgroupDir(cgroupRoot, p);
}

export interface LocateOptions {
  /** Default /proc. */
  procRoot?: string;
  /** Default /sys/fs/cgroup. */
  cgroupRoot?: string;
  /** Force a version instead of detecting it from `cgroupRoot`. */
  version?: 1 | 2;
}

export type CgroupLocation =
  | { version: 1; dirs: Map<string, string> }
  | { version: 2; dir: string };

/**
 * Locates the cgroup of `pid`. Returns `undefined` if /proc/<pid>/cgroup
 * cannot be read (process gone) or has no usable entry for the mode.
 */
export function locateCgroup(pid: number, opts: LocateOptions = {}): CgroupLocation | undefined {
  const procRoot = opts.procRoot ?? DEFAULT_PROC_ROOT;
  const cgroupRoot = opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT;
  let text: string;
  try {
    text = readFileSync(join(procRoot, String(pid), 'cgroup'), 'utf8');
  } catch {
    return undefined;
  }
  const entries = parseProcCgroup(text);
  const version = opts.version ?? (isUnified(cgroupRoot) ? 2 : 1);
  if (version === 2) {
    const dir = v2Dir(entries, cgroupRoot);
    return dir === undefined ? undefined : { version: 2, dir };
  }
  const dirs = v1Dirs(entries, cgroupRoot);
  return dirs.size === 0 ? undefined : { version: 1, dirs };
}
