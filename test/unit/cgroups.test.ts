// SPDX-License-Identifier: Apache-2.0
// cgroup stats parsing, cgroup location and the v2 OOM watcher logic, against
// the fixture trees in test/fixtures/cgroup (see its README).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Metrics as V1Metrics } from '../../src/gen/cgroups/v1/metrics.js';
import { Metrics as V2Metrics } from '../../src/gen/cgroups/v2/metrics.js';
import { cgroupMode, isUnified } from '../../src/cgroups/mode.js';
import { locateCgroup, parseProcCgroup, unifiedPath, v1Dirs, v2Dir } from '../../src/cgroups/locate.js';
import {
  parseBlkioEntries,
  parsePartitions,
  parsePerCpu,
  readV1Metrics,
  readV1MetricsSync,
} from '../../src/cgroups/v1.js';
import { parseIoStat, readV2Metrics, readV2MetricsSync } from '../../src/cgroups/v2.js';
import { hugePageSizesFromNames, parseUint, singleValue, MAX_UINT64 } from '../../src/cgroups/files.js';
import {
  CgroupHandle,
  CgroupNotFoundError,
  V1_METRICS_TYPE_URL,
  V2_METRICS_TYPE_URL,
} from '../../src/cgroups/stats.js';
import { OomWatcher } from '../../src/cgroups/oom.js';

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('no package.json');
    dir = parent;
  }
  return dir;
}

const FIX = join(packageRoot(), 'test', 'fixtures', 'cgroup');
const V1_ROOT = join(FIX, 'v1', 'cgroup');
const V1_PROC = join(FIX, 'v1', 'proc');
const V2_ROOT = join(FIX, 'v2', 'cgroup');
const V2_PROC = join(FIX, 'v2', 'proc');
const V2_PATH = '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b1c2d3e.slice/cri-containerd-4f3a9c.scope';
const V2_DIR = join(V2_ROOT, V2_PATH);
const SIZES = ['2MB', '1GB'];

function v1FixtureDirs(root = V1_ROOT): Map<string, string> {
  const d = new Map<string, string>();
  for (const c of ['memory', 'cpu', 'cpuacct', 'pids', 'blkio', 'hugetlb']) d.set(c, join(root, c, 'k8s.io', 'fixturectr'));
  return d;
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'cgtest-'));
}

// ---------------------------------------------------------------------------
// helpers

test('parseUint / singleValue: numbers, negatives, max', () => {
  assert.equal(parseUint('123\n'), 123n);
  assert.equal(parseUint('-1'), 0n);
  assert.equal(parseUint('max'), undefined);
  assert.equal(parseUint('99999999999999999999999'), MAX_UINT64);
  assert.equal(singleValue('max\n'), 18446744073709551615n);
  assert.equal(singleValue('max\n', 0n), 0n);
  assert.equal(singleValue(undefined), 0n);
  assert.equal(singleValue('garbage'), 0n);
});

test('hugepage size names from /sys/kernel/mm/hugepages entries', () => {
  assert.deepEqual(hugePageSizesFromNames(['hugepages-1048576kB', 'hugepages-2048kB', 'other', 'hugepages-64kB']), [
    '64KB',
    '2MB',
    '1GB',
  ]);
});

// ---------------------------------------------------------------------------
// mode

