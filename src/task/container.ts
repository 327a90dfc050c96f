// SPDX-License-Identifier: Apache-2.0
// A container: its bundle, its runc, its init process and its execs, its cgroup and OOM watch.
// This is where a Task RPC becomes runc calls, stdio plumbing and cgroup reads; the service
// (service.ts) owns lookups, the processes' locks and state checks, and the events.
import fs from 'node:fs';
import path from 'node:path';
import type { Options, CheckpointOptions } from '../gen/containerd/runc/v1/runc.js';
import type { Mount } from '../gen/containerd/types/types.js';
import { Runc, RuncError } from '../runc/runc.js';
import { runtimeError } from '../runc/logjson.js';
import type { Reaper } from '../reaper/reaper.js';
import { createProcessIO, type ProcessIO } from '../io/processio.js';
import { ConsoleIO } from '../io/console.js';
import { CgroupHandle, CgroupNotFoundError } from '../cgroups/stats.js';
import type { OomWatcher } from '../cgroups/oom.js';
import type { Any } from '../gen/google/protobuf/any.js';
import { mountAll, unmountAllAsync } from '../sys/mount.js';
import { TtrpcError, Code, notFound } from '../ttrpc/index.js';
import { Process, type StdioSpec } from './process.js';
import { runcCommand, runcRoot } from '../runc/options.js';

const IO_DRAIN_MS = 2000;

interface OciSpec {
  process?: Record<string, unknown>;
  linux?: { namespaces?: { type?: string; path?: string }[] };
  annotations?: Record<string, string>;
}

