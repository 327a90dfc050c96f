// SPDX-License-Identifier: Apache-2.0
// Shared helpers of the end-to-end parity suite (test/e2e/parity-*.test.ts).
//
// Every scenario runs once with the reference Go shim and once with ours, in the same test run:
//   * through a private real containerd and `ctr` (CtdEnv: what a user of ctr sees), or
//   * against each shim started directly, the test playing containerd over ttrpc (DirectEnv: the
//     exact Task API replies, gRPC codes and events, for things ctr cannot reach).
// A scenario asserts what must hold for any correct shim, then returns an observation normalised
// so that run-specific values (container ids, pids, times, temp paths) do not differ; the
// comparison describe at the end of each file checks that our shim's observation equals the
// reference's (parityTests()).
//
// SHIM_UNDER_TEST=reference|ours runs one shim only; the comparisons are then skipped.
// PARITY_DUMP=<file> appends both shims' observations of every compared scenario to <file> (JSON),
// to read a difference in full (node's assertion diff elides long stretches).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import {
  CTR, fullPath, listProcesses, parseCtrContainerArgs, procEnviron, sleep, startContainerd, waitFor, type Containerd, type RunResult, type StartOptions,
} from './containerd.js';
import { ensureBusyboxImage } from './image.js';
import { shimsUnderTest, REPO_ROOT, type ShimName, type ShimUnderTest } from './shims.js';
import { BootstrapResult } from '../../src/gen/containerd/runtime/bootstrap/v1/bootstrap.js';
import { TaskClient, FakeEvents } from './taskclient.js';
import { makeBusyboxRootfs, makeBundle } from './rootfs.js';
import { mkfifo, FifoReader } from './fifo.js';
import { runShim, waitGone, mountedUnder } from './shimproc.js';
import * as E from '../../src/gen/containerd/events/task.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import type { Envelope } from '../../src/gen/containerd/services/ttrpc/events/v1/events.js';
import * as T from '../../src/gen/containerd/task/v2/shim.js';
import { Code, invoke } from '../../src/ttrpc/index.js';
import { Empty } from '../../src/events/empty.js';

export const TEST_TIMEOUT = 60_000;
/** Each ctr call gets less than a test's timeout, so a hang fails with ctr's output. */
export const CTR_TIMEOUT = 30_000;
export const NS = 'default';

export const shims = shimsUnderTest();
export const BOTH = shims.length === 2;
export const label = (s: ShimUnderTest) => (s.name === 'ours' ? 'TypeScript' : 'reference (Go)');
export const REFERENCE = shims.find((s) => s.name === 'reference');
export const OURS = shims.find((s) => s.name === 'ours');

export const FAKE_RUNC = path.join(REPO_ROOT, 'test', 'support', 'fake-runc.sh');
export const PTY_DRIVE = path.join(REPO_ROOT, 'test', 'support', 'pty-drive.py');
export const REAL_RUNC = ['/usr/sbin/runc', '/usr/bin/runc', '/sbin/runc'].find((p) => fs.existsSync(p)) ?? 'runc';

// ---------------------------------------------------------------------------------------------
// Ids: unique across containerd instances (runc state /run/containerd/runc/<ns>/<id> is shared).

let seq = 0;
const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
export function uniqueId(topic: string, shim: ShimName, what: string): string {
  return `p${topic}-${shim === 'ours' ? 'ts' : 'go'}-${what}-${unique}-${++seq}`;
}

// ---------------------------------------------------------------------------------------------
// Normalisation

export type Subst = Array<[string | RegExp, string]>;

/** Replaces run-specific strings everywhere in a JSON-like value; pids and times by key. */
export function normalize<T>(value: T, subst: Subst = []): T {
  const fixString = (s: string) => {
    let out = s;
    for (const [from, to] of subst) {
      if (typeof from === 'string') {
        if (from !== '') out = out.split(from).join(to);
      } else {
        out = out.replace(new RegExp(from.source, from.flags.includes('g') ? from.flags : from.flags + 'g'), to);
      }
    }
    return out;
  };
  const walk = (v: unknown, key?: string): unknown => {
    if (typeof v === 'string') {
      if (key && /^(exited_?at|exitedAt|timestamp)$/i.test(key)) return isZeroTime(v) ? '<zero time>' : '<time>';
      return fixString(v);
    }
    if (typeof v === 'number' || typeof v === 'bigint') {
      if (key && /^(pid|shimPid|shim_pid|taskPid|task_pid)$/.test(key) && Number(v) > 0) return '<pid>';
      return typeof v === 'bigint' ? v.toString() : v;
    }
    if (Array.isArray(v)) return v.map((x) => walk(x));
    if (v && typeof v === 'object') {
      if (key && /^(exited_?at|exitedAt)$/i.test(key) && 'seconds' in v) {
        return isZeroTime(v) ? '<zero time>' : '<time>';
      }
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) o[k] = walk(x, k);
      return o;
    }
    return v;
  };
  return walk(value) as T;
}

