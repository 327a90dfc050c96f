// SPDX-License-Identifier: Apache-2.0
// The cgroup v2 lane: every cgroup-dependent check on a pure cgroup v2 host, with the reference Go
// shim (the daemon's own: containerd 1.6.20's by default) and ours side by side in the same run;
// the comparison is the test.
//
// These machines are cgroup v1 hybrid: run it in a pure v2 guest with
//   bash scripts/v2-lane.sh npm run test:v2                  (containerd 1.6, everything below)
//   SHIM_DAEMON=2.3 bash scripts/v2-lane.sh npm run test:v2  (containerd 2.3, the 2.x subset)
// (scripts/v2-lane.sh boots a qemu guest with cgroup_no_v1=all on this machine's own root). On a
// host without /sys/fs/cgroup/cgroup.controllers the whole file skips, saying so on stderr.
//
// On a 2.x daemon (SHIM_DAEMON=2.1|2.3: task API v3, BootstrapParams with shim_cgroup, the split
// CRI plugins of config version 3/4) everything runs but the three degradation scenarios where
// 2.x's Go shim (containerd/cgroups v3) behaves differently from 1.6's, which are skipped with the
// measured difference as the reason (ON_2X_SKIP); SHIM_V2_ALL=1 runs them anyway.
//
// Through a private containerd and ctr (parityTests, test/support/parity.ts):
//   * `ctr task metrics`: the io.containerd.cgroups.v2.Metrics fields, limits and values against
//     the container's cgroup files, running and stopped; the values of the two shims within noise;
//   * OOM over memory.max, of the init and of an exec: one /tasks/oom, exit 137; /tasks/oom before
//     /tasks/exit asserted for ours, only reported for the Go shim (it does not order them);
//   * Update through containerd's Tasks API: memory.max, memory.swap.max, cpu.max, cpu.weight,
//     pids.max as runc writes them from what each shim passed;
//   * pause/resume: cgroup.freeze, cgroup.events `frozen`, /tasks/paused and /tasks/resumed;
//   * Kill with all=true: a signal that the init (pid 1 of its namespace, no handler) never gets
//     reaches every other process of the cgroup; then SIGKILL to all empties it;
//   * degradation (the shim must neither crash nor lose an exit): the container's cgroup removed
//     under the shim; memory.events unreadable; the domain controllers not enabled in the parent.
// Through containerd's CRI plugin (one containerd per shim, as test/e2e/cri.test.ts):
//   * the runc options' ShimCgroup (ctr 1.6 has no flag for it): the shim daemon moves itself
//     there; a pod with a cgroup parent: every container's cgroup under it, one shim for the pod;
//     ContainerStats / ListContainerStats from v2 metrics; an OOM-killed container's reason.
//
// Not covered here: runc's systemd cgroup driver (the lane's PID 1 is busybox init, no systemd);
// io.stat values (the guest has no block device).

import assert from 'node:assert/strict';
import { after, before, describe, it, test } from 'node:test';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  DAEMON, argValue, fullPath, listProcesses, pidAlive, startContainerd, waitFor, type Containerd,
} from '../support/containerd.js';
import { daemonVersion } from '../support/daemons.js';
import {
  BOTH, CtdEnv, NS, combined, containerdUpdateTask, ctrSubst, label, normalize, parityTests, readIf,
  shims, uniqueId, type CtrEvent, type Scenario,
} from '../support/parity.js';
import { DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF, ensureBusyboxImage, ensurePauseImage } from '../support/image.js';
import { OUR_SHIM, type ShimName } from '../support/shims.js';
import { ContainerState, CriClient, containerConfig, criRuntimeConfig, podSandboxConfig } from '../support/cri.js';

const ROOT = '/sys/fs/cgroup';
/** memory.stat keys of io.containerd.cgroups.v2.MemoryStat (the JSON names are the same). */
const MEMORY_STAT_KEYS = [
  'anon', 'file', 'kernel_stack', 'slab', 'sock', 'shmem', 'file_mapped', 'file_dirty', 'file_writeback', 'anon_thp',
  'inactive_anon', 'active_anon', 'inactive_file', 'active_file', 'unevictable', 'slab_reclaimable', 'slab_unreclaimable',
  'pgfault', 'pgmajfault', 'workingset_refault', 'workingset_activate', 'workingset_nodereclaim', 'pgrefill', 'pgscan',
  'pgsteal', 'pgactivate', 'pgdeactivate', 'pglazyfree', 'pglazyfreed', 'thp_fault_alloc', 'thp_collapse_alloc',
];
const MIB = 1024 * 1024;

function skipReason(): string | undefined {
  if (!fs.existsSync(path.join(ROOT, 'cgroup.controllers'))) {
    return 'not a cgroup v2 host: run `bash scripts/v2-lane.sh npm run test:v2` (or on a real v2 host, as root, `npm run test:v2`)';
  }
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
}
const SKIP = skipReason();

/** A 2.x daemon: its Go shim reads cgroups through containerd/cgroups v3 (v3.1.3 in 2.3.4). */
const ON_2X = DAEMON.major >= 2;
const ALL_ON_2X = process.env.SHIM_V2_ALL === '1';
/**
 * Why a degradation scenario is left out on a 2.x daemon: what 2.x's Go shim was measured to do
 * differently (containerd 2.3.4 in the lane's guest). Parity with it there is open work, not a
 * lane problem; SHIM_V2_ALL=1 runs the scenario anyway (and shows the difference).
 */
function on2xSkip(difference: string): string | false {
  if (!ON_2X || ALL_ON_2X) return false;
  return `on containerd ${DAEMON.name} (2.x subset; SHIM_V2_ALL=1 runs it): ${difference}`;
}


// ---------------------------------------------------------------------------------------------

/** Everything is 7–10× slower in the TCG guest: generous limits, never sleeps. */
const TIMEOUT = 240_000;
const EVENT_WAIT = 90_000;
// dd's 64 MiB buffer cannot fit in a 32 MiB memory.max (no swap in the lane's guest).
const OOM = ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'];

