// SPDX-License-Identifier: Apache-2.0
// Matches reaped pids to tracked processes. An exec can exit before `runc exec` has returned
// and we have read its pid file; while any create/exec is in flight, exits of unknown pids are
// kept so the process can claim its exit once its pid is known (never lost, never a hung Wait).
// A kept exit is only handed to a process if nothing lives under that pid any more: pids are
// recycled (pid_max is often 32768), and an orphan that exited during a start must not be taken
// for the exec that was then given its pid. Exits of our own children (runc) are never kept.
import type { Exit } from '../reaper/reaper.js';
import type { Process } from './process.js';

const MAX_EARLY = 4096;

export class ExitMatcher {
  private readonly byPid = new Map<number, Process>();
  private readonly early = new Map<number, Exit>();
  private inFlight = 0;

  /** Bracket a create/exec start. */
  begin(): void { this.inFlight++; }
  end(): void {
    if (--this.inFlight === 0) this.early.clear();
  }

  /** Track `p` under its pid; returns an exit that already happened, if any. */
  track(p: Process): Exit | undefined {
    const e = this.early.get(p.pid);
    if (e) {
      this.early.delete(p.pid);
      // A kept exit was reaped before this call; if the pid is in use now, it has been recycled
      // and the kept exit belongs to an earlier process.
      if (!pidInUse(p.pid)) return e;
    }
    this.byPid.set(p.pid, p);
    return undefined;
  }

  untrack(p: Process): void {
    if (this.byPid.get(p.pid) === p) this.byPid.delete(p.pid);
  }

  /** The process that owns this exit, or undefined (kept for a start in flight, or ignored). */
  match(e: Exit): Process | undefined {
    if (e.spawned) return undefined; // runc or a logger, never a container process
    const p = this.byPid.get(e.pid);
    if (p) {
      this.byPid.delete(e.pid);
      return p;
    }
    if (this.inFlight > 0) {
      this.early.set(e.pid, e);
      // Bounded: under constant exec churn inFlight may never drop to zero.
      if (this.early.size > MAX_EARLY) this.early.delete(this.early.keys().next().value!);
    }
    return undefined;
  }

  get tracked(): number { return this.byPid.size; }
}

/** True if some process (a zombie included) has this pid now. */
function pidInUse(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
