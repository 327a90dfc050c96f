// SPDX-License-Identifier: Apache-2.0
// The Task service (containerd.task.v2.Task and v3): decode, find the container and process,
// check the process's state, call the container, answer, publish. One daemon may serve several
// containers (a Kubernetes pod shares one shim), so all state is a map of containers, each
// with its processes. Request path: ttrpc → service → container → runc / io / cgroups; exits
// come from the reaper through the exit matcher; events go out through TaskEvents.
import type { Logger } from '../log/logger.js';
import type * as T from '../gen/containerd/task/v2/shim.js';
import { StateResponse } from '../gen/containerd/task/v2/shim.js';
import { Status as TaskStatus } from '../gen/containerd/types/task.js';
import { ProcessDetails, CheckpointOptions } from '../gen/containerd/runc/v1/runc.js';
import { TtrpcError, Code, notFound, alreadyExists, failedPrecondition } from '../ttrpc/index.js';
import type { Reaper, Exit } from '../reaper/reaper.js';
import type { EventSink } from '../events/publisher.js';
import { TaskEvents } from '../events/task-events.js';
import { Container, killError } from './container.js';
import { Process } from './process.js';
import { ExitMatcher } from './exits.js';
import type { ProcState } from './state.js';
import { decodeOptions, writeBundleOptions, typeName } from '../runc/options.js';
import { validateId } from './identifiers.js';
import { ConsoleIO } from '../io/console.js';
import { OomWatcher } from '../cgroups/oom.js';

const SIGKILL = 9;

const STATUS: Record<ProcState, TaskStatus> = {
  created: TaskStatus.CREATED, running: TaskStatus.RUNNING, pausing: TaskStatus.PAUSING,
  paused: TaskStatus.PAUSED, stopped: TaskStatus.STOPPED, deleted: TaskStatus.STOPPED,
};

type Empty = Record<string, never>;

/**
 * Ordering without a service-wide lock (as containerd v2.x's runc shim, task/service.go): a
 * process's state-changing RPCs are serialized by its own lock (`Process.lock`); its exit is
 * published after its own start event (`Process.starting`), an init's exit after the exits of
 * the execs that were started (`Container.whenExecsDone`), and once the reaper reports an
 * init's exit no exec may start (FailedPrecondition). No RPC waits on another process's runc
 * call, and read-only RPCs (State, Wait, Pids, Stats, Connect) on none.
 */
export class TaskService {
  readonly containers = new Map<string, Container>();
  private readonly exits = new ExitMatcher();
  /** Container ids whose Create is running (not yet in `containers`). */
  private readonly creating = new Set<string>();
  /** The container of each process the reaper may report. */
  private readonly owner = new WeakMap<Process, Container>();
  private readonly events: TaskEvents;
  private readonly oom: OomWatcher;
  private readonly exitListener = (e: Exit) => this.onExit(e);

  constructor(
    private readonly namespace: string,
    private readonly reaper: Reaper,
    sink: EventSink,
    private readonly log: Logger,
    private readonly onShutdown: () => void,
  ) {
    this.events = new TaskEvents(sink);
    reaper.on('exit', this.exitListener);
    this.oom = new OomWatcher({
      onError: (id, err) => this.log.warn({ id, err: (err as Error)?.message }, 'oom watch failed'),
      onStop: (id, reason) => this.log.debug({ id, reason }, 'oom watch stopped'),
    });
    this.oom.on('oom', (id: string) => {
      this.log.info({ id }, 'container OOM');
      this.events.oom(id);
    });
  }

  private warner(id: string): (msg: string, err: string) => void {
    return (msg, err) => this.log.warn({ id, err }, msg);
  }

  private container(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw notFound('container not created');
    return c;
  }

  private process(c: Container, execId: string): Process {
    if (!execId) return c.init;
    const p = c.execs.get(execId);
    if (!p) throw notFound(`process does not exist ${execId}`);
    return p;
  }

  /** Run a state-changing RPC on one process, under that process's lock. */
  private async locked<R>(r: { id: string; execId?: string }, fn: (c: Container, p: Process) => Promise<R>): Promise<R> {
    const c = this.container(r.id);
    const p = this.process(c, r.execId ?? '');
    // A call that waited while another deleted the process gets the deleted state's error.
    return p.lock.run(() => fn(c, p));
  }

  // ---- lifecycle ----