type Json = Record<string, unknown>;
function get(o: unknown, p: string): unknown {
  return p.split('.').reduce<unknown>((x, k) => (x && typeof x === 'object' ? (x as Json)[k] : undefined), o);
}

/** The container's cgroup: ctr's default cgroupsPath is /<namespace>/<id>. */
function cgDir(id: string): string {
  return path.join(ROOT, NS, id);
}
function cgFile(dir: string, file: string): string | undefined {
  return readIf(path.join(dir, file))?.trim();
}
/** `key value` lines of a cgroup file. */
function kv(dir: string, file: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of (readIf(path.join(dir, file)) ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out[k] = Number(v);
  }
  return out;
}
function procsOf(dir: string): number[] {
  return (readIf(path.join(dir, 'cgroup.procs')) ?? '').split('\n').filter((l) => l !== '').map(Number);
}
function cmdline(pid: number): string {
  return (readIf(`/proc/${pid}/cmdline`) ?? '').replace(/\0/g, ' ').trim();
}
/** The cgroup v2 path of a process (`0::<path>`). */
function cgroupOf(pid: number): string | undefined {
  return /^0::(.*)$/m.exec(readIf(`/proc/${pid}/cgroup`) ?? '')?.[1];
}
async function rmdirRetry(dir: string, ms = 30_000): Promise<void> {
  await waitFor(() => {
    try { fs.rmdirSync(dir); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'ENOENT'; }
  }, ms, 50);
  assert.equal(fs.existsSync(dir), false, `rmdir ${dir}`);
}

/** Topics in order; /tasks/exec-added and exec-started kept (they are ordered by the shim). */
const topics = (evs: CtrEvent[]) => evs.map((e) => e.topic);

const withoutOom = (evs: CtrEvent[]) => topics(evs).filter((t) => t !== '/tasks/oom');

/** The kernel has PSI on (CONFIG_PSI, not booted with psi=0): the cgroup *.pressure files exist. */
const PSI_KERNEL = fs.existsSync('/proc/pressure/cpu');

/** `total` of the some/full lines of the cgroup's cpu/memory/io.pressure files (absent: no key). */
function pressureTotals(dir: string): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const section of ['cpu', 'memory', 'io']) {
    for (const line of (readIf(path.join(dir, `${section}.pressure`)) ?? '').split('\n')) {
      const m = /^(some|full)\b.*\btotal=(\d+)/.exec(line);
      if (m) (out[section] ??= {})[m[1]] = Number(m[2]);
    }
  }
  return out;
}

/** Per metrics section with a psi message, which of some/full it has (sorted). */
function psiShape(j: unknown): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const section of ['cpu', 'memory', 'io']) {
    const psi = get(j, `${section}.psi`);
    if (psi && typeof psi === 'object') out[section] = Object.keys(psi).filter((k) => k === 'some' || k === 'full').sort();
  }
  return out;
}

/**
 * /tasks/oom must come before the killed process's /tasks/exit (CRI's OOMKilled reason and any
 * client that reads the exit as final depend on it). Asserted for our shim; the Go shim does not
 * order them (its OOM watcher and exit path are separate goroutines, containerd v1.6.20
 * pkg/oom/v2/v2.go and runtime/v2/runc/v2/service.go): its order is only reported.
 */
function oomOrder(shim: ShimName, what: string, evs: CtrEvent[], execId: string): void {
  const oom = evs.findIndex((e) => e.topic === '/tasks/oom');
  const exit = evs.findIndex((e) => e.topic === '/tasks/exit' && (e.event.id === execId || (!execId && e.event.id === e.event.container_id)));
  const before = oom >= 0 && exit >= 0 && oom < exit;
  if (shim === 'ours') assert.ok(before, `/tasks/oom before the ${what}'s /tasks/exit: ${topics(evs).join(', ')}`);
  else process.stderr.write(`# reference shim, OOM of the ${what}: /tasks/oom ${before ? 'before' : 'AFTER'} /tasks/exit\n`);
}

/** Our shim's or the Go shim's daemon serving `id` on this containerd (argv -id/-address), if alive. */
function shimDaemon(c: Containerd, id: string): number | undefined {
  return listProcesses().find((p) => argValue(p.argv, 'address') === c.address && argValue(p.argv, 'id') === id &&
    !['start', 'delete'].includes(p.argv[p.argv.length - 1]))?.pid;
}

// ---------------------------------------------------------------------------------------------