const GO_ZERO_SECONDS = -62135596800n;
function isZeroTime(v: unknown): boolean {
  if (typeof v === 'string') return v.startsWith('0001-01-01');
  if (v && typeof v === 'object' && 'seconds' in v) {
    const s = (v as { seconds: bigint | number }).seconds;
    return BigInt(s) === GO_ZERO_SECONDS || BigInt(s) === 0n;
  }
  return false;
}

/** Substitutions for ctr output of one container: its id, containerd's dirs, fifo and snapshot names. */
export function ctrSubst(c: Containerd, ...ids: string[]): Subst {
  const s: Subst = [];
  // Longest first: one id may be a prefix of another.
  for (const id of [...ids].sort((a, b) => b.length - a.length)) s.push([id, '<id>']);
  s.push([c.dir, '<ctd>'], [/\/run\/containerd\/fifo\/\d+\//, '<fifo>/'], [/\/snapshots\/\d+\//, '/snapshots/<n>/']);
  return s;
}

// ---------------------------------------------------------------------------------------------
// The parity runner

export interface Diagnostics {
  /** A position in whatever log this environment has. */
  mark(): unknown;
  /** What was logged since `mark`. */
  since(mark: unknown): string;
}

export interface Scenario {
  /** The test name: the behaviour it checks. */
  name: string;
  timeout?: number;
  /** A reason to skip the scenario (with both shims and in the comparison). */
  skip?: string | false;
  /** Runs the scenario with one shim, asserting shim-independent facts; returns the observation to compare. */
  run(shim: ShimUnderTest): Promise<unknown>;
  /**
   * Keys of the observation where our shim differs from the reference on purpose, with the
   * reason. They are left out of the main comparison and compared in a separate test marked TODO
   * (reported, not failing), so the difference stays visible.
   */
  knownDifferences?: Record<string, string>;
}

/**
 * One describe per shim running every scenario, then one describe comparing our shim's
 * observations with the reference's, scenario by scenario.
 */
export function parityTests(topic: string, scenarios: Scenario[], diag?: () => Diagnostics | undefined): void {
  const observed = new Map<string, Map<ShimName, unknown>>();
  for (const shim of shims) {
    describe(`${topic} with the ${label(shim)} shim (${shim.path})`, () => {
      for (const s of scenarios) {
        it(s.name, { timeout: s.timeout ?? TEST_TIMEOUT, skip: s.skip }, withDiagnostics(diag, async () => {
          const v = await s.run(shim);
          if (!observed.has(s.name)) observed.set(s.name, new Map());
          observed.get(s.name)!.set(shim.name, v);
        }));
      }
    });
  }
  describe(`${topic}: the TypeScript shim behaves like the reference shim`, () => {
    for (const s of scenarios) {
      it(`${s.name} — same as the reference`, {
        timeout: TEST_TIMEOUT,
        skip: s.skip || (BOTH ? false : 'only one shim under test (SHIM_UNDER_TEST)'),
      }, () => {
        const ref = observed.get(s.name)?.get('reference');
        const ours = observed.get(s.name)?.get('ours');
        if (process.env.PARITY_DUMP) {
          fs.appendFileSync(process.env.PARITY_DUMP, JSON.stringify({ topic, scenario: s.name, reference: ref, ours }, null, 1) + '\n');
        }
        assert.ok(ref !== undefined, `no observation from the reference shim (its test failed)`);
        assert.ok(ours !== undefined, `no observation from our shim (its test failed)`);
        const known = Object.keys(s.knownDifferences ?? {});
        const without = (v: unknown) => (v && typeof v === 'object'
          ? Object.fromEntries(Object.entries(v).filter(([k]) => !known.includes(k))) : v);
        assert.deepEqual(without(ours), without(ref));
      });
      for (const [key, why] of Object.entries(s.knownDifferences ?? {})) {
        it(`${s.name} — ${key}: same as the reference`, { timeout: TEST_TIMEOUT, todo: `known difference: ${why}`, skip: s.skip || !BOTH }, () => {
          const ref = observed.get(s.name)?.get('reference') as Record<string, unknown> | undefined;
          const ours = observed.get(s.name)?.get('ours') as Record<string, unknown> | undefined;
          assert.deepEqual(ours?.[key], ref?.[key]);
        });
      }
    }
  });
}

/** Diagnostics of several environments together (those not set up yet are left out). */
export function combined(...envs: Array<Diagnostics & { ready(): boolean }>): () => Diagnostics {
  return () => ({
    mark: () => envs.map((e) => (e.ready() ? e.mark() : undefined)),
    since: (m) => envs.map((e, i) => (e.ready() && (m as unknown[])[i] !== undefined ? e.since((m as unknown[])[i]) : ''))
      .filter(Boolean).join('\n'),
  });
}

/** On failure, appends what the environment logged during the test (containerd's or the shims' log). */
export function withDiagnostics(diag: (() => Diagnostics | undefined) | undefined, fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    const d = diag?.();
    const mark = d?.mark();
    try {
      await fn();
    } catch (e) {
      let log = '';
      try { log = d ? d.since(mark) : ''; } catch { /* no log */ }
      if (log.length > 6000) log = '[...]\n' + log.slice(log.length - 6000);
      if (e instanceof Error && log) e.message += `\n--- log during this test ---\n${log}`;
      throw e;
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Through containerd and ctr

export interface CtrEvent {
  /** The envelope's timestamp as ctr prints it (Go's time format: `2026-11-29 18:19:23.94 +0000 UTC`). */
  timestamp: string;
  topic: string;
  namespace: string;
  event: Record<string, unknown>;
}

/** Parses `ctr events` lines: `2026-11-29 18:19:23.94 +0000 UTC default /tasks/start {"container_id":..}`. */
export function parseEvents(text: string): CtrEvent[] {
  const res: CtrEvent[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\S+ \S+ [+-]\d{4} \S+) (\S+) (\/\S+) ?(.*)$/.exec(line.trim());
    if (!m) continue;
    let event: Record<string, unknown>;
    try {
      event = m[4] ? JSON.parse(m[4]) as Record<string, unknown> : {};
    } catch {
      event = { unparsed: m[4] };
    }
    res.push({ timestamp: m[1], namespace: m[2], topic: m[3], event });
  }
  return res;
}

export interface PtyResult {
  /** Everything the terminal showed. */
  output: string;
  /** ctr's exit code (or -signal). */
  status: number;
  /** Why a scripted step failed, or null. */
  error: string | null;
}

export type PtyStep =
  | { expect: string; timeout?: number }
  | { send: string }
  | { resize: [number, number] }
  | { sleep: number };

const PYTHON = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => fs.existsSync(p)) ?? 'python3';

/** A private containerd with the busybox image and a `ctr events` watcher, for one test file. */
export class CtdEnv implements Diagnostics {
  c!: Containerd;
  image!: string;
  private eventsText = '';
  private eventsProc?: ReturnType<Containerd['ctrSpawn']>;
  private eventsExited?: Promise<void>;

  /** Registers before/after hooks that start and stop the environment. */
  static use(opts: StartOptions = {}): CtdEnv {
    const env = new CtdEnv();
    before(async () => {
      env.c = await startContainerd(opts);
      env.image = await ensureBusyboxImage(env.c, [NS]);
      await env.startEvents();
    }, { timeout: 120_000 });
    after(async () => {
      await env.stopEvents();
      await env.c?.stop();
    }, { timeout: 60_000 });
    return env;
  }

  ready(): boolean { return this.c !== undefined; }

  mark(): unknown {
    try { return fs.statSync(this.c.logPath).size; } catch { return 0; }
  }

  since(mark: unknown): string {
    return fs.readFileSync(this.c.logPath).subarray(mark as number).toString('utf8');
  }

  /** `ctr -n default ...args`; never rejects on a non-zero exit. */
  ctr(args: string[], opts: { input?: string | Buffer; timeoutMs?: number } = {}): Promise<RunResult> {
    return this.c.ctr(['-n', NS, ...args], { timeoutMs: opts.timeoutMs ?? CTR_TIMEOUT, allowFail: true, input: opts.input });
  }

  /** `ctr run --runtime <shim> ...args`. */
  run(shim: ShimUnderTest, args: string[]): Promise<RunResult> {
    return this.ctr(['run', '--runtime', shim.path, ...args]);
  }

  /** Observable result of a ctr command: exit code and its output, normalised. */
  result(r: RunResult, subst: Subst): { code: number | null; stdout: string; stderr: string } {
    assert.equal(r.timedOut, false, `ctr timed out; stdout: ${r.stdout} stderr: ${r.stderr}`);
    return normalize({ code: r.code, stdout: r.stdout, stderr: stripLogTimes(r.stderr) }, subst);
  }

  /** STATUS column of `ctr task ls` for the task, or undefined. */
  async taskStatus(id: string): Promise<string | undefined> {
    const r = await this.ctr(['task', 'ls']);
    for (const line of r.stdout.split('\n').slice(1)) {
      const [task, pid, status] = line.trim().split(/\s+/);
      if (task === id && pid !== undefined) return status;
    }
    return undefined;
  }

  /** Polls `ctr task ls` until the task has `status`; returns the last status seen. */
  async waitStatus(id: string, status: string, timeoutMs = 10_000): Promise<string | undefined> {
    let last: string | undefined;
    await waitFor(async () => (last = await this.taskStatus(id)) === status, timeoutMs, 50);
    return last;
  }

  /** Best effort: kill the task, delete it and the container. */
  async remove(id: string): Promise<void> {
    const st = await this.taskStatus(id);
    if (st !== undefined && st !== 'STOPPED') {
      if (st === 'PAUSED') await this.ctr(['task', 'resume', id]);
      await this.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
      await this.waitStatus(id, 'STOPPED', 5000);
    }
    await this.ctr(['task', 'delete', id]);
    await this.ctr(['container', 'rm', id]);
  }

  // ---- ctr events ----

  private async startEvents(): Promise<void> {
    const proc = this.c.ctrSpawn(['events']);
    this.eventsProc = proc;
    let err = '';
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => { this.eventsText += d; });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
    this.eventsExited = new Promise<void>((r) => proc.once('exit', () => r()));
    // Creating a namespace publishes /namespaces/create; once the watcher prints it, it is subscribed.
    const marker = `evsync-${unique}-${++seq}`;
    const ok = await waitFor(async () => {
      if (proc.exitCode !== null) return true;
      await this.c.ctr(['namespaces', 'create', marker], { allowFail: true, timeoutMs: CTR_TIMEOUT });
      await this.c.ctr(['namespaces', 'remove', marker], { allowFail: true, timeoutMs: CTR_TIMEOUT });
      return await waitFor(() => this.eventsText.includes(marker), 1000);
    }, 15_000, 0);
    if (!ok || proc.exitCode !== null) throw new Error(`ctr events did not start: ${err}`);
  }

  private async stopEvents(): Promise<void> {
    const p = this.eventsProc;
    if (p && p.exitCode === null && p.signalCode === null && p.pid !== undefined) {
      try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ }
      await this.eventsExited;
    }
  }

  /** /tasks/* events of one container, in the order ctr events printed them. */
  taskEvents(id: string): CtrEvent[] {
    return parseEvents(this.eventsText).filter((e) => e.topic.startsWith('/tasks/') && e.event.container_id === id);
  }

  /** Waits until the container's task events satisfy `pred`; returns them. */
  async waitEvents(id: string, pred: (evs: CtrEvent[]) => boolean, timeoutMs = 10_000): Promise<CtrEvent[]> {
    const ok = await waitFor(() => pred(this.taskEvents(id)), timeoutMs, 25);
    assert.ok(ok, `events of ${id} did not arrive in time; have:\n${this.taskEvents(id).map((e) => `${e.topic} ${JSON.stringify(e.event)}`).join('\n')}`);
    return this.taskEvents(id);
  }

  /** Waits for the container's /tasks/delete event. */
  waitDeleted(id: string): Promise<CtrEvent[]> {
    return this.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/delete'));
  }

  // ---- ctr on a terminal ----

  /** Runs `ctr ...args` on a fresh pty with the given window size, scripted by `steps` (pty-drive.py). */
  async ptyCtr(args: string[], size: [number, number], steps: PtyStep[], timeoutMs = 40_000): Promise<PtyResult> {
    const parsed = parseCtrContainerArgs(['-n', NS, ...args]);
    if (parsed) this.c.track(parsed.namespace, parsed.id);
    const r = await runProcess(PYTHON, [PTY_DRIVE, JSON.stringify([{ size }, ...steps]), CTR, '--address', this.c.address, '-n', NS, ...args], {
      timeoutMs: timeoutMs + 5000,
      env: { ...process.env, PATH: fullPath(), CONTAINERD_SNAPSHOTTER: this.c.snapshotter, PTY_DRIVE_DEADLINE: String(timeoutMs / 1000) },
    });
    assert.equal(r.code, 0, `pty-drive.py failed: ${r.stderr}`);
    const d = JSON.parse(r.stdout) as { output: string; status: number; error: string | null };
    return { output: Buffer.from(d.output, 'base64').toString('utf8'), status: d.status, error: d.error };
  }

  /**
   * Runs `ctr ...args` with a stdin pipe, writing `input` (then EOF) only once `ready` appears on
   * its stdout. (ctr arms its CloseIO-on-EOF only after the task is created: EOF on an input
   * that was fully written before would never reach the container — a ctr race, not a shim one.)
   */
  async ctrWithInput(args: string[], ready: string, input: string | Buffer): Promise<RunResult> {
    return runProcess(CTR, ['--address', this.c.address, '-n', NS, ...args], {
      timeoutMs: CTR_TIMEOUT,
      env: { ...process.env, PATH: fullPath(), CONTAINERD_SNAPSHOTTER: this.c.snapshotter },
      stdinWhen: { ready, input },
    });
  }
}

