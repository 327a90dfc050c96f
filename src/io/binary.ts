// SPDX-License-Identifier: Apache-2.0
// Logging-binary stdio (binary:///path?key=value, containerd v1.7.0 pkg/process/io.go binaryIO): a logger
// process gets the container's stdout/stderr pipes as fds 3 and 4 and a "ready" pipe as fd 5
// (CONTAINER_WAIT); runc starts only once the logger closed (or wrote to) fd 5. binary-v2:///…
// (containerd 2.3) is the same, except that the logger must write at least one byte to fd 5:
// closing it without writing (a crash, an early exit) fails the start (containerd v2.3.4
// cmd/containerd-shim-runc-v2/process/io.go NewBinaryIO, runc/platform.go CopyConsole).
import net from 'node:net';
import * as native from '../sys/native.js';
import type { Reaper, Child } from '../reaper/reaper.js';
import type { Stdio } from '../runc/runc.js';
import { closeQuietly } from './copy.js';

const READY_TIMEOUT_MS = 30_000;
const LOGGER_TERM_GRACE_MS = 12_000;
const SIGTERM = 15;
const SIGKILL = 9;

/** The reference's text when a binary-v2 logger closed fd 5 without writing to it. */
const NOT_READY_ERROR = 'logging binary did not call ready (it may have crashed or exited prematurely)';

/** True for the schemes whose logger must write to its ready fd (binary-v2://). */
export function strictReady(url: URL): boolean {
  return url.protocol.toLowerCase() === 'binary-v2:';
}

export interface LoggerContext { processId: string; namespace: string; reaper: Reaper }

/** argv of the logger from the URI: each query key, then its first value if it has one. */
export function loggerArgs(url: URL): { file: string; args: string[] } {
  const file = decodeURIComponent(url.pathname);
  const args = [file];
  const seen = new Set<string>();
  for (const [k, v] of url.searchParams) {
    if (seen.has(k)) continue;
    seen.add(k);
    args.push(k, v);
  }
  return { file, args };
}

export class BinaryLogger {
  /** Write ends the container (through runc, or the console copy) writes into. */
  readonly stdoutW: number;
  readonly stderrW: number;
  private child?: Child;
  private stopped = false;

  constructor(private readonly url: URL, private readonly ctx: LoggerContext) {
    const [outR, outW] = native.pipe();
    const [errR, errW] = native.pipe();
    this.stdoutW = outW;
    this.stderrW = errW;
    this.writeEnds = [outW, errW];
    this.readEnds = [outR, errR];
  }
  private writeEnds: number[];
  private readEnds: number[];

  /** Start the logger and wait for its readiness signal. */
  async start(): Promise<void> {
    const { file, args } = loggerArgs(this.url);
    const [readyR, readyW] = native.pipe();
    try {
      this.child = this.ctx.reaper.spawn({
        file, args,
        env: [`CONTAINER_ID=${this.ctx.processId}`, `CONTAINER_NAMESPACE=${this.ctx.namespace}`],
        fds: [-1, -1, -1, this.readEnds[0], this.readEnds[1], readyW],
      });
    } finally {
      closeQuietly(readyW);
      for (const fd of this.readEnds) closeQuietly(fd);
      this.readEnds = [];
    }
    const wrote = await waitReady(readyR);
    if (!wrote && strictReady(this.url)) throw new Error(NOT_READY_ERROR);
  }

  /** Hand over the stdout write end (the console copy writes into it). */
  takeStdout(): number {
    this.writeEnds = this.writeEnds.filter((fd) => fd !== this.stdoutW);
    return this.stdoutW;
  }

  /** Drop our copies of the write ends (once: a closed fd number may be reused). */
  closeWriteEnds(): void {
    for (const fd of this.writeEnds) closeQuietly(fd);
    this.writeEnds = [];
  }

  /** Close our write ends, then SIGTERM the logger, SIGKILL after a grace period. */
  close(): void {
    this.closeWriteEnds();
    for (const fd of this.readEnds) closeQuietly(fd);
    this.readEnds = [];
    const child = this.child;
    if (!child || this.stopped) return;
    this.stopped = true;
    let exited = false;
    void child.exited.then(() => { exited = true; });
    const pidfd = (() => { try { return native.pidfdOpen(child.pid); } catch { return -1; } })();
    if (pidfd < 0) return;
    const signal = (sig: number) => { try { native.pidfdSendSignal(pidfd, sig); } catch { /* gone */ } };
    signal(SIGTERM);
    const timer = setTimeout(() => { if (!exited) signal(SIGKILL); }, LOGGER_TERM_GRACE_MS);
    timer.unref();
    void child.exited.then(() => { clearTimeout(timer); closeQuietly(pidfd); });
  }
}

/**
 * Ready when the logger writes to fd 5 or closes it (exiting closes it too); resolves to whether
 * it wrote at least one byte first.
 */
function waitReady(fd: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = new net.Socket({ fd, readable: true, writable: false });
    let settled = false;
    const done = (err: Error | undefined, wrote: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err); else resolve(wrote);
    };
    const timer = setTimeout(() => done(new Error('timed out waiting for the logging binary to be ready'), false), READY_TIMEOUT_MS);
    s.once('data', () => done(undefined, true));
    s.once('end', () => done(undefined, false));
    s.once('error', (e) => done(new Error(`failed to read from logging binary: ${e.message}`), false));
  });
}

/** Stdio where both output streams go to a logging binary (no stdin, as in the reference). */
export class BinaryIO {
  readonly stdio: Stdio;
  private readonly logger: BinaryLogger;

  constructor(url: URL, ctx: LoggerContext) {
    this.logger = new BinaryLogger(url, ctx);
    this.stdio = { fds: [-1, this.logger.stdoutW, this.logger.stderrW] };
  }

  prepare(): Promise<void> { return this.logger.start(); }
  async start(): Promise<void> {
    // The container holds the write ends now; the logger sees EOF when the container is done.
    this.logger.closeWriteEnds();
  }
  closeStdin(): void {}
  /** Nothing to wait for: the container writes straight into the logger's pipes, no copy of ours. */
  async drain(): Promise<void> {}
  close(): void { this.logger.close(); }
}