function defineSuite(): void {
  const env = CtdEnv.use();
  /** Per shim, the raw metrics of the running container, for the values-within-noise comparison. */
  const rawMetrics = new Map<ShimName, Json>();

  const logSince = (mark: number) => fs.readFileSync(env.c.logPath).subarray(mark).toString('utf8');
  const logMark = () => fs.statSync(env.c.logPath).size;

  async function metricsJson(id: string): Promise<{ code: number | null; json?: Json; stderr: string }> {
    const r = await env.ctr(['task', 'metrics', '--format', 'json', id]);
    return { code: r.code, json: r.code === 0 ? JSON.parse(r.stdout) as Json : undefined, stderr: r.stderr };
  }

  /** Runs a detached container and waits until `ready(pids of its cgroup)` holds. */
  async function runDetached(shim: typeof shims[number], id: string, args: string[], runArgs: string[] = [],
    ready?: (dir: string) => boolean): Promise<void> {
    const d = await env.run(shim, ['-d', ...runArgs, env.image, id, ...args]);
    assert.equal(d.code, 0, `ctr run -d: ${d.stderr}`);
    if (ready) assert.ok(await waitFor(() => ready(cgDir(id)), 60_000, 50), `container ${id} did not get ready: procs ${procsOf(cgDir(id)).map(cmdline).join(' | ')}`);
  }

  const sleepReady = (dir: string) => procsOf(dir).some((p) => cmdline(p) === 'sleep 1000');

  const scenarios: Scenario[] = [
    {
      name: 'ctr task metrics: v2 Metrics with the limits and values of the container\'s cgroup files, running and stopped',
      timeout: TIMEOUT,
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'metrics');
        try {
          // Burn some CPU first, then one sleeping process.
          await runDetached(shim, id, ['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000'],
            ['--memory-limit', String(100 * MIB)], (dir) => procsOf(dir).length === 1 && sleepReady(dir));
          const dir = cgDir(id);
          const before = kv(dir, 'cpu.stat');
          const psiBefore = pressureTotals(dir);
          const m = await metricsJson(id);
          const after = kv(dir, 'cpu.stat');
          const psiAfter = pressureTotals(dir);
          assert.equal(m.code, 0, m.stderr);
          const j = m.json!;
          rawMetrics.set(shim.name, j);
          // Exact: limits and counts.
          assert.equal(get(j, 'pids.current'), 1);
          assert.equal(get(j, 'memory.usage_limit'), 100 * MIB);
          assert.equal(String(get(j, 'memory.usage_limit')), cgFile(dir, 'memory.max'));
          const pidsMax = cgFile(dir, 'pids.max');
          assert.equal(get(j, 'pids.limit'), pidsMax === 'max' ? 2 ** 64 /* Go's max uint64, as JSON.parse reads it */ : Number(pidsMax));
          // Within the readings of cpu.stat taken just before and after.
          const usage = get(j, 'cpu.usage_usec') as number;
          assert.ok(usage > 0 && usage >= before.usage_usec && usage <= after.usage_usec, `cpu.usage_usec ${usage} not within [${before.usage_usec}, ${after.usage_usec}]`);
          const mem = get(j, 'memory.usage') as number;
          const current = Number(cgFile(dir, 'memory.current'));
          assert.ok(mem > 0 && Math.abs(mem - current) <= Math.max(current, mem) * 0.5, `memory.usage ${mem} vs memory.current ${current}`);
          // Every memory.stat key the v2 MemoryStat carries (containerd/cgroups v1.1.0 v2/manager.go
          // Stat), against the file read right after (a sleeping process: little moves; the
          // kernel flushes these counters lazily).
          const stat = kv(dir, 'memory.stat');
          for (const k of MEMORY_STAT_KEYS) {
            const a = Number(get(j, `memory.${k}`) ?? 0);
            const b = stat[k] ?? 0;
            const slack = Math.max(/^pg|^thp|^workingset/.test(k) ? 256 : 512 * 1024, Math.max(a, b) * 0.25);
            assert.ok(Math.abs(a - b) <= slack, `memory.${k}: reported ${a}, memory.stat ${b}`);
          }
          // PSI (containerd/cgroups v3.1.3 getStatPSIFromFile; ctr decodes it from 2.0 on, 1.6's ctr
          // drops the fields): each total within the *.pressure readings taken just before and
          // after, each average a percentage; on a 2.x daemon with a PSI kernel, all three sections.
          const psi = psiShape(j);
          for (const [section, lines] of Object.entries(psi)) {
            for (const line of lines) {
              const total = Number(get(j, `${section}.psi.${line}.total`) ?? 0);
              const lo = psiBefore[section]?.[line];
              const hi = psiAfter[section]?.[line];
              assert.ok(lo !== undefined && hi !== undefined && total >= lo && total <= hi,
                `${section}.psi.${line}.total ${total} not within [${lo}, ${hi}] of ${section}.pressure`);
              for (const avg of ['avg10', 'avg60', 'avg300']) {
                const a = Number(get(j, `${section}.psi.${line}.${avg}`) ?? 0);
                assert.ok(a >= 0 && a <= 100, `${section}.psi.${line}.${avg} ${a}`);
              }
            }
          }
          if (ON_2X && PSI_KERNEL) assert.deepEqual(Object.keys(psi).sort(), ['cpu', 'io', 'memory'], 'cpu, memory and io PSI on a 2.x daemon');
          if (!ON_2X) assert.deepEqual(psi, {}, 'containerd 1.x\'s ctr has no PSI fields');
          const hugetlb = ((get(j, 'hugetlb') as Json[] | undefined) ?? []).map((h) => ({ pagesize: h.pagesize, max: h.max })).sort((a, b) => String(a.pagesize).localeCompare(String(b.pagesize)));
          const table = await env.ctr(['task', 'metrics', id]);
          assert.equal(table.code, 0, table.stderr);
          const tableKeys = table.stdout.split('\n').map((l) => l.trim().split(/\s{2,}/)).filter((r) => r.length === 2 && !/^\d{4}-/.test(r[1])).map((r) => r[0]);
          await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
          await env.waitStatus(id, 'STOPPED', 60_000);
          const stopped = await metricsJson(id);
          assert.equal(stopped.code, 0, stopped.stderr);
          assert.equal(get(stopped.json, 'pids.current'), undefined, 'no process left (0 is omitted)');
          const shape = (x: Json | undefined, required: string[]) => ({
            sections: Object.keys(x ?? {}).sort(),
            required: Object.fromEntries(required.map((k) => [k, get(x, k) !== undefined])),
          });
          return {
            shape: shape(j, ['pids.current', 'pids.limit', 'cpu.usage_usec', 'cpu.user_usec', 'memory.usage', 'memory.usage_limit',
              'memory.swap_limit', 'memory.anon', 'memory.kernel_stack', 'memory.pgfault', 'memory_events']),
            hugetlb,
            limits: {
              pids: get(j, 'pids.limit'), memory: get(j, 'memory.usage_limit'), swap: get(j, 'memory.swap_limit'),
              events: get(j, 'memory_events'), periods: get(j, 'cpu.nr_periods'), throttled: get(j, 'cpu.nr_throttled'),
            },
            table: tableKeys,
            // Which sections carry pressure stall information, with which of some/full (messages:
            // present even when all zero); the values are checked against the files above.
            psi,
            stopped: { ...shape(stopped.json, ['memory.usage_limit', 'memory.swap_limit', 'cpu.usage_usec']), limit: get(stopped.json, 'memory.usage_limit') },
          };
        } finally {
          await env.remove(id);
        }
      },
    },
    {
      name: 'OOM of the init over memory.max: ctr run exits 137, /tasks/oom before /tasks/exit, memory.events counts it',
      timeout: TIMEOUT,
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'oominit');
        const r = await env.run(shim, ['--rm', '--memory-limit', String(32 * MIB), env.image, id, ...OOM]);
        assert.equal(r.code, 137, `ctr run exit code; stderr: ${r.stderr}`);
        await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit') && evs.some((e) => e.topic === '/tasks/oom'), EVENT_WAIT);
        // containerd 2.x's Go shims now and then never publish /tasks/delete (seen 1 in 15 on 2.3.4,
        // 3 in 15 on 2.1.9; daemons.test.ts notes it the same way): the reference gets the event
        // added for the comparison, with a note. Ours must publish it.
        const lost = shim.name === 'reference' && ON_2X && !await waitFor(() => env.taskEvents(id).some((e) => e.topic === '/tasks/delete'), 5000, 25);
        if (lost) console.log(`# the reference shim of containerd ${DAEMON.name} lost /tasks/delete of ${id}; compared as if it had come`);
        const events = lost
          ? [...env.taskEvents(id), { timestamp: '', topic: '/tasks/delete', namespace: '', event: {} }]
          : await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/delete'), EVENT_WAIT);
        assert.deepEqual(withoutOom(events), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
        assert.equal(events.filter((e) => e.topic === '/tasks/oom').length, 1, 'one /tasks/oom');
        oomOrder(shim.name, 'init', events, '');
        const exit = events.find((e) => e.topic === '/tasks/exit')!;
        assert.equal(exit.event.exit_status, 137);
        return normalize({ result: env.result(r, []), topics: withoutOom(events), oom: events.find((e) => e.topic === '/tasks/oom')!.event, exit: exit.event }, ctrSubst(env.c, id));
      },
    },
    {
      name: 'OOM of an exec over memory.max: the exec exits 137 after /tasks/oom, the task keeps running, metrics count it',
      timeout: TIMEOUT,
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'oomexec');
        try {
          await runDetached(shim, id, ['sleep', '1000'], ['--memory-limit', String(32 * MIB)], sleepReady);
          const x = await env.ctr(['task', 'exec', '--exec-id', 'hog', id, ...OOM]);
          assert.equal(x.code, 137, `ctr task exec exit code; stderr: ${x.stderr}`);
          const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit') && evs.some((e) => e.topic === '/tasks/oom'), EVENT_WAIT);
          assert.deepEqual(withoutOom(events), ['/tasks/create', '/tasks/start', '/tasks/exec-added', '/tasks/exec-started', '/tasks/exit']);
          assert.equal(events.filter((e) => e.topic === '/tasks/oom').length, 1, 'one /tasks/oom');
          oomOrder(shim.name, 'exec', events, 'hog');
          assert.equal(await env.taskStatus(id), 'RUNNING');
          const exit = events.find((e) => e.topic === '/tasks/exit')!;
          assert.equal(exit.event.id, 'hog', 'the exec\'s exit');
          assert.equal(exit.event.exit_status, 137);
          const m = await metricsJson(id);
          assert.equal(m.code, 0, m.stderr);
          assert.equal(get(m.json, 'memory_events.oom_kill'), 1, `memory_events: ${JSON.stringify(get(m.json, 'memory_events'))}`);
          assert.equal(kv(cgDir(id), 'memory.events').oom_kill, 1);
          return normalize({ exec: env.result(x, []), topics: withoutOom(events), exit: exit.event, oomKill: get(m.json, 'memory_events.oom_kill') }, ctrSubst(env.c, id));
        } finally {
          await env.remove(id);
        }
      },
    },
    {
      name: 'Update through containerd writes memory.max, memory.swap.max, cpu.max, cpu.weight and pids.max; a stopped task refuses it',
      timeout: TIMEOUT,
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'update');
        const files = ['memory.max', 'memory.swap.max', 'cpu.max', 'cpu.weight', 'pids.max'];
        const read = () => Object.fromEntries(files.map((f) => [f, cgFile(cgDir(id), f)]));
        try {
          await runDetached(shim, id, ['sleep', '1000'], ['--memory-limit', String(256 * MIB)], sleepReady);
          const before = read();
          assert.equal(before['memory.max'], String(256 * MIB));
          const up = await containerdUpdateTask(env.c, NS, id, {
            memory: { limit: 64 * MIB }, cpu: { shares: 512, quota: 50_000, period: 100_000 }, pids: { limit: 50 },
          });
          assert.deepEqual(up, { ok: true });
          const updated = read();
          assert.equal(updated['memory.max'], String(64 * MIB));
          assert.equal(updated['cpu.max'], '50000 100000');
          assert.equal(updated['pids.max'], '50');
          // runc's cgroups.ConvertCPUSharesToCgroupV2Value: 1 + ((512 - 2) * 9999) / 262142.
          assert.equal(updated['cpu.weight'], '20');
          const lower = await containerdUpdateTask(env.c, NS, id, { memory: { limit: 48 * MIB } });
          const lowered = read();
          assert.equal(lowered['memory.max'], String(48 * MIB));
          await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
          await env.waitStatus(id, 'STOPPED', 60_000);
          const stopped = await containerdUpdateTask(env.c, NS, id, { memory: { limit: 32 * MIB } });
          assert.equal(stopped.ok, false, 'update of a stopped task fails');
          return normalize({ before, up, updated, lower, lowered, stopped }, ctrSubst(env.c, id));
        } finally {
          await env.remove(id);
        }
      },
    },
    {
      name: 'pause writes cgroup.freeze 1 (frozen 1, PAUSED) and resume 0 (frozen 0, RUNNING), publishing /tasks/paused and /tasks/resumed',
      timeout: TIMEOUT,
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'pause');
        try {
          await runDetached(shim, id, ['sleep', '1000'], [], sleepReady);
          const dir = cgDir(id);
          const state = () => ({ freeze: cgFile(dir, 'cgroup.freeze'), frozen: kv(dir, 'cgroup.events').frozen });
          const seen: Json = { running: await env.taskStatus(id), cgroupRunning: state() };
          const p = await env.ctr(['task', 'pause', id]);
          assert.equal(p.code, 0, p.stderr);
          seen.paused = await env.taskStatus(id);
          seen.cgroupPaused = state();
          assert.equal(seen.paused, 'PAUSED');
          assert.deepEqual(seen.cgroupPaused, { freeze: '1', frozen: 1 });
          const r = await env.ctr(['task', 'resume', id]);
          assert.equal(r.code, 0, r.stderr);
          seen.resumed = await env.taskStatus(id);
          seen.cgroupResumed = state();
          assert.equal(seen.resumed, 'RUNNING');
          assert.deepEqual(seen.cgroupResumed, { freeze: '0', frozen: 0 });
          await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
          const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit'), EVENT_WAIT);
          assert.deepEqual(topics(events), ['/tasks/create', '/tasks/start', '/tasks/paused', '/tasks/resumed', '/tasks/exit']);
          return normalize({ seen, events }, ctrSubst(env.c, id));
        } finally {
          await env.remove(id);
        }
      },
    },
    {
      name: 'Kill with all: SIGUSR1 reaches every process of the cgroup but the unhandling init; SIGKILL to all empties the cgroup',
      timeout: TIMEOUT,
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'killall');
        try {
          // The init is pid 1 of its pid namespace with no USR1 handler: the kernel drops a USR1
          // sent to it, so only a signal to every process (runc kill --all) ends the two sleeps.
          await runDetached(shim, id, ['sh', '-c', 'sleep 1000 & sleep 1000 & while :; do sleep 1000; done'], [],
            (dir) => procsOf(dir).filter((p) => cmdline(p) === 'sleep 1000').length === 3);
          const dir = cgDir(id);
          const sleeps = procsOf(dir).filter((p) => cmdline(p) === 'sleep 1000');
          const init = procsOf(dir).find((p) => cmdline(p).startsWith('sh -c'));
          assert.ok(init, 'the init sh');
          const one = await env.ctr(['task', 'kill', '-s', 'SIGUSR1', id]);
          assert.equal(one.code, 0, one.stderr);
          assert.ok(sleeps.every((p) => pidAlive(p)), 'without all, only the init was signalled');
          const all = await env.ctr(['task', 'kill', '--all', '-s', 'SIGUSR1', id]);
          assert.equal(all.code, 0, all.stderr);
          assert.ok(await waitFor(() => sleeps.every((p) => !pidAlive(p)), 60_000, 50), 'every sleep got SIGUSR1');
          assert.equal(pidAlive(init), true, 'the init ignored it');
          assert.equal(await env.taskStatus(id), 'RUNNING');
          const k = await env.ctr(['task', 'kill', '--all', '-s', 'SIGKILL', id]);
          assert.equal(k.code, 0, k.stderr);
          const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit'), EVENT_WAIT);
          assert.ok(await waitFor(() => kv(dir, 'cgroup.events').populated === 0, 30_000, 50), 'the cgroup is empty');
          const exit = events.find((e) => e.topic === '/tasks/exit')!;
          assert.equal(exit.event.exit_status, 137);
          return normalize({
            one: env.result(one, []), all: env.result(all, []), kill: env.result(k, []), topics: topics(events), exit: exit.event,
            kernelHasCgroupKill: fs.existsSync(path.join(dir, 'cgroup.kill')),
          }, ctrSubst(env.c, id));
        } finally {
          await env.remove(id);
        }
      },
    },
    {
      name: 'the container\'s cgroup removed under the shim: Stats fails with an error, the shim keeps serving, the exit is delivered',
      timeout: TIMEOUT,
      skip: on2xSkip('its Go shim answers Stats of a removed cgroup with zeroed metrics (containerd/cgroups v3.1.3 ' +
        'cgroup2/manager.go StatFiltered ignores ENOENT), `ctr task metrics` exits 0; ours fails NotFound like 1.6\'s'),
      // Through containerd both read "no metrics received": its Tasks.Metrics drops a task whose
      // Stats fails (the Go shim's error is Unknown with cgroupsv2.Manager.Stat's open error,
      // containerd/cgroups v1.1.0 v2/manager.go; ours NotFound "cgroup does not exist").
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'gone');
        const aside = path.join(ROOT, `v2aside-${id}`);
        try {
          await runDetached(shim, id, ['sleep', '1000'], [], sleepReady);
          const dir = cgDir(id);
          const shimPid = shimDaemon(env.c, id);
          assert.ok(shimPid, 'the shim daemon');
          fs.mkdirSync(aside);
          for (const p of procsOf(dir)) fs.writeFileSync(path.join(aside, 'cgroup.procs'), String(p));
          await rmdirRetry(dir);
          const m = await metricsJson(id);
          assert.notEqual(m.code, 0, 'metrics of a removed cgroup fail');
          assert.equal(pidAlive(shimPid), true, 'the shim is alive after Stats failed');
          assert.equal(await env.taskStatus(id), 'RUNNING');
          const k = await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
          assert.equal(k.code, 0, k.stderr);
          const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit'), EVENT_WAIT);
          const exit = events.find((e) => e.topic === '/tasks/exit')!;
          assert.equal(exit.event.exit_status, 137);
          const del = await env.ctr(['task', 'delete', id]);
          assert.equal(del.code, 0, del.stderr);
          return normalize({
            metrics: { code: m.code, stderr: m.stderr.replace(/time="[^"]*" /g, '') },
            kill: env.result(k, []), topics: topics(events), exit: exit.event, del: env.result(del, []),
          }, ctrSubst(env.c, id));
        } finally {
          await env.remove(id);
          await rmdirRetry(aside).catch(() => undefined);
        }
      },
    },
    {
      name: 'memory.events unreadable under the shim: the OOM watch ends with a logged warning, the exec\'s exit 137 is delivered, the shim serves on',
      timeout: TIMEOUT,
      skip: on2xSkip('no "error from *cgroupsv2.Manager.EventChan" warning of its Go shim showed in containerd\'s log ' +
        'within 20 s (1.6\'s Go shim and ours log one); the exec\'s exit 137 and the failing Stats match'),
      knownDifferences: {
        metrics: 'the Go shim\'s Stats fails when memory.events cannot be read (containerd/cgroups v1.1.0 v2/manager.go Stat); ours leaves memory_events out',
      },
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'noevents');
        let mounted = '';
        try {
          await runDetached(shim, id, ['sleep', '1000'], ['--memory-limit', String(32 * MIB)], sleepReady);
          const shimPid = shimDaemon(env.c, id);
          assert.ok(shimPid, 'the shim daemon');
          const mark = logMark();
          // Reads of /proc/1/mem at offset 0 fail with EIO. The shims' inotify watches stay on the
          // kernfs file underneath, so the OOM below still notifies them.
          const target = path.join(cgDir(id), 'memory.events');
          const mnt = spawnSync('mount', ['--bind', '/proc/1/mem', target], { encoding: 'utf8', env: { ...process.env, PATH: fullPath() } });
          assert.equal(mnt.status, 0, `mount --bind /proc/1/mem ${target}: ${mnt.stderr}`);
          mounted = target;
          assert.throws(() => fs.readFileSync(target), /EIO/);
          const x = await env.ctr(['task', 'exec', '--exec-id', 'hog', id, ...OOM]);
          assert.equal(x.code, 137, `ctr task exec exit code; stderr: ${x.stderr}`);
          const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit'), EVENT_WAIT);
          assert.equal(await env.taskStatus(id), 'RUNNING');
          assert.equal(pidAlive(shimPid), true, 'the shim is alive');
          const warned = await waitFor(() => /(oom watch failed|cgroupsv2\.Manager\.EventChan)[^\n]*(input\/output error|EIO)|(input\/output error|EIO)[^\n]*(oom watch failed|EventChan)/i.test(logSince(mark)), 20_000, 100);
          const m = await metricsJson(id);
          if (spawnSync('umount', [target], { env: { ...process.env, PATH: fullPath() } }).status === 0) mounted = '';
          return normalize({
            exec: env.result(x, []), topics: topics(events), exit: events.find((e) => e.topic === '/tasks/exit')!.event,
            warned, metrics: { code: m.code, memoryEvents: get(m.json, 'memory_events') },
          }, ctrSubst(env.c, id));
        } finally {
          if (mounted) spawnSync('umount', ['-l', mounted], { env: { ...process.env, PATH: fullPath() } });
          await env.remove(id);
        }
      },
    },
    {
      name: 'a parent that cannot enable domain controllers (it holds a process): ctr run fails with runc\'s error, nothing is left',
      timeout: TIMEOUT,
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'busyparent');
        const parent = path.join(ROOT, `v2busy-${id}`);
        let holder: ChildProcess | undefined;
        try {
          // The "no internal processes" rule keeps runc (and the Go shim's controller toggling,
          // containerd v1.6.20 runtime/v2/runc/v2/service.go Create) from enabling a domain
          // controller here; runc 1.1 then refuses the child as an invalid domain.
          fs.mkdirSync(parent);
          holder = spawn('sleep', ['1000'], { stdio: 'ignore' });
          fs.writeFileSync(path.join(parent, 'cgroup.procs'), String(holder.pid));
          const d = await env.run(shim, ['-d', '--cgroup', `/v2busy-${id}/${id}`, env.image, id, 'sleep', '1000']);
          assert.notEqual(d.code, 0, 'ctr run fails');
          await env.remove(id);
          assert.ok(await waitFor(() => shimDaemon(env.c, id) === undefined, 30_000, 100), 'no shim daemon left');
          assert.equal(fs.existsSync(path.join(parent, id)), false, 'no container cgroup left');
          return normalize({ run: env.result(d, []) }, [[`/v2busy-${id}/${id}`, '<cgroup>'], ...ctrSubst(env.c, id)]);
        } finally {
          await env.remove(id);
          if (holder?.pid) {
            holder.kill('SIGKILL');
            await waitFor(() => !pidAlive(holder!.pid!), 10_000, 50);
          }
          await rmdirRetry(path.join(parent, id)).catch(() => undefined);
          await rmdirRetry(parent).catch(() => undefined);
        }
      },
    },
    {
      name: 'memory, hugetlb and io disabled in the parent under a running container: the OOM watch ends quietly, Stats reports what is left, the exit is delivered',
      timeout: TIMEOUT,
      skip: on2xSkip('its Go shim still reports a hugetlb entry per host page size without the controller ' +
        '(containerd/cgroups v3.1.3 readHugeTlbStats); ours leaves it out like 1.6\'s'),
      async run(shim) {
        const id = uniqueId('v2', shim.name, 'nomem');
        const parent = path.join(ROOT, `v2nomem-${id}`);
        try {
          fs.mkdirSync(parent);
          await runDetached(shim, id, ['sleep', '1000'], ['--cgroup', `/v2nomem-${id}/${id}`]);
          const dir = path.join(parent, id);
          assert.ok(await waitFor(() => sleepReady(dir), 60_000, 50), 'the container runs in its cgroup');
          const shimPid = shimDaemon(env.c, id);
          assert.ok(shimPid, 'the shim daemon');
          const before = cgFile(dir, 'cgroup.controllers');
          assert.match(before ?? '', /\bmemory\b/);
          const mark = logMark();
          // Allowed while the child enables nothing below itself; its memory.*, hugetlb.* and io.*
          // files go away (the shims' watch on memory.events sees it deleted).
          for (const ctl of ['memory', 'hugetlb', 'io']) fs.writeFileSync(path.join(parent, 'cgroup.subtree_control'), `-${ctl}`);
          const after = cgFile(dir, 'cgroup.controllers');
          assert.doesNotMatch(after ?? '', /\b(memory|hugetlb|io)\b/);
          assert.equal(fs.existsSync(path.join(dir, 'memory.events')), false);
          const m = await metricsJson(id);
          assert.equal(m.code, 0, m.stderr);
          assert.equal(get(m.json, 'pids.current'), 1);
          assert.equal(pidAlive(shimPid), true, 'the shim is alive');
          const k = await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
          assert.equal(k.code, 0, k.stderr);
          const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit'), EVENT_WAIT);
          const exit = events.find((e) => e.topic === '/tasks/exit')!;
          assert.equal(exit.event.exit_status, 137);
          const warned = /oom watch failed|EventChan/i.test(logSince(mark));
          return normalize({
            controllers: { before, after },
            metrics: {
              sections: Object.keys(m.json!).sort(), memory: get(m.json, 'memory'), memoryEvents: get(m.json, 'memory_events'),
              // io.psi's values are each container's own; which lines it has is compared.
              hugetlb: get(m.json, 'hugetlb'), io: { usage: get(m.json, 'io.usage'), psi: psiShape(m.json).io }, pids: get(m.json, 'pids'),
            },
            warned, topics: topics(events), exit: exit.event,
          }, ctrSubst(env.c, id));
        } finally {
          await env.remove(id);
          await rmdirRetry(path.join(parent, id)).catch(() => undefined);
          await rmdirRetry(parent).catch(() => undefined);
        }
      },
    },
  ];

  parityTests('cgroup v2', scenarios, combined(env));

  describe('cgroup v2: metrics values of the two shims are within noise of each other', () => {
    it('memory.anon, kernel_stack, pgfault, usage and cpu.usage_usec', { skip: BOTH ? false : 'only one shim under test' }, () => {
      const ref = rawMetrics.get('reference');
      const ours = rawMetrics.get('ours');
      assert.ok(ref && ours, 'both shims reported metrics');
      // Same workload in each container: a 20000-step shell loop, then one `sleep`. Page cache
      // (memory.file) is charged to whichever cgroup touched the image's files first, so it and
      // the usage that includes it are compared loosely.
      for (const [key, factor] of [['memory.anon', 3], ['memory.kernel_stack', 2], ['memory.pgfault', 3], ['memory.usage', 8]] as const) {
        const a = Number(get(ref, key) ?? 0);
        const b = Number(get(ours, key) ?? 0);
        assert.ok(a > 0 && b > 0 ? Math.max(a, b) / Math.min(a, b) <= factor : a === b, `${key}: reference ${a}, ours ${b}`);
      }
      const cpuA = Number(get(ref, 'cpu.usage_usec'));
      const cpuB = Number(get(ours, 'cpu.usage_usec'));
      assert.ok(cpuA > 0 && cpuB > 0 && Math.max(cpuA, cpuB) / Math.min(cpuA, cpuB) <= 10, `cpu.usage_usec: reference ${cpuA}, ours ${cpuB}`);
    });
  });

  criSuite();
}

