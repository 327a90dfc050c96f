// SPDX-License-Identifier: Apache-2.0
// Walking-skeleton end-to-end suite: a private containerd 1.6 runs busybox containers through
// `ctr` with each shim under test (`ctr run --runtime <absolute shim path>`), then the observable
// results of the two shims are compared.
//
// SHIM_UNDER_TEST=reference|ours runs one shim only (the comparison is then skipped).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import {
  leftovers, NOTHING_LEFT, shimSocketPath, startContainerd, taskAddress, waitFor, waitForNoLeftovers, type Containerd, type Leftovers,
} from '../support/containerd.js';
import { ensureBusyboxImage } from '../support/image.js';
import { shimsUnderTest, type ShimName } from '../support/shims.js';
import { parseEvents } from '../support/parity.js';

const TEST_TIMEOUT = 60_000;
/** Each ctr call gets less than a test's timeout, so a hang fails with ctr's output, not a bare timeout. */
const CTR_TIMEOUT = 40_000;
const NS = 'default';

const shims = shimsUnderTest();
let c: Containerd;
let image: string;

/** Observable results per shim and scenario, for the comparison at the end. */
const observed = new Map<ShimName, Map<string, unknown>>();
function record(shim: ShimName, scenario: string, value: unknown): void {
  if (!observed.has(shim)) observed.set(shim, new Map());
  observed.get(shim)!.set(scenario, value);
}

// Ids must be unique across containerd instances: runc's state lives in the shared
// /run/containerd/runc/<ns>/<id>.
let seq = 0;
const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
function newId(shim: ShimName, what: string): string {
  return `lc-${shim}-${what}-${unique}-${++seq}`;
}

function describeLeftovers(l: Leftovers): string {
  return JSON.stringify(l, null, 2);
}

function assertClean(l: Leftovers, what: string): void {
  assert.deepEqual(l, { ...NOTHING_LEFT },
    `${what} left things behind:\n${describeLeftovers(l)}`);
}

async function taskStatus(id: string): Promise<string | undefined> {
  const r = await c.ctr(['-n', NS, 'task', 'ls'], { timeoutMs: CTR_TIMEOUT });
  // TASK    PID     STATUS
  // x-2     4846    RUNNING
  for (const line of r.stdout.split('\n').slice(1)) {
    const [task, pid, status] = line.trim().split(/\s+/);
    if (task === id && pid !== undefined) return status;
  }
  return undefined;
}

/** Starts `ctr events` and returns once it is provably subscribed (it has seen a marker event). */
async function startEventWatcher(): Promise<{ proc: ChildProcess; output: () => string; stop: () => Promise<void> }> {
  const proc = c.ctrSpawn(['events']);
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
      try { process.kill(proc.pid, 'SIGTERM'); } catch { /* gone */ }
    }
    await exited;
  };
  // Creating a namespace publishes /namespaces/create; once the watcher prints it, it is subscribed.
  const marker = `evsync-${unique}-${++seq}`;
  const ok = await waitFor(async () => {
    if (proc.exitCode !== null) return true;
    await c.ctr(['namespaces', 'create', marker], { allowFail: true, timeoutMs: CTR_TIMEOUT });
    await c.ctr(['namespaces', 'remove', marker], { allowFail: true, timeoutMs: CTR_TIMEOUT });
    return await waitFor(() => out.includes(marker), 1000);
  }, 15_000, 0);
  if (!ok || proc.exitCode !== null) {
    await stop();
    throw new Error(`ctr events did not start: ${err}`);
  }
  return { proc, output: () => out, stop };
}

/**
 * Runs a test body; on failure appends what containerd logged during the test (which includes
 * the shims' own log output) to the error, so a failing shim can be diagnosed from CI output.
 */
function withLog(fn: () => Promise<void> | void): () => Promise<void> {
  return async () => {
    const from = c ? logSize() : 0;
    try {
      await fn();
    } catch (e) {
      let log = '';
      try {
        log = readFileSync(c.logPath).subarray(from).toString('utf8');
      } catch { /* no log */ }
      if (log.length > 6000) log = '[...]\n' + log.slice(log.length - 6000);
      if (e instanceof Error && log) e.message += `\n--- containerd.log during this test ---\n${log}`;
      throw e;
    }
  };
}