test('mode: unified / hybrid / legacy / unavailable', () => {
  const root = tmp();
  try {
    const uni = join(root, 'uni');
    mkdirSync(uni);
    writeFileSync(join(uni, 'cgroup.controllers'), 'cpu memory\n');
    assert.equal(cgroupMode(uni), 'unified');
    assert.equal(isUnified(uni), true);

    const hyb = join(root, 'hyb');
    mkdirSync(join(hyb, 'unified'), { recursive: true });
    mkdirSync(join(hyb, 'memory'));
    writeFileSync(join(hyb, 'unified', 'cgroup.controllers'), '');
    assert.equal(cgroupMode(hyb), 'hybrid');
    assert.equal(isUnified(hyb), false);

    const leg = join(root, 'leg');
    mkdirSync(join(leg, 'memory'), { recursive: true });
    assert.equal(cgroupMode(leg), 'legacy');

    assert.equal(cgroupMode(join(root, 'nope')), 'unavailable');
    assert.equal(cgroupMode(V2_ROOT), 'unified');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------
// locate

const HYBRID_TEXT = `12:rdma:/
11:hugetlb:/
10:pids:/system.slice/containerd.service
9:net_cls,net_prio:/
8:cpu,cpuacct:/k8s.io/0a1b2c
7:memory:/k8s.io/0a1b2c
6:blkio:/k8s.io/0a1b2c
5:freezer:/k8s.io/0a1b2c
4:devices:/k8s.io/0a1b2c
3:cpuset:/k8s.io/0a1b2c
2:perf_event:/
1:name=systemd:/k8s.io/0a1b2c
0::/k8s.io/0a1b2c
`;

test('locate: parse a hybrid /proc/<pid>/cgroup', () => {
  const e = parseProcCgroup(HYBRID_TEXT);
  assert.equal(e.length, 13);
  assert.deepEqual(e[4], { id: 8, controllerField: 'cpu,cpuacct', controllers: ['cpu', 'cpuacct'], path: '/k8s.io/0a1b2c' });
  assert.deepEqual(e[11].controllers, ['name=systemd']);
  assert.equal(unifiedPath(e), '/k8s.io/0a1b2c');
  assert.equal(parseProcCgroup('garbage\n5:memory\n').length, 0);
  // a path containing ':' stays whole
  assert.equal(parseProcCgroup('3:memory:/a:b/c\n')[0].path, '/a:b/c');
});

test('locate: v1 dirs with co-mounted controllers via symlinks (systemd layout)', () => {
  const root = tmp();
  try {
    for (const d of ['cpu,cpuacct', 'net_cls,net_prio', 'memory', 'blkio', 'pids', 'systemd', 'freezer', 'devices', 'cpuset'])
      mkdirSync(join(root, d));
    symlinkSync('cpu,cpuacct', join(root, 'cpu'));
    symlinkSync('cpu,cpuacct', join(root, 'cpuacct'));
    const dirs = v1Dirs(parseProcCgroup(HYBRID_TEXT), root);
    assert.equal(dirs.get('memory'), join(root, 'memory/k8s.io/0a1b2c'));
    assert.equal(dirs.get('cpu'), join(root, 'cpu/k8s.io/0a1b2c'));
    assert.equal(dirs.get('cpuacct'), join(root, 'cpuacct/k8s.io/0a1b2c'));
    assert.equal(dirs.get('systemd'), join(root, 'systemd/k8s.io/0a1b2c'));
    assert.equal(dirs.get('pids'), join(root, 'pids/system.slice/containerd.service'));
    // joined mount without per-controller symlinks
    assert.equal(dirs.get('net_cls'), join(root, 'net_cls,net_prio'));
    // not mounted under root → absent
    assert.equal(dirs.has('rdma'), false);
    assert.equal(dirs.has('hugetlb'), false);
    assert.equal(dirs.has(''), false);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('locate: v1 dirs with separate per-controller mounts (this host)', () => {
  const exists = (p: string) => !p.includes(',');
  const dirs = v1Dirs(parseProcCgroup(HYBRID_TEXT), '/sys/fs/cgroup', exists);
  assert.equal(dirs.get('cpu'), '/sys/fs/cgroup/cpu/k8s.io/0a1b2c');
  assert.equal(dirs.get('cpuacct'), '/sys/fs/cgroup/cpuacct/k8s.io/0a1b2c');
  assert.equal(dirs.get('perf_event'), '/sys/fs/cgroup/perf_event');
});

test('locate: unified host', () => {
  const text = '0::/system.slice/containerd.service\n';
  assert.equal(v2Dir(parseProcCgroup(text), '/sys/fs/cgroup'), '/sys/fs/cgroup/system.slice/containerd.service');
  assert.equal(v2Dir(parseProcCgroup('0::/\n'), '/sys/fs/cgroup'), '/sys/fs/cgroup');
  const loc = locateCgroup(4343, { procRoot: V2_PROC, cgroupRoot: V2_ROOT });
  assert.deepEqual(loc, { version: 2, dir: V2_DIR });
  assert.equal(locateCgroup(1, { procRoot: V2_PROC, cgroupRoot: V2_ROOT }), undefined);
});

test('locate: fixture v1 process (real /proc/<pid>/cgroup from this host)', () => {
  const loc = locateCgroup(4242, { procRoot: V1_PROC, cgroupRoot: V1_ROOT });
  assert.ok(loc && loc.version === 1);
  assert.equal(loc.dirs.get('memory'), join(V1_ROOT, 'memory/k8s.io/fixturectr'));
  assert.equal(loc.dirs.get('cpuacct'), join(V1_ROOT, 'cpuacct/k8s.io/fixturectr'));
  // freezer/devices/cpuset/systemd hierarchies are not in the fixture root
  assert.equal(loc.dirs.has('freezer'), false);
});

// ---------------------------------------------------------------------------
// v1

function checkV1(m: V1Metrics): void {
  // memory.stat (real values)
  const mem = m.memory!;
  assert.equal(mem.cache, 1855488n);
  assert.equal(mem.rss, 114688n);
  assert.equal(mem.dirty, 24576n);
  assert.equal(mem.pgPgIn, 1870n);
  assert.equal(mem.pgPgOut, 1389n);
  assert.equal(mem.pgFault, 1899n);
  assert.equal(mem.pgMajFault, 4n);
  assert.equal(mem.inactiveAnon, 110592n);
  assert.equal(mem.activeFile, 1761280n);
  assert.equal(mem.hierarchicalMemoryLimit, 268435456n);
  assert.equal(mem.hierarchicalSwapLimit, 9223372036854771712n);
  assert.equal(mem.totalCache, 1855488n);
  assert.equal(mem.totalRss, 114688n);
  assert.equal(mem.totalPgPgIn, 1870n);
  assert.equal(mem.totalPgMajFault, 4n);
  assert.equal(mem.totalInactiveAnon, 110592n);
  assert.equal(mem.totalInactiveFile, 94208n);
  assert.equal(mem.totalActiveFile, 1761280n);
  // MemoryEntry
  assert.deepEqual(mem.usage, { limit: 268435456n, usage: 2633728n, max: 2752512n, failcnt: 0n });
  assert.deepEqual(mem.swap, { limit: 9223372036854771712n, usage: 2633728n, max: 2752512n, failcnt: 0n });
  assert.equal(mem.kernel!.usage, 172032n);
  assert.equal(mem.kernel!.limit, 9223372036854771712n);
  assert.equal(mem.kernelTcp!.limit, 9223372036854771712n);
  assert.deepEqual(m.memoryOomControl, { oomKillDisable: 0n, underOom: 0n, oomKill: 0n });
  // cpu
  assert.equal(m.cpu!.usage!.total, 178244007n);
  assert.deepEqual(m.cpu!.usage!.perCpu, [165045332n, 13198675n]);
  assert.equal(m.cpu!.usage!.user, 160_000_000n); // 16 ticks
  assert.equal(m.cpu!.usage!.kernel, 10_000_000n); // 1 tick
  assert.deepEqual(m.cpu!.throttling, { periods: 0n, throttledPeriods: 0n, throttledTime: 0n });
  // pids
  assert.deepEqual(m.pids, { current: 1n, limit: 64n });
  // blkio (throttle fallback, per-device Total kept, bare Total skipped)
  const serviced = m.blkio!.ioServicedRecursive;
  assert.equal(serviced.length, 6);
  assert.deepEqual(serviced[0], { op: 'Read', device: '/dev/vda', major: 254n, minor: 0n, value: 433n });
  assert.deepEqual(
    serviced.map((e) => e.op),
    ['Read', 'Write', 'Sync', 'Async', 'Discard', 'Total'],
  );
  const bytes = m.blkio!.ioServiceBytesRecursive;
  assert.equal(bytes.find((e) => e.op === 'Write')!.value, 8421376n);
  assert.equal(m.blkio!.sectorsRecursive.length, 0);
  // hugetlb (hand-written)
  assert.deepEqual(m.hugetlb, [
    { usage: 4194304n, max: 6291456n, failcnt: 3n, pagesize: '2MB' },
    { usage: 0n, max: 0n, failcnt: 0n, pagesize: '1GB' },
  ]);
  assert.equal(m.rdma, undefined);
  assert.deepEqual(m.network, []);
  assert.equal(m.cgroupStats, undefined);
}

test('v1: every field group from the real fixture (async and sync agree)', async () => {
  const opts = { procRoot: V1_PROC, hugePageSizes: SIZES };
  const a = await readV1Metrics(v1FixtureDirs(), opts);
  checkV1(a);
  const s = readV1MetricsSync(v1FixtureDirs(), opts);
  checkV1(s);
  assert.deepEqual(a, s);
});

test('v1: plain-object dirs work too', async () => {
  const m = await readV1Metrics(Object.fromEntries(v1FixtureDirs()), { procRoot: V1_PROC, hugePageSizes: SIZES });
  assert.equal(m.memory!.rss, 114688n);
});

test('v1: missing subsystems and files are skipped', async () => {
  const root = tmp();
  try {
    cpSync(V1_ROOT, root, { recursive: true });
    const dirs = v1FixtureDirs(root);
    const mem = dirs.get('memory')!;
    for (const f of ['memory.memsw.usage_in_bytes', 'memory.memsw.max_usage_in_bytes', 'memory.memsw.failcnt', 'memory.memsw.limit_in_bytes', 'memory.oom_control'])
      unlinkSync(join(mem, f));
    unlinkSync(join(dirs.get('cpuacct')!, 'cpuacct.usage_percpu'));
    rmSync(dirs.get('pids')!, { recursive: true });
    dirs.delete('blkio');
    dirs.delete('cpu');
    dirs.set('rdma', join(root, 'rdma', 'nowhere'));
    const m = await readV1Metrics(dirs, { procRoot: join(root, 'noproc'), hugePageSizes: SIZES });
    assert.deepEqual(m.memory!.swap, { limit: 0n, usage: 0n, max: 0n, failcnt: 0n });
    assert.equal(m.memory!.usage!.usage, 2633728n);
    assert.equal(m.memoryOomControl, undefined);
    assert.equal(m.cpu!.usage!.total, 178244007n);
    assert.deepEqual(m.cpu!.usage!.perCpu, []);
    assert.deepEqual(m.cpu!.throttling, { periods: 0n, throttledPeriods: 0n, throttledTime: 0n });
    assert.equal(m.pids, undefined);
    assert.equal(m.blkio, undefined);
    assert.equal(m.rdma, undefined);

    // no controllers at all: only the (always present) zero CPU stat
    const empty = await readV1Metrics(new Map());
    assert.deepEqual(empty, V1Metrics.fromPartial({ cpu: { usage: {}, throttling: {} } }));
    // memory dir without memory.stat → no memory message
    const m2 = await readV1Metrics({ memory: join(root, 'none') });
    assert.equal(m2.memory, undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('v1: pids.max "max" → limit 0 (as containerd v1); blkio device without partition name', async () => {
  const root = tmp();
  try {
    writeFileSync(join(root, 'pids.current'), '5\n');
    writeFileSync(join(root, 'pids.max'), 'max\n');
    writeFileSync(join(root, 'blkio.throttle.io_serviced'), '8:0 Read 1\n8:0 Write 2\nTotal 3\n');
    const m = await readV1Metrics({ pids: root, blkio: root }, { procRoot: root });
    assert.deepEqual(m.pids, { current: 5n, limit: 0n });
    assert.deepEqual(m.blkio!.ioServicedRecursive[1], { op: 'Write', device: '', major: 8n, minor: 0n, value: 2n });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('v1: blkio CFQ files are preferred when present; rdma parsed', async () => {
  const root = tmp();
  try {
    writeFileSync(join(root, 'blkio.io_serviced_recursive'), '8:0 Read 10\n8:0 Write 20\n8:0 Sync 30\n8:0 Async 0\n8:0 Total 30\nTotal 30\n');
    writeFileSync(join(root, 'blkio.time_recursive'), '8:0 12345\n');
    writeFileSync(join(root, 'blkio.sectors_recursive'), '8:0 64\n');
    writeFileSync(join(root, 'blkio.throttle.io_serviced'), '8:0 Read 99\nTotal 99\n');
    writeFileSync(join(root, 'partitions'), 'major minor  #blocks  name\n\n   8        0  1000 sda\n   8        0  1000 sdz\n');
    writeFileSync(join(root, 'rdma.current'), 'mlx4_0 hca_handle=2 hca_object=2000\nocrdma1 hca_handle=3 hca_object=max\n');
    writeFileSync(join(root, 'rdma.max'), 'mlx4_0 hca_handle=max hca_object=max\nocrdma1 hca_handle=10 hca_object=100\n');
    const m = await readV1Metrics({ blkio: root, rdma: root }, { procRoot: root });
    assert.equal(m.blkio!.ioServicedRecursive.length, 5);
    assert.equal(m.blkio!.ioServicedRecursive[0].device, '/dev/sda');
    assert.deepEqual(m.blkio!.ioTimeRecursive, [{ op: '', device: '/dev/sda', major: 8n, minor: 0n, value: 12345n }]);
    assert.equal(m.blkio!.sectorsRecursive[0].value, 64n);
    assert.deepEqual(m.rdma!.current, [
      { device: 'mlx4_0', hcaHandles: 2, hcaObjects: 2000 },
      { device: 'ocrdma1', hcaHandles: 3, hcaObjects: 4294967295 },
    ]);
    assert.deepEqual(m.rdma!.limit[0], { device: 'mlx4_0', hcaHandles: 4294967295, hcaObjects: 4294967295 });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('v1 parsers: blkio lines, partitions, per-cpu', () => {
  assert.deepEqual(parseBlkioEntries('Total 0\n'), []);
  assert.deepEqual(parseBlkioEntries('253:1 Read 5\n\n'), [{ op: 'Read', device: '', major: 253n, minor: 1n, value: 5n }]);
  const p = parsePartitions('major minor  #blocks  name\n\n 254        0  268435456 vda\n 254 1 100 vda1\n');
  assert.equal(p.get('254:0'), '/dev/vda');
  assert.equal(p.get('254:1'), '/dev/vda1');
  assert.deepEqual(parsePerCpu('1 2 3 \n'), [1n, 2n, 3n]);
  assert.deepEqual(parsePerCpu(''), []);
});

// ---------------------------------------------------------------------------
// v2

function checkV2(m: V2Metrics): void {
  assert.deepEqual(m.pids, { current: 7n, limit: 18446744073709551615n });
  assert.deepEqual(m.cpu, {
    usageUsec: 3470584n,
    userUsec: 2712930n,
    systemUsec: 757654n,
    nrPeriods: 1520n,
    nrThrottled: 37n,
    throttledUsec: 812345n,
    psi: {
      some: { avg10: 1.52, avg60: 0.87, avg300: 0.21, total: 4712203n },
      full: { avg10: 0, avg60: 0, avg300: 0, total: 1530n },
    },
  });
  const mem = m.memory!;
  assert.deepEqual(mem.psi, {
    some: { avg10: 0, avg60: 0, avg300: 0, total: 1234n },
    full: { avg10: 0, avg60: 0, avg300: 0, total: 567n },
  });
  assert.equal(mem.anon, 21495808n);
  assert.equal(mem.file, 50413568n);
  assert.equal(mem.kernelStack, 245760n);
  assert.equal(mem.slab, 1700312n);
  assert.equal(mem.sock, 8192n);
  assert.equal(mem.shmem, 4096n);
  assert.equal(mem.fileMapped, 28672000n);
  assert.equal(mem.fileDirty, 135168n);
  assert.equal(mem.fileWriteback, 4096n);
  assert.equal(mem.anonThp, 2097152n);
  assert.equal(mem.inactiveAnon, 21454848n);
  assert.equal(mem.activeAnon, 45056n);
  assert.equal(mem.inactiveFile, 38146048n);
  assert.equal(mem.activeFile, 12263424n);
  assert.equal(mem.slabReclaimable, 1279632n);
  assert.equal(mem.slabUnreclaimable, 420680n);
  assert.equal(mem.pgfault, 52311n);
  assert.equal(mem.pgmajfault, 142n);
  // kernel ≥ 5.9 splits workingset_refault/activate into _anon/_file: 0 as in the reference
  assert.equal(mem.workingsetRefault, 0n);
  assert.equal(mem.workingsetNodereclaim, 0n);
  assert.equal(mem.pgrefill, 15n);
  assert.equal(mem.pgscan, 120n);
  assert.equal(mem.pgsteal, 110n);
  assert.equal(mem.pgactivate, 2876n);
  assert.equal(mem.pgdeactivate, 9n);
  assert.equal(mem.thpFaultAlloc, 1n);
  assert.equal(mem.usage, 75866112n);
  assert.equal(mem.usageLimit, 268435456n);
  assert.equal(mem.swapUsage, 0n);
  assert.equal(mem.swapLimit, 18446744073709551615n);
  assert.deepEqual(m.memoryEvents, { low: 0n, high: 0n, max: 12n, oom: 2n, oomKill: 1n });
  assert.deepEqual(m.io!.usage, [
    { major: 254n, minor: 0n, rbytes: 11210752n, wbytes: 8392704n, rios: 466n, wios: 38n },
    { major: 8n, minor: 16n, rbytes: 4096n, wbytes: 0n, rios: 1n, wios: 0n },
  ]);
  assert.deepEqual(m.io!.psi, {
    some: { avg10: 0.31, avg60: 0.12, avg300: 0.04, total: 90321n },
    full: { avg10: 0.29, avg60: 0.11, avg300: 0.03, total: 88120n },
  });
  assert.deepEqual(m.rdma, {
    current: [{ device: 'mlx5_0', hcaHandles: 2, hcaObjects: 2000 }],
    limit: [{ device: 'mlx5_0', hcaHandles: 4294967295, hcaObjects: 4096 }],
  });
  assert.deepEqual(m.hugetlb, [
    { current: 2097152n, max: 1073741824n, pagesize: '2MB' },
    { current: 0n, max: 18446744073709551615n, pagesize: '1GB' },
  ]);
}

test('v2: every field group from the fixture (async and sync agree)', async () => {
  const a = await readV2Metrics(V2_DIR, { hugePageSizes: SIZES });
  checkV2(a);
  const s = readV2MetricsSync(V2_DIR, { hugePageSizes: SIZES });
  assert.deepEqual(a, s);
});

test('v2: missing files → zeros, sub-messages still present, memory_events and hugetlb omitted, cpu.stat ignored without cpu controller', async () => {
  const m = await readV2Metrics(join(V2_ROOT, 'minimal'), { hugePageSizes: SIZES });
  assert.deepEqual(m.pids, { current: 3n, limit: 100n });
  assert.equal(m.cpu!.usageUsec, 0n);
  assert.ok(m.memory);
  assert.equal(m.memory.usage, 0n);
  assert.equal(m.memory.usageLimit, 0n);
  assert.equal(m.memoryEvents, undefined);
  // No *.pressure files (a kernel without PSI, or booted with psi=0): every psi unset.
  assert.deepEqual(m.io, { usage: [], psi: undefined });
  assert.equal(m.cpu!.psi, undefined);
  assert.equal(m.memory.psi, undefined);
  assert.deepEqual(m.rdma, { current: [], limit: [] });
  // No hugetlb.<size>.* files (controller not enabled): no entries, as the reference.
  assert.deepEqual(m.hugetlb, []);
  const none = await readV2Metrics(join(V2_ROOT, 'does-not-exist'), { hugePageSizes: [] });
  assert.equal(none.pids!.current, 0n);
});

test('v2 PSI: a pre-5.13 cpu.pressure (no full line), a malformed memory.pressure and no io.pressure → cpu.psi.some only, the others unset', async () => {
  const m = await readV2Metrics(join(V2_ROOT, 'psi-partial'), { hugePageSizes: [] });
  assert.deepEqual(m.cpu!.psi, { some: { avg10: 12.5, avg60: 3.04, avg300: 0.66, total: 987654n }, full: undefined });
  assert.equal(m.memory!.psi, undefined, 'a field without "=" drops the file, as containerd/cgroups v3 parsePSIData');
  assert.equal(m.memory!.anon, 4096n, 'the rest of MemoryStat is unaffected');
  assert.deepEqual(m.io, { usage: [], psi: undefined });
  assert.deepEqual(readV2MetricsSync(join(V2_ROOT, 'psi-partial'), { hugePageSizes: [] }), m);
});

test('v2 PSI: an unreadable pressure file (EISDIR here; EOPNOTSUPP after cgroup.pressure 0) → unset, no error', async () => {
  const dir = tmp();
  try {
    cpSync(join(V2_ROOT, 'psi-partial'), dir, { recursive: true });
    for (const f of ['cpu.pressure', 'memory.pressure']) rmSync(join(dir, f));
    for (const f of ['cpu.pressure', 'memory.pressure', 'io.pressure']) mkdirSync(join(dir, f));
    const m = await readV2Metrics(dir, { hugePageSizes: [] });
    assert.deepEqual([m.cpu!.psi, m.memory!.psi, m.io!.psi], [undefined, undefined, undefined]);
    assert.equal(m.cpu!.usageUsec, 1000n);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('v2 parsers: io.stat tolerates unknown keys and junk', () => {
  assert.deepEqual(parseIoStat('8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6 cost.usage=7\nbad line\n\n'), [
    { major: 8n, minor: 0n, rbytes: 1n, wbytes: 2n, rios: 3n, wios: 4n },
  ]);
  assert.deepEqual(parseIoStat(undefined), []);
});

// ---------------------------------------------------------------------------
// CgroupHandle / Any payloads

test('CgroupHandle v1: located from fixture /proc, type URL, encode→decode round trip', async () => {
  const h = CgroupHandle.forPid(4242, { procRoot: V1_PROC, cgroupRoot: V1_ROOT, version: 1, hugePageSizes: SIZES });
  assert.ok(h);
  assert.equal(h.version, 1);
  assert.equal(h.memoryDir, join(V1_ROOT, 'memory/k8s.io/fixturectr'));
  assert.equal(h.exists(), true);
  const any = await h.stats();
  assert.equal(any.typeUrl, V1_METRICS_TYPE_URL);
  assert.equal(any.typeUrl, 'io.containerd.cgroups.v1.Metrics');
  const m = V1Metrics.decode(any.value);
  assert.equal(m.memory!.usage!.usage, 2633728n);
  assert.equal(m.memory!.hierarchicalSwapLimit, 9223372036854771712n);
  assert.deepEqual(m.cpu!.usage!.perCpu, [165045332n, 13198675n]);
  assert.deepEqual(m, await readV1Metrics(h.dirs, { procRoot: V1_PROC, hugePageSizes: SIZES }).then((x) => V1Metrics.decode(V1Metrics.encode(x).finish())));
  assert.deepEqual(h.statsSync(), any);
});

test('CgroupHandle v2: located from fixture /proc (unified detection), type URL, round trip', async () => {
  const h = CgroupHandle.forPid(4343, { procRoot: V2_PROC, cgroupRoot: V2_ROOT, hugePageSizes: SIZES });
  assert.ok(h);
  assert.equal(h.version, 2);
  assert.equal(h.dir, V2_DIR);
  assert.equal(h.memoryDir, V2_DIR);
  const any = await h.stats();
  assert.equal(any.typeUrl, V2_METRICS_TYPE_URL);
  assert.equal(any.typeUrl, 'io.containerd.cgroups.v2.Metrics');
  const m = V2Metrics.decode(any.value);
  checkV2(m);
});

test('CgroupHandle: gone cgroup → exists() false, stats() rejects with CgroupNotFoundError', async () => {
  const h = CgroupHandle.fromV2Dir('/nonexistent/cgroup/x');
  assert.equal(h.exists(), false);
  await assert.rejects(h.stats(), (e: unknown) => e instanceof CgroupNotFoundError && (e).code === 'ENOENT');
  assert.throws(() => h.statsSync(), CgroupNotFoundError);
  const h1 = CgroupHandle.fromV1Dirs({ memory: '/nonexistent/memory/x' });
  assert.equal(h1.exists(), false);
  assert.equal(CgroupHandle.forPid(999999999, { procRoot: V1_PROC, cgroupRoot: V1_ROOT }), undefined);
});

// ---------------------------------------------------------------------------
// OomWatcher, v2 logic on regular files (fs.watch/inotify works the same way)

function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() - start > ms) return reject(new Error('timed out'));
      setTimeout(tick, 10);
    };
    tick();
  });
}

test('OomWatcher v2: emits on a growing oom_kill, not on other changes, stops when emptied', async () => {
  const dir = tmp();
  const watcher = new OomWatcher({ onStop: (id, why) => stops.push(`${id}:${why}`) });
  const stops: string[] = [];
  const ooms: string[] = [];
  watcher.on('oom', (id) => ooms.push(id));
  try {
    const ev = (n: number, max = 0) => `low 0\nhigh 0\nmax ${max}\noom ${n}\noom_kill ${n}\noom_group_kill 0\n`;
    writeFileSync(join(dir, 'memory.events'), ev(0));
    writeFileSync(join(dir, 'cgroup.events'), 'populated 1\nfrozen 0\n');
    watcher.add('c1', CgroupHandle.fromV2Dir(dir));
    assert.equal(watcher.size, 1);

    writeFileSync(join(dir, 'memory.events'), ev(0, 5)); // max events only
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual(ooms, []);

    writeFileSync(join(dir, 'memory.events'), ev(1, 5));
    await waitFor(() => ooms.length >= 1);
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual(ooms, ['c1']); // repeated notifications for the same count do not re-emit

    writeFileSync(join(dir, 'memory.events'), ev(3, 5));
    await waitFor(() => ooms.length >= 2);

    writeFileSync(join(dir, 'cgroup.events'), 'populated 0\nfrozen 0\n');
    await waitFor(() => watcher.size === 0);
    assert.deepEqual(stops, ['c1:cgroup empty']);
    assert.equal(ooms.length, 2);
  } finally {
    watcher.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('OomWatcher v2: add fails without memory.events; remove/close release watches', () => {
  const dir = tmp();
  const watcher = new OomWatcher();
  try {
    assert.throws(() => watcher.add('x', CgroupHandle.fromV2Dir(dir)));
    assert.equal(watcher.size, 0);
    writeFileSync(join(dir, 'memory.events'), 'oom_kill 0\n');
    writeFileSync(join(dir, 'cgroup.events'), 'populated 1\n');
    watcher.add('a', CgroupHandle.fromV2Dir(dir));
    watcher.add('b', CgroupHandle.fromV2Dir(dir));
    assert.equal(watcher.size, 2);
    watcher.remove('a');
    assert.equal(watcher.has('a'), false);
    watcher.close();
    assert.equal(watcher.size, 0);
    assert.throws(() => watcher.add('c', CgroupHandle.fromV2Dir(dir)));
  } finally {
    watcher.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('OomWatcher v1: a handle without a memory controller is rejected', () => {
  const watcher = new OomWatcher();
  try {
    assert.throws(() => watcher.add('x', CgroupHandle.fromV1Dirs({ cpu: '/sys/fs/cgroup/cpu' })), /no memory controller/);
  } finally {
    watcher.close();
  }
});