export class Container {
  readonly init: Process;
  readonly execs = new Map<string, Process>();
  /** Exec ids being added (Exec in progress) or present. */
  readonly reserved = new Set<string>();
  readonly runc: Runc;
  readonly rootfs: string;
  private rootfsMounted = false;
  /** True when the container has a private pid namespace: the kernel then kills its execs. */
  readonly ownPidNamespace: boolean;

  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly options: Options,
    readonly namespace: string,
    readonly mounts: Mount[],
    stdio: StdioSpec,
    private readonly reaper: Reaper,
  ) {
    this.init = new Process(id, '', stdio);
    this.rootfs = path.join(bundle, 'rootfs');
    this.runc = new Runc({
      command: runcCommand(options),
      root: runcRoot(options, namespace),
      log: path.join(bundle, 'log.json'),
      systemdCgroup: options.systemdCgroup,
      criu: options.criuPath || undefined,
    }, reaper);
    this.ownPidNamespace = hasOwnPidNamespace(readSpec(bundle));
  }

  /** The container's cgroup, found from the init pid (absent → Stats is NotFound, no OOM watch). */
  cgroup?: CgroupHandle;

  /** Find the cgroup from the init pid; failure only means no stats and no OOM watch. */
  locateCgroup(warn: (msg: string, err: string) => void): void {
    if (this.cgroup || !this.init.pid) return;
    try {
      this.cgroup = CgroupHandle.forPid(this.init.pid);
    } catch (e) {
      warn('loading cgroup', (e as Error).message);
    }
  }

  /** Watch the cgroup for OOM kills (once; before the process runs, so none is missed). */
  watchOom(oom: OomWatcher, warn: (msg: string, err: string) => void): void {
    if (!this.cgroup || oom.has(this.id)) return;
    try {
      oom.add(this.id, this.cgroup);
    } catch (e) {
      warn('add cg to OOM monitor', (e as Error).message);
    }
  }

  /** Stats: the cgroup's metrics, read synchronously (cheaper than thread-pool round trips). */
  stats(): Any {
    if (!this.cgroup) throw notFound('cgroup does not exist');
    try {
      return this.cgroup.statsSync();
    } catch (e) {
      if (e instanceof CgroupNotFoundError) throw notFound('cgroup does not exist');
      throw e;
    }
  }

  async pause(): Promise<void> {
    try {
      await this.runc.pause(this.id);
    } catch (e) {
      throw await runtimeError(this.runc.cfg.log, 'OCI runtime pause failed', e);
    }
  }

  async resume(): Promise<void> {
    try {
      await this.runc.resume(this.id);
    } catch (e) {
      throw await runtimeError(this.runc.cfg.log, 'OCI runtime resume failed', e);
    }
  }

  /** `runc update` with the LinuxResources JSON containerd sent. */
  async update(json: string): Promise<void> {
    try {
      JSON.parse(json);
    } catch (e) {
      throw new TtrpcError(Code.InvalidArgument, `invalid resources: ${(e as Error).message}`);
    }
    await this.runc.update(this.id, json);
  }

  /** The container's pids, each with the exec id it belongs to (if any). */
  async pids(): Promise<{ pid: number; execId?: string }[]> {
    // The reference returns runc's (go-runc's) error as is, code Unknown.
    const pids = await this.runc.ps(this.id);
    const execByPid = new Map<number, string>();
    for (const p of this.execs.values()) if (p.pid) execByPid.set(p.pid, p.execId);
    return pids.map((pid) => ({ pid, execId: execByPid.get(pid) }));
  }

  /** The process spec of each exec added and not yet started. */
  readonly execSpecs = new WeakMap<Process, unknown>();

  /** Set as soon as the reaper reports the init's exit: from then on no exec may start. */
  initExited = false;
  /** Execs started (or starting) whose exit has not been published yet. */
  private runningExecs = 0;
  private execsIdle: (() => void)[] = [];

  execStarting(): void { this.runningExecs++; }

  execDone(): void {
    if (--this.runningExecs > 0) return;
    this.runningExecs = 0;
    for (const resolve of this.execsIdle.splice(0)) resolve();
  }

  /** Resolves once no started exec's exit is still to be published. */
  whenExecsDone(): Promise<void> {
    if (this.runningExecs === 0) return Promise.resolve();
    return new Promise((resolve) => this.execsIdle.push(resolve));
  }

  /** Set by Create with a checkpoint: Start then runs `runc restore` instead of `runc start`. */
  restoreFrom?: { checkpoint: string; parent: string };

  /**
   * Mount the rootfs, set up stdio and `runc create` (or only record the restore parameters).
   * Returns the init pid (0 when restoring). Undoes everything on failure.
   */
  async create(): Promise<number> {
    if (this.mounts.length) {
      fs.mkdirSync(this.rootfs, { recursive: true, mode: 0o711 });
      mountAll(this.mounts.map((m) => ({ ...m })), this.rootfs);
      this.rootfsMounted = true;
    }
    const init = this.init;
    try {
      init.io = await this.newIO(init, 'failed to create init process I/O');
      if (this.restoreFrom) return 0;
      const pidFile = path.join(this.bundle, 'init.pid');
      try {
        await this.runc.create(this.id, this.bundle, {
          pidFile,
          consoleSocket: init.io instanceof ConsoleIO ? init.io.socketPath : undefined,
          noPivot: this.options.noPivotRoot,
          noNewKeyring: this.options.noNewKeyring,
          stdio: init.io.stdio,
        });
      } catch (e) {
        throw await runtimeError(this.runc.cfg.log, 'OCI runtime create failed', e);
      }
      try {
        await init.io.start();
      } catch (e) {
        await this.runc.delete(this.id, true).catch(() => undefined);
        throw ioStartError(init.io, e);
      }
      return readPid(pidFile);
    } catch (e) {
      init.io?.close();
      await this.unmountRootfs();
      throw e;
    }
  }

  /** `runc start`, or `runc restore` for a checkpointed create; returns the init pid. */
  async start(): Promise<number> {
    if (!this.restoreFrom) {
      try {
        await this.runc.start(this.id);
      } catch (e) {
        throw await runtimeError(this.runc.cfg.log, 'OCI runtime start failed', e);
      }
      return this.init.pid;
    }
    const io = this.init.io!;
    const pidFile = path.join(this.bundle, 'init.pid');
    try {
      await this.runc.restore(this.id, this.bundle, {
        imagePath: this.restoreFrom.checkpoint,
        workPath: this.options.criuWorkPath || path.join(this.bundle, 'work'),
        parentPath: this.restoreFrom.parent || undefined,
        pidFile,
        consoleSocket: io instanceof ConsoleIO ? io.socketPath : undefined,
        noPivot: this.options.noPivotRoot,
        stdio: io.stdio,
      });
    } catch (e) {
      throw await runtimeError(this.runc.cfg.log, 'OCI runtime restore failed', e);
    }
    this.restoreFrom = undefined;
    await io.start();
    return readPid(pidFile);
  }

  /** runc checkpoint; on failure keep CRIU's dump.log in the bundle and point at it. */
  async checkpoint(imagePath: string, o: CheckpointOptions): Promise<void> {
    const work = o.workPath || path.join(this.bundle, 'work', 'criu-work');
    try {
      await this.runc.checkpoint(this.id, {
        imagePath, workPath: work, leaveRunning: !o.exit, tcpEstablished: o.openTcp,
        extUnixSk: o.externalUnixSockets, shellJob: o.terminal, fileLocks: o.fileLocks,
        emptyNamespaces: o.emptyNamespaces, parentPath: o.parentPath || undefined,
      });
    } catch (e) {
      const dumpLog = path.join(this.bundle, 'criu-dump.log');
      try { fs.copyFileSync(path.join(work, 'dump.log'), dumpLog); } catch { /* no log */ }
      const first = ((e as Error).message.split('\n')[0] ?? '').trim();
      throw new Error(`${first} path= ${dumpLog}`, { cause: e });
    } finally {
      if (!o.workPath) fs.rmSync(work, { recursive: true, force: true });
    }
  }

  /** `runc exec --detach`; returns the exec's pid. */
  async startExec(p: Process, spec: unknown): Promise<number> {
    // Go's shim words an exec's I/O failure as the init's (pkg/process/exec.go, 1.6 to 2.3).
    p.io = await this.newIO(p, 'failed to create init process I/O');
    const pidFile = path.join(this.bundle, `${p.execId}.pid`);
    try {
      await this.runc.exec(this.id, spec, {
        pidFile,
        consoleSocket: p.io instanceof ConsoleIO ? p.io.socketPath : undefined,
        stdio: p.io.stdio,
      });
    } catch (e) {
      p.io.close();
      throw await runtimeError(this.runc.cfg.log, 'OCI runtime exec failed', e);
    }
    try {
      await p.io.start();
    } catch (e) {
      p.io.close();
      throw ioStartError(p.io, e);
    }
    return readPid(pidFile);
  }

  async killInit(signal: number, all: boolean): Promise<void> {
    try {
      await this.runc.kill(this.id, signal, all);
    } catch (e) {
      throw killError(e);
    }
  }

  /**
   * Waits (at most IO_DRAIN_MS) until the init's output is copied out and the client has read
   * it, to be called before its exit is published. containerd's client stops reading the init's
   * stdout fifo as soon as it has the exit, before it sends Delete (client task.go Delete:
   * io.Close before io.Wait in 1.6.20, io.Cancel closes the fifos from 1.7.2 on), so whatever
   * was still in our copy or the fifo was lost. An exec needs no gate: its client sends
   * DeleteProcess, which drains the same way, before closing.
   */
  async initOutputCopied(): Promise<void> {
    await this.init.io?.drain(IO_DRAIN_MS);
  }

  /** Delete of the init: drain output, `runc delete`, release stdio, unmount the rootfs. */
  async deleteInit(): Promise<void> {
    await this.init.io?.drain(IO_DRAIN_MS);
    let err: Error | undefined;
    try {
      await this.runc.delete(this.id);
    } catch (e) {
      const out = e instanceof RuncError ? e.output : String(e);
      if (!out.includes('does not exist')) err = await runtimeError(this.runc.cfg.log, 'failed to delete task', e);
    }
    this.init.io?.close();
    if (err) throw err;
    try {
      await this.unmountRootfs(true);
    } catch (e) {
      throw new Error(`failed rootfs umount: ${(e as Error).message}`, { cause: e });
    }
  }

  async deleteExec(p: Process): Promise<void> {
    await p.io?.drain(IO_DRAIN_MS);
    p.io?.close();
    try { fs.unlinkSync(path.join(this.bundle, `${p.execId}.pid`)); } catch { /* never written */ }
  }

  private async newIO(p: Process, context: string): Promise<ProcessIO> {
    let io: ProcessIO | undefined;
    try {
      const cfg = { ...p.stdio, uid: this.options.ioUid, gid: this.options.ioGid };
      io = createProcessIO(cfg, { processId: p.execId || p.id, namespace: this.namespace, reaper: this.reaper });
      await io.prepare?.();
      return io;
    } catch (e) {
      io?.close();
      throw new Error(`${context}: ${(e as Error).message}`, { cause: e });
    }
  }

  private async unmountRootfs(strict = false): Promise<void> {
    if (!this.rootfsMounted) return;
    try {
      await unmountAllAsync(this.rootfs);
      this.rootfsMounted = false;
    } catch (e) {
      if (strict) throw e;
    }
  }
}

