// SPDX-License-Identifier: Apache-2.0
/**
 * cgroup v2 statistics → `io.containerd.cgroups.v2.Metrics` (task-api.md §10.1).
 *
 * Sources in the container's cgroup directory:
 *   - cpu.stat / memory.stat key-value lines (each only if `cpu` / `memory` is
 *     listed in cgroup.controllers);
 *   - pids.current, pids.max; memory.current, memory.max, memory.swap.current,
 *     memory.swap.max (`max` → 2^64−1, absent → 0);
 *   - memory.events → MemoryEvents (omitted if the file is absent/empty);
 *   - io.stat (`MAJ:MIN rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…`);
 *   - rdma.current / rdma.max; hugetlb.<size>.current / .max for every host
 *     hugepage size whose files exist in the cgroup;
 *   - cpu.pressure / memory.pressure / io.pressure → cpu.psi / memory.psi / io.psi
 *     (psi.ts), as containerd/cgroups v3.1.3 cgroup2/manager.go (containerd 2.x's Go shim):
 *     cpu.psi when cpu.stat exists, memory.psi when memory.stat exists, io.psi always;
 *     unset when the pressure file is absent, unreadable or malformed.
 * pids, cpu, memory, io and rdma are always present (possibly all zero).
 *
 * Tested against hand-written fixtures following the kernel's cgroup-v2
 * documentation, and on a pure v2 host side by side with the Go shim
 * (test/e2e/cgroups-v2.test.ts, run in scripts/v2-lane.sh's guest).
 */

import { join } from 'node:path';
import {
  CPUStat,
  HugeTlbStat,
  IOEntry,
  IOStat,
  MemoryEvents,
  MemoryStat,
  Metrics,
  PidsStat,
  RdmaStat,
} from '../gen/cgroups/v2/metrics.js';
import { type FileGetter, hostHugePageSizes, parseKeyValues, parseUint, runAsync, runSync, singleValue } from './files.js';
import { parsePressure } from './psi.js';
import { parseRdma } from './v1.js';

export interface V2ReadOptions {
  /** Hugepage sizes (`2MB`, `1GB`); default: from /sys/kernel/mm/hugepages. */
  hugePageSizes?: readonly string[];
}

/** Reads v2 metrics with parallel asynchronous file reads. */
export function readV2Metrics(dir: string, opts: V2ReadOptions = {}): Promise<Metrics> {
  return runAsync((get) => buildV2Metrics(dir, get, opts));
}

/** Reads v2 metrics synchronously. */
export function readV2MetricsSync(dir: string, opts: V2ReadOptions = {}): Metrics {
  return runSync((get) => buildV2Metrics(dir, get, opts));
}

/** memory.stat key → MemoryStat field (the fields read from memory.stat). */
const MEMORY_STAT_KEYS: ReadonlyArray<readonly [string, keyof MemoryStat]> = [
  ['anon', 'anon'],
  ['file', 'file'],
  ['kernel_stack', 'kernelStack'],
  ['slab', 'slab'],
  ['sock', 'sock'],
  ['shmem', 'shmem'],
  ['file_mapped', 'fileMapped'],
  ['file_dirty', 'fileDirty'],
  ['file_writeback', 'fileWriteback'],
  ['anon_thp', 'anonThp'],
  ['inactive_anon', 'inactiveAnon'],
  ['active_anon', 'activeAnon'],
  ['inactive_file', 'inactiveFile'],
  ['active_file', 'activeFile'],
  ['unevictable', 'unevictable'],
  ['slab_reclaimable', 'slabReclaimable'],
  ['slab_unreclaimable', 'slabUnreclaimable'],
  ['pgfault', 'pgfault'],
  ['pgmajfault', 'pgmajfault'],
  ['workingset_refault', 'workingsetRefault'],
  ['workingset_activate', 'workingsetActivate'],
  ['workingset_nodereclaim', 'workingsetNodereclaim'],
  ['pgrefill', 'pgrefill'],
  ['pgscan', 'pgscan'],
  ['pgsteal', 'pgsteal'],
  ['pgactivate', 'pgactivate'],
  ['pgdeactivate', 'pgdeactivate'],
  ['pglazyfree', 'pglazyfree'],
  ['pglazyfreed', 'pglazyfreed'],
  ['thp_fault_alloc', 'thpFaultAlloc'],
  ['thp_collapse_alloc', 'thpCollapseAlloc'],
];

