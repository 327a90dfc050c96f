// SPDX-License-Identifier: Apache-2.0
// Interleavings of Task RPCs on one process and on two, black-box through the real ttrpc server,
// the test playing containerd (as shim-direct.test.ts). For an ordered pair (A, B), A's runc step
// is held at a gate (test/support/gated-runc.sh, given as Create's runc binary_name) while B is
// issued; then the gate opens. Each case checks that
//   (i)   every call answers within BOUND_MS (Wait: once the process is gone);
//   (ii)  read-only RPCs (State, Pids, Connect, Stats, and Wait on a process that has exited)
//         answer while the gate is held: no RPC that only reads waits on another RPC's runc call;
//   (iii) the outcomes and the processes' final states are those of A then B, or of B then A, on
//         the process state machines of containerd's runc shim (pkg/process/init_state.go,
//         exec_state.go and runtime/v2/runc/task/service.go, v1.7.x; the texts as the shim's
//         state table, state.ts, has them): two Pause calls never both succeed, a Delete never
//         succeeds on a running process, a Start after Delete fails with Go's text;
//   (iv)  no zombie children of the daemon, its open fds and children back to where they were;
//   (v)   the container's events in containerd's order: create → start → exec-added →
//         exec-started → exec exit → init exit → delete (pause/resume alternating).
// A second part makes runc fail at each step (create, start, exec, kill, delete, pause, resume,
// update, ps): the error carries runc's message, the process lands in a defined state, nothing
// leaks. Cases that show a bug of the current shim assert the right behaviour and are marked
// `todo` (KNOWN_BUGS) so the suite reports them without failing.
//
// CI size: every pair whose A has a runc step (one process, init + exec, two execs), ~2.5 min on
// two busy CPUs. Under SHIM_STRESS=full: every ordered pair (an A with no runc step is issued
// with B right behind it), and each gated pair once more with A's runc failing after the gate
// opens. Cases run in SHIM_INTERLEAVE_LANES lanes (3), one daemon each. Run:
//   node --test dist/test/e2e/interleave.test.js                      (after npm run build)
//   SHIM_STRESS=full node --test dist/test/e2e/interleave.test.js
//   node --test --test-name-pattern='Pause\(init\) held' dist/test/e2e/interleave.test.js
import { describe, test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ShimLab, FULL_STRESS, uniqueId, settle, within, zombiesOf, workChildren, fdCount, fdTargets, type LabShim } from '../support/reliability.js';
import { repoRoot, mountedUnder } from '../support/shimproc.js';
import type { TaskClient } from '../support/taskclient.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import { Status } from '../../src/gen/containerd/types/task.js';
import * as E from '../../src/gen/containerd/events/task.js';
import type { Envelope } from '../../src/gen/containerd/services/ttrpc/events/v1/events.js';
import { Code } from '../../src/ttrpc/index.js';

/** Every call must answer within this (a Wait: after its process is gone). */
const BOUND_MS = 10_000;
/**
 * A read-only RPC issued while a runc call is held must answer within this; so must B once its
 * own runc call, run inside A's, has returned (it then has nothing left to wait for).
 */
const PROBE_MS = 3_000;
/**
 * How long B gets to reach its own runc call (its gate) while A is held. B that neither answers
 * nor reaches runc in this time waits behind A (serialized), and A is released. Both paths are
 * legal; this only chooses which interleaving is exercised, never what is accepted.
 */
const B_GRACE_MS = 250;
const GATED_RUNC = path.join(repoRoot(), 'test', 'support', 'gated-runc.sh');

type Op = 'Start' | 'Kill' | 'Delete' | 'Pause' | 'Resume' | 'Exec' | 'CloseIO' | 'ResizePty' | 'Update' | 'State' | 'Wait';
const OPS: Op[] = ['Start', 'Kill', 'Delete', 'Pause', 'Resume', 'Exec', 'CloseIO', 'ResizePty', 'Update', 'State', 'Wait'];
/** RPCs of the container as a whole (no exec id): always on the init. */
const CONTAINER_OPS = new Set<Op>(['Pause', 'Resume', 'Update']);
const EXEC_OPS = OPS.filter((o) => !CONTAINER_OPS.has(o));

type Proc = 'init' | 'e1' | 'e2';
/** One RPC of a case: `proc` is the process it names; Exec on the init adds an exec x<role>. */
interface Call { op: Op; proc: Proc; role: 'a' | 'b' }

/** The exec id an Exec call adds, or the process a call acts on. */
function target(c: Call): string {
  if (c.op === 'Exec') return c.proc === 'init' ? `x${c.role}` : c.proc;
  return CONTAINER_OPS.has(c.op) ? 'init' : c.proc;
}

/** The runc sub-command the RPC runs (the step the gate can hold), if any. */
function runcStep(c: Call): string | undefined {
  if (c.op === 'Start') return c.proc === 'init' ? 'start' : 'exec';
  if (target(c) !== 'init') return undefined; // an exec's Kill signals a pidfd, its Delete runs no runc
  return ({ Kill: 'kill', Delete: 'delete', Pause: 'pause', Resume: 'resume', Update: 'update' } as Partial<Record<Op, string>>)[c.op];
}

// ---------------------------------------------------------------------------------------------
// The model: the state machines of containerd's runc shim, with the texts of Go's errors

type InitState = 'created' | 'running' | 'paused' | 'stopped' | 'deleted' | 'gone';
type ExecState = 'absent' | 'created' | 'running' | 'stopped' | 'deleted' | 'gone';
interface World {
  init: InitState;
  execs: Record<string, ExecState>;
  /** Processes sent SIGKILL whose exit may or may not have been seen yet. */
  killed: string[];
}

