// SPDX-License-Identifier: Apache-2.0
// Parity of errors (task-api.md §4-§6, runc-and-io.md §1.4): runc's own error text reaching the
// client, requests in the wrong state and unknown ids. Through ctr for what a user sees, and
// against each shim directly for the exact gRPC code and message of every RPC (containerd answers
// unknown container ids and some wrong states itself, before the shim is asked).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { leftovers, waitFor } from '../support/containerd.js';
import {
  CtdEnv, DirectEnv, combined, ctrSubst, execSpec, fakeSubst, normalize, outcome, parityTests, runcOptions, uniqueId,
  type DirectTask, type Outcome, type Scenario,
} from '../support/parity.js';
import { Status } from '../../src/gen/containerd/types/task.js';
import { CheckpointOptions } from '../../src/gen/containerd/runc/v1/runc.js';

const env = CtdEnv.use();
const direct = DirectEnv.use('perr');

const NOT_FOUND_IN_PATH = 'exec: "nope": executable file not found in $PATH';

/** Replies reduced to what is comparable: Stats to its type, Pids to the count. */
async function call(p: Promise<unknown>): Promise<Outcome> {
  const o = await outcome(p);
  if ('ok' in o && o.ok && typeof o.ok === 'object') {
    const v = o.ok as Record<string, unknown>;
    if ('stats' in v) return { ok: { statsType: (v.stats as { typeUrl?: string } | undefined)?.typeUrl } };
    if ('processes' in v) return { ok: { processes: (v.processes as unknown[]).length } };
    if ('status' in v && typeof v.status === 'number') return { ok: { ...v, status: Status[v.status] } };
  }
  return o;
}

const statusOf = async (t: DirectTask, execId = '') => {
  const o = await call(t.client.state(t.id, execId));
  return 'ok' in o ? (o.ok as { status: string }).status : o;
};

const checkpointOpts = () => ({ typeUrl: 'containerd.runc.v1.CheckpointOptions', value: CheckpointOptions.encode(CheckpointOptions.fromPartial({})).finish() });

/** Starts a shim for a `sleep 1000` container (or `args`), creates (and starts) its task with null IO. */
async function task(shim: Parameters<Scenario['run']>[0], id: string, o: { start?: boolean; args?: string[] } = {}): Promise<DirectTask> {
  const t = await direct.start(shim, id, o.args ?? ['sleep', '1000']);
  await t.client.create({ id, bundle: t.bundle, rootfs: t.rootfs });
  if (o.start !== false) await t.client.start(id);
  return t;
}

