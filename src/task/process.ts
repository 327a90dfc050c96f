// SPDX-License-Identifier: Apache-2.0
// One process the shim tracks: a container's init or an exec. Holds its pid (and a pidfd, so a
// late signal can never reach a recycled pid), its stdio, its state and its exit.
import fs from 'node:fs';
import * as native from '../sys/native.js';
import type { ProcessIO } from '../io/processio.js';
import type { Timestamp } from '../gen/google/protobuf/timestamp.js';
import { GO_ZERO_TIME } from '../events/timestamp.js';
import { canTransition, checkExec, checkInit, type ExecOp, type InitOp, type ProcState } from './state.js';
import { Mutex } from './mutex.js';

export interface StdioSpec { stdin: string; stdout: string; stderr: string; terminal: boolean }

export class Process {
  pid = 0;
  private pidfd = -1;
  private current: ProcState = 'created';
  /**
   * Held by every RPC that changes this process's state (Start, Delete, Kill, Pause, Resume,
   * Update, Checkpoint, ResizePty), as Go's per-process mutex: two of them never interleave on
   * one process, and never wait on another process's. Read-only RPCs never take it.
   */
  readonly lock = new Mutex();
  exitStatus = 0;
  exitedAt: Timestamp = GO_ZERO_TIME;
  io?: ProcessIO;
  private resolveExit!: () => void;
  /** Resolves once the process exited (or, for an exec, once its start failed). */
  readonly exited: Promise<void>;

  constructor(readonly id: string, readonly execId: string, readonly stdio: StdioSpec) {
    this.exited = new Promise((r) => { this.resolveExit = r; });
  }

  get isInit(): boolean { return this.execId === ''; }

  get state(): ProcState { return this.current; }

  /** Throw the reference's error unless the current state allows `op` (state.ts). */
  must(op: InitOp | ExecOp): void {
    if (this.isInit) checkInit(op as InitOp, this.current);
    else checkExec(op as ExecOp, this.current);
  }

  /** Move to `to`; a transition the state machine does not have is a bug, never done. */
  moveTo(to: ProcState): void {
    if (!canTransition(this.current, to)) throw new Error(`internal: ${this.isInit ? 'init' : 'exec'} process cannot go from ${this.current} to ${to}`);
    this.current = to;
  }

  /** Set while this process is being created or started: its exit is published after that. */
  starting?: Promise<void>;
  /** The publication of this process's exit, once the reaper reported it. */
  delivering?: Promise<void>;

  /** Mark a create/start in progress; call the returned function when its event is out. */
  beginStart(): () => void {
    let done!: () => void;
    const starting = new Promise<void>((resolve) => { done = resolve; });
    this.starting = starting;
    return () => {
      done();
      if (this.starting === starting) this.starting = undefined;
    };
  }
  get hasExited(): boolean { return this.exitedAt !== GO_ZERO_TIME; }

  /** Record the pid and pin the process with a pidfd. False if it is already gone. */
  attach(pid: number): boolean {
    this.pid = pid;
    try {
      this.pidfd = native.pidfdOpen(pid);
      return true;
    } catch {
      return false;
    }
  }

  /** Signal through the pidfd: ESRCH once the process exited, even if its pid was reused. */
  signal(sig: number): void {
    if (this.pidfd < 0) {
      const e = new Error('process already finished') as NodeJS.ErrnoException;
      e.code = 'ESRCH';
      throw e;
    }
    native.pidfdSendSignal(this.pidfd, sig);
  }

  setExited(status: number, at: Timestamp): void {
    if (this.hasExited) return;
    this.exitStatus = status;
    this.exitedAt = at;
    if (this.current !== 'deleted') this.current = 'stopped';
    this.releasePidfd();
    this.resolveExit();
  }

  /**
   * An exec whose start failed: release waiters with status 0 and zero time, no exit event. Like
   * the reference, the exec stays in the created state (State reports CREATED, Delete works).
   */
  startFailed(): void {
    this.releasePidfd();
    this.resolveExit();
  }

  /**
   * Set while Delete of this (created) process runs: `runc delete` kills a created container's
   * init, and the reference ignores that exit for the process's own status (its deleted state
   * makes SetExited a no-op): the reply and /tasks/delete say 0 at zero time, the /tasks/exit
   * still published carries the reaped status at zero time. Resolves true if Delete succeeded.
   */
  deletion?: Promise<boolean>;

  /** Release waiters without recording an exit (the exit of a process deleted meanwhile). */
  releaseWaiters(): void {
    this.releasePidfd();
    this.resolveExit();
  }

  releasePidfd(): void {
    if (this.pidfd >= 0) {
      try { fs.closeSync(this.pidfd); } catch { /* ignore */ }
      this.pidfd = -1;
    }
  }
}