/** What a call may answer: success, or a status code and Go's text (exact, or a part of it). */
type Expect = { ok: true } | { code: Code; msg?: string; includes?: string };
const OK: Expect = { ok: true };
const unknown = (msg: string): Expect => ({ code: Code.Unknown, msg });
const notFoundE = (what: string): Expect => ({ code: Code.NotFound, msg: `${what}: not found` });
const runcFailed = (sub: string): Expect => ({ code: Code.Unknown, includes: `fake runc: ${sub} failed` });

// What each state refuses, as `<rpc> <state> <text>` (pkg/process/init_state.go and
// exec_state.go, containerd v1.7.x; a code other than Unknown before the text as `Code:`).
const INIT_REFUSALS = parseRefusals(`
start running cannot start a running process
start paused cannot start a paused process
start stopped cannot start a stopped process
start deleted cannot start a deleted process
delete running cannot delete a running process
delete paused cannot delete a paused process
delete deleted NotFound:cannot delete a deleted process: not found
kill deleted NotFound:cannot kill a deleted process: not found
pause created cannot pause task in created state
pause paused cannot pause a paused container
pause stopped cannot pause a stopped container
pause deleted cannot pause a deleted process
resume created cannot resume task in created state
resume running cannot resume a running process
resume stopped cannot resume a stopped container
resume deleted cannot resume a deleted process
update stopped cannot update a stopped container
update deleted cannot update a deleted process
exec paused cannot exec in a paused state
exec stopped cannot exec in a stopped state
exec deleted cannot exec in a deleted state
`);
const EXEC_REFUSALS = parseRefusals(`
start running cannot start a running process
start stopped cannot start a stopped process
start deleted cannot start a deleted process
delete running cannot delete a running process
delete deleted NotFound:cannot delete a deleted process: not found
kill created FailedPrecondition:process not created: failed precondition
kill stopped NotFound:process already finished: not found
kill deleted NotFound:cannot kill a deleted process: not found
resize stopped cannot resize a stopped container
resize deleted cannot resize a deleted process
`);

function parseRefusals(text: string): Map<string, Expect> {
  const out = new Map<string, Expect>();
  for (const line of text.trim().split('\n')) {
    const [rpc, state, ...rest] = line.split(' ');
    const words = rest.join(' ');
    const coded = /^(NotFound|FailedPrecondition):(.*)$/.exec(words);
    out.set(`${rpc} ${state}`, coded ? { code: Code[coded[1] as 'NotFound'], msg: coded[2] } : unknown(words));
  }
  return out;
}

const refusal = (table: Map<string, Expect>, rpc: string, state: string) => table.get(`${rpc} ${state}`);
const exists = (s: ExecState | undefined) => s !== undefined && s !== 'absent' && s !== 'gone';

function withExec(w: World, id: string, s: ExecState): World {
  return { ...w, execs: { ...w.execs, [id]: s } };
}

/**
 * The possible (answer, next world) of one call in world `w`. `fail`: the call's runc step fails
 * (gated-runc's fail-<sub>), which leaves the state as it was.
 */
function step(w: World, c: Call, cid: string, fail: boolean): [Expect, World][] {
  if (w.init === 'gone') return [[notFoundE('container not created'), w]];
  const t = target(c);
  const sub = runcStep(c);
  const failed: [Expect, World][] = fail && sub ? [[runcFailed(sub), w]] : [];
  // A process sent SIGKILL may be dead for runc while the shim has not seen the exit yet: then a
  // runc step fails with runc's complaint (container not running, no such process, ...).
  const dying = w.killed.includes(t) && sub ? [{ code: Code.Unknown } as Expect, { code: Code.NotFound } as Expect] : [];
  const alt = (e: Expect[]): [Expect, World][] => e.map((x) => [x, w]);
  if (c.op === 'Exec') {
    if (exists(w.execs[t])) return [[{ code: Code.AlreadyExists, msg: `id ${t}: already exists` }, w]];
    const r = refusal(INIT_REFUSALS, 'exec', w.init);
    return r ? [[r, w]] : [[OK, withExec(w, t, 'created')]];
  }
  if (t === 'init') {
    const s = w.init;
    const plain = (rpc: string, next: (w: World) => World[]): [Expect, World][] => {
      const r = refusal(INIT_REFUSALS, rpc, s);
      if (r) return [[r, w]];
      if (failed.length) return failed;
      return [...next(w).map((n): [Expect, World] => [OK, n]), ...alt(dying)];
    };
    switch (c.op) {
      case 'Start': return plain('start', () => [{ ...w, init: 'running' }]);
      case 'Pause': return plain('pause', () => [{ ...w, init: 'paused' }]);
      case 'Resume': return plain('resume', () => [{ ...w, init: 'running' }]);
      case 'Update': return plain('update', () => [w]);
      case 'Kill':
        // runc kill of a container that is no longer running: "process already finished".
        if (s === 'stopped') return [[notFoundE('process already finished'), w]];
        return plain('kill', () => [{ ...w, killed: [...new Set([...w.killed, 'init'])] }]);
      case 'Delete': {
        // While Delete runs the process is deleted (Go sets deletedState under the process
        // lock); once it returned the container is gone.
        const execs = Object.fromEntries(Object.keys(w.execs).map((k): [string, ExecState] => [k, 'gone']));
        return plain('delete', () => [{ init: 'deleted', execs, killed: [] }, { init: 'gone', execs, killed: [] }]);
      }
      default: return [[OK, w]]; // CloseIO, ResizePty, State, Wait
    }
  }
  const e = w.execs[t];
  if (!exists(e)) {
    const msg = `process does not exist ${t}`;
    return [[c.op === 'CloseIO' ? unknown(`${msg}: not found`) : notFoundE(msg), w]];
  }
  const initExited = w.init === 'stopped' || w.init === 'deleted';
  switch (c.op) {
    case 'Start': {
      if (initExited) return [[{ code: Code.FailedPrecondition, msg: `container ${cid} init process is not running: failed precondition` }, w]];
      const r = refusal(EXEC_REFUSALS, 'start', e) ?? refusal(INIT_REFUSALS, 'exec', w.init);
      if (r) return [[r, w]];
      if (failed.length) return failed;
      // With the init killed and its exit not seen yet, runc exec may fail, or the start may
      // come after the exit became known (FailedPrecondition).
      const initDying: Expect[] = w.killed.includes('init')
        ? [{ code: Code.Unknown, includes: 'OCI runtime exec failed' }, { code: Code.FailedPrecondition, msg: `container ${cid} init process is not running: failed precondition` }]
        : [];
      return [[OK, withExec(w, t, 'running')], ...alt(initDying)];
    }
    case 'Kill': {
      const r = refusal(EXEC_REFUSALS, 'kill', e);
      if (r) return [[r, w]];
      const gone: Expect[] = w.killed.includes(t) ? [notFoundE('exec kill error: process already finished')] : [];
      return [[OK, { ...w, killed: [...new Set([...w.killed, t])] }], ...alt(gone)];
    }
    case 'Delete': {
      const r = refusal(EXEC_REFUSALS, 'delete', e);
      return r ? [[r, w]] : [[OK, withExec(w, t, 'gone')]];
    }
    case 'ResizePty': {
      const r = refusal(EXEC_REFUSALS, 'resize', e);
      return r ? [[r, w]] : [[OK, w]];
    }
    default: return [[OK, w]]; // CloseIO, State, Wait
  }
}

