// SPDX-License-Identifier: Apache-2.0
// Parity of exec processes: concurrent execs with their own exit codes and events, exec stdin,
// `ctr task ps`, and what happens to running execs when the init exits (the kernel kills them in
// a private pid namespace; the shim kills them with `runc kill --all` in a shared one).

import assert from 'node:assert/strict';
import { waitFor } from '../support/containerd.js';
import {
  CtdEnv, combined, ctrSubst, normalize, parityTests, uniqueId, type CtrEvent, type Scenario,
} from '../support/parity.js';

const env = CtdEnv.use();

/** Events of one process of the container (init when execId is the container id). */
function processEvents(events: CtrEvent[], execId: string): CtrEvent[] {
  return events.filter((e) => e.event.exec_id === execId || e.event.id === execId);
}

/** PIDs listed by `ctr task ps` (header skipped). */
async function psPids(id: string): Promise<string[]> {
  const r = await env.ctr(['task', 'ps', id]);
  return r.stdout.split('\n').slice(1).filter((l) => l.trim()).map((l) => l.trim().split(/\s+/)[0]);
}

async function initExitKillsExecs(shim: Parameters<Scenario['run']>[0], what: string, runArgs: string[]) {
  const id = uniqueId('exec', shim.name, what);
  try {
    const d = await env.run(shim, ['-d', ...runArgs, env.image, id, 'sleep', '1000']);
    assert.equal(d.code, 0, d.stderr);
    const execs = ['long1', 'long2'].map((e) => env.ctr(['task', 'exec', '--exec-id', e, id, 'sleep', '1000']));
    assert.ok(await waitFor(async () => (await psPids(id)).length === 3, 10_000), 'the two execs run');
    const kill = await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
    assert.equal(kill.code, 0, kill.stderr);
    const results = await Promise.all(execs);
    for (const r of results) assert.equal(r.code, 137, `the exec's ctr reports it was killed; stderr: ${r.stderr}`);
    const events = await env.waitEvents(id, (evs) => evs.filter((e) => e.topic === '/tasks/exit').length === 3);
    const exits = events.filter((e) => e.topic === '/tasks/exit').map((e) => ({ id: e.event.id === id ? '<init>' : e.event.id, status: e.event.exit_status }));
    // The relative order of the init's and the execs' exits is not guaranteed (events.md §3.5).
    exits.sort((a, b) => String(a.id).localeCompare(String(b.id)));
    assert.deepEqual(exits, [{ id: '<init>', status: 137 }, { id: 'long1', status: 137 }, { id: 'long2', status: 137 }]);
    assert.equal(await env.taskStatus(id), 'STOPPED');
    return normalize({ execs: results.map((r) => env.result(r, [])), exits }, ctrSubst(env.c, id));
  } finally {
    await env.remove(id);
  }
}

const scenarios: Scenario[] = [
  {
    name: '10 concurrent execs each return their own exit code and output, and each gets exec-added, exec-started, exit in that order',
    async run(shim) {
      const id = uniqueId('exec', shim.name, 'ten');
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const n = Array.from({ length: 10 }, (_, i) => i + 1);
        const results = await Promise.all(n.map((i) =>
          env.ctr(['task', 'exec', '--exec-id', `e${i}`, id, 'sh', '-c', `echo out-${i}; echo err-${i} >&2; exit ${i}`])));
        results.forEach((r, k) => {
          const i = k + 1;
          assert.equal(r.code, i, `exec e${i} exit code; stderr: ${r.stderr}`);
          assert.equal(r.stdout, `out-${i}\n`);
          assert.equal(r.stderr, `err-${i}\n`);
        });
        const events = await env.waitEvents(id, (evs) => evs.filter((e) => e.topic === '/tasks/exit').length === 10);
        const perExec = n.map((i) => {
          const evs = processEvents(events, `e${i}`);
          assert.deepEqual(evs.map((e) => e.topic), ['/tasks/exec-added', '/tasks/exec-started', '/tasks/exit'], `events of e${i}`);
          assert.equal(evs[2].event.pid, evs[1].event.pid, `exit pid = exec-started pid for e${i}`);
          assert.equal(evs[2].event.exit_status, i);
          return evs;
        });
        return normalize({ results: results.map((r) => env.result(r, [])), perExec }, ctrSubst(env.c, id));
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'an exec reads the input piped into ctr task exec and sees EOF when it ends',
    async run(shim) {
      const id = uniqueId('exec', shim.name, 'stdin');
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const r = await env.ctrWithInput(['task', 'exec', '--exec-id', 'in', id, 'sh', '-c', 'echo ready; cat; echo done; exit 6'],
          'ready', 'abc\ndef\n');
        assert.equal(r.timedOut, false, `the exec never saw EOF; stdout: ${JSON.stringify(r.stdout)}`);
        assert.equal(r.stdout, 'ready\nabc\ndef\ndone\n', r.stderr);
        assert.equal(r.code, 6);
        return env.result(r, ctrSubst(env.c, id));
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'ctr task ps lists the init and a running exec, the exec marked with its exec id',
    async run(shim) {
      const id = uniqueId('exec', shim.name, 'ps');
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const exec = env.ctr(['task', 'exec', '--exec-id', 'psx', id, 'sleep', '1000']);
        assert.ok(await waitFor(async () => (await psPids(id)).length === 2, 10_000), 'the exec runs');
        const r = await env.ctr(['task', 'ps', id]);
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stdout.split('\n').filter((l) => l.trim()).map((l) => l.trim().replace(/^\d+/, '<pid>').replace(/\s+/g, ' '));
        assert.equal(lines.length, 3, r.stdout);
        assert.ok(lines.some((l) => l.includes('ExecID:psx')), `the exec is marked: ${r.stdout}`);
        await env.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
        await exec;
        return { code: r.code, lines: [lines[0], ...lines.slice(1).sort()], stderr: r.stderr };
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'when the init exits in a private pid namespace, the running execs die with it: 137 for each, and exit events for all',
    run: (shim) => initExitKillsExecs(shim, 'ownpidns', []),
  },
  {
    name: 'when the init exits in a shared (host) pid namespace, the shim kills the running execs (runc kill --all): 137 for each, and exit events for all',
    run: (shim) => initExitKillsExecs(shim, 'hostpidns', ['--with-ns', 'pid:/proc/self/ns/pid']),
  },
];

parityTests('exec processes', scenarios, combined(env));
