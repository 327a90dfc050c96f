// SPDX-License-Identifier: Apache-2.0
// The process state machines of the reference shim (containerd v2.3.4 pkg/process init_state.go,
// exec_state.go): which operation each state allows, the exact error each state gives
// otherwise, and which state may follow which.
import { TtrpcError, Code } from '../ttrpc/index.js';

export type ProcState = 'created' | 'running' | 'pausing' | 'paused' | 'stopped' | 'deleted';
export type InitOp = 'start' | 'delete' | 'kill' | 'pause' | 'resume' | 'update' | 'checkpoint' | 'exec';
export type ExecOp = 'start' | 'delete' | 'kill' | 'resize';

type Rule = null | string | [Code, string];
type Table<Op extends string> = Record<Op, Partial<Record<ProcState, Rule>>>;

const notFound = (m: string): Rule => [Code.NotFound, `${m}: not found`];

// `null` = allowed; a string = Unknown error with that text; a tuple = code + text.
const INIT: Table<InitOp> = {
  start: { created: null, running: 'cannot start a running process', paused: 'cannot start a paused process', stopped: 'cannot start a stopped process', deleted: 'cannot start a deleted process' },
  delete: { created: null, running: 'cannot delete a running process', paused: 'cannot delete a paused process', stopped: null, deleted: notFound('cannot delete a deleted process') },
  kill: { created: null, running: null, paused: null, pausing: null, stopped: null, deleted: notFound('cannot kill a deleted process') },
  pause: { created: 'cannot pause task in created state', running: null, paused: 'cannot pause a paused container', stopped: 'cannot pause a stopped container', deleted: 'cannot pause a deleted process' },
  resume: { created: 'cannot resume task in created state', running: 'cannot resume a running process', paused: null, stopped: 'cannot resume a stopped container', deleted: 'cannot resume a deleted process' },
  update: { created: null, running: null, paused: null, stopped: 'cannot update a stopped container', deleted: 'cannot update a deleted process' },
  checkpoint: { created: 'cannot checkpoint a task in created state', running: null, paused: null, stopped: 'cannot checkpoint a stopped container', deleted: 'cannot checkpoint a deleted process' },
  exec: { created: null, running: null, paused: 'cannot exec in a paused state', stopped: 'cannot exec in a stopped state', deleted: 'cannot exec in a deleted state' },
};

const EXEC: Table<ExecOp> = {
  start: { created: null, running: 'cannot start a running process', stopped: 'cannot start a stopped process', deleted: 'cannot start a deleted process' },
  delete: { created: null, running: 'cannot delete a running process', stopped: null, deleted: notFound('cannot delete a deleted process') },
  kill: { created: [Code.FailedPrecondition, 'process not created: failed precondition'], running: null, stopped: notFound('process already finished'), deleted: notFound('cannot kill a deleted process') },
  resize: { created: null, running: null, stopped: 'cannot resize a stopped container', deleted: 'cannot resize a deleted process' },
};

function check<Op extends string>(table: Table<Op>, op: Op, state: ProcState): void {
  // A pausing process behaves as running for everything but status reporting.
  const rules = table[op];
  const rule = state in rules ? rules[state] : state === 'pausing' ? rules.running : undefined;
  if (rule === null) return;
  if (rule === undefined) throw new TtrpcError(Code.Unknown, `cannot ${op} a process in ${state} state`);
  if (typeof rule === 'string') throw new TtrpcError(Code.Unknown, rule);
  throw new TtrpcError(rule[0], rule[1]);
}

export function checkInit(op: InitOp, state: ProcState): void { check(INIT, op, state); }
export function checkExec(op: ExecOp, state: ProcState): void { check(EXEC, op, state); }

/** The legal transitions, init and exec alike (an exec never pauses; its table just never asks). */
const NEXT: Record<ProcState, readonly ProcState[]> = {
  created: ['running', 'stopped', 'deleted'],
  running: ['pausing', 'stopped'],
  pausing: ['paused', 'running', 'stopped'],
  paused: ['running', 'stopped'],
  stopped: ['deleted'],
  deleted: [],
};

export function canTransition(from: ProcState, to: ProcState): boolean {
  return from === to || NEXT[from].includes(to);
}