const scenarios: Scenario[] = [
  // ---- through ctr ----
  {
    name: 'ctr run of a nonexistent binary shows runc\'s error (executable file not found in $PATH), exits 1 and leaves nothing behind',
    async run(shim) {
      const id = uniqueId('err', shim.name, 'nope');
      const r = await env.run(shim, ['--rm', env.image, id, 'nope']);
      assert.equal(r.code, 1);
      assert.ok(r.stderr.includes(`OCI runtime create failed: runc create failed: unable to start container process: ${NOT_FOUND_IN_PATH}: unknown`), r.stderr);
      await env.ctr(['container', 'rm', id]);
      await waitFor(() => leftovers(env.c, [id]).shims.length === 0, 5000);
      const left = leftovers(env.c, [id]);
      return normalize({ result: env.result(r, []), events: env.taskEvents(id).map((e) => e.topic), left }, ctrSubst(env.c, id));
    },
  },
  {
    name: 'ctr task exec of a nonexistent binary shows runc\'s error and the task keeps running',
    async run(shim) {
      const id = uniqueId('err', shim.name, 'execnope');
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const r = await env.ctr(['task', 'exec', '--exec-id', 'bad', id, 'nope']);
        assert.equal(r.code, 1);
        assert.ok(r.stderr.includes(`OCI runtime exec failed: exec failed: unable to start container process: ${NOT_FOUND_IN_PATH}: unknown`), r.stderr);
        const status = await env.taskStatus(id);
        assert.equal(status, 'RUNNING');
        const again = await env.ctr(['task', 'exec', '--exec-id', 'ok', id, 'echo', 'still fine']);
        assert.equal(again.stdout, 'still fine\n');
        return normalize({ result: env.result(r, []), status, again: env.result(again, []) }, ctrSubst(env.c, id));
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'ctr on a task in the wrong state or with an unknown exec id shows the same errors and exit codes (start twice, duplicate exec id, pause twice, exec while paused, resume while running, delete while running, kill/exec/pause/resume when stopped)',
    async run(shim) {
      const id = uniqueId('err', shim.name, 'states');
      const steps: Array<{ step: string; code: number | null; stdout: string; stderr: string }> = [];
      const step = async (name: string, args: string[]) => {
        const r = await env.ctr(args);
        steps.push({ step: name, ...env.result(r, ctrSubst(env.c, id)) });
        return r;
      };
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        await step('start a running task', ['task', 'start', id]);
        await step('kill an unknown exec id', ['task', 'kill', '--exec-id', 'nope', id]);
        const long = env.ctr(['task', 'exec', '--exec-id', 'dup', id, 'sleep', '1000']);
        assert.ok(await waitFor(async () => (await env.ctr(['task', 'ps', id])).stdout.includes('ExecID:dup'), 10_000), 'exec dup runs');
        await step('exec with a duplicate exec id', ['task', 'exec', '--exec-id', 'dup', id, 'true']);
        await step('kill a running exec', ['task', 'kill', '--exec-id', 'dup', '-s', 'SIGKILL', id]);
        const longResult = await long;
        steps.push({ step: 'the killed exec', ...env.result(longResult, []) });
        await step('pause', ['task', 'pause', id]);
        await step('pause a paused task', ['task', 'pause', id]);
        await step('exec in a paused task', ['task', 'exec', '--exec-id', 'p', id, 'true']);
        await step('delete a paused task', ['task', 'delete', id]);
        await step('resume', ['task', 'resume', id]);
        await step('resume a running task', ['task', 'resume', id]);
        await step('delete a running task', ['task', 'delete', id]);
        await step('kill', ['task', 'kill', '-s', 'SIGKILL', id]);
        assert.equal(await env.waitStatus(id, 'STOPPED'), 'STOPPED');
        await step('kill a stopped task', ['task', 'kill', '-s', 'SIGKILL', id]);
        await step('exec in a stopped task', ['task', 'exec', '--exec-id', 's', id, 'true']);
        await step('pause a stopped task', ['task', 'pause', id]);
        await step('resume a stopped task', ['task', 'resume', id]);
        await step('delete a stopped task', ['task', 'delete', id]);
        await step('delete it again', ['task', 'delete', id]);
        return steps;
      } finally {
        await env.remove(id);
      }
    },
  },

  // ---- Task API, directly ----
  {
    name: 'Task API: every RPC on an unknown container id is NotFound "container not created", and Connect reports task pid 0',
    async run(shim) {
      const t = await task(shim, 'c-known');
      try {
        const c = t.client;
        const u = 'c-unknown';
        const res: Record<string, Outcome> = {
          state: await call(c.state(u)),
          start: await call(c.start(u)),
          delete: await call(c.delete(u)),
          pids: await call(c.pids(u)),
          pause: await call(c.pause(u)),
          resume: await call(c.resume(u)),
          kill: await call(c.kill(u, 9)),
          exec: await call(c.exec({ id: u, execId: 'x', spec: execSpec(['true']) })),
          resizePty: await call(c.resizePty(u, 80, 24)),
          closeIO: await call(c.closeIO(u)),
          update: await call(c.update(u, { memory: { limit: 1 << 26 } })),
          wait: await call(c.wait(u)),
          stats: await call(c.stats(u)),
          connect: await call(c.connect(u)),
        };
        res.checkpoint = await call(checkpoint(t, u));
        for (const [k, v] of Object.entries(res)) {
          if (k === 'connect') continue;
          assert.deepEqual(v, { code: 'NotFound', message: 'container not created: not found' }, k);
        }
        return normalize(res, t.subst());
      } finally {
        await t.close();
      }
    },
  },
  {
    name: 'Task API: every exec-taking RPC with an unknown exec id fails with "process does not exist <id>" (NotFound; CloseIO: Unknown)',
    async run(shim) {
      const t = await task(shim, 'c-execid');
      try {
        const c = t.client;
        const res: Record<string, Outcome> = {
          state: await call(c.state(t.id, 'nope')),
          start: await call(c.start(t.id, 'nope')),
          delete: await call(c.delete(t.id, 'nope')),
          kill: await call(c.kill(t.id, 9, { execId: 'nope' })),
          resizePty: await call(c.resizePty(t.id, 80, 24, 'nope')),
          closeIO: await call(c.closeIO(t.id, 'nope')),
          wait: await call(c.wait(t.id, 'nope')),
        };
        for (const [k, v] of Object.entries(res)) {
          // The reference returns CloseIO's lookup error unconverted: code Unknown, same text.
          const code = k === 'closeIO' ? 'Unknown' : 'NotFound';
          assert.deepEqual(v, { code, message: 'process does not exist nope: not found' }, k);
        }
        return normalize(res, t.subst());
      } finally {
        await t.close();
      }
    },
  },
  {
    name: 'Task API on a created task: pause, resume and checkpoint are refused, an exec can be added but not killed before it starts, and delete succeeds',
    async run(shim) {
      const t = await task(shim, 'c-created', { start: false });
      try {
        const c = t.client;
        const res: Record<string, unknown> = {
          state: await statusOf(t),
          pause: await call(c.pause(t.id)),
          resume: await call(c.resume(t.id)),
          checkpoint: await call(checkpoint(t, t.id)),
          pids: await call(c.pids(t.id)),
          stats: await call(c.stats(t.id)),
          execAdd: await call(c.exec({ id: t.id, execId: 'ce', spec: execSpec(['true']) })),
          execState: await call(c.state(t.id, 'ce')),
          execKill: await call(c.kill(t.id, 9, { execId: 'ce' })),
          execResize: await call(c.resizePty(t.id, 80, 24, 'ce')),
          execDelete: await call(c.delete(t.id, 'ce')),
          execGone: await call(c.state(t.id, 'ce')),
          delete: await call(c.delete(t.id)),
          after: await call(c.state(t.id)),
        };
        assert.deepEqual(res.pause, { code: 'Unknown', message: 'cannot pause task in created state' });
        const events = await t.waitEvents((evs) => evs.some((e) => e.topic === '/tasks/delete'));
        // runc delete kills the created init: its /tasks/exit comes before /tasks/delete.
        return normalize({ res, events: events.map((e) => ({ topic: e.topic, ...e.event, rootfs: undefined })) }, t.subst());
      } finally {
        await t.close();
      }
    },
  },
  {
    name: 'Task API on a running task: start twice, delete and resume are refused, a duplicate exec id is AlreadyExists, and an exec\'s own state machine (running, stopped, deleted) gives the reference\'s errors',
    async run(shim) {
      const t = await task(shim, 'c-running');
      try {
        const c = t.client;
        const res: Record<string, unknown> = {
          state: await statusOf(t),
          start: await call(c.start(t.id)),
          delete: await call(c.delete(t.id)),
          resume: await call(c.resume(t.id)),
          execAdd: await call(c.exec({ id: t.id, execId: 'dup', spec: execSpec(['sleep', '1000']) })),
          execDuplicate: await call(c.exec({ id: t.id, execId: 'dup', spec: execSpec(['true']) })),
          execStart: await call(c.start(t.id, 'dup')),
          execStartAgain: await call(c.start(t.id, 'dup')),
          execDeleteRunning: await call(c.delete(t.id, 'dup')),
          execCloseIO: await call(c.closeIO(t.id, 'dup')),
          execResize: await call(c.resizePty(t.id, 80, 24, 'dup')),
          execKill: await call(c.kill(t.id, 9, { execId: 'dup' })),
          execWait: await call(c.wait(t.id, 'dup')),
          execKillStopped: await call(c.kill(t.id, 9, { execId: 'dup' })),
          execStartStopped: await call(c.start(t.id, 'dup')),
          execResizeStopped: await call(c.resizePty(t.id, 80, 24, 'dup')),
          execState: await call(c.state(t.id, 'dup')),
          execDelete: await call(c.delete(t.id, 'dup')),
          execDeleteAgain: await call(c.delete(t.id, 'dup')),
          execReuseId: await call(c.exec({ id: t.id, execId: 'dup', spec: execSpec(['true']) })),
          execDeleteCreated: await call(c.delete(t.id, 'dup')),
          pids: await call(c.pids(t.id)),
        };
        assert.deepEqual(res.execDuplicate, { code: 'AlreadyExists', message: 'id dup: already exists' });
        await c.kill(t.id, 9);
        res.wait = await call(c.wait(t.id));
        res.deleteStopped = await call(c.delete(t.id));
        const events = await t.waitEvents((evs) => evs.some((e) => e.topic === '/tasks/delete'));
        return normalize({ res, events: events.map((e) => [e.topic, e.event.execId ?? '']) }, t.subst());
      } finally {
        await t.close();
      }
    },
  },
  {
    name: 'Task API on a paused task: start, delete, pause and exec are refused and State reports PAUSED for the init and its execs',
    async run(shim) {
      const t = await task(shim, 'c-paused');
      try {
        const c = t.client;
        await c.exec({ id: t.id, execId: 'pe', spec: execSpec(['sleep', '1000']) });
        await c.start(t.id, 'pe');
        const res: Record<string, unknown> = {
          pause: await call(c.pause(t.id)),
          state: await statusOf(t),
          execState: await statusOf(t, 'pe'),
          start: await call(c.start(t.id)),
          delete: await call(c.delete(t.id)),
          pauseAgain: await call(c.pause(t.id)),
          exec: await call(c.exec({ id: t.id, execId: 'new', spec: execSpec(['true']) })),
          update: await call(c.update(t.id, { memory: { limit: 1 << 27 } })),
          resume: await call(c.resume(t.id)),
          resumed: await statusOf(t),
          execResumed: await statusOf(t, 'pe'),
          resumeAgain: await call(c.resume(t.id)),
        };
        assert.equal(res.state, 'PAUSED');
        await c.kill(t.id, 9, { all: true });
        res.wait = await call(c.wait(t.id));
        const events = await t.waitEvents((evs) => evs.filter((e) => e.topic === '/tasks/exit').length === 2);
        const topics = events.map((e) => e.topic);
        // The order of the init's and the exec's exits is not guaranteed.
        return normalize({ res, topics: [...topics.slice(0, -2), ...topics.slice(-2).sort()] }, t.subst());
      } finally {
        await t.close();
      }
    },
  },
  {
    name: 'Task API on a stopped task: start, pause, resume, update, checkpoint, exec and kill are refused; delete succeeds once, then the container is gone',
    async run(shim) {
      const t = await task(shim, 'c-stopped', { args: ['sh', '-c', 'exit 3'] });
      try {
        const c = t.client;
        const res: Record<string, unknown> = {
          wait: await call(c.wait(t.id)),
          state: await call(c.state(t.id)),
          start: await call(c.start(t.id)),
          pause: await call(c.pause(t.id)),
          resume: await call(c.resume(t.id)),
          update: await call(c.update(t.id, { memory: { limit: 1 << 26 } })),
          checkpoint: await call(checkpoint(t, t.id)),
          exec: await call(c.exec({ id: t.id, execId: 'x', spec: execSpec(['true']) })),
          kill: await call(c.kill(t.id, 9)),
          killAll: await call(c.kill(t.id, 9, { all: true })),
          pids: await call(c.pids(t.id)),
          stats: await call(c.stats(t.id)),
          closeIO: await call(c.closeIO(t.id)),
          resizePty: await call(c.resizePty(t.id, 80, 24)),
          connect: await call(c.connect(t.id)),
          delete: await call(c.delete(t.id)),
          deleteAgain: await call(c.delete(t.id)),
          stateAfter: await call(c.state(t.id)),
          waitAfter: await call(c.wait(t.id)),
          connectAfter: await call(c.connect(t.id)),
        };
        assert.deepEqual(res.exec, { code: 'Unknown', message: 'cannot exec in a stopped state' });
        const events = await t.waitEvents((evs) => evs.some((e) => e.topic === '/tasks/delete'));
        return normalize({ res, events: events.map((e) => e.topic) }, t.subst());
      } finally {
        await t.close();
      }
    },
  },
  {
    name: 'Task API: Create of a nonexistent binary and Start of an exec of a nonexistent binary return runc\'s error; Wait of the failed exec returns status 0 at zero time, with no exit event',
    async run(shim) {
      const id = 'c-runcerr';
      const t = await direct.start(shim, id, ['nope']);
      try {
        const c = t.client;
        const res: Record<string, unknown> = {
          create: await call(c.create({ id, bundle: t.bundle, rootfs: t.rootfs })),
          stateAfterFailedCreate: await call(c.state(id)),
        };
        // A good config, and the same shim creates the container after all.
        const specPath = path.join(t.bundle, 'config.json');
        const spec = JSON.parse(fs.readFileSync(specPath, 'utf8')) as { process: { args: string[] } };
        spec.process.args = ['sleep', '1000'];
        fs.writeFileSync(specPath, JSON.stringify(spec));
        res.createAgain = await call(c.create({ id, bundle: t.bundle, rootfs: t.rootfs }));
        res.start = await call(c.start(id));
        res.execAdd = await call(c.exec({ id, execId: 'bad', spec: execSpec(['nope']) }));
        res.execStart = await call(c.start(id, 'bad'));
        res.execWait = await call(c.wait(id, 'bad'));
        res.execState = await call(c.state(id, 'bad'));
        res.execDelete = await call(c.delete(id, 'bad'));
        res.running = await statusOf(t);
        assert.equal(res.running, 'RUNNING');
        await c.kill(id, 9);
        await c.wait(id);
        await c.delete(id);
        const events = await t.waitEvents((evs) => evs.some((e) => e.topic === '/tasks/delete'));
        return normalize({ res, events: events.map((e) => [e.topic, e.event.execId ?? e.event.id ?? '']) }, t.subst());
      } finally {
        await t.close();
      }
    },
  },
  {
    name: 'Task API: runc failing start, exec, pause, resume, update, ps, kill and delete: each error reaches the client worded as the reference words it, and the task recovers',
    async run(shim) {
      const id = 'c-runcfail';
      const { t, fake } = await direct.startWithFakeRunc(shim, id, ['sleep', '1000']);
      const fail = (sub: string) => fs.writeFileSync(path.join(fake, `fail-${sub}`), '');
      const heal = (sub: string) => fs.rmSync(path.join(fake, `fail-${sub}`));
      try {
        const c = t.client;
        const res: Record<string, unknown> = {};
        await c.create({ id, bundle: t.bundle, rootfs: t.rootfs, options: runcOptions(fake) });
        fail('start');
        res.start = await call(c.start(id));
        res.stateAfterFailedStart = await statusOf(t);
        heal('start');
        res.startAgain = await call(c.start(id));
        fail('exec');
        await c.exec({ id, execId: 'x', spec: execSpec(['true']) });
        res.execStart = await call(c.start(id, 'x'));
        res.execWait = await call(c.wait(id, 'x'));
        heal('exec');
        fail('pause');
        res.pause = await call(c.pause(id));
        res.stateAfterFailedPause = await statusOf(t);
        heal('pause');
        await c.pause(id);
        fail('resume');
        res.resume = await call(c.resume(id));
        res.stateAfterFailedResume = await statusOf(t);
        heal('resume');
        await c.resume(id);
        fail('update');
        res.update = await call(c.update(id, { memory: { limit: 1 << 27 } }));
        heal('update');
        fail('ps');
        res.pids = await call(c.pids(id));
        heal('ps');
        fail('kill');
        res.kill = await call(c.kill(id, 9));
        res.killAll = await call(c.kill(id, 9, { all: true }));
        heal('kill');
        await c.kill(id, 9);
        res.wait = await call(c.wait(id));
        fail('delete');
        res.delete = await call(c.delete(id));
        res.stateAfterFailedDelete = await statusOf(t);
        heal('delete');
        res.deleteAgain = await call(c.delete(id));
        assert.equal(res.stateAfterFailedStart, 'CREATED');
        assert.deepEqual(res.pause, { code: 'Unknown', message: 'OCI runtime pause failed: fake runc: pause failed' });
        const events = await t.waitEvents((evs) => evs.some((e) => e.topic === '/tasks/delete'));
        return normalize({ res, events: events.map((e) => [e.topic, e.event.execId ?? e.event.id ?? '']) }, fakeSubst(t, fake));
      } finally {
        await t.close();
      }
    },
  },
];

function checkpoint(t: DirectTask, id: string) {
  return t.checkpoint(id, path.join(direct.tmp, `${t.ns}-${id}-ckpt`), checkpointOpts());
}

parityTests('errors', scenarios, combined(env, direct));