/** The worlds `w` may become without any call: processes sent SIGKILL exit (or not yet). */
function spontaneous(w: World): World[] {
  let out: World[] = [w];
  for (const p of w.killed) {
    const next: World[] = [];
    for (const x of out) {
      next.push(x);
      if (p === 'init' && (x.init === 'running' || x.init === 'created' || x.init === 'paused')) {
        // The kernel kills the execs with the init (own pid namespace); the shim publishes the
        // init's exit after theirs.
        const execs = Object.fromEntries(Object.entries(x.execs).map(([k, v]): [string, ExecState] => [k, v === 'running' ? 'stopped' : v]));
        next.push({ init: 'stopped', execs, killed: x.killed.filter((k) => k !== 'init' && !(k in execs && execs[k] === 'stopped')) });
      } else if (p !== 'init' && x.execs[p] === 'running') {
        next.push({ ...withExec(x, p, 'stopped'), killed: x.killed.filter((k) => k !== p) });
      }
    }
    out = next;
  }
  return out;
}

/** An outcome of the pair: the answers, and the worlds it may end in (SIGKILLed processes exit
 * while the test reads their states, one by one). */
interface Trace { a: Expect; b: Expect; ends: World[]; order: string }

/** Every outcome of A then B and of B then A from `w0` (A admitted in w0: it reached its gate). */
function traces(w0: World, a: Call, b: Call, cid: string, failA: boolean): Trace[] {
  const out: Trace[] = [];
  for (const [ea, w1] of step(w0, a, cid, failA)) {
    for (const w1s of spontaneous(w1)) {
      for (const [eb, w2] of step(w1s, b, cid, false)) out.push({ a: ea, b: eb, ends: spontaneous(w2), order: 'A;B' });
    }
  }
  for (const [eb, w1] of step(w0, b, cid, false)) {
    for (const w1s of spontaneous(w1)) {
      for (const [ea, w2] of step(w1s, a, cid, failA)) out.push({ a: ea, b: eb, ends: spontaneous(w2), order: 'B;A' });
    }
  }
  return out;
}

type Outcome = { ok: true } | { ok: false; code: Code; message: string };

function matches(e: Expect, o: Outcome): boolean {
  if ('ok' in e) return o.ok;
  if (o.ok || o.code !== e.code) return false;
  if (e.msg !== undefined) return o.message === e.msg;
  if (e.includes !== undefined) return o.message.includes(e.includes);
  return true;
}

/** What State says of a process in a world ('NotFound' when the lookup fails). */
function observedStatus(w: World, p: string): string {
  if (p === 'init') {
    return ({ created: 'CREATED', running: 'RUNNING', paused: 'PAUSED', stopped: 'STOPPED', deleted: 'NotFound', gone: 'NotFound' } as const)[w.init];
  }
  const s = w.execs[p];
  if (w.init === 'gone' || w.init === 'deleted' || !exists(s)) return 'NotFound';
  // containerd's exec Status reports the container's paused state for every exec (exec.go).
  if (w.init === 'paused') return 'PAUSED';
  return s.toUpperCase();
}

