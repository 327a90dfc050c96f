// SPDX-License-Identifier: Apache-2.0
/**
 * cgroup v1 statistics → `io.containerd.cgroups.v1.Metrics` (task-api.md §10.2).
 *
 * Input is the controller → directory map from locate.ts. Per subsystem
 * (mirroring containerd/cgroups' cgroup1 package, which the reference shim
 * calls with "ignore files that do not exist"):
 *   - cpu (always present in the result): cpuacct.usage / usage_percpu /
 *     stat (USER_HZ ticks → ns) and cpu.stat throttling;
 *   - memory (present if memory.stat is readable): memory.stat keys,
 *     MemoryEntry usage/swap(memsw)/kernel(kmem)/kernel_tcp(kmem.tcp), and
 *     memory.oom_control → memory_oom_control;
 *   - pids (present if pids.current is readable): `max` → limit 0;
 *   - blkio (present if the controller is): the CFQ `blkio.*_recursive`
 *     files, or — when they are absent/empty, as on every kernel without CFQ
 *     (≥ 5.0) — `blkio.throttle.io_serviced` / `io_service_bytes`; device
 *     names from /proc/partitions (`/dev/<name>`); bare `Total N` lines skipped;
 *   - hugetlb: `hugetlb.<size>.{usage_in_bytes,max_usage_in_bytes,failcnt}`
 *     for every host hugepage size;
 *   - rdma: rdma.current / rdma.max.
 * Files that are missing (subsystem absent, swap accounting off, …) leave
 * their fields 0. `network` and `cgroup_stats` are never filled (as in the
 * reference).
 */

import { join } from 'node:path';
import {
  BlkIOEntry,
  BlkIOStat,
  CPUStat,
  HugetlbStat,
  MemoryEntry,
  MemoryOomControl,
  MemoryStat,
  Metrics,
  PidsStat,
  RdmaEntry,
  RdmaStat,
} from '../gen/cgroups/v1/metrics.js';
import {
  type FileGetter,
  MAX_UINT32,
  hostHugePageSizes,
  parseKeyValues,
  parseUint,
  runAsync,
  runSync,
  singleValue,
} from './files.js';

/** USER_HZ: the unit of cpuacct.stat. 100 on every Linux architecture containerd supports. */
const CLK_TCK = 100n;
const NS_PER_SEC = 1_000_000_000n;

/** Controller → absolute directory (locate.ts `v1Dirs`), as a Map or a plain object. */
export type V1Dirs = ReadonlyMap<string, string> | Readonly<Record<string, string | undefined>>;

export interface V1ReadOptions {
  /** Where `partitions` is read for blkio device names (default /proc). */
  procRoot?: string;
  /** Hugepage sizes (`2MB`, `1GB`); default: from /sys/kernel/mm/hugepages. */
  hugePageSizes?: readonly string[];
}

function isMap(dirs: V1Dirs): dirs is ReadonlyMap<string, string> {
  return dirs instanceof Map;
}

function dirOf(dirs: V1Dirs, controller: string): string | undefined {
  if (isMap(dirs)) return dirs.get(controller);
  return (dirs)[controller];
}

/** Reads v1 metrics with parallel asynchronous file reads. */
export function readV1Metrics(dirs: V1Dirs, opts: V1ReadOptions = {}): Promise<Metrics> {
  return runAsync((get) => buildV1Metrics(dirs, get, opts));
}

/** Reads v1 metrics synchronously. */
export function readV1MetricsSync(dirs: V1Dirs, opts: V1ReadOptions = {}): Metrics {
  return runSync((get) => buildV1Metrics(dirs, get, opts));
}

