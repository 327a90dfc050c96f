// SPDX-License-Identifier: Apache-2.0
/**
 * A container's cgroup, located once from its init pid, and its Stats payload
 * (task-api.md §10, runc-and-io.md §7.1/§7.4).
 *
 * `stats()` returns the protobuf `Any` the Task `Stats` RPC puts in
 * `StatsResponse.stats`: type URL `io.containerd.cgroups.v1.Metrics` (legacy
 * and hybrid hosts) or `io.containerd.cgroups.v2.Metrics` (unified hosts),
 * value = the encoded Metrics message.
 */

import { existsSync } from 'node:fs';
import { Metrics as V1Metrics } from '../gen/cgroups/v1/metrics.js';
import { Metrics as V2Metrics } from '../gen/cgroups/v2/metrics.js';
import { type LocateOptions, locateCgroup } from './locate.js';
import { type V1Dirs, readV1Metrics, readV1MetricsSync } from './v1.js';
import { readV2Metrics, readV2MetricsSync } from './v2.js';

export const V1_METRICS_TYPE_URL = 'io.containerd.cgroups.v1.Metrics';
export const V2_METRICS_TYPE_URL = 'io.containerd.cgroups.v2.Metrics';

/** Shape-compatible with the generated `google.protobuf.Any`. */
export interface AnyMessage {
  typeUrl: string;
  value: Uint8Array;
}

/** Thrown by `stats()` when the cgroup no longer exists (map it to NotFound). */
export class CgroupNotFoundError extends Error {
  readonly code = 'ENOENT';
  constructor(message = 'cgroup does not exist') {
    super(message);
    this.name = 'CgroupNotFoundError';
  }
}

export interface CgroupHandleOptions extends LocateOptions {
  /** For /proc/partitions (v1 blkio device names); default /proc. */
  procRoot?: string;
  /** Hugepage sizes; default: the host's (/sys/kernel/mm/hugepages). */
  hugePageSizes?: readonly string[];
}

export type VersionedMetrics = { version: 1; metrics: V1Metrics } | { version: 2; metrics: V2Metrics };

/**
 * The cgroup of a container: for v1 the controller → directory map (only
 * controllers whose directory existed when located), for v2 one directory.
 */
export class CgroupHandle {
  private constructor(
    readonly version: 1 | 2,
    /** v1: controller (`memory`, `cpu`, `cpuacct`, `systemd`, …) → directory. Empty for v2. */
    readonly dirs: ReadonlyMap<string, string>,
    /** v2: the cgroup directory. Empty string for v1. */
    readonly dir: string,
    private readonly opts: CgroupHandleOptions,
  ) {}

  /**
   * Locates the cgroup of `pid` (normally the container's init) from
   * /proc/<pid>/cgroup. Returns `undefined` if the process is gone or its
   * cgroup cannot be found (the caller logs; Stats then reports NotFound and
   * no OOM watch is registered).
   */
  static forPid(pid: number, opts: CgroupHandleOptions = {}): CgroupHandle | undefined {
    const loc = locateCgroup(pid, opts);
    if (loc === undefined) return undefined;
    if (loc.version === 2) {
      return existsSync(loc.dir) ? new CgroupHandle(2, new Map(), loc.dir, opts) : undefined;
    }
    const dirs = new Map([...loc.dirs].filter(([, d]) => existsSync(d)));
    return dirs.size === 0 ? undefined : new CgroupHandle(1, dirs, '', opts);
  }

  /** A v1 handle from a controller → directory map (e.g. `{ memory: '/sys/fs/cgroup/memory/x' }`). */
  static fromV1Dirs(dirs: V1Dirs, opts: CgroupHandleOptions = {}): CgroupHandle {
    const map =
      dirs instanceof Map
        ? new Map(dirs)
        : new Map(Object.entries(dirs).filter((e): e is [string, string] => e[1] !== undefined));
    return new CgroupHandle(1, map, '', opts);
  }

  /** A v2 handle for a cgroup directory. */
  static fromV2Dir(dir: string, opts: CgroupHandleOptions = {}): CgroupHandle {
    return new CgroupHandle(2, new Map(), dir, opts);
  }

  /** The directory holding the memory controller files (v1 memory dir, or the v2 dir). */
  get memoryDir(): string | undefined {
    return this.version === 2 ? this.dir : this.dirs.get('memory');
  }

  /** The Any type URL of this handle's Stats payload. */
  get typeUrl(): string {
    return this.version === 2 ? V2_METRICS_TYPE_URL : V1_METRICS_TYPE_URL;
  }

  /**
   * Whether the cgroup still exists. v1: every located controller directory
   * exists (as containerd's "deleted" check); v2: the directory exists.
   */
  exists(): boolean {
    if (this.version === 2) return existsSync(this.dir);
    if (this.dirs.size === 0) return false;
    for (const d of this.dirs.values()) if (!existsSync(d)) return false;
    return true;
  }

  /** Reads the metrics (async, parallel file reads). @throws CgroupNotFoundError */
  async metrics(): Promise<VersionedMetrics> {
    this.mustExist();
    if (this.version === 2) return { version: 2, metrics: await readV2Metrics(this.dir, this.opts) };
    return { version: 1, metrics: await readV1Metrics(this.dirs, this.opts) };
  }

  /** Synchronous {@link metrics}. @throws CgroupNotFoundError */
  metricsSync(): VersionedMetrics {
    this.mustExist();
    if (this.version === 2) return { version: 2, metrics: readV2MetricsSync(this.dir, this.opts) };
    return { version: 1, metrics: readV1MetricsSync(this.dirs, this.opts) };
  }

  /** The Stats `Any` (async; preferred — keeps the event loop free). @throws CgroupNotFoundError */
  async stats(): Promise<AnyMessage> {
    return encodeMetrics(await this.metrics());
  }

  /** Synchronous {@link stats}. @throws CgroupNotFoundError */
  statsSync(): AnyMessage {
    return encodeMetrics(this.metricsSync());
  }

  private mustExist(): void {
    if (!this.exists()) throw new CgroupNotFoundError();
  }
}

/** Wraps metrics in an `Any` with the containerd type URL. */
function encodeMetrics(m: VersionedMetrics): AnyMessage {
  if (m.version === 2) return { typeUrl: V2_METRICS_TYPE_URL, value: V2Metrics.encode(m.metrics).finish() };
  return { typeUrl: V1_METRICS_TYPE_URL, value: V1Metrics.encode(m.metrics).finish() };
}