function readSpec(bundle: string): OciSpec | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as OciSpec;
  } catch {
    return undefined;
  }
}

function hasOwnPidNamespace(spec: OciSpec | undefined): boolean {
  return !!spec?.linux?.namespaces?.some((n) => n.type === 'pid' && !n.path);
}

function readPid(file: string): number {
  const text = fs.readFileSync(file, 'utf8').trim();
  const pid = Number.parseInt(text, 10);
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new Error(`failed to retrieve OCI runtime container pid: bad pid file ${file}`);
  return pid;
}

/**
 * A failed start of the copies: the pipe copies' errors get go's `failed to start io pipe copy`
 * prefix; a console's errors (`failed to retrieve console master`, `failed to start console
 * copy`) already say what failed, and Go returns them as they are.
 */
function ioStartError(io: ProcessIO, e: unknown): Error {
  if (io instanceof ConsoleIO) return e instanceof Error ? e : new Error(String(e));
  return new Error(`failed to start io pipe copy: ${(e as Error).message}`);
}

/** runc kill failures as the reference classifies them (containerd v1.7.0 pkg/process/utils.go checkKillError). */
export function killError(e: unknown): TtrpcError {
  const text = e instanceof RuncError ? `${e.message} ${e.output}` : String((e as Error)?.message ?? e);
  const lower = text.toLowerCase();
  if (lower.includes('container not running') || lower.includes('no such process') || lower.includes('os: process already finished')) {
    return new TtrpcError(Code.NotFound, 'process already finished: not found');
  }
  if (lower.includes('does not exist')) return new TtrpcError(Code.NotFound, 'no such container: not found');
  return new TtrpcError(Code.Unknown, `unknown error after kill: ${(e as Error)?.message ?? e}`);
}