/** Builds the metrics from file contents supplied by `get` (pure; see files.ts). */
function buildV1Metrics(dirs: V1Dirs, get: FileGetter, opts: V1ReadOptions = {}): Metrics {
  const m = Metrics.fromPartial({});
  m.cpu = CPUStat.fromPartial({ usage: {}, throttling: {} });

  const cpuacct = dirOf(dirs, 'cpuacct');
  if (cpuacct !== undefined) {
    const usage = m.cpu.usage!;
    usage.total = singleValue(get(join(cpuacct, 'cpuacct.usage')), 0n);
    usage.perCpu = parsePerCpu(get(join(cpuacct, 'cpuacct.usage_percpu')));
    const stat = parseKeyValues(get(join(cpuacct, 'cpuacct.stat')));
    usage.user = ((stat.get('user') ?? 0n) * NS_PER_SEC) / CLK_TCK;
    usage.kernel = ((stat.get('system') ?? 0n) * NS_PER_SEC) / CLK_TCK;
  }

  const cpu = dirOf(dirs, 'cpu');
  if (cpu !== undefined) {
    const stat = parseKeyValues(get(join(cpu, 'cpu.stat')));
    const t = m.cpu.throttling!;
    t.periods = stat.get('nr_periods') ?? 0n;
    t.throttledPeriods = stat.get('nr_throttled') ?? 0n;
    t.throttledTime = stat.get('throttled_time') ?? 0n;
  }

  const memory = dirOf(dirs, 'memory');
  if (memory !== undefined) {
    const statText = get(join(memory, 'memory.stat'));
    if (statText !== undefined) {
      const mem = memoryStatFromText(statText);
      mem.usage = memoryEntry(get, memory, '');
      mem.swap = memoryEntry(get, memory, 'memsw.');
      mem.kernel = memoryEntry(get, memory, 'kmem.');
      mem.kernelTcp = memoryEntry(get, memory, 'kmem.tcp.');
      m.memory = mem;
    }
    const oomText = get(join(memory, 'memory.oom_control'));
    if (oomText !== undefined) m.memoryOomControl = oomControlFromText(oomText);
  }

  const pids = dirOf(dirs, 'pids');
  if (pids !== undefined) {
    const current = get(join(pids, 'pids.current'));
    if (current !== undefined) {
      // containerd's v1 code leaves the limit at 0 for "max".
      m.pids = PidsStat.fromPartial({
        current: singleValue(current, 0n),
        limit: singleValue(get(join(pids, 'pids.max')), 0n),
      });
    }
  }

  const blkio = dirOf(dirs, 'blkio');
  if (blkio !== undefined) m.blkio = blkioStat(get, blkio, opts.procRoot ?? '/proc');

  const hugetlb = dirOf(dirs, 'hugetlb');
  if (hugetlb !== undefined) {
    for (const size of opts.hugePageSizes ?? hostHugePageSizes()) {
      const f = (name: string) => get(join(hugetlb, `hugetlb.${size}.${name}`));
      const usage = f('usage_in_bytes');
      const max = f('max_usage_in_bytes');
      const failcnt = f('failcnt');
      if (usage === undefined && max === undefined && failcnt === undefined) continue;
      m.hugetlb.push(
        HugetlbStat.fromPartial({
          pagesize: size,
          usage: singleValue(usage, 0n),
          max: singleValue(max, 0n),
          failcnt: singleValue(failcnt, 0n),
        }),
      );
    }
  }

  const rdma = dirOf(dirs, 'rdma');
  if (rdma !== undefined) {
    const current = get(join(rdma, 'rdma.current'));
    const max = get(join(rdma, 'rdma.max'));
    // As in the reference: skip if a device came or went between the two reads.
    if (current !== undefined && max !== undefined && current.split('\n').length === max.split('\n').length) {
      m.rdma = RdmaStat.fromPartial({ current: parseRdma(current), limit: parseRdma(max) });
    }
  }
  return m;
}

/** `cpuacct.usage_percpu`: space-separated ns per CPU. */
export function parsePerCpu(text: string | undefined): bigint[] {
  if (text === undefined) return [];
  const out: bigint[] = [];
  for (const f of text.trim().split(/\s+/)) {
    if (f === '') continue;
    const v = parseUint(f);
    if (v === undefined) return out;
    out.push(v);
  }
  return out;
}

/** memory.stat keys that are renamed in MemoryStat (besides snake → camel case). */
const MEMORY_STAT_KEYS: ReadonlyArray<readonly [string, keyof MemoryStat]> = (() => {
  const base: [string, keyof MemoryStat][] = [
    ['cache', 'cache'],
    ['rss', 'rss'],
    ['rss_huge', 'rssHuge'],
    ['mapped_file', 'mappedFile'],
    ['dirty', 'dirty'],
    ['writeback', 'writeback'],
    ['pgpgin', 'pgPgIn'],
    ['pgpgout', 'pgPgOut'],
    ['pgfault', 'pgFault'],
    ['pgmajfault', 'pgMajFault'],
    ['inactive_anon', 'inactiveAnon'],
    ['active_anon', 'activeAnon'],
    ['inactive_file', 'inactiveFile'],
    ['active_file', 'activeFile'],
    ['unevictable', 'unevictable'],
  ];
  const all: [string, keyof MemoryStat][] = [...base];
  all.push(['hierarchical_memory_limit', 'hierarchicalMemoryLimit']);
  all.push(['hierarchical_memsw_limit', 'hierarchicalSwapLimit']);
  for (const [k, f] of base) {
    all.push([`total_${k}`, `total${f[0].toUpperCase()}${f.slice(1)}` as keyof MemoryStat]);
  }
  return all;
})();

/** Parses memory.stat into a MemoryStat (MemoryEntry sub-messages unset). */
function memoryStatFromText(text: string): MemoryStat {
  const kv = parseKeyValues(text);
  const mem = MemoryStat.fromPartial({});
  const target = mem as unknown as Record<string, bigint>;
  for (const [key, field] of MEMORY_STAT_KEYS) {
    const v = kv.get(key);
    if (v !== undefined) target[field] = v;
  }
  return mem;
}

/** `memory.<module>{usage_in_bytes,max_usage_in_bytes,failcnt,limit_in_bytes}`. */
function memoryEntry(get: FileGetter, dir: string, module: string): MemoryEntry {
  const f = (name: string) => singleValue(get(join(dir, `memory.${module}${name}`)), 0n);
  return MemoryEntry.fromPartial({
    usage: f('usage_in_bytes'),
    max: f('max_usage_in_bytes'),
    failcnt: f('failcnt'),
    limit: f('limit_in_bytes'),
  });
}