  async create(r: T.CreateTaskRequest): Promise<T.CreateTaskResponse> {
    validateId('container id', r.id);
    if (this.containers.has(r.id) || this.creating.has(r.id)) throw alreadyExists(`container ${r.id}`);
    this.creating.add(r.id);
    try {
      const opts = decodeOptions(r.options);
      writeBundleOptions(r.bundle, opts);
      const c = new Container(r.id, r.bundle, opts, this.namespace, r.rootfs, {
        stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal,
      }, this.reaper);
      this.owner.set(c.init, c);
      if (r.checkpoint) c.restoreFrom = { checkpoint: r.checkpoint, parent: r.parentCheckpoint };
      // The init's exit (it can die before `runc start`) is published after /tasks/create.
      const started = c.init.beginStart();
      this.exits.begin();
      let pid: number;
      try {
        pid = await c.create();
        if (pid) {
          this.attach(c, c.init, pid);
          c.locateCgroup(this.warner(c.id));
          // Watch before the process runs: an OOM right after `runc start` must not be missed.
          c.watchOom(this.oom, this.warner(c.id));
        }
        this.containers.set(r.id, c);
        this.events.create({
          containerId: r.id, bundle: r.bundle, rootfs: r.rootfs,
          io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
          checkpoint: r.checkpoint, pid,
        });
      } finally {
        this.exits.end();
        started();
      }
      this.log.info({ id: r.id, pid }, 'container created');
      return { pid };
    } finally {
      this.creating.delete(r.id);
    }
  }

  /** Record a pid; if the process already exited (fast exec), deliver that exit (after its start). */
  private attach(c: Container, p: Process, pid: number): void {
    p.attach(pid);
    const early = this.exits.track(p);
    if (early) this.exitMatched(c, p, early);
  }

  async start(r: T.StartRequest): Promise<T.StartResponse> {
    return this.locked(r, async (c, p) => {
      if (p.isInit) return { pid: await this.startInit(c, p) };
      return { pid: await this.startExec(c, p) };
    });
  }

  private async startInit(c: Container, p: Process): Promise<number> {
    p.must('start');
    const restoring = !!c.restoreFrom;
    if (restoring) this.exits.begin();
    const started = p.beginStart();
    try {
      const pid = await c.start();
      if (restoring) this.attach(c, p, pid);
      if (p.state === 'created') p.moveTo('running');
      c.locateCgroup(this.warner(c.id));
      c.watchOom(this.oom, this.warner(c.id));
      this.events.start(c.id, p.pid);
    } finally {
      if (restoring) this.exits.end();
      started();
    }
    return p.pid;
  }

  private async startExec(c: Container, p: Process): Promise<number> {
    // containerd v2.x task/service.go Start: once the init's exit is known, no exec starts.
    if (c.initExited) throw failedPrecondition(`container ${c.id} init process is not running`);
    p.must('start');
    c.init.must('exec');
    c.execStarting();
    this.exits.begin();
    const started = p.beginStart();
    try {
      let pid: number;
      try {
        pid = await c.startExec(p, c.execSpecs.get(p) ?? {});
      } catch (e) {
        p.startFailed();
        c.execDone();
        throw e;
      }
      c.execSpecs.delete(p);
      if (p.state === 'created') p.moveTo('running');
      this.attach(c, p, pid);
      this.events.execStarted(c.id, p.execId, pid);
      return pid;
    } finally {
      this.exits.end();
      started();
    }
  }

  async exec(r: T.ExecProcessRequest): Promise<Empty> {
    const c = this.container(r.id);
    validateId('exec id', r.execId);
    if (c.reserved.has(r.execId)) throw alreadyExists(`id ${r.execId}`);
    c.reserved.add(r.execId);
    try {
      c.init.must('exec');
      let spec: Record<string, unknown>;
      try {
        spec = JSON.parse(Buffer.from(r.spec?.value ?? new Uint8Array()).toString('utf8')) as Record<string, unknown>;
      } catch (e) {
        throw new TtrpcError(Code.InvalidArgument, `invalid exec process spec: ${(e as Error).message}`);
      }
      if (!spec || typeof spec !== 'object') throw new TtrpcError(Code.InvalidArgument, 'invalid exec process spec');
      spec.terminal = r.terminal;
      const p = new Process(r.id, r.execId, { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal });
      this.owner.set(p, c);
      c.execSpecs.set(p, spec);
      c.execs.set(r.execId, p);
    } catch (e) {
      c.reserved.delete(r.execId);
      throw e;
    }
    this.events.execAdded(c.id, r.execId);
    return {};
  }