/** ctr's logrus lines carry a time: `time="2026-11-29T18:41:31Z" level=...`. */
export function stripLogTimes(s: string): string {
  return s.replace(/time="[^"]*" /g, '');
}

/** Like containerd.ts run(), with optional delayed stdin; never rejects on a non-zero exit. */
export function runProcess(cmd: string, args: string[], o: {
  timeoutMs: number; env?: NodeJS.ProcessEnv; stdinWhen?: { ready: string; input: string | Buffer };
}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [o.stdinWhen ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: o.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let fed = false;
    const feed = () => {
      if (fed || !o.stdinWhen) return;
      if (!Buffer.concat(out).toString('utf8').includes(o.stdinWhen.ready)) return;
      fed = true;
      child.stdin!.end(o.stdinWhen.input);
    };
    child.stdin?.on('error', () => undefined);
    child.stdout!.on('data', (b: Buffer) => { out.push(b); feed(); });
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
    }, o.timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code, signal, timedOut,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// containerd's gRPC Tasks API (ctr 1.6 has no `task update`; CRI's UpdateContainerResources
// takes this path)

export interface GrpcOutcome { ok: boolean; code?: string; message?: string }

/** containerd.services.tasks.v1.Tasks/Update with OCI LinuxResources JSON. */
export async function containerdUpdateTask(c: Containerd, namespace: string, id: string, resources: unknown): Promise<GrpcOutcome> {
  const req = new BinaryWriter()
    .uint32((1 << 3) | 2).string(id)
    .uint32((2 << 3) | 2).fork()
    .uint32((1 << 3) | 2).string('types.containerd.io/opencontainers/runtime-spec/1/LinuxResources')
    .uint32((2 << 3) | 2).bytes(Buffer.from(JSON.stringify(resources)))
    .join()
    .finish();
  const client = new grpc.Client(`unix://${c.address}`, grpc.credentials.createInsecure());
  try {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', namespace);
    return await new Promise<GrpcOutcome>((resolve) => {
      client.makeUnaryRequest(
        '/containerd.services.tasks.v1.Tasks/Update',
        (b: Buffer) => b, (b: Buffer) => b, Buffer.from(req), md, { deadline: Date.now() + CTR_TIMEOUT },
        (e: grpc.ServiceError | null) => {
          if (e) resolve({ ok: false, code: grpc.status[e.code], message: e.details });
          else resolve({ ok: true });
        });
    });
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Driving a shim directly (the test plays containerd)

/** What a Task API call returned: its reply (normalised later) or its gRPC code and message. */
export type Outcome = { ok: unknown } | { code: string; message: string };

export async function outcome(p: Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: await p };
  } catch (e) {
    const err = e as { code?: number; message?: string };
    if (typeof err.code !== 'number') throw e;
    return { code: Code[err.code] ?? String(err.code), message: err.message ?? '' };
  }
}

const EVENT_TYPES: Record<string, { decode(b: Uint8Array): object }> = {
  'containerd.events.TaskCreate': E.TaskCreate,
  'containerd.events.TaskStart': E.TaskStart,
  'containerd.events.TaskDelete': E.TaskDelete,
  'containerd.events.TaskExit': E.TaskExit,
  'containerd.events.TaskOOM': E.TaskOOM,
  'containerd.events.TaskExecAdded': E.TaskExecAdded,
  'containerd.events.TaskExecStarted': E.TaskExecStarted,
  'containerd.events.TaskPaused': E.TaskPaused,
  'containerd.events.TaskResumed': E.TaskResumed,
  'containerd.events.TaskCheckpointed': E.TaskCheckpointed,
};

export interface DecodedEvent { topic: string; type: string; event: Record<string, unknown> }

export function decodeEnvelope(env: Envelope): DecodedEvent {
  const type = env.event?.typeUrl ?? '';
  const codec = EVENT_TYPES[type];
  const event = codec && env.event ? codec.decode(env.event.value) as Record<string, unknown> : { raw: Buffer.from(env.event?.value ?? []).toString('hex') };
  return { topic: env.topic, type, event };
}

/** Temp dir, a busybox rootfs to bind-mount, and containerd's events endpoint, for one test file. */
export class DirectEnv implements Diagnostics {
  tmp!: string;
  rootfsSrc!: string;
  events!: FakeEvents;
  readonly tasks = new Set<DirectTask>();
  readonly logs: { name: string; reader: FifoReader }[] = [];

  constructor(readonly prefix: string) {}

  static use(prefix: string): DirectEnv {
    const env = new DirectEnv(prefix);
    before(async () => {
      env.tmp = fs.mkdtempSync('/tmp/pd-');
      env.rootfsSrc = makeBusyboxRootfs(path.join(env.tmp, 'rootfs-src'));
      env.events = new FakeEvents(path.join(env.tmp, 'ttrpc.sock'));
      await env.events.listen();
    });
    after(async () => {
      for (const t of [...env.tasks]) await t.close();
      // Whatever still runs with our events address (e.g. our shim's pre-booted standby daemons).
      if (env.events) {
        const mark = `TTRPC_ADDRESS=${env.events.path}`;
        const left = listProcesses().filter((p) => p.pid !== process.pid && procEnviron(p.pid).includes(mark));
        for (const p of left) try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ }
        for (const p of left) {
          if (!(await waitGone(p.pid, 2000))) try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
        }
      }
      await env.events?.close();
      for (const l of env.logs) l.reader.close();
      for (const m of mountedUnder(env.tmp).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
      fs.rmSync(env.tmp, { recursive: true, force: true });
      for (const s of shims) fs.rmSync(`/run/containerd/runc/${env.namespace(s.name)}`, { recursive: true, force: true });
    }, { timeout: 60_000 });
    return env;
  }

  /** A namespace per shim, so that each shim's events are told apart. */
  namespace(shim: ShimName): string {
    return `${this.prefix}${shim === 'ours' ? 'ts' : 'go'}${process.pid}`;
  }

  ready(): boolean { return this.tmp !== undefined; }

  mark(): unknown {
    return new Map(this.logs.map((l) => [l.name, l.reader.text.length]));
  }

  since(mark: unknown): string {
    const m = mark as Map<string, number>;
    return this.logs.map((l) => {
      const t = l.reader.text.slice(m.get(l.name) ?? 0);
      return t ? `[${l.name}]\n${t}` : '';
    }).filter(Boolean).join('\n');
  }

  /** A fifo under the temp dir (as containerd creates for a process's stdio). */
  fifo(name: string): string {
    return mkfifo(path.join(this.tmp, name));
  }

  /**
   * A shim for a task whose runc will be the fake (pass runcOptions(fake) to Create): its record
   * dir is <tmp>/<ns>-<id>-fake, which holds the `runc` symlink. (Not through the environment:
   * our shim's daemon may be a pre-booted standby, started with an earlier `start`'s environment.)
   */
  async startWithFakeRunc(shim: ShimUnderTest, id: string, args: string[]): Promise<{ t: DirectTask; fake: string }> {
    const fake = path.join(this.tmp, `${this.namespace(shim.name)}-${id}-fake`);
    fs.mkdirSync(fake, { recursive: true });
    fs.symlinkSync(FAKE_RUNC, path.join(fake, 'runc'));
    const t = await this.start(shim, id, args);
    return { t, fake };
  }

  /**
   * A bundle (config.json from `runc spec`, empty rootfs/ to bind-mount onto, a `log` fifo the shim
   * logs into), and the shim started on it with `start` as containerd does.
   */
  async start(shim: ShimUnderTest, id: string, args: string[], o: {
    hostPid?: boolean; terminal?: boolean; env?: NodeJS.ProcessEnv;
  } = {}): Promise<DirectTask> {
    const ns = this.namespace(shim.name);
    const bundle = makeBundle(path.join(this.tmp, ns, id), { args, hostPid: o.hostPid, terminal: o.terminal });
    const log = new FifoReader(mkfifo(path.join(bundle, 'log')));
    this.logs.push({ name: `${shim.name} ${id}`, reader: log });
    // SHIM_TEST_POOL: a standby pool of this fake containerd's own (containerd.ts says why).
    const env = { ...process.env, PATH: fullPath(), TTRPC_ADDRESS: this.events.path, SHIM_TEST_POOL: this.events.path, ...o.env };
    const grpcAddress = path.join(this.tmp, 'containerd.sock');
    const r = await runShim(['-namespace', ns, '-address', grpcAddress, '-publish-binary', '/usr/bin/containerd', '-id', id, 'start'],
      { cwd: bundle, env, bin: shim.path });
    assert.equal(r.code, 0, `${shim.path} start: ${r.stderr}`);
    // A plain address, or (containerd 2.3's Go shim prints it whatever stdin said) a protobuf
    // BootstrapResult, whose version says which task service to call.
    let address = r.stdout.toString('utf8').trim();
    let version: 2 | 3 = 2;
    if (!address.startsWith('unix://')) {
      const res = BootstrapResult.decode(r.stdout);
      address = res.address;
      version = res.version === 3 ? 3 : 2;
    }
    const client = await TaskClient.connect(address, ns, version);
    const { shimPid } = await client.connect(id);
    const t = new DirectTask(this, shim, id, ns, bundle, address, client, shimPid, env, grpcAddress);
    this.tasks.add(t);
    return t;
  }
}

export class DirectTask {
  constructor(
    readonly env: DirectEnv,
    readonly shim: ShimUnderTest,
    readonly id: string,
    readonly ns: string,
    readonly bundle: string,
    readonly address: string,
    readonly client: TaskClient,
    readonly shimPid: number,
    private readonly shimEnv: NodeJS.ProcessEnv,
    private readonly grpcAddress: string,
  ) {}

  /** The bind mount of the shared busybox rootfs, as Create's `rootfs`. */
  get rootfs() {
    return [{ type: 'bind', source: this.env.rootfsSrc, target: '', options: ['rbind', 'ro'] }];
  }

  /** Events this shim published so far about this container, decoded. */
  events(filter?: (e: DecodedEvent) => boolean): DecodedEvent[] {
    return this.env.events.envelopes.filter((e) => e.namespace === this.ns).map(decodeEnvelope)
      .filter((e) => e.event.containerId === this.id && (!filter || filter(e)));
  }

  async waitEvents(pred: (evs: DecodedEvent[]) => boolean, timeoutMs = 10_000): Promise<DecodedEvent[]> {
    const ok = await waitFor(() => pred(this.events()), timeoutMs, 20);
    assert.ok(ok, `events did not arrive; have: ${this.events().map((e) => e.topic).join(', ')}`);
    return this.events();
  }

  /** Substitutions for this task's values: bundle, temp dir, namespace, id. */
  subst(...extra: string[]): Subst {
    const s: Subst = [];
    for (const x of [...extra].sort((a, b) => b.length - a.length)) s.push([x, '<x>']);
    s.push([this.bundle, '<bundle>'], [this.env.tmp, '<tmp>'], [this.ns, '<ns>'], [this.id, '<id>']);
    return s;
  }

  /** The Checkpoint RPC (TaskClient has no wrapper for it). */
  checkpoint(id: string, imagePath: string, options?: { typeUrl: string; value: Uint8Array }): Promise<unknown> {
    return invoke(this.client.client, 'containerd.task.v2.Task', 'Checkpoint', T.CheckpointTaskRequest, Empty,
      T.CheckpointTaskRequest.fromPartial({ id, path: imagePath, options }),
      { timeoutMs: 30_000, metadata: { 'containerd-namespace-ttrpc': this.ns } });
  }

  /** Tear down whatever is left: delete the task, shut the shim down (SIGKILL by pid if it lingers). */
  async close(): Promise<void> {
    if (!this.env.tasks.delete(this)) return;
    const st = await this.client.state(this.id).catch(() => undefined);
    if (st) {
      await this.client.kill(this.id, 9, { all: true }).catch(() => undefined);
      await Promise.race([this.client.wait(this.id).catch(() => undefined), sleep(3000)]);
      await this.client.delete(this.id).catch(() => undefined);
    }
    await this.client.shutdown(this.id).catch(() => undefined);
    this.client.close();
    if (!(await waitGone(this.shimPid, 3000))) {
      try { process.kill(this.shimPid, 'SIGKILL'); } catch { /* gone */ }
      await waitGone(this.shimPid, 3000);
    }
    // The `delete` action, as containerd runs it after a shim went away (removes runc state).
    await runShim(['-namespace', this.ns, '-address', this.grpcAddress, '-publish-binary', '/usr/bin/containerd', '-id', this.id, '-bundle', this.bundle, 'delete'],
      { cwd: this.bundle, env: this.shimEnv, bin: this.shim.path }).catch(() => undefined);
    spawnSync(REAL_RUNC, ['--root', `/run/containerd/runc/${this.ns}`, 'delete', '--force', this.id], { stdio: 'ignore', timeout: 10_000 });
    for (const m of mountedUnder(this.bundle).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  }
}

// ---------------------------------------------------------------------------------------------
// The scripted stand-in for runc (test/support/fake-runc.sh)

/** Create options making `<fake>/runc` (a symlink to fake-runc.sh, which keeps its records in <fake>) the shim's runc. */
export function runcOptions(fake: string, extra: Partial<Options> = {}) {
  return { typeUrl: 'containerd.runc.v1.Options', value: Options.encode(Options.fromPartial({ binaryName: path.join(fake, 'runc'), ...extra })).finish() };
}

/** The fake runc's record of its calls, in order: argv without argv[0]. */
export function calls(dir: string): string[][] {
  const d = path.join(dir, 'calls');
  if (!fs.existsSync(d)) return [];
  return fs.readdirSync(d).sort((a, b) => {
    const [ta, pa] = a.split('-').map(BigInt);
    const [tb, pb] = b.split('-').map(BigInt);
    return ta < tb ? -1 : ta > tb ? 1 : Number(pa - pb);
  }).map((f) => fs.readFileSync(path.join(d, f), 'utf8').split('\0').slice(1, -1));
}

/** Calls of one sub-command (the first argument after the global flags). */
export function callsOf(dir: string, sub: string): string[][] {
  return calls(dir).filter((argv) => {
    for (let i = 0; i < argv.length; i++) {
      if (['--root', '--log', '--log-format', '--criu'].includes(argv[i])) { i++; continue; }
      if (argv[i].startsWith('-')) continue;
      return argv[i] === sub;
    }
    return false;
  });
}

/** runc's global flags as the shims pass them, normalised (fakeSubst). */
export const FAKE_GLOBAL = ['--root', '/run/containerd/runc/<ns>', '--log', '<bundle>/log.json', '--log-format', 'json'];

/** Substitutions for a fake-runc task: its record dir, then the task's own. */
export const fakeSubst = (t: DirectTask, fake: string): Subst => [[fake, '<fake-dir>'], ...t.subst()];

/** An OCI Process JSON for Exec, as containerd sends it. */
export function execSpec(args: string[], o: { terminal?: boolean } = {}) {
  const spec = {
    terminal: !!o.terminal, args, cwd: '/', env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm'],
    user: { uid: 0, gid: 0 },
  };
  return { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(spec)) };
}

// ---------------------------------------------------------------------------------------------
// A logging binary (containerd v1.7.0 pkg/process/io.go binaryIO) for binary:// stdio

const LOGGER = (dir: string) => `#!/bin/sh
# Records what it was given (argv, environment, fds 0-5) in <dir>/<CONTAINER_ID>/, signals
# readiness by closing fd 5, then copies fd 3 (stdout) and fd 4 (stderr) into files there.
# Its environment has no PATH, hence the absolute paths.
out="${dir}/\${CONTAINER_ID:-no-container-id}"
/bin/mkdir -p "$out"
echo $$ > "$out/pid"
fds=""
for f in 0 1 2 3 4 5; do fds="$fds$f $(/bin/readlink /proc/$$/fd/$f)
"; done
printf '%s' "$fds" > "$out/fds"
printf '%s\\n' "$0" "$@" > "$out/argv"
/bin/cat /proc/$$/environ | /usr/bin/tr '\\0' '\\n' > "$out/env"
exec 5>&-
/bin/cat <&3 > "$out/stdout" &
/bin/cat <&4 > "$out/stderr" &
wait
`;

/** Writes the logging binary into `dir` (its records go to <dir>/<CONTAINER_ID>/); returns its path. */
export function writeLogger(dir: string): string {
  const p = path.join(dir, 'logger.sh');
  fs.writeFileSync(p, LOGGER(dir), { mode: 0o755 });
  return p;
}

/**
 * What the logger recorded for one CONTAINER_ID, once `stdout` and `stderr` are complete (their
 * expected contents given) and the logger exited (the shim stops it when the process is deleted).
 */
export async function loggerRecord(dir: string, containerId: string, expect: { stdout: string; stderr: string }, timeoutMs = 5000, exitTimeoutMs = timeoutMs) {
  const d = path.join(dir, containerId);
  assert.ok(fs.existsSync(d), `the logger ran with CONTAINER_ID=${containerId}`);
  await waitFor(() => readIf(path.join(d, 'stdout')) === expect.stdout && readIf(path.join(d, 'stderr')) === expect.stderr, timeoutMs);
  const pid = Number(readIf(path.join(d, 'pid')));
  const exited = await waitGone(pid, exitTimeoutMs);
  const files = Object.fromEntries(['argv', 'env', 'fds', 'stdout', 'stderr'].map((f) => [f, readIf(path.join(d, f))]));
  // Pipe inodes differ per run.
  files.fds = files.fds?.replace(/pipe:\[\d+\]/g, 'pipe');
  return { files, exited };
}

/** Reads a file, or undefined when it does not exist. */
export function readIf(p: string): string | undefined {
  try { return fs.readFileSync(p, 'utf8'); } catch { return undefined; }
}
