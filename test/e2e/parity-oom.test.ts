// SPDX-License-Identifier: Apache-2.0
// Parity of OOM handling (runc-and-io.md §7.3, events.md §3.5): an init killed by the kernel's OOM
// killer exits 137 with a /tasks/oom event, and an OOM kill of a child of the init publishes
// /tasks/oom while the task keeps running (and shows in the metrics).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  CtdEnv, combined, ctrSubst, normalize, parityTests, uniqueId, type CtrEvent, type Scenario,
} from '../support/parity.js';

const env = CtdEnv.use();

const MIB = 1024 * 1024;
const NOT_V1 = fs.existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')
  ? false : 'needs the cgroup v1 memory controller (the OOM notifier exercised here is the v1 eventfd one)';
// dd's 64 MiB buffer cannot fit in a 32 MiB memory cgroup (there is no swap here to absorb it).
const OOM = ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'];

/** Topics in order, except /tasks/oom whose order relative to /tasks/exit is not guaranteed. */
function topicsWithoutOom(evs: CtrEvent[]): string[] {
  return evs.map((e) => e.topic).filter((t) => t !== '/tasks/oom');
}

const scenarios: Scenario[] = [
  {
    name: 'an init that exceeds its memory limit is OOM-killed: ctr run exits 137 and /tasks/oom is published',
    skip: NOT_V1,
    async run(shim) {
      const id = uniqueId('oom', shim.name, 'init');
      const r = await env.run(shim, ['--rm', '--memory-limit', String(32 * MIB), env.image, id, ...OOM]);
      assert.equal(r.code, 137, `ctr run exit code; stderr: ${r.stderr}`);
      const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/delete') && evs.some((e) => e.topic === '/tasks/oom'));
      assert.deepEqual(topicsWithoutOom(events), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
      const oom = events.filter((e) => e.topic === '/tasks/oom');
      assert.equal(oom.length, 1, 'one /tasks/oom');
      assert.deepEqual(oom[0].event, { container_id: id });
      const exit = events.find((e) => e.topic === '/tasks/exit')!;
      assert.equal(exit.event.exit_status, 137);
      return normalize({ result: env.result(r, []), topics: topicsWithoutOom(events), oom, exit }, ctrSubst(env.c, id));
    },
  },
  {
    name: 'an OOM kill of a child of the init publishes /tasks/oom while the task keeps running, and the metrics count it',
    skip: NOT_V1,
    async run(shim) {
      const id = uniqueId('oom', shim.name, 'child');
      try {
        const d = await env.run(shim, ['-d', '--memory-limit', String(32 * MIB), env.image, id, 'sh', '-c', `${OOM.join(' ')}; echo "dd: $?" > /tmp/dd; exec sleep 1000`]);
        assert.equal(d.code, 0, d.stderr);
        const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/oom'));
        assert.equal(await env.taskStatus(id), 'RUNNING');
        const dd = await env.ctr(['task', 'exec', '--exec-id', 'dd', id, 'cat', '/tmp/dd']);
        assert.equal(dd.stdout, 'dd: 137\n', 'dd was SIGKILLed');
        const m = await env.ctr(['task', 'metrics', '--format', 'json', id]);
        assert.equal(m.code, 0, m.stderr);
        const metrics = JSON.parse(m.stdout) as { memory_oom_control?: Record<string, number>; memory?: { usage?: Record<string, number> } };
        assert.equal(metrics.memory_oom_control?.oom_kill, 1, `memory_oom_control: ${JSON.stringify(metrics.memory_oom_control)}`);
        assert.ok((metrics.memory?.usage?.failcnt ?? 0) > 0, 'memory.failcnt > 0');
        return normalize({
          topics: events.filter((e) => e.topic !== '/tasks/exec-added').map((e) => e.topic),
          dd: env.result(dd, []),
          oomControl: metrics.memory_oom_control,
          limit: metrics.memory?.usage?.limit,
        }, ctrSubst(env.c, id));
      } finally {
        await env.remove(id);
      }
    },
  },
];

parityTests('OOM', scenarios, combined(env));