  async delete(r: T.DeleteRequest): Promise<T.DeleteResponse> {
    return this.locked(r, async (c, p) => {
      p.must('delete');
      if (p.isInit) {
        const deleting = c.deleteInit();
        p.deletion = deleting.then(() => true, () => false);
        try {
          await deleting;
        } finally {
          // An exit reaped during `runc delete` is published before /tasks/delete (deliverExit).
          await p.delivering;
          p.deletion = undefined;
        }
        p.moveTo('deleted');
        this.exits.untrack(p);
        p.releasePidfd();
        this.oom.remove(c.id);
        this.containers.delete(c.id);
        this.events.delete({ containerId: c.id, pid: p.pid, exitStatus: p.exitStatus, exitedAt: p.exitedAt });
        this.log.info({ id: c.id }, 'container deleted');
      } else {
        await c.deleteExec(p);
        // An exec deleted before it ever ran has no exit to wait for: release its waiters
        // (status 0, zero time) rather than leave their calls open for the shim's lifetime.
        if (!p.hasExited) p.releaseWaiters();
        p.moveTo('deleted');
        this.exits.untrack(p);
        c.execs.delete(p.execId);
        c.reserved.delete(p.execId);
      }
      return { pid: p.pid, exitStatus: p.exitStatus, exitedAt: p.exitedAt };
    });
  }

  async kill(r: T.KillRequest): Promise<Empty> {
    return this.locked(r, async (c, p) => {
      p.must('kill');
      if (p.isInit) {
        await c.killInit(r.signal, r.all);
        return {};
      }
      try {
        p.signal(r.signal);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ESRCH') throw notFound('exec kill error: process already finished');
        throw killError(e);
      }
      return {};
    });
  }

  async wait(r: T.WaitRequest): Promise<T.WaitResponse> {
    const p = this.process(this.container(r.id), r.execId);
    await p.exited;
    return { exitStatus: p.exitStatus, exitedAt: p.exitedAt };
  }

  async state(r: T.StateRequest): Promise<T.StateResponse> {
    const c = this.container(r.id);
    const p = this.process(c, r.execId);
    let st = p.state;
    if (!p.isInit && (c.init.state === 'paused' || c.init.state === 'pausing')) st = c.init.state;
    return StateResponse.fromPartial({
      id: p.isInit ? c.id : p.execId,
      bundle: c.bundle,
      pid: p.pid,
      status: STATUS[st],
      stdin: p.stdio.stdin, stdout: p.stdio.stdout, stderr: p.stdio.stderr, terminal: p.stdio.terminal,
      exitStatus: p.exitStatus,
      exitedAt: p.exitedAt,
    });
  }

  async pids(r: T.PidsRequest): Promise<T.PidsResponse> {
    const procs = await this.container(r.id).pids();
    return {
      processes: procs.map(({ pid, execId }) => ({
        pid,
        info: execId === undefined ? undefined : {
          typeUrl: 'containerd.runc.v1.ProcessDetails',
          value: ProcessDetails.encode({ execId }).finish(),
        },
      })),
    };
  }

  async pause(r: T.PauseRequest): Promise<Empty> {
    return this.locked({ id: r.id }, async (c, p) => {
      p.must('pause');
      p.moveTo('pausing');
      try {
        await c.pause();
      } catch (e) {
        if (p.state === 'pausing') p.moveTo('running');
        throw e;
      }
      // An exit may have come meanwhile (stopped): then there is nothing paused to report.
      if (p.state === 'pausing') p.moveTo('paused');
      this.events.paused(c.id);
      return {};
    });
  }

  async resume(r: T.ResumeRequest): Promise<Empty> {
    return this.locked({ id: r.id }, async (c, p) => {
      p.must('resume');
      await c.resume();
      if (p.state === 'paused') p.moveTo('running');
      this.events.resumed(c.id);
      return {};
    });
  }

  async update(r: T.UpdateTaskRequest): Promise<Empty> {
    return this.locked({ id: r.id }, async (c, p) => {
      p.must('update');
      await c.update(Buffer.from(r.resources?.value ?? new Uint8Array()).toString('utf8'));
      return {};
    });
  }

  async closeIO(r: T.CloseIORequest): Promise<Empty> {
    const c = this.container(r.id);
    let p: Process;
    try {
      p = this.process(c, r.execId);
    } catch (e) {
      // The reference returns this lookup error without converting it: code Unknown.
      throw new TtrpcError(Code.Unknown, (e as Error).message);
    }
    try {
      p.io?.closeStdin();
    } catch (e) {
      throw new Error(`close stdin: ${(e as Error).message}`, { cause: e });
    }
    return {};
  }