/** Builds the metrics from file contents supplied by `get` (pure; see files.ts). */
export function buildV2Metrics(dir: string, get: FileGetter, opts: V2ReadOptions = {}): Metrics {
  const f = (name: string) => get(join(dir, name));
  const controllers = new Set((f('cgroup.controllers') ?? '').split(/\s+/).filter((s) => s !== ''));
  const cpuStat = controllers.has('cpu') ? parseKeyValues(f('cpu.stat')) : new Map<string, bigint>();
  const memStat = controllers.has('memory') ? parseKeyValues(f('memory.stat')) : new Map<string, bigint>();

  const m = Metrics.fromPartial({});
  m.pids = PidsStat.fromPartial({ current: singleValue(f('pids.current')), limit: singleValue(f('pids.max')) });
  m.cpu = CPUStat.fromPartial({
    usageUsec: cpuStat.get('usage_usec') ?? 0n,
    userUsec: cpuStat.get('user_usec') ?? 0n,
    systemUsec: cpuStat.get('system_usec') ?? 0n,
    nrPeriods: cpuStat.get('nr_periods') ?? 0n,
    nrThrottled: cpuStat.get('nr_throttled') ?? 0n,
    throttledUsec: cpuStat.get('throttled_usec') ?? 0n,
  });
  // containerd/cgroups v3.1.3 readCPUStats / readMemoryStats return a message without PSI when
  // cpu.stat / memory.stat does not exist; IOStat always gets io.pressure's (manager.go Stat).
  if (f('cpu.stat') !== undefined) m.cpu.psi = parsePressure(f('cpu.pressure'));

  const mem = MemoryStat.fromPartial({});
  const target = mem as unknown as Record<string, bigint>;
  for (const [key, field] of MEMORY_STAT_KEYS) {
    const v = memStat.get(key);
    if (v !== undefined) target[field] = v;
  }
  mem.usage = singleValue(f('memory.current'));
  mem.usageLimit = singleValue(f('memory.max'));
  mem.swapUsage = singleValue(f('memory.swap.current'));
  mem.swapLimit = singleValue(f('memory.swap.max'));
  if (f('memory.stat') !== undefined) mem.psi = parsePressure(f('memory.pressure'));
  m.memory = mem;

  const events = parseKeyValues(f('memory.events'));
  if (events.size > 0) m.memoryEvents = memoryEventsFrom(events);

  m.io = IOStat.fromPartial({ usage: parseIoStat(f('io.stat')), psi: parsePressure(f('io.pressure')) });
  m.rdma = RdmaStat.fromPartial({
    current: parseRdma(f('rdma.current') ?? ''),
    limit: parseRdma(f('rdma.max') ?? ''),
  });
  // Only the sizes whose files exist, as containerd/cgroups v1.1.0 v2/utils.go readHugeTlbStats
  // (it lists the cgroup's hugetlb.<size>.{current,max} files): a cgroup without the hugetlb
  // controller (not enabled in its parent) has none, and no entry.
  for (const size of opts.hugePageSizes ?? hostHugePageSizes()) {
    const current = f(`hugetlb.${size}.current`);
    const max = f(`hugetlb.${size}.max`);
    if (current === undefined && max === undefined) continue;
    m.hugetlb.push(HugeTlbStat.fromPartial({ pagesize: size, current: singleValue(current), max: singleValue(max) }));
  }
  return m;
}

/** memory.events lines → MemoryEvents (`oom_group_kill` etc. ignored). */
function memoryEventsFrom(kv: ReadonlyMap<string, bigint>): MemoryEvents {
  return MemoryEvents.fromPartial({
    low: kv.get('low') ?? 0n,
    high: kv.get('high') ?? 0n,
    max: kv.get('max') ?? 0n,
    oom: kv.get('oom') ?? 0n,
    oomKill: kv.get('oom_kill') ?? 0n,
  });
}

/** Parses io.stat: one line per device, `MAJ:MIN key=value …`; unknown keys ignored. */
export function parseIoStat(text: string | undefined): IOEntry[] {
  const out: IOEntry[] = [];
  if (text === undefined) return out;
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    if (parts.length < 2) continue;
    const mm = /^([0-9]+):([0-9]+)$/.exec(parts[0]);
    if (!mm) continue;
    const e = IOEntry.fromPartial({ major: BigInt(mm[1]), minor: BigInt(mm[2]) });
    for (const kv of parts.slice(1)) {
      const eq = kv.indexOf('=');
      if (eq < 0) continue;
      const v = parseUint(kv.slice(eq + 1));
      if (v === undefined) continue;
      switch (kv.slice(0, eq)) {
        case 'rbytes':
          e.rbytes = v;
          break;
        case 'wbytes':
          e.wbytes = v;
          break;
        case 'rios':
          e.rios = v;
          break;
        case 'wios':
          e.wios = v;
          break;
      }
    }
    out.push(e);
  }
  return out;
}
