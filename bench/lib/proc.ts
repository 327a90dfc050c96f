// SPDX-License-Identifier: Apache-2.0
// Process helpers for the benchmark: timed spawns with first-byte timing, /proc memory readings,
// finding shim daemons by argv. Everything is stopped by pid; nothing here uses pkill/killall.
import { spawn, type StdioOptions } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { argValue, listProcesses, pidAlive, type ProcInfo } from '../../test/support/containerd.js';

export interface Timed {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** ms from spawn to exit with stdout/stderr at EOF. */
  wallMs: number;
  /** ms from spawn to the first byte on stdout (NaN if none). */
  firstByteMs: number;
  /** ms from spawn to the last byte on stdout (NaN if none). */
  lastByteMs: number;
  stdoutBytes: number;
  /** Captured stdout (only the first `keepBytes`). */
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface TimedOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  /** Keep at most this many stdout bytes as text (default 64 KiB); the rest is only counted. */
  keepBytes?: number;
  input?: Buffer | string;
}

/** Spawns a command and times it; never rejects on a non-zero exit (check `code`). */
export function timedRun(cmd: string, args: string[], o: TimedOptions = {}): Promise<Timed> {
  const keep = o.keepBytes ?? 65536;
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'];
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio, env: o.env ?? process.env, cwd: o.cwd });
    let first = NaN;
    let last = NaN;
    let bytes = 0;
    const kept: Buffer[] = [];
    let keptLen = 0;
    const err: Buffer[] = [];
    let timedOut = false;
    child.stdout!.on('data', (b: Buffer) => {
      const now = performance.now();
      if (bytes === 0) first = now - t0;
      last = now - t0;
      bytes += b.length;
      if (keptLen < keep) {
        kept.push(b.subarray(0, keep - keptLen));
        keptLen += Math.min(b.length, keep - keptLen);
      }
    });
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
    }, o.timeoutMs ?? 60_000);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        pid: child.pid ?? -1, code, signal, timedOut,
        wallMs: performance.now() - t0,
        firstByteMs: first,
        lastByteMs: last,
        stdoutBytes: bytes,
        stdout: Buffer.concat(kept).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    if (o.input !== undefined) {
      child.stdin!.on('error', () => { /* EPIPE */ });
      child.stdin!.end(o.input);
    }
  });
}

export interface MemInfo {
  pid: number;
  /** KiB, from /proc/<pid>/smaps_rollup. */
  rss: number;
  pss: number;
  /** Private_Clean + Private_Dirty (unique set size). */
  uss: number;
  /** Threads (from /proc/<pid>/status). */
  threads: number;
}

/** Memory of a process from smaps_rollup, or undefined if it is gone. */
export function memInfo(pid: number): MemInfo | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const field = (name: string) => {
      const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
      return m ? Number(m[1]) : 0;
    };
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
    return {
      pid,
      rss: field('Rss'),
      pss: field('Pss'),
      uss: field('Private_Clean') + field('Private_Dirty'),
      threads,
    };
  } catch {
    return undefined;
  }
}

/**
 * Shim daemons (not `start`/`delete` invocations) of a containerd instance, keyed by task id:
 * argv carries `-address <address>` and `-id <id>` and no action word; or, for our shim's
 * daemons that were pre-booted as standbys (argv `-standby <post>`), the cwd is the task's
 * bundle under this instance's state dir (next to its socket).
 */
export function findShimDaemons(address: string, ids?: Set<string>): Map<string, ProcInfo> {
  const res = new Map<string, ProcInfo>();
  const instanceDir = dirname(address) + '/';
  for (const p of listProcesses()) {
    let id: string | undefined;
    if (argValue(p.argv, 'address') === address) {
      id = argValue(p.argv, 'id');
      const last = p.argv[p.argv.length - 1];
      if (last === 'start' || last === 'delete') continue;
    } else if (p.argv.includes('-standby')) {
      let cwd: string;
      try { cwd = readlinkSync(`/proc/${p.pid}/cwd`); } catch { continue; }
      const m = /\/io\.containerd\.runtime\.v2\.task\/[^/]+\/([^/]+)$/.exec(cwd);
      if (!cwd.startsWith(instanceDir) || !m) continue;
      id = m[1];
    }
    if (id === undefined || (ids && !ids.has(id))) continue;
    res.set(id, p);
  }
  return res;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function waitGone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return true;
    await sleep(10);
  }
  return false;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T>(items: T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      await fn(items[i], i);
    }
  });
  await Promise.all(workers);
}