function show(e: Expect | Outcome): string {
  if ('ok' in e && e.ok) return 'ok';
  const x = e as { code: Code; message?: string; msg?: string; includes?: string };
  const text = x.message ?? x.msg;
  return `${Code[x.code] ?? x.code}${text !== undefined ? ` "${text}"` : x.includes ? ` ~"${x.includes}"` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Cases

/** Where A and B act: both on the init; the init and an exec; two execs. */
type Topo = 'one' | 'init+exec' | 'two-execs';
interface Case { topo: Topo; a: Call; b: Call; failA: boolean; name: string }

/** The state a call wants its process in, so that it is allowed and reaches runc. */
function natural(c: Call): InitState | ExecState {
  switch (c.op) {
    case 'Start': return 'created';
    case 'Delete': return 'stopped';
    case 'Resume': return 'paused';
    case 'Exec': return 'absent'; // the exec it adds
    default: return 'running';
  }
}

function buildCases(full: boolean): Case[] {
  const out: Case[] = [];
  const add = (topo: Topo, a: Omit<Call, 'role'>, b: Omit<Call, 'role'>) => {
    const ca: Call = { ...a, role: 'a' };
    const cb: Call = { ...b, role: 'b' };
    const gated = runcStep(ca) !== undefined;
    if (!gated && !full) return;
    const label = (c: Call) => `${c.op}(${target(c)})`;
    const name = gated ? `${topo}: ${label(ca)} held, then ${label(cb)}` : `${topo}: ${label(ca)} and ${label(cb)} at once`;
    out.push({ topo, a: ca, b: cb, failA: false, name });
    if (full && gated) out.push({ topo, a: ca, b: cb, failA: true, name: `${name}; A's runc fails` });
  };
  for (const a of OPS) for (const b of OPS) add('one', { op: a, proc: 'init' }, { op: b, proc: 'init' });
  for (const a of OPS) for (const b of EXEC_OPS) add('init+exec', { op: a, proc: 'init' }, { op: b, proc: 'e1' });
  for (const a of EXEC_OPS) for (const b of OPS) add('init+exec', { op: a, proc: 'e1' }, { op: b, proc: 'init' });
  for (const a of EXEC_OPS) for (const b of EXEC_OPS) add('two-execs', { op: a, proc: 'e1' }, { op: b, proc: 'e2' });
  return out;
}

/** Where the case starts: A's process as A wants it, B's as B wants it where that fits. */
function initialWorld(cs: Case): World {
  const ta = target(cs.a);
  const tb = target(cs.b);
  let init: InitState = 'running';
  if (tb === 'init' && cs.b.op !== 'Exec') init = natural(cs.b) as InitState;
  if (ta === 'init' && cs.a.op !== 'Exec') init = natural(cs.a) as InitState;
  if (ta !== 'init' && cs.a.op === 'Start') init = 'running'; // an exec's runc exec needs a running init
  const execs: Record<string, ExecState> = {};
  if (tb !== 'init') execs[tb] = natural(cs.b) as ExecState;
  if (ta !== 'init') execs[ta] = natural(cs.a) as ExecState;
  for (const [k, v] of Object.entries(execs)) {
    // No exec runs in a created container; the init's death stops the running ones.
    if (init === 'created' && (v === 'running' || v === 'stopped')) execs[k] = 'created';
    if (init === 'stopped' && v === 'running') execs[k] = 'stopped';
  }
  return { init, execs, killed: [] };
}

/** KNOWN_BUGS[case name]: what the current shim does wrong there (the case is `todo`). */
const KNOWN_BUGS: Record<string, string> = {
  // containerd's Go shim has the same race: an exec's start takes no lock of the init's
  // (v2.3.4 pkg/process exec_state.go), and holding Pause behind another process's runc call is
  // what the task layer must not do.
  'init+exec: Start(e1) held, then Pause(init)':
    'Pause runs while an exec\'s runc exec is in flight, which runc then refuses: "OCI runtime exec failed: exec failed: cannot exec in a paused container (use --ignore-paused to override)"',
};

// ---------------------------------------------------------------------------------------------
// Driving the shim

const processSpec = (args: string[]) => ShimLab.execSpec(args);

/** A call in flight: its outcome once settled. */
class Flight {
  outcome?: Outcome;
  readonly done: Promise<Outcome>;
  constructor(p: Promise<unknown>) {
    this.done = p.then((): Outcome => ({ ok: true }), (e: unknown): Outcome => {
      const err = e as { code?: Code; message?: string };
      return { ok: false, code: err.code ?? Code.Unknown, message: err.message ?? JSON.stringify(e) };
    });
    void this.done.then((o) => { this.outcome = o; });
  }
}

function issue(client: TaskClient, cid: string, c: Call): Flight {
  const t = target(c);
  const execId = t === 'init' ? '' : t;
  switch (c.op) {
    case 'Start': return new Flight(client.start(cid, execId));
    case 'Kill': return new Flight(client.kill(cid, 9, { execId }));
    case 'Delete': return new Flight(client.delete(cid, execId));
    case 'Pause': return new Flight(client.pause(cid));
    case 'Resume': return new Flight(client.resume(cid));
    case 'Exec': return new Flight(client.exec({ id: cid, execId: t, spec: processSpec(['sleep', '1000']) }));
    case 'CloseIO': return new Flight(client.closeIO(cid, execId));
    case 'ResizePty': return new Flight(client.resizePty(cid, 80, 24, execId));
    case 'Update': return new Flight(client.update(cid, { cpu: { shares: 512 } }));
    case 'State': return new Flight(client.state(cid, execId));
    case 'Wait': return new Flight(client.wait(cid, execId));
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

const templates = new WeakMap<ShimLab, string>();

/**
 * A bundle for `sleep 1000` as ShimLab.bundle makes it, from a config.json made once per lab
 * (one `runc spec` per case would be one more runc run per case).
 */
function quickBundle(lab: ShimLab, id: string): string {
  let config = templates.get(lab);
  if (!config) {
    const spec = JSON.parse(fs.readFileSync(path.join(lab.bundle(`${id}-spec`, { args: ['sleep', '1000'] }), 'config.json'), 'utf8')) as Record<string, unknown>;
    config = JSON.stringify(spec, null, 2);
    templates.set(lab, config);
  }
  const bundle = path.join(lab.tmp, lab.namespace, id);
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true, mode: 0o711 });
  fs.chmodSync(bundle, 0o700);
  fs.writeFileSync(path.join(bundle, 'config.json'), config);
  lab.track(id);
  return bundle;
}