// ---------------------------------------------------------------------------------------------
// CRI: ShimCgroup, a pod's cgroup parent, stats, OOMKilled

function criSuite(): void {
  const K8S = 'k8s.io';
  const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
  const observed = new Map<ShimName, unknown>();

  for (const shim of shims) {
    describe(`cgroup v2 through the CRI plugin with the ${label(shim)} shim`, () => {
      let c: Containerd;
      let cri: CriClient;
      let dir: string;
      const shimCgroup = `/v2shim-${unique}-${shim.name}`;
      const podParent = `/v2pod-${unique}-${shim.name}`;

      before(async () => {
        dir = fs.mkdtempSync('/tmp/v2cri-');
        fs.mkdirSync(path.join(dir, 'net.d'));
        fs.mkdirSync(path.join(dir, 'logs'));
        const pathPrepend: string[] = [];
        if (shim.name === 'ours') {
          // containerd resolves io.containerd.runc.v2 to containerd-shim-runc-v2 on its PATH.
          fs.mkdirSync(path.join(dir, 'bin'));
          fs.symlinkSync(OUR_SHIM, path.join(dir, 'bin', 'containerd-shim-runc-v2'));
          pathPrepend.push(path.join(dir, 'bin'));
        }
        // containerd/cgroups v1.1.0 v2.LoadManager + AddProc: the shim cgroup must exist.
        fs.mkdirSync(path.join(ROOT, shimCgroup));
        c = await startContainerd({
          cri: true,
          pathPrepend,
          criSettings: `sandbox_image = ${JSON.stringify(PAUSE_IMAGE_REF)}`,
          extraConfig: criRuntimeConfig({ handlers: [{ name: 'runc', shimCgroup }], cniConfDir: path.join(dir, 'net.d') }),
          readyTimeoutMs: 120_000,
        });
        await ensureBusyboxImage(c, [K8S]);
        await ensurePauseImage(c, [K8S]);
        cri = new CriClient(c.address);
        for (const ref of [DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF]) {
          assert.ok(await waitFor(() => cri.imageStatus(ref), 60_000, 100), `the CRI plugin does not see ${ref}`);
        }
      }, { timeout: 300_000 });

      after(async () => {
        cri?.close();
        await c?.stop();
        for (const cg of [podParent, shimCgroup]) {
          const p = path.join(ROOT, cg);
          for (const sub of fs.existsSync(p) ? fs.readdirSync(p, { withFileTypes: true }).filter((d) => d.isDirectory()) : []) {
            try { fs.rmdirSync(path.join(p, sub.name)); } catch { /* busy */ }
          }
          await rmdirRetry(p, 10_000).catch(() => undefined);
        }
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
      }, { timeout: 120_000 });

      it('the shim joins ShimCgroup; the pod\'s containers live under its cgroup parent on one shim; stats; OOMKilled', { timeout: 600_000 }, async () => {
        const logDirectory = path.join(dir, 'logs', 'pod');
        fs.mkdirSync(logDirectory, { recursive: true });
        const pod = podSandboxConfig({ name: `v2-${shim.name}`, uid: `uid-${unique}-${shim.name}`, namespace: 'v2', logDirectory, cgroupParent: podParent });
        const sandboxId = await cri.runPodSandbox(pod, '', 120_000);
        const app = await cri.createContainer(sandboxId, containerConfig({
          name: 'app', image: DEFAULT_IMAGE_REF, command: ['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000'],
        }), pod, 120_000);
        await cri.startContainer(app, 120_000);
        const oom = await cri.createContainer(sandboxId, containerConfig({
          name: 'oom', image: DEFAULT_IMAGE_REF, memoryLimitBytes: 32 * MIB,
          command: ['sh', '-c', 'sleep 1; exec dd if=/dev/zero of=/dev/null bs=128M count=1'],
        }), pod, 120_000);
        await cri.startContainer(oom, 120_000);

        // One shim daemon for the pod (its -id is the sandbox's), in ShimCgroup.
        const daemons = listProcesses().filter((p) => argValue(p.argv, 'address') === c.address && !p.argv.includes('-standby') &&
          !['start', 'delete'].includes(p.argv[p.argv.length - 1]));
        assert.deepEqual(daemons.map((p) => argValue(p.argv, 'id')), [sandboxId], 'one shim daemon serves the pod');
        const shimCg = cgroupOf(daemons[0].pid);
        assert.equal(shimCg, shimCgroup, 'the shim moved itself into ShimCgroup');

        // Every container's init in <cgroup parent>/<container id> (cgroupfs driver).
        const appStatus = await cri.containerStatus(app);
        assert.equal(appStatus.status?.state, ContainerState.CONTAINER_RUNNING);
        const appInit = listProcesses().find((p) => cgroupOf(p.pid) === `${podParent}/${app}`);
        assert.ok(appInit, `a process in ${podParent}/${app}`);
        const sandboxCg = fs.existsSync(path.join(ROOT, podParent, sandboxId));
        assert.ok(sandboxCg, 'the sandbox (pause) cgroup is under the parent too');

        // Stats from the v2 metrics, through the CRI plugin.
        await waitFor(() => listProcesses().some((p) => cgroupOf(p.pid) === `${podParent}/${app}` && p.argv.join(' ') === 'sleep 1000'), 60_000, 100);
        const stats = await cri.containerStats(app);
        const cpu = stats?.cpu?.usageCoreNanoSeconds?.value ?? 0n;
        const usage = stats?.memory?.usageBytes?.value ?? 0n;
        const ws = stats?.memory?.workingSetBytes?.value;
        assert.equal(stats?.attributes?.id, app);
        assert.ok(cpu > 0n, 'cpu usage > 0');
        assert.ok(usage > 0n && usage < 64n * BigInt(MIB), `memory usage ${usage}`);
        assert.ok(ws !== undefined && ws <= usage, `working set ${ws} <= usage ${usage}`);
        const list = await cri.listContainerStats({ podSandboxId: sandboxId });
        assert.deepEqual(list.map((s) => s.attributes?.id).filter((x) => x === app), [app], 'ListContainerStats has the app');

        // The OOM-killed container: exit 137, reason OOMKilled.
        const oomStatus = await waitFor(async () => {
          const s = (await cri.containerStatus(oom)).status;
          return s?.state === ContainerState.CONTAINER_EXITED && s.reason !== '' ? s : undefined;
        }, 120_000, 200);
        assert.ok(oomStatus, 'the oom container exited');
        assert.equal(oomStatus.exitCode, 137);
        assert.equal(oomStatus.reason, 'OOMKilled');

        await cri.stopPodSandbox(sandboxId, 120_000);
        for (const id of [app, oom]) await cri.removeContainer(id, 120_000);
        await cri.removePodSandbox(sandboxId, 120_000);
        assert.ok(await waitFor(() => !fs.existsSync(path.join(ROOT, podParent, app)) && !fs.existsSync(path.join(ROOT, podParent, sandboxId)), 30_000, 100),
          'the containers\' cgroups are removed with them');
        observed.set(shim.name, {
          shimInShimCgroup: shimCg === shimCgroup, oneShim: daemons.length, appCgroupUnderParent: true, sandboxCg,
          stats: { cpu: cpu > 0n, usage: usage > 0n, workingSet: ws !== undefined },
          oom: { exitCode: oomStatus.exitCode, reason: oomStatus.reason },
        });
      });
    });
  }

  describe('cgroup v2 through the CRI plugin: the TypeScript shim behaves like the reference shim', () => {
    it('same observations', { skip: BOTH ? false : 'only one shim under test' }, () => {
      assert.ok(observed.get('reference'), 'no observation from the reference shim (its test failed)');
      assert.ok(observed.get('ours'), 'no observation from our shim (its test failed)');
      assert.deepEqual(observed.get('ours'), observed.get('reference'));
    });
  });
}

// Last: the suite's constants above must be initialised first.
if (SKIP) {
  process.stderr.write(`\n*** cgroups-v2: SKIPPED: ${SKIP} ***\n\n`);
  test('cgroup v2: metrics, OOM, Update, pause/resume, kill all, shim_cgroup, pods, degradation — both shims', { skip: SKIP }, () => undefined);
} else {
  const subset = ON_2X && !ALL_ON_2X
    ? '2.x subset: three degradation scenarios skipped, each with the reason (SHIM_V2_ALL=1 runs them)'
    : 'every scenario';
  process.stderr.write(`# cgroups-v2: ${daemonVersion(DAEMON)} (SHIM_DAEMON=${DAEMON.name}); ${subset}\n`);
  defineSuite();
}
