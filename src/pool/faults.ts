// SPDX-License-Identifier: Apache-2.0
// Fault injection for the hand-over protocol's tests (test/e2e/pool.test.ts), off unless the
// test sets SHIM_FAULT_STANDBY, SHIM_FAULT_SHARED (a shared daemon's post, shared.ts) or SHIM_FAULT_SENDER to `<step>:kill` or `<step>:stall:<ms>`.
// `kill` dies at once (SIGKILL, nothing cleaned up); `stall` blocks the whole process, as a
// stopped or starved one would. The launcher (C) reads SHIM_FAULT_SENDER the same way.

/** The points of the protocol where a side can fail: after what it just did (docs/standby-protocol.md). */
export type StandbyStep = 'offer' | 'accept' | 'commit' | 'running' | 'status';
export type SenderStep = 'connect' | 'offer' | 'accept' | 'commit' | 'running';

function inject(spec: string | undefined, step: string): void {
  if (!spec) return;
  const [at, what, ms] = spec.split(':');
  if (at !== step) return;
  if (what === 'kill') process.kill(process.pid, 'SIGKILL');
  if (what === 'stall') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(ms) || 0);
}

export function standbyFault(step: StandbyStep): void {
  inject(process.env.SHIM_FAULT_STANDBY, step);
}

export function sharedFault(step: StandbyStep): void {
  inject(process.env.SHIM_FAULT_SHARED, step);
}

export function senderFault(step: SenderStep): void {
  inject(process.env.SHIM_FAULT_SENDER, step);
}
