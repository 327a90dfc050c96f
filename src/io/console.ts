// Terminal mode (shared/spec/runc-and-io.md §3, §4.7): runc sends the pty master over a console
// socket; we copy master → stdout fifo and stdin fifo → master, and resize on request.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tty from 'node:tty';
import * as native from '../sys/native.js';
import type { Stdio } from '../runc/runc.js';
import type { IOConfig, ProcessIO } from './processio.js';
import { parseStdioUri } from './processio.js';
import { openOutput, closeQuietly, copyInto, SharedSink } from './copy.js';
import { StdinFifo } from './stdin.js';
import { BinaryLogger, type LoggerContext } from './binary.js';
import { pipeSocket } from './copy.js';

// runc has returned, so runc init has already sent the master (or never will).
const RECEIVE_TIMEOUT_MS = 2_000;

export class ConsoleIO implements ProcessIO {
  /** runc's own output is captured in terminal mode. */
  readonly stdio: Stdio | undefined = undefined;
  readonly socketPath: string;
  private readonly dir: string;
  private listenFd: number;
  private master = -1;
  /**
   * Our own dup of the master for ResizePty: the reader's fd is closed when the output ends (the
   * process exited), but the reference keeps the master until Delete, so a resize after the exit
   * still succeeds — and must never hit a recycled fd number.
   */
  private control = -1;
  private reader?: tty.ReadStream;
  private writer?: tty.WriteStream;
  private stdinFifo?: StdinFifo;
  private copy?: Promise<void>;
  private closed = false;

  private logger?: BinaryLogger;

  constructor(private readonly cfg: IOConfig, ctx: LoggerContext) {
    if (cfg.stdout) {
      const out = parseStdioUri(cfg.stdout);
      if (out.scheme === 'binary') this.logger = new BinaryLogger(out.url!, ctx);
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

  prepare(): Promise<void> {
    return this.logger ? this.logger.start() : Promise.resolve();
  }

  async start(): Promise<void> {
    try {
      const { fd } = native.acceptRecvFd(this.listenFd, RECEIVE_TIMEOUT_MS);
      this.master = fd;
    } catch (e) {
      throw new Error(`failed to retrieve console master: ${(e as Error).message}`);
    } finally {
      this.closeSocket();
    }
    this.control = native.dup(this.master);
    // Separate fds for the two directions: libuv allows one handle per fd.
    this.reader = new tty.ReadStream(this.master);
    // EIO means no process holds the slave any more: the terminal output has ended.
    this.reader.on('error', () => this.reader?.destroy());
    this.writer = new tty.WriteStream(native.dup(this.master));
    this.writer.on('error', () => { /* the pty went away */ });
    if (this.cfg.stdout) {
      // A pty has one output stream: it goes to the stdout fifo, or the logger's fd 3.
      const sink: SharedSink = this.logger
        ? new SharedSink(pipeSocket(this.logger.takeStdout(), 'w'))
        : openOutput(this.cfg.stdout);
      this.logger?.closeWriteEnds();
      this.copy = copyInto(this.reader, sink);
    } else {
      this.reader.resume();
    }
    if (this.cfg.stdin) this.stdinFifo = new StdinFifo(this.cfg.stdin, this.writer);
  }

  resize(width: number, height: number): void {
    if (this.control < 0 || this.closed) return;
    native.setWinsize(this.control, height, width);
  }

  closeStdin(): void {
    this.stdinFifo?.closeWriter();
  }

  async drain(timeoutMs: number): Promise<void> {
    if (!this.copy) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.copy, new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); })]);
    if (timer) clearTimeout(timer);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeSocket();
    this.stdinFifo?.closeWriter();
    this.reader?.destroy();
    this.writer?.destroy();
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