/** memory.oom_control: `oom_kill_disable N`, `under_oom N`, `oom_kill N`. */
function oomControlFromText(text: string): MemoryOomControl {
  const kv = parseKeyValues(text);
  return MemoryOomControl.fromPartial({
    oomKillDisable: kv.get('oom_kill_disable') ?? 0n,
    underOom: kv.get('under_oom') ?? 0n,
    oomKill: kv.get('oom_kill') ?? 0n,
  });
}

const CFQ_FILES: ReadonlyArray<readonly [string, keyof BlkIOStat]> = [
  ['sectors_recursive', 'sectorsRecursive'],
  ['io_service_bytes_recursive', 'ioServiceBytesRecursive'],
  ['io_serviced_recursive', 'ioServicedRecursive'],
  ['io_queued_recursive', 'ioQueuedRecursive'],
  ['io_service_time_recursive', 'ioServiceTimeRecursive'],
  ['io_wait_time_recursive', 'ioWaitTimeRecursive'],
  ['io_merged_recursive', 'ioMergedRecursive'],
  ['time_recursive', 'ioTimeRecursive'],
];

const THROTTLE_FILES: ReadonlyArray<readonly [string, keyof BlkIOStat]> = [
  ['throttle.io_serviced', 'ioServicedRecursive'],
  ['throttle.io_service_bytes', 'ioServiceBytesRecursive'],
];

function blkioStat(get: FileGetter, dir: string, procRoot: string): BlkIOStat {
  const stat = BlkIOStat.fromPartial({});
  const lists = stat as unknown as Record<keyof BlkIOStat, BlkIOEntry[]>;
  let n = 0;
  // CFQ files only exist on kernels with the CFQ scheduler (< 5.0).
  if (get(join(dir, 'blkio.io_serviced_recursive')) !== undefined) {
    for (const [name, field] of CFQ_FILES) {
      lists[field] = parseBlkioEntries(get(join(dir, `blkio.${name}`)));
      n += lists[field].length;
    }
  }
  if (n === 0) {
    for (const [name, field] of THROTTLE_FILES) {
      lists[field] = parseBlkioEntries(get(join(dir, `blkio.${name}`)));
      n += lists[field].length;
    }
  }
  if (n > 0) {
    const devices = parsePartitions(get(join(procRoot, 'partitions')));
    for (const list of Object.values(lists)) {
      for (const e of list) e.device = devices.get(`${e.major}:${e.minor}`) ?? '';
    }
  }
  return stat;
}

/**
 * Parses a blkio stat file: lines `MAJ:MIN Op value` or `MAJ:MIN value`
 * (e.g. blkio.time_recursive). The trailing `Total N` line is skipped; the
 * per-device `MAJ:MIN Total N` lines are kept (as in the reference).
 * Device names are filled in later.
 */
export function parseBlkioEntries(text: string | undefined): BlkIOEntry[] {
  const out: BlkIOEntry[] = [];
  if (text === undefined) return out;
  for (const line of text.split('\n')) {
    const f = line.split(/[ :]+/).filter((s) => s !== '');
    if (f.length < 3) continue; // `Total N`, blank lines
    const major = parseUint(f[0]);
    const minor = parseUint(f[1]);
    const value = parseUint(f.length >= 4 ? f[3] : f[2]);
    if (major === undefined || minor === undefined || value === undefined) continue;
    out.push(BlkIOEntry.fromPartial({ major, minor, op: f.length >= 4 ? f[2] : '', value }));
  }
  return out;
}

/** /proc/partitions → `"MAJ:MIN"` → `/dev/<name>` (first occurrence wins). */
export function parsePartitions(text: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (text === undefined) return out;
  for (const line of text.split('\n').slice(2)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const major = parseUint(f[0]);
    const minor = parseUint(f[1]);
    if (major === undefined || minor === undefined) continue;
    const key = `${major}:${minor}`;
    if (!out.has(key)) out.set(key, `/dev/${f[3]}`);
  }
  return out;
}

/** rdma.current / rdma.max lines: `<device> hca_handle=N hca_object=N` (`max` → 2^32−1). */
export function parseRdma(text: string): RdmaEntry[] {
  const out: RdmaEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length !== 3) continue;
    const e = RdmaEntry.fromPartial({ device: f[0] });
    for (const kv of f.slice(1)) {
      const [k, v] = kv.split('=');
      if (v === undefined) continue;
      let n: number | undefined;
      if (v === 'max') n = MAX_UINT32;
      else {
        const b = parseUint(v);
        if (b !== undefined) n = b > BigInt(MAX_UINT32) ? MAX_UINT32 : Number(b);
      }
      if (n === undefined) continue;
      if (k === 'hca_handle') e.hcaHandles = n;
      else if (k === 'hca_object') e.hcaObjects = n;
    }
    out.push(e);
  }
  return out;
}