const SUBS = ['create', 'start', 'exec', 'kill', 'delete', 'pause', 'resume', 'update', 'ps'];

/** One container of a case, with its own gate dir (its runc is <gate>/runc → gated-runc.sh). */
class Subject {
  readonly gate: string;
  constructor(readonly lab: ShimLab, readonly shim: LabShim, readonly id: string) {
    this.gate = path.join(lab.tmp, 'gates', id);
    fs.mkdirSync(this.gate, { recursive: true });
    fs.symlinkSync(GATED_RUNC, path.join(this.gate, 'runc'));
    fs.writeFileSync(path.join(this.gate, 'gate-seconds'), String(Math.ceil(BOUND_MS * 3 / 1000)));
  }

  get client(): TaskClient { return this.shim.client; }
  file(name: string): string { return path.join(this.gate, name); }
  /** Hold the next `runc <sub>`; `fail`: once released, that call fails as runc does. */
  arm(sub: string, fail = false): void { fs.writeFileSync(this.file(`gate-${sub}`), fail ? 'fail' : ''); }
  entered(sub: string): boolean { return fs.existsSync(this.file(`entered-${sub}`)); }
  release(sub: string): void { fs.writeFileSync(this.file(`release-${sub}`), ''); }
  failing(sub: string, on: boolean): void {
    if (on) fs.writeFileSync(this.file(`fail-${sub}`), '');
    else fs.rmSync(this.file(`fail-${sub}`), { force: true });
  }
  /** Open every gate and stop every failure (before cleaning up). */
  openAll(): void {
    for (const s of SUBS) {
      fs.rmSync(this.file(`gate-${s}`), { force: true });
      this.failing(s, false);
      this.release(s);
    }
  }

  async create(): Promise<number> {
    const bundle = quickBundle(this.lab, this.id);
    const options = { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from(Options.encode(Options.fromPartial({ binaryName: this.file('runc') })).finish()) };
    return (await this.client.create({ id: this.id, bundle, rootfs: this.lab.rootfs, options })).pid;
  }

  /** Bring the container to `w` (created by create()). */
  async setUp(w: World): Promise<void> {
    const c = this.client;
    await this.create();
    if (w.init !== 'created') await c.start(this.id);
    // A stopped exec is `true` run to its end, or, where the init is to be stopped, a running
    // exec that the init's death takes along.
    const diesAlone = (s: ExecState) => s === 'stopped' && w.init !== 'stopped';
    for (const [x, s] of Object.entries(w.execs)) {
      if (s === 'absent') continue;
      await c.exec({ id: this.id, execId: x, spec: processSpec(diesAlone(s) ? ['true'] : ['sleep', '1000']) });
      if (s === 'running' || s === 'stopped') await c.start(this.id, x);
      if (diesAlone(s)) await c.wait(this.id, x);
    }
    if (w.init === 'paused') await c.pause(this.id);
    if (w.init === 'stopped') {
      await c.kill(this.id, 9);
      await c.wait(this.id);
      for (const [x, s] of Object.entries(w.execs)) if (s === 'stopped') await c.wait(this.id, x);
    }
  }

  /** What State says of a process now. */
  async status(p: string): Promise<string> {
    try {
      return Status[(await within(this.client.state(this.id, p === 'init' ? '' : p), BOUND_MS, `State ${p}`)).status];
    } catch (e) {
      if ((e as { code?: number }).code === Code.NotFound) return 'NotFound';
      throw e;
    }
  }

  /** Kill and delete whatever is left of the container; every step bounded. */
  async tearDown(execIds: string[]): Promise<string[]> {
    const problems: string[] = [];
    const c = this.client;
    const quiet = async (what: string, p: Promise<unknown>, okCodes: number[] = [Code.NotFound, Code.Unknown, Code.FailedPrecondition]) => {
      try {
        await within(p, BOUND_MS, what);
      } catch (e) {
        const code = (e as { code?: number }).code;
        if (code === undefined || !okCodes.includes(code)) problems.push(`teardown ${what}: ${(e as Error).message}`);
      }
    };
    this.openAll();
    const init = await this.status('init').catch(() => 'NotFound');
    if (init === 'NotFound') return problems;
    if (init === 'PAUSED' || init === 'PAUSING') await quiet('Resume', c.resume(this.id));
    for (const x of execIds) await quiet(`Kill ${x}`, c.kill(this.id, 9, { execId: x }));
    await quiet('Kill init', c.kill(this.id, 9));
    await quiet('Wait init', c.wait(this.id), []);
    for (const x of execIds) await quiet(`Delete ${x}`, c.delete(this.id, x), [Code.NotFound]);
    await quiet('Delete init', c.delete(this.id), [Code.NotFound]);
    return problems;
  }
}

