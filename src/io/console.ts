// SPDX-License-Identifier: Apache-2.0
// Terminal mode (containerd v1.7.0 pkg/process/init.go and io.go; go-runc v1.1.0 console.go): runc sends the pty master over a console
// socket; we copy master → stdout fifo (or a logging binary's fd 3) and stdin fifo → master, and
// resize on request.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tty from 'node:tty';
import type { Writable } from 'node:stream';
import * as native from '../sys/native.js';
import type { Stdio } from '../runc/runc.js';
import { parseStdioUri, type IOConfig, type ProcessIO } from './stdio.js';
import { openOutput, closeQuietly, pump, pipeSocket, SharedSink } from './copy.js';
import { StdinFifo } from './stdin.js';
import { BinaryLogger, type LoggerContext } from './binary.js';

// runc has returned, so runc init has already sent the master (or never will).
const RECEIVE_TIMEOUT_MS = 2_000;
const TAIL_CHUNK = 64 * 1024;

export class ConsoleIO implements ProcessIO {
  /** runc's own output is captured in terminal mode. */
  readonly stdio: Stdio | undefined = undefined;
  readonly socketPath: string;
  private readonly dir: string;
  private listenFd: number;
  private master = -1;
  /**
   * Our own dup of the master for ResizePty and for reading the end of the output: the reader's
   * fd is closed when the output ends (the process exited), but the reference keeps the master
   * until Delete, so a resize after the exit still succeeds — and must never hit a recycled fd.
   */
  private control = -1;
  private reader?: tty.ReadStream;
  private writer?: tty.WriteStream;
  private sink?: SharedSink;
  private stdinFifo?: StdinFifo;
  private copy?: Promise<void>;
  private closed = false;

  private logger?: BinaryLogger;

  constructor(private readonly cfg: IOConfig, ctx: LoggerContext) {
    if (cfg.stdout) {
      const out = parseStdioUri(cfg.stdout);
      if (out.scheme === 'binary' || out.scheme === 'binary-v2') this.logger = new BinaryLogger(out.url!, ctx);
      else if (out.scheme !== 'fifo') throw new Error(`unknown STDIO scheme ${out.scheme}`);
    }
    this.dir = fs.mkdtempSync(path.join(process.env.XDG_RUNTIME_DIR || os.tmpdir(), 'pty'));
    this.socketPath = path.join(this.dir, 'pty.sock');
    try {
      this.listenFd = native.listenUnix(this.socketPath, 1);
    } catch (e) {
      fs.rmSync(this.dir, { recursive: true, force: true });
      throw e;
    }
  }

  async start(): Promise<void> {
    try {
      const { fd } = native.acceptRecvFd(this.listenFd, RECEIVE_TIMEOUT_MS);
      this.master = fd;
    } catch (e) {
      throw new Error(`failed to retrieve console master: ${(e as Error).message}`, { cause: e });
    } finally {
      this.closeSocket();
    }
    this.control = native.dup(this.master);
    // Separate fds for the two directions: libuv allows one handle per fd.
    this.reader = this.newReader(this.master);
    this.writer = new tty.WriteStream(native.dup(this.master));
    this.writer.on('error', () => { /* the pty went away */ });
    if (this.cfg.stdout) {
      // A pty has one output stream: it goes to the stdout fifo, or the logger's fd 3. As in the
      // reference, the logger starts once runc has sent the master, and a binary-v2 logger that
      // never signals ready fails the start (containerd v2.3.4
      // cmd/containerd-shim-runc-v2/runc/platform.go CopyConsole).
      if (this.logger) {
        try {
          await this.logger.start();
        } catch (e) {
          throw new Error(`failed to start console copy: ${(e as Error).message}`, { cause: e });
        }
      }
      this.sink = this.logger
        ? new SharedSink(pipeSocket(this.logger.takeStdout(), 'w'))
        : openOutput(this.cfg.stdout);
      this.logger?.closeWriteEnds();
      this.copy = this.copyOutput(this.reader, this.sink);
    } else {
      this.reader.resume();
    }
    if (this.cfg.stdin) this.stdinFifo = new StdinFifo(this.cfg.stdin, this.writer);
  }

  private newReader(fd: number): tty.ReadStream {
    const r = new tty.ReadStream(fd);
    // EIO means no process holds the slave any more: the terminal output has ended.
    r.on('error', () => r.destroy());
    return r;
  }

  /**
   * Copies the terminal's output until the master reports EIO (no process holds the slave any
   * more) or EOF, then flushes the sink. Resolves only once all of it was written out, as the
   * reference's console copy does before its WaitGroup (waited for by Delete) is done.
   *
   * libuv's stream ends early on a pty: a read shorter than its buffer together with POLLHUP is
   * taken as the end, but the pty hands its buffered output over a few KiB per read, so up to
   * the kernel's pty buffering may still be unread. Once the stream has ended the slave is
   * closed and no more output can come, so the rest is read directly from our dup of the master
   * (non-blocking) until EIO. If the slave was opened again in between (EAGAIN: someone holds
   * the terminal again), streaming resumes on a new handle.
   */
  private async copyOutput(first: tty.ReadStream, sink: SharedSink): Promise<void> {
    const dst = sink.acquire();
    let reader = first;
    for (;;) {
      await pump(reader, dst);
      reader.destroy();
      if (this.closed || this.control < 0) break;
      if (readRest(this.control, dst) === 'ended') break;
      reader = this.newReader(native.dup(this.control));
      this.reader = reader;
    }
    await sink.release();
  }

  resize(width: number, height: number): void {
    if (this.control < 0 || this.closed) return;
    native.setWinsize(this.control, height, width);
  }

  closeStdin(): void {
    this.stdinFifo?.closeWriter();
  }

  /** Resolves once the copy is done and the client has read the fifo, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    if (!this.copy) return;
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const copied = await Promise.race([
      this.copy.then(() => true),
      new Promise<boolean>((r) => { timer = setTimeout(() => r(false), timeoutMs); }),
    ]);
    if (timer) clearTimeout(timer);
    if (copied) await this.sink?.delivered(deadline);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeSocket();
    this.stdinFifo?.closeWriter();
    this.reader?.destroy();
    this.writer?.destroy();
    // Still open only when the drain gave up (the client stopped reading): drop the rest.
    this.sink?.destroy();
    this.logger?.close();
    if (!this.reader) closeQuietly(this.master);
    this.master = -1;
    closeQuietly(this.control);
    this.control = -1;
  }

  private closeSocket(): void {
    if (this.listenFd >= 0) {
      closeQuietly(this.listenFd);
      this.listenFd = -1;
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/**
 * Reads what the master still holds into `dst`, without blocking: 'ended' at EIO (no holder of
 * the slave left) or EOF, 'more' when the slave has a holder again and may write later.
 */
function readRest(fd: number, dst: Writable): 'ended' | 'more' {
  // O_NONBLOCK is on the open file description, shared with the writer's fd: set it only for
  // this synchronous loop (nothing else runs meanwhile), then restore the blocking mode libuv
  // left a read-write tty in.
  native.setNonBlocking(fd, true);
  try {
    for (;;) {
      const buf = Buffer.allocUnsafe(TAIL_CHUNK);
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        return (e as NodeJS.ErrnoException).code === 'EAGAIN' ? 'more' : 'ended';
      }
      if (n === 0) return 'ended';
      if (!dst.destroyed && !dst.writableEnded) dst.write(buf.subarray(0, n));
    }
  } finally {
    try { native.setNonBlocking(fd, false); } catch { /* closed meanwhile */ }
  }
}
