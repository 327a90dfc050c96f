// SPDX-License-Identifier: Apache-2.0
// The single owner of child reaping in the daemon. The native addon's reaper thread waits for
// every child (runc, container processes re-parented to us as subreaper, orphans, loggers) and
// writes one record per exit into a pipe; this module reads that pipe through an epoll-backed
// socket and dispatches each exit exactly once: to the waiter of a process we spawned (runc),
// and to the subscribers (the task service), which ignore pids they don't track.
import net from 'node:net';
import { EventEmitter } from 'node:events';
import * as native from '../sys/native.js';

export interface Exit {
  pid: number;
  status: number;
  exitedAt: { seconds: bigint; nanos: number };
  /** Set on the 'exit' event when the pid was one of our own spawned children (runc, a logger). */
  spawned?: boolean;
}

export interface SpawnOptions {
  file: string;
  args: string[];
  env?: string[];
  cwd?: string;
  /** child fd i := fds[i]; -1 is /dev/null. */
  fds: number[];
  setsid?: boolean;
  pdeathsig?: number;
}

export interface Child {
  pid: number;
  exited: Promise<Exit>;
}

export class Reaper extends EventEmitter {
  private readonly waiters = new Map<number, (e: Exit) => void>();
  private pipe?: net.Socket;
  private rest: Buffer = Buffer.alloc(0);
  /** Number of exits seen, for tests and diagnostics. */
  reaped = 0;

  start(): void {
    if (this.pipe) return;
    native.setChildSubreaper();
    const fd = native.startReaper();
    this.pipe = new net.Socket({ fd, readable: true, writable: false });
    this.pipe.on('data', (chunk: Buffer) => this.onData(chunk));
    this.pipe.on('error', (err) => this.emit('error', err));
    // The pipe must not keep the daemon alive on its own; the ttrpc server does that.
    this.pipe.unref();
  }

  private onData(chunk: Buffer): void {
    const buf = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    const { records, rest } = native.parseExitRecords(buf);
    this.rest = rest;
    for (const r of records) this.dispatch(r);
  }

  private dispatch(e: Exit): void {
    this.reaped++;
    const w = this.waiters.get(e.pid);
    if (w) {
      this.waiters.delete(e.pid);
      w(e);
      e = { ...e, spawned: true };
    }
    this.emit('exit', e);
  }

  /**
   * Spawn a child through the addon. The waiter is registered synchronously, before the event
   * loop can read the child's exit record, so a child that exits at once is never missed.
   */
  spawn(opts: SpawnOptions): Child {
    const pid = native.spawn({
      file: opts.file,
      args: opts.args,
      env: opts.env ?? envList(process.env),
      cwd: opts.cwd,
      fds: opts.fds,
      setsid: opts.setsid,
      pdeathsig: opts.pdeathsig,
    });
    const exited = new Promise<Exit>((resolve) => this.waiters.set(pid, resolve));
    return { pid, exited };
  }
}

export function envList(env: NodeJS.ProcessEnv, drop: (key: string) => boolean = () => false): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !drop(k)) out.push(`${k}=${v}`);
  return out;
}