/** Problems with the order of one container's events (containerd's order, see the header). */
function eventOrderProblems(envs: Envelope[], ns: string, cid: string): string[] {
  const seq: { topic: string; proc: string }[] = [];
  for (const e of envs) {
    if (e.namespace !== ns || !e.event) continue;
    const v = e.event.value;
    if (E.TaskCreate.decode(v).containerId !== cid) continue; // container_id is field 1 of every task event
    let proc = 'init';
    if (e.topic === '/tasks/exec-added') proc = E.TaskExecAdded.decode(v).execId;
    else if (e.topic === '/tasks/exec-started') proc = E.TaskExecStarted.decode(v).execId;
    else if (e.topic === '/tasks/exit') { const id = E.TaskExit.decode(v).id; proc = id === cid ? 'init' : id; }
    seq.push({ topic: e.topic, proc });
  }
  const problems: string[] = [];
  const text = seq.map((s) => `${s.topic}${s.proc === 'init' ? '' : `(${s.proc})`}`).join(' ');
  const at = (topic: string, proc = 'init') => seq.flatMap((s, i) => (s.topic === topic && s.proc === proc ? [i] : []));
  const once = (topic: string, proc = 'init') => {
    const i = at(topic, proc);
    if (i.length > 1) problems.push(`${topic}${proc === 'init' ? '' : ` of ${proc}`} ${i.length} times`);
    return i[0];
  };
  const before = (x: number | undefined, y: number | undefined, what: string) => {
    if (x !== undefined && y !== undefined && x > y) problems.push(what);
  };
  if (seq[0]?.topic !== '/tasks/create') problems.push('first event is not /tasks/create');
  const del = once('/tasks/delete');
  if (del === undefined) problems.push('no /tasks/delete');
  else if (del !== seq.length - 1) problems.push('events after /tasks/delete');
  const start = once('/tasks/start');
  const initExit = once('/tasks/exit');
  before(start, initExit, 'init exit before /tasks/start');
  for (const x of new Set(seq.filter((s) => s.proc !== 'init').map((s) => s.proc))) {
    const added = once('/tasks/exec-added', x);
    const started = once('/tasks/exec-started', x);
    const exit = once('/tasks/exit', x);
    if (added === undefined) problems.push(`no exec-added for ${x}`);
    before(added, started, `exec-started before exec-added of ${x}`);
    if (exit !== undefined && started === undefined) problems.push(`exit of ${x} that never started`);
    before(started, exit, `exit before exec-started of ${x}`);
    before(exit, initExit, `init exit before the exit of ${x}`);
    before(exit, del, `exit of ${x} after /tasks/delete`);
  }
  let paused = false;
  for (const s of seq) {
    if (s.topic === '/tasks/paused') { if (paused) problems.push('two /tasks/paused in a row'); paused = true; }
    if (s.topic === '/tasks/resumed') { if (!paused) problems.push('/tasks/resumed without /tasks/paused'); paused = false; }
  }
  return problems.map((p) => `events: ${p} [${text}]`);
}

interface Baseline { fds: number; children: number }
const baseline = (pid: number): Baseline => ({ fds: fdCount(pid), children: workChildren(pid).length });

/** fds and children back to the baseline, no zombies. */
async function leakProblems(pid: number, base: Baseline): Promise<string[]> {
  const now = await settle(() => ({ ...baseline(pid), zombies: zombiesOf(pid).length }),
    (f) => f.fds === base.fds && f.children === base.children && f.zombies === 0, 5000, 20);
  const out: string[] = [];
  if (now.fds !== base.fds) out.push(`daemon fds ${base.fds} -> ${now.fds}: ${fdTargets(pid).join(', ')}`);
  if (now.children !== base.children) out.push(`daemon children ${base.children} -> ${now.children}`);
  if (now.zombies) out.push(`${now.zombies} zombie children`);
  return out;
}