function logSize(): number {
  try {
    return statSync(c.logPath).size;
  } catch {
    return 0;
  }
}

before(async () => {
  c = await startContainerd();
  image = await ensureBusyboxImage(c, [NS]);
}, { timeout: 120_000 });

after(async () => {
  await c?.stop();
}, { timeout: 60_000 });

for (const shim of shims) {
  const label = shim.name === 'ours' ? 'TypeScript' : 'reference (Go)';
  describe(`lifecycle through ctr with the ${label} shim (${shim.path})`, () => {
    const ctrRun = (args: string[]) =>
      c.ctr(['-n', NS, 'run', '--runtime', shim.path, ...args], { timeoutMs: CTR_TIMEOUT, allowFail: true });

    it('ctr run --rm of `echo hello` prints hello and exits 0', { timeout: TEST_TIMEOUT }, withLog(async () => {
      const id = newId(shim.name, 'echo');
      const r = await ctrRun(['--rm', image, id, 'echo', 'hello']);
      assert.equal(r.timedOut, false, `ctr run timed out; stderr: ${r.stderr}`);
      assert.equal(r.stdout, 'hello\n', `stdout; stderr was: ${r.stderr}`);
      assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
      record(shim.name, 'echo', { code: r.code, stdout: r.stdout, stderr: r.stderr });
    }));

    it("the task's exit status (sh -c 'exit 7') becomes ctr run's exit code", { timeout: TEST_TIMEOUT }, withLog(async () => {
      const id = newId(shim.name, 'exit7');
      const r = await ctrRun(['--rm', image, id, 'sh', '-c', 'exit 7']);
      assert.equal(r.timedOut, false, `ctr run timed out; stderr: ${r.stderr}`);
      assert.equal(r.code, 7, `exit code; stdout: ${r.stdout} stderr: ${r.stderr}`);
      record(shim.name, 'exit7', { code: r.code, stdout: r.stdout, stderr: r.stderr });
    }));

    it('a detached task is RUNNING, SIGKILL stops it with status 137, and delete + rm clean up', { timeout: TEST_TIMEOUT }, withLog(async () => {
      const id = newId(shim.name, 'kill');
      const r = await ctrRun(['-d', image, id, 'sleep', '1000']);
      assert.equal(r.code, 0, `ctr run -d failed: ${r.stdout}${r.stderr}`);
      assert.equal(await taskStatus(id), 'RUNNING');

      // While it runs: one shim for it, its socket at the computed address, the rootfs mounted.
      const live = leftovers(c, [id]);
      assert.equal(live.shims.length, 1, `expected one shim process for ${id}:\n${describeLeftovers(live)}`);
      const socket = shimSocketPath(c.address, NS, id);
      assert.deepEqual(live.sockets, [socket], 'shim socket at /run/containerd/s/<sha256(address/ns/id)>');
      const bundle = join(c.state, 'io.containerd.runtime.v2.task', NS, id);
      assert.equal(taskAddress(bundle), `unix://${socket}`, 'bundle address (address file, or bootstrap.json on 2.x)');
      assert.ok(live.mounts.includes(join(bundle, 'rootfs')), `rootfs mounted:\n${describeLeftovers(live)}`);
      assert.equal(live.runcStateDirs.length, 1, 'runc state dir exists while running');
      assert.ok(live.cgroups.length > 0, `container cgroup exists while running:\n${describeLeftovers(live)}`);

      await c.ctr(['-n', NS, 'task', 'kill', '-s', 'SIGKILL', id], { timeoutMs: CTR_TIMEOUT });
      const status = await waitFor(async () => {
        const s = await taskStatus(id);
        return s === 'STOPPED' ? s : undefined;
      }, 10_000, 100);
      assert.equal(status, 'STOPPED', 'ctr task ls after SIGKILL');

      // ctr 1.6 `task delete` exits 0 and reports a non-zero status only as a logrus warning on stderr.
      const del = await c.ctr(['-n', NS, 'task', 'delete', id], { timeoutMs: CTR_TIMEOUT, allowFail: true });
      assert.equal(del.code, 0, `ctr task delete: ${del.stderr}`);
      const m = /exit with non-zero exit code (\d+)/.exec(del.stderr);
      assert.ok(m, `ctr task delete should report the exit code; stderr: ${del.stderr}`);
      assert.equal(Number(m[1]), 137);

      await c.ctr(['-n', NS, 'container', 'rm', id], { timeoutMs: CTR_TIMEOUT });
      assertClean(await waitForNoLeftovers(c, [id]), `task ${id} after delete + rm`);
      record(shim.name, 'kill', { status, exitCode: Number(m[1]), deleteStdout: del.stdout });
    }));

    it('ctr events shows /tasks/create, /tasks/start, /tasks/exit, /tasks/delete in order with matching pid and status', { timeout: TEST_TIMEOUT }, withLog(async () => {
      const id = newId(shim.name, 'events');
      const watcher = await startEventWatcher();
      try {
        const r = await ctrRun(['--rm', image, id, 'sh', '-c', 'exit 3']);
        assert.equal(r.code, 3, `ctr run: ${r.stdout}${r.stderr}`);
        // /tasks/delete is published before ctr run --rm returns, but give the watcher a moment.
        await waitFor(() => parseEvents(watcher.output()).some(
          (e) => e.topic === '/containers/delete' && e.event.id === id), 5000);
      } finally {
        await watcher.stop();
      }
      const events = parseEvents(watcher.output()).filter((e) => e.topic.startsWith('/tasks/') && e.event.container_id === id);
      const topics = events.map((e) => e.topic);
      assert.deepEqual(topics, ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete'],
        `task events for ${id}:\n${watcher.output()}`);
      const [create, start, exit, del] = events.map((e) => e.event);
      assert.equal(typeof create.pid, 'number');
      assert.ok((create.pid as number) > 0, 'create.pid > 0');
      assert.equal(start.pid, create.pid, 'start.pid = create.pid');
      assert.equal(exit.pid, create.pid, 'exit.pid = create.pid');
      assert.equal(exit.id, id, 'exit.id is the init process id (= container id)');
      assert.equal(exit.exit_status, 3, 'exit.exit_status');
      assert.equal(del.pid, exit.pid, 'delete.pid = exit.pid');
      assert.equal(del.exit_status, exit.exit_status, 'delete.exit_status = exit.exit_status');
      assert.equal(del.exited_at, exit.exited_at, 'delete.exited_at = exit.exited_at');
      assert.equal(create.bundle, join(c.state, 'io.containerd.runtime.v2.task', NS, id), 'create.bundle');
      record(shim.name, 'events', {
        topics,
        // Field names present in each event (values like pids and times differ between runs).
        keys: events.map((e) => Object.keys(e.event).sort()),
        exitStatus: exit.exit_status,
      });
    }));

    it('ctr run --rm leaves no shim process, mount, socket, task dir or runc state behind', { timeout: TEST_TIMEOUT }, withLog(async () => {
      const id = newId(shim.name, 'clean');
      const r = await ctrRun(['--rm', image, id, 'true']);
      assert.equal(r.code, 0, `ctr run: ${r.stdout}${r.stderr}`);
      const socket = shimSocketPath(c.address, NS, id);
      const left = await waitForNoLeftovers(c, [id], 5000);
      assertClean(left, `ctr run --rm ${id}`);
      assert.equal(existsSync(socket), false, `socket ${socket} removed`);
      const remaining = await c.ctr(['-n', NS, 'container', 'ls', '-q'], { timeoutMs: CTR_TIMEOUT });
      assert.ok(!remaining.stdout.split('\n').includes(id), 'container record removed');
      record(shim.name, 'clean', left);
    }));
  });
}

describe('the TypeScript shim behaves like the reference shim', () => {
  const both = shims.length === 2;
  const scenarios = ['echo', 'exit7', 'kill', 'events', 'clean'];
  for (const scenario of scenarios) {
    it(`${scenario}: same observable result with both shims`, {
      timeout: TEST_TIMEOUT,
      skip: both ? false : 'only one shim under test (SHIM_UNDER_TEST)',
    }, () => {
      const ref = observed.get('reference')?.get(scenario);
      const ours = observed.get('ours')?.get(scenario);
      assert.ok(ref !== undefined, `no result recorded for the reference shim in "${scenario}"`);
      assert.ok(ours !== undefined, `no result recorded for our shim in "${scenario}" (its test failed)`);
      assert.deepEqual(ours, ref);
    });
  }
});
