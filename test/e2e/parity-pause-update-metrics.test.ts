// SPDX-License-Identifier: Apache-2.0
// Parity of pause/resume (the freezer cgroup and the events), Update (resource limits reaching the
// container's cgroup, through containerd's Tasks API as CRI sends them) and Stats (`ctr task
// metrics`: the shape of the cgroup v1 metrics, since the values themselves differ per run).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { containerCgroups, waitFor } from '../support/containerd.js';
import {
  CtdEnv, NS, combined, containerdUpdateTask, ctrSubst, normalize, parityTests, readIf, uniqueId, type Scenario,
} from '../support/parity.js';

const env = CtdEnv.use();

/** The container's directory in one v1 hierarchy (ctr's cgroupsPath is /<ns>/<id>). */
function cgroupFile(id: string, controller: string, file: string): string | undefined {
  const dir = containerCgroups(NS, id).find((d) => path.basename(path.dirname(path.dirname(d))) === controller);
  return dir ? readIf(path.join(dir, file))?.trim() : undefined;
}

const V1 = fs.existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes');
const NOT_V1 = V1 ? false : 'needs cgroup v1 controllers (the metrics and cgroup files checked here are v1)';

type Json = Record<string, unknown>;
function get(o: unknown, p: string): unknown {
  return p.split('.').reduce<unknown>((x, k) => (x && typeof x === 'object' ? (x as Json)[k] : undefined), o);
}

/**
 * What the metrics look like, independent of this run's numbers: the sections present, whether
 * the metrics any consumer relies on are there (ctr/Go omit zero values, so only those that are
 * never zero for a live container are required), the limits, and the per-CPU count.
 */
function metricsShape(m: Json, running: boolean) {
  const present = (p: string) => get(m, p) !== undefined;
  const required = running
    ? ['pids.current', 'cpu.usage.total', 'cpu.usage.per_cpu', 'cpu.throttling', 'memory.usage.usage', 'memory.usage.limit', 'memory.usage.max',
      'memory.swap.limit', 'memory.kernel.limit', 'memory.kernel_tcp.limit', 'memory.hierarchical_memory_limit', 'memory.hierarchical_swap_limit',
      'memory.rss', 'memory.total_rss', 'memory.pg_fault', 'memory.total_pg_fault', 'blkio', 'memory_oom_control']
    : ['cpu.usage.total', 'memory.usage.limit', 'memory.hierarchical_memory_limit', 'blkio', 'memory_oom_control'];
  return {
    sections: Object.keys(m).sort(),
    required: Object.fromEntries(required.map((p) => [p, present(p)])),
    values: {
      'pids.current': get(m, 'pids.current'),
      'pids.limit': get(m, 'pids.limit'),
      'memory.usage.limit': get(m, 'memory.usage.limit'),
      'memory.hierarchical_memory_limit': get(m, 'memory.hierarchical_memory_limit'),
      'memory.kernel_tcp.limit': get(m, 'memory.kernel_tcp.limit'),
      'cpu.usage.per_cpu.length': (get(m, 'cpu.usage.per_cpu') as unknown[] | undefined)?.length,
      'cpu.throttling': get(m, 'cpu.throttling'),
      'memory_oom_control': get(m, 'memory_oom_control'),
    },
  };
}

/** `ctr task metrics` table: the METRIC names, and the values that do not vary between runs. */
function tableShape(text: string) {
  const rows = text.split('\n').map((l) => l.trim().split(/\s{2,}/)).filter((r) => r.length === 2 && r[0] !== 'ID' && !/^\d{4}-/.test(r[1]));
  const stable = new Set(['memory.limit_in_bytes', 'pids.current', 'pids.limit', 'METRIC']);
  return rows.map(([k, v]) => (stable.has(k) ? `${k}=${v}` : k));
}

const MIB = 1024 * 1024;