async function runCase(lab: ShimLab, shim: LabShim, cs: Case, stats: Stats, note: (text: string) => void): Promise<void> {
  stats.n++;
  const cid = uniqueId(`il${++containerSeq}`);
  const base = baseline(shim.pid);
  const subject = new Subject(lab, shim, cid);
  const w0 = initialWorld(cs);
  const problems: string[] = [];
  const execIds = [...new Set(['e1', 'e2', 'xa', 'xb'].filter((x) => x in w0.execs || target(cs.a) === x || target(cs.b) === x))];
  const watched = [...new Set([target(cs.a), target(cs.b), 'init'])];
  let a: Flight | undefined;
  let b: Flight | undefined;
  let nestedB = false;
  let bWhileHeld = false;
  try {
    await subject.setUp(w0);
    const subA = runcStep(cs.a);
    const subB = runcStep(cs.b);
    if (subA) subject.arm(subA, cs.failA);
    a = issue(shim.client, cid, cs.a);
    if (subA) {
      const held = await until(() => subject.entered(subA) || a!.outcome !== undefined, BOUND_MS);
      assert.ok(held, `${cs.a.op} reached neither runc ${subA} nor an answer`);
      if (!subject.entered(subA)) assert.fail(`${cs.a.op} answered ${show(a.outcome!)} without reaching runc ${subA} (setup ${JSON.stringify(w0)})`);
      stats.held++;
    }
    // B's own runc step gets a gate too (when it is another sub-command than A's): if B reaches
    // it while A is held, B's runc call runs entirely inside A's.
    const gateB = subA && subB && subB !== subA ? subB : undefined;
    if (gateB) subject.arm(gateB);
    b = issue(shim.client, cid, cs.b);
    if (subA) {
      // (ii) Nothing that only reads waits on the held runc call. These go out after B on the
      // same connection, so B has been dispatched when they are answered.
      const probes: [string, Promise<unknown>][] = [
        ['State', shim.client.state(cid)],
        ...(target(cs.a) !== 'init' ? [[`State ${target(cs.a)}`, shim.client.state(cid, target(cs.a))] as [string, Promise<unknown>]] : []),
        ['Pids', shim.client.pids(cid)],
        ['Connect', shim.client.connect(cid)],
        ['Stats', shim.client.stats(cid)],
      ];
      // A Wait on a process that has exited answers at once, even while its Delete is in runc.
      if (target(cs.a) === 'init' && w0.init === 'stopped') probes.push(['Wait (the init has exited)', shim.client.wait(cid)]);
      for (const [what, p] of probes) {
        try {
          await within(p.catch(() => undefined), PROBE_MS, what);
        } catch {
          problems.push(`${what} did not answer within ${PROBE_MS} ms while runc ${subA} was held`);
        }
      }
      if (gateB) {
        if (await until(() => subject.entered(gateB) || b!.outcome !== undefined, B_GRACE_MS) && subject.entered(gateB)) {
          subject.release(gateB);
          stats.nested++;
          nestedB = true;
          await within(b.done, PROBE_MS, `${cs.b.op} (its runc call over, A's still held)`).catch((e: Error) => problems.push(e.message));
        }
      } else if (cs.b.op !== 'Wait') {
        await until(() => b!.outcome !== undefined, B_GRACE_MS);
      }
      if (b.outcome !== undefined) stats.bDuringHold++;
      bWhileHeld = b.outcome !== undefined;
      subject.release(subA);
      if (gateB) subject.release(gateB);
    }
    // (i) Both answer (a Wait only once its process is gone: checked after the teardown).
    for (const [f, c] of [[a, cs.a], [b, cs.b]] as const) {
      if (c.op !== 'Wait') await within(f.done, BOUND_MS, `${c.op}`).catch((e: Error) => problems.push(e.message));
    }
    // (iii) Outcomes and the final states as some serial order has them.
    const end: Record<string, string> = {};
    for (const p of watched) end[p] = await subject.status(p);
    const legal = traces(w0, cs.a, cs.b, cid, cs.failA);
    const oa = a.outcome;
    const ob = b.outcome;
    note(`from ${JSON.stringify(w0)}: A ${cs.a.op} -> ${oa ? show(oa) : 'pending'}, B ${cs.b.op} -> ${ob ? show(ob) : 'pending'}` +
      `${subA ? `, B answered while A was held: ${bWhileHeld ? 'yes' : 'no'}${gateB ? `, B's runc inside A's: ${nestedB ? 'yes' : 'no'}` : ''}` : ''}` +
      `; end ${watched.map((p) => `${p}=${end[p]}`).join(' ')}`);
    const fits = (t: Trace) => (cs.a.op === 'Wait' || (oa && matches(t.a, oa))) && (cs.b.op === 'Wait' || (ob && matches(t.b, ob)))
      && watched.every((p) => t.ends.some((w) => observedStatus(w, p) === end[p]));
    if (!legal.some(fits)) {
      const want = [...new Set(legal.map((t) => `${t.order}: A ${show(t.a)}, B ${show(t.b)}, end ${watched.map((p) => `${p}=${[...new Set(t.ends.map((w) => observedStatus(w, p)))].join('|')}`).join(' ')}`))];
      problems.push(`outcome fits no serial order: A ${cs.a.op} -> ${oa ? show(oa) : 'pending'}, B ${cs.b.op} -> ${ob ? show(ob) : 'pending'}, end ${watched.map((p) => `${p}=${end[p]}`).join(' ')}` +
        ` (from ${JSON.stringify(w0)}); legal:\n    ${want.join('\n    ')}`);
    }
  } catch (e) {
    problems.push(`case aborted: ${(e as Error).message}`);
  } finally {
    problems.push(...await subject.tearDown(execIds));
    // (i) for Wait: it answers once its process is gone.
    for (const [f, c] of [[a, cs.a], [b, cs.b]] as const) {
      if (f && c.op === 'Wait') await within(f.done, BOUND_MS, 'Wait after the teardown').catch((e: Error) => problems.push(e.message));
    }
    // (iv), (v)
    problems.push(...await leakProblems(shim.pid, base));
    await lab.events.until((envs) => eventOrderProblems(envs, lab.namespace, cid).every((p) => !p.includes('no /tasks/delete')), 5000).catch(() => undefined);
    problems.push(...eventOrderProblems(lab.events.envelopes, lab.namespace, cid));
    if (mountedUnder(path.join(lab.tmp, lab.namespace, cid)).length) problems.push('rootfs left mounted');
  }
  assert.deepEqual(problems, [], `${cs.name}:\n  ${problems.join('\n  ')}`);
}

interface Stats { n: number; held: number; nested: number; bDuringHold: number }
let containerSeq = 0;

/**
 * One container through create, start, an exec, kill and delete, so that what the daemon opens
 * once (its events connection, watches) is open before the first case measures its fds.
 */
async function warmUp(lab: ShimLab, shim: LabShim): Promise<void> {
  const s = new Subject(lab, shim, uniqueId(`il${++containerSeq}`));
  await s.setUp({ init: 'running', execs: { e1: 'running' }, killed: [] });
  assert.deepEqual(await s.tearDown(['e1']), []);
}

// ---------------------------------------------------------------------------------------------

/**
 * Cases run in lanes, each a daemon of its own serving its cases one after the other (each case
 * its own container, as a pod's shim serves several), the lanes side by side: the per-case fd and
 * child counts stay exact, and the suite fits its time on two CPUs.
 */
const LANES = Number(process.env.SHIM_INTERLEAVE_LANES ?? 3);
const cases = buildCases(FULL_STRESS);

