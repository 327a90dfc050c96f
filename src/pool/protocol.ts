// SPDX-License-Identifier: Apache-2.0
// The hand-over protocol's wire format (docs/standby-protocol.md), both sides' helpers:
//   OFFER    sender → standby  one message: JSON + fds (SCM_RIGHTS)
//   ACCEPT   standby → sender  one byte, or REFUSE (or a close: not taken)
//   COMMIT   sender → standby  one byte (or a close: the sender gave up)
//   RUNNING  standby → sender  one byte: the job runs, the sender never offers it again
//   STATUS   standby → sender  one byte: the job's exit status (0 for an adoption once serving)
// A `job` (from the launcher) carries the shim's argv, cwd, containerd's pid and stdin, stdout
// and stderr; an `adopt` (from a Node `start`) carries the daemon's flags as argv, the bundle
// and the listening shim socket (and the runc option shim_cgroup the daemon is to run in, when
// set: a shared daemon, docs/shared-daemon.md, takes only tenants of its own). Both carry the sender's JOB_ENV variables (containerd's
// addresses and namespace), which the standby takes on for the job.
import fs from 'node:fs';
import type net from 'node:net';
import * as native from '../sys/native.js';
import { MAX_OFFER } from './constants.js';
import { isJobEnv } from './key.js';

export type Offer =
  | { kind: 'job'; argv: string[]; cwd: string; ppid: number; argv0?: string; env: Record<string, string>; fds: number[] }
  | { kind: 'adopt'; argv: string[]; bundle: string; argv0?: string; env: Record<string, string>; shimCgroup?: string; fds: number[] };

/** The fd of a connected net.Socket (pool sockets are always unix stream sockets). */
export function connFd(sock: net.Socket): number {
  return (sock as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
}

export function closeAll(fds: readonly number[]): void {
  for (const f of fds) try { fs.closeSync(f); } catch { /* already closed */ }
}

const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');

/** An offer's `env`: JOB_ENV names only, string values without NUL; absent is none. */
function parseEnv(v: unknown): Record<string, string> | undefined {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (!isJobEnv(k) || typeof val !== 'string' || val.includes('\0')) return undefined;
    out[k] = val;
  }
  return out;
}

/** Check a decoded offer; fds: how many it must carry. undefined for anything else. */
export function parseOffer(text: string, fds: number[]): Offer | undefined {
  let o: Record<string, unknown>;
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
    o = v as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const argv0 = typeof o.argv0 === 'string' && o.argv0 !== '' ? o.argv0 : undefined;
  const env = parseEnv(o.env);
  if (!isStrings(o.argv) || !env) return undefined;
  if (o.kind === 'job' && fds.length === 3 && typeof o.cwd === 'string' && Number.isSafeInteger(o.ppid)) {
    return { kind: 'job', argv: o.argv, cwd: o.cwd, ppid: o.ppid as number, argv0, env, fds };
  }
  const shimCgroup = o.shimCgroup;
  if (o.kind === 'adopt' && fds.length === 1 && typeof o.bundle === 'string' && o.bundle.startsWith('/') && (shimCgroup === undefined || (typeof shimCgroup === 'string' && !shimCgroup.includes('\0')))) {
    return { kind: 'adopt', argv: o.argv, bundle: o.bundle, argv0, env, ...(shimCgroup ? { shimCgroup } : {}), fds };
  }
  return undefined;
}

/**
 * Receive the offer on a new connection (waiting at most `timeoutMs` for a peer that connects
 * and says nothing). Anything but a well-formed offer is dropped with every fd it carried.
 */
export function receiveOffer(fd: number, timeoutMs: number): Offer | undefined {
  let msg: native.ReceivedFd & { fds: number[] };
  try { msg = native.recvFd(fd, timeoutMs, 0); } catch { return undefined; }
  const offer = Buffer.byteLength(msg.name) <= MAX_OFFER ? parseOffer(msg.name, msg.fds) : undefined;
  if (!offer) closeAll(msg.fds);
  return offer;
}

/** Encode an offer (without its fds) for sendmsg. */
export function encodeOffer(o: Omit<Extract<Offer, { kind: 'adopt' }>, 'fds'>): string {
  const text = JSON.stringify(o);
  if (Buffer.byteLength(text) > MAX_OFFER) throw new Error('offer too large');
  return text;
}

/** Write one protocol byte; false when the peer is gone. */
export function writeByte(fd: number, b: number): boolean {
  try {
    return fs.writeSync(fd, Buffer.of(b)) === 1;
  } catch {
    return false;
  }
}

/** The bytes a peer sends, one at a time (RUNNING and STATUS may arrive in one read). */
export class ByteReader {
  private readonly got: number[] = [];
  private ended = false;
  private wake?: () => void;

  constructor(private readonly sock: net.Socket) {
    const kick = () => { const w = this.wake; this.wake = undefined; w?.(); };
    sock.on('data', (c: Buffer) => { this.got.push(...c); kick(); });
    const end = () => { this.ended = true; kick(); };
    sock.once('end', end).once('error', end).once('close', end);
    sock.resume();
  }

  /** The next byte, or undefined on a close, an error, or after `timeoutMs` (undefined: no limit). */
  async next(timeoutMs?: number): Promise<number | undefined> {
    let timedOut = false;
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => { timedOut = true; this.wake?.(); }, timeoutMs);
    try {
      while (this.got.length === 0 && !this.ended && !timedOut) await new Promise<void>((r) => { this.wake = r; });
      return this.got.shift();
    } finally {
      clearTimeout(timer);
    }
  }
}
