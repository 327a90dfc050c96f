// A container: its bundle, its runc, its init process and its execs. This is where a Task RPC
// becomes runc calls and stdio plumbing; the service (service.ts) owns lookups, locks and events.
import fs from 'node:fs';
import path from 'node:path';
import type { Options } from '../gen/containerd/runc/v1/runc.js';
import type { Mount } from '../gen/containerd/types/types.js';
import { Runc, RuncError } from '../runc/runc.js';
import { runtimeError } from '../runc/logjson.js';
import type { Reaper } from '../reaper/reaper.js';
import { createProcessIO, type ProcessIO } from '../io/processio.js';
import { ConsoleIO } from '../io/console.js';
import { mountAll, unmountAll } from '../sys/mount.js';
import { TtrpcError, Code } from '../ttrpc/index.js';
import { Process, type StdioSpec } from './process.js';
import { runcCommand, runcRoot } from './options.js';

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
    reaper: Reaper,
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

  /** Mount the rootfs, set up stdio and `runc create`. Undoes everything on failure. */
  async create(): Promise<number> {
    if (this.mounts.length) {
      fs.mkdirSync(this.rootfs, { recursive: true, mode: 0o711 });
      mountAll(this.mounts.map((m) => ({ ...m })), this.rootfs);
      this.rootfsMounted = true;
    }
    const init = this.init;
    try {
      init.io = this.newIO(init.stdio, 'failed to create init process I/O');
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
        throw new Error(`failed to start io pipe copy: ${(e as Error).message}`);
      }
      return readPid(pidFile);
    } catch (e) {
      init.io?.close();
      this.unmountRootfs();
      throw e;
    }
  }

  async start(): Promise<void> {
    try {
      await this.runc.start(this.id);
    } catch (e) {
      throw await runtimeError(this.runc.cfg.log, 'OCI runtime start failed', e);
    }
  }

  /** `runc exec --detach`; returns the exec's pid. */
  async startExec(p: Process, spec: unknown): Promise<number> {
    p.io = this.newIO(p.stdio, 'failed to create exec process I/O');
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
      throw new Error(`failed to start io pipe copy: ${(e as Error).message}`);
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
      this.unmountRootfs(true);
    } catch (e) {
      throw new Error(`failed rootfs umount: ${(e as Error).message}`);
    }
  }

  async deleteExec(p: Process): Promise<void> {
    await p.io?.drain(IO_DRAIN_MS);
    p.io?.close();
    fs.rmSync(path.join(this.bundle, `${p.execId}.pid`), { force: true });
  }

  private newIO(stdio: StdioSpec, context: string): ProcessIO {
    try {
      const cfg = { ...stdio, uid: this.options.ioUid, gid: this.options.ioGid };
      return stdio.terminal ? new ConsoleIO(cfg) : createProcessIO(cfg);
    } catch (e) {
      throw new Error(`${context}: ${(e as Error).message}`);
    }
  }

  private unmountRootfs(strict = false): void {
    if (!this.rootfsMounted) return;
    try {
      unmountAll(this.rootfs);
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

/** runc kill failures as the reference classifies them (task-api.md §5 Kill). */
export function killError(e: unknown): TtrpcError {
  const text = e instanceof RuncError ? `${e.message} ${e.output}` : String((e as Error)?.message ?? e);
  const lower = text.toLowerCase();
  if (lower.includes('container not running') || lower.includes('no such process') || lower.includes('os: process already finished')) {
    return new TtrpcError(Code.NotFound, 'process already finished: not found');
  }
  if (lower.includes('does not exist')) return new TtrpcError(Code.NotFound, 'no such container: not found');
  return new TtrpcError(Code.Unknown, `unknown error after kill: ${(e as Error)?.message ?? e}`);
}