describe('interleaving: two RPCs, the first held in runc', { concurrency: true }, () => {
  for (let lane = 0; lane < LANES; lane++) {
    describe(`lane ${lane + 1} of ${LANES}`, { concurrency: 1 }, () => {
      let lab: ShimLab;
      let shim: LabShim;
      const stats: Stats = { n: 0, held: 0, nested: 0, bDuringHold: 0 };
      let t0 = 0;
      before(async () => {
        t0 = Date.now();
        lab = await ShimLab.create(`ilv${lane}`);
        const home = uniqueId(`home${lane}`);
        shim = await lab.startShim(home, lab.bundle(home, { args: ['true'] }), { env: { SHIM_STANDBY: '0' } });
        await warmUp(lab, shim);
      });
      after(async () => { await lab.cleanup(); });
      for (const cs of cases.filter((_, i) => i % LANES === lane)) {
        const todo = KNOWN_BUGS[cs.name];
        test(cs.name, { timeout: 6 * BOUND_MS, ...(todo ? { todo } : {}) }, async (t) => {
          await runCase(lab, shim, cs, stats, (text) => t.diagnostic(text));
        });
      }
      test('figures', (t) => {
        t.diagnostic(`${stats.n} cases in ${((Date.now() - t0) / 1000).toFixed(1)} s; A held at its gate ${stats.held}, ` +
          `B's runc run inside A's ${stats.nested}, B answered while A was held ${stats.bDuringHold}`);
      });
    });
  }

  // -------------------------------------------------------------------------------------------
  // runc failing at each step, in a lane of its own

  describe('runc failing at each step', { concurrency: 1 }, () => {
    let lab: ShimLab;
    let shim: LabShim;
    before(async () => {
      lab = await ShimLab.create('ilvfail');
      const home = uniqueId('home');
      shim = await lab.startShim(home, lab.bundle(home, { args: ['true'] }), { env: { SHIM_STANDBY: '0' } });
      await warmUp(lab, shim);
    });
    after(async () => { await lab.cleanup(); });

    /**
     * Set the container up in `w`, make runc `sub` fail, run `act`, check the error carries runc's
     * message and that the process states are `expect` afterwards; then tear down and check leaks
     * and events.
     */
    async function failing(t: TestContext, sub: string, w: World, act: (s: Subject) => Promise<unknown>, expect: Record<string, string>, after?: (s: Subject) => Promise<void>) {
      const cid = uniqueId(`il${++containerSeq}`);
      const base = baseline(shim.pid);
      const s = new Subject(lab, shim, cid);
      const problems: string[] = [];
      try {
        if (sub !== 'create') await s.setUp(w);
        s.failing(sub, true);
        const o = await new Flight(within(act(s), BOUND_MS, sub)).done;
        t.diagnostic(`runc ${sub} failing: ${show(o)}`);
        if (o.ok) problems.push(`${sub}: succeeded`);
        else if (!o.message.includes(`fake runc: ${sub} failed`)) problems.push(`${sub}: error ${show(o)} does not carry runc's message`);
        s.failing(sub, false);
        for (const [p, st] of Object.entries(expect)) {
          const got = await s.status(p);
          if (got !== st) problems.push(`after the failed ${sub}: ${p} is ${got}, not ${st}`);
        }
        await after?.(s);
      } catch (e) {
        problems.push(`aborted: ${(e as Error).message}`);
      } finally {
        problems.push(...await s.tearDown(Object.keys(w.execs)));
        problems.push(...await leakProblems(shim.pid, base));
        if (sub !== 'create') {
          await lab.events.until((envs) => eventOrderProblems(envs, lab.namespace, cid).every((p) => !p.includes('no /tasks/delete')), 5000).catch(() => undefined);
          problems.push(...eventOrderProblems(lab.events.envelopes, lab.namespace, cid));
        }
        if (mountedUnder(path.join(lab.tmp, lab.namespace, cid)).length) problems.push('rootfs left mounted');
        if (fs.existsSync(path.join(lab.runcRoot(), cid))) problems.push('runc state left');
      }
      assert.deepEqual(problems, [], problems.join('\n'));
    }

    const running: World = { init: 'running', execs: {}, killed: [] };
    const T = { timeout: 6 * BOUND_MS };

    test('create: Create fails with runc\'s message, nothing registered or mounted', T, (t) =>
      failing(t, 'create', running, (s) => s.create(), { init: 'NotFound' }));
    test('start: the init stays CREATED, and Delete then works', T, (t) =>
      failing(t, 'start', { ...running, init: 'created' }, (s) => s.client.start(s.id), { init: 'CREATED' }));
    test('exec: the exec stays CREATED, its Wait answers, Delete works', T, (t) =>
      failing(t, 'exec', { ...running, execs: { e1: 'created' } }, (s) => s.client.start(s.id, 'e1'), { init: 'RUNNING', e1: 'CREATED' },
        async (s) => { await within(s.client.wait(s.id, 'e1'), BOUND_MS, 'Wait e1'); await s.client.delete(s.id, 'e1'); }));
    test('kill: the init keeps RUNNING', T, (t) =>
      failing(t, 'kill', running, (s) => s.client.kill(s.id, 9), { init: 'RUNNING' }));
    test('delete: the init stays STOPPED, a second Delete works', T, (t) =>
      failing(t, 'delete', { ...running, init: 'stopped' }, (s) => s.client.delete(s.id), { init: 'STOPPED' }));
    test('pause: the init keeps RUNNING, Pause then works', T, (t) =>
      failing(t, 'pause', running, (s) => s.client.pause(s.id), { init: 'RUNNING' }, async (s) => { await s.client.pause(s.id); }));
    test('resume: the init stays PAUSED', T, (t) =>
      failing(t, 'resume', { ...running, init: 'paused' }, (s) => s.client.resume(s.id), { init: 'PAUSED' }));
    test('update: the init keeps RUNNING', T, (t) =>
      failing(t, 'update', running, (s) => s.client.update(s.id, { cpu: { shares: 512 } }), { init: 'RUNNING' }));
    test('ps: Pids fails with runc\'s message, the init keeps RUNNING', T, (t) =>
      failing(t, 'ps', running, (s) => s.client.pids(s.id), { init: 'RUNNING' }));
  });
});