  async resizePty(r: T.ResizePtyRequest): Promise<Empty> {
    return this.locked(r, async (_c, p) => {
      if (!p.isInit) p.must('resize');
      if (p.io instanceof ConsoleIO) p.io.resize(r.width, r.height);
      return {};
    });
  }

  async stats(r: T.StatsRequest): Promise<T.StatsResponse> {
    return { stats: this.container(r.id).stats() };
  }

  async checkpoint(r: T.CheckpointTaskRequest): Promise<Empty> {
    return this.locked({ id: r.id }, async (c, p) => {
      p.must('checkpoint');
      let opts = CheckpointOptions.fromPartial({});
      if (r.options && r.options.value.length) {
        if (typeName(r.options.typeUrl) !== 'containerd.runc.v1.CheckpointOptions') {
          throw new TtrpcError(Code.InvalidArgument, `unsupported checkpoint options type ${r.options.typeUrl}: invalid argument`);
        }
        opts = CheckpointOptions.decode(r.options.value);
      }
      await c.checkpoint(r.path, opts);
      // No event: the reference runc shim never publishes /tasks/checkpointed.
      return {};
    });
  }

  async connect(r: T.ConnectRequest): Promise<T.ConnectResponse> {
    const c = this.containers.get(r.id);
    return { shimPid: process.pid, taskPid: c?.init.pid ?? 0, version: '' };
  }

  /**
   * Stop hearing of exits and OOMs: the service is done (its daemon serves other sockets, or
   * exits). Only after Shutdown, when no container is left.
   */
  dispose(): void {
    this.reaper.removeListener('exit', this.exitListener);
    this.oom.close();
  }

  async shutdown(_r: T.ShutdownRequest): Promise<Empty> {
    // A no-op while any container remains (containerd 2.x sends a pod's containers to one shim
    // and no Shutdown after their Delete) or is being created.
    if (this.containers.size > 0 || this.creating.size > 0) return {};
    // Reply first; the daemon then tears down.
    setImmediate(() => this.onShutdown());
    return {};
  }

  // ---- exits ----

  private onExit(e: Exit): void {
    const p = this.exits.match(e);
    const c = p && this.owner.get(p);
    if (p && c) this.exitMatched(c, p, e);
  }

  /** The reaper's exit of `p`: what must be known at once is set now, the event follows. */
  private exitMatched(c: Container, p: Process, e: Exit): void {
    if (p.isInit) c.initExited = true;
    p.delivering = this.deliverExit(c, p, e).catch((err: unknown) => {
      this.log.error({ id: p.id, execId: p.execId || undefined, err: (err as Error).message }, 'exit handling failed');
    });
  }

  private async deliverExit(c: Container, p: Process, e: Exit): Promise<void> {
    await p.starting;
    try {
      await this.publishExit(c, p, e);
    } finally {
      if (!p.isInit) c.execDone();
    }
  }

  private async publishExit(c: Container, p: Process, e: Exit): Promise<void> {
    if (p.state === 'deleted') return; // exits after Delete are ignored
    const facts = { containerId: p.id, id: p.isInit ? p.id : p.execId, pid: p.pid };
    if (p.deletion && await p.deletion) {
      // Reaped while Delete ran (runc delete kills a created init): reported, not recorded.
      p.releaseWaiters();
      this.events.exit({ ...facts, exitStatus: e.status, exitedAt: p.exitedAt });
      return;
    }
    if (p.isInit) {
      if (!c.ownPidNamespace) {
        // Shared pid namespace: nothing kills the container's other processes for us.
        await c.runc.kill(c.id, SIGKILL, true).catch((err: unknown) => {
          this.log.warn({ id: c.id, err: (err as Error).message }, 'OCI runtime killall failed');
        });
      }
      // The init's exit is the container's last: after every started exec's.
      await c.whenExecsDone();
      if (p.state === 'paused') await c.runc.resume(c.id).catch(() => undefined);
      // The client closes the init's fifos once it has the exit: its output goes first.
      await c.initOutputCopied();
    }
    p.setExited(e.status, { seconds: e.exitedAt.seconds, nanos: e.exitedAt.nanos });
    // An OOM kill the watch has not reported yet goes out first: /tasks/oom before /tasks/exit
    // (containerd v2.3.4 task/service.go reads memory.events once more before an init's exit).
    this.oom.flush(c.id);
    this.events.exit({ ...facts, exitStatus: p.exitStatus, exitedAt: p.exitedAt });
    this.log.info({ id: p.id, execId: p.execId || undefined, pid: p.pid, status: e.status }, 'process exited');
  }
}