const scenarios: Scenario[] = [
  {
    name: 'pause freezes the task (PAUSED, freezer FROZEN) and resume thaws it (RUNNING, THAWED), publishing /tasks/paused and /tasks/resumed',
    skip: NOT_V1,
    async run(shim) {
      const id = uniqueId('pum', shim.name, 'pause');
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sh', '-c', 'while :; do echo tick > /dev/null; sleep 0.05; done']);
        assert.equal(d.code, 0, d.stderr);
        const seen: Record<string, unknown> = { running: await env.taskStatus(id), freezerRunning: cgroupFile(id, 'freezer', 'freezer.state') };
        const p = await env.ctr(['task', 'pause', id]);
        assert.equal(p.code, 0, p.stderr);
        seen.pause = env.result(p, []);
        seen.paused = await env.taskStatus(id);
        seen.freezerPaused = cgroupFile(id, 'freezer', 'freezer.state');
        assert.equal(seen.paused, 'PAUSED');
        assert.equal(seen.freezerPaused, 'FROZEN');
        const r = await env.ctr(['task', 'resume', id]);
        assert.equal(r.code, 0, r.stderr);
        seen.resume = env.result(r, []);
        seen.resumed = await env.taskStatus(id);
        seen.freezerResumed = cgroupFile(id, 'freezer', 'freezer.state');
        assert.equal(seen.resumed, 'RUNNING');
        assert.equal(seen.freezerResumed, 'THAWED');
        await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
        await env.waitStatus(id, 'STOPPED');
        const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit'));
        assert.deepEqual(events.map((e) => e.topic), ['/tasks/create', '/tasks/start', '/tasks/paused', '/tasks/resumed', '/tasks/exit']);
        return normalize({ seen, events }, ctrSubst(env.c, id));
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'Update through containerd sets the memory limit, cpu shares and pids limit in the container\'s cgroups; a stopped task refuses it',
    skip: NOT_V1,
    async run(shim) {
      const id = uniqueId('pum', shim.name, 'update');
      try {
        const d = await env.run(shim, ['-d', '--memory-limit', String(256 * MIB), env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const before = cgroupFile(id, 'memory', 'memory.limit_in_bytes');
        assert.equal(before, String(256 * MIB));
        const up = await containerdUpdateTask(env.c, NS, id, { memory: { limit: 64 * MIB }, cpu: { shares: 512 }, pids: { limit: 50 } });
        assert.deepEqual(up, { ok: true });
        const after = {
          memory: cgroupFile(id, 'memory', 'memory.limit_in_bytes'),
          shares: cgroupFile(id, 'cpu', 'cpu.shares'),
          pids: cgroupFile(id, 'pids', 'pids.max'),
        };
        assert.deepEqual(after, { memory: String(64 * MIB), shares: '512', pids: '50' });
        const lower = await containerdUpdateTask(env.c, NS, id, { memory: { limit: 48 * MIB } });
        const lowered = cgroupFile(id, 'memory', 'memory.limit_in_bytes');
        assert.equal(lowered, String(48 * MIB));
        await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
        await env.waitStatus(id, 'STOPPED');
        const stopped = await containerdUpdateTask(env.c, NS, id, { memory: { limit: 32 * MIB } });
        assert.equal(stopped.ok, false, 'update of a stopped task fails');
        return normalize({ before, up, after, lower, lowered, stopped }, ctrSubst(env.c, id));
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'ctr task metrics reports cgroup v1 metrics of the same shape for a running task (sections, key metrics, limits, per-CPU usage) and after it stopped',
    skip: NOT_V1,
    async run(shim) {
      const id = uniqueId('pum', shim.name, 'metrics');
      try {
        const d = await env.run(shim, ['-d', '--memory-limit', String(100 * MIB), env.image, id, 'sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000']);
        assert.equal(d.code, 0, d.stderr);
        // The busy loop runs first: wait until sleep has replaced it, so pids.current is stable.
        await waitFor(async () => {
          const ps = await env.ctr(['task', 'exec', '--exec-id', 'comm', id, 'cat', '/proc/1/comm']);
          return ps.stdout.trim() === 'sleep';
        }, 10_000, 100);
        const json = await env.ctr(['task', 'metrics', '--format', 'json', id]);
        assert.equal(json.code, 0, json.stderr);
        const m = JSON.parse(json.stdout) as Json;
        assert.equal(get(m, 'memory.usage.limit'), 100 * MIB);
        assert.equal(get(m, 'pids.current'), 1);
        assert.ok((get(m, 'cpu.usage.total') as number) > 0, 'cpu usage');
        assert.ok((get(m, 'memory.usage.usage') as number) > 0, 'memory usage');
        const table = await env.ctr(['task', 'metrics', id]);
        assert.equal(table.code, 0, table.stderr);
        await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
        await env.waitStatus(id, 'STOPPED');
        const stopped = await env.ctr(['task', 'metrics', '--format', 'json', id]);
        const stoppedShape = stopped.code === 0 ? metricsShape(JSON.parse(stopped.stdout) as Json, false) : env.result(stopped, ctrSubst(env.c, id));
        return {
          running: metricsShape(m, true),
          table: tableShape(table.stdout),
          stopped: { code: stopped.code, shape: stoppedShape },
        };
      } finally {
        await env.remove(id);
      }
    },
  },
];

parityTests('pause, update and metrics', scenarios, combined(env));
