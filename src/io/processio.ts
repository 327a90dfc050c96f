// SPDX-License-Identifier: Apache-2.0
// Per-process stdio (containerd v1.7.0 pkg/process/io.go): choose the mode from the request's
// stdin/stdout/stderr/terminal, hand runc the child-side fds, then copy between the container's
// pipes and containerd's fifos (or a file, or a logging binary).
import fs from 'node:fs';
import path from 'node:path';
import * as native from '../sys/native.js';
import type { Stdio } from '../runc/runc.js';
import { copyInto, openOutput, pipeSocket, closeQuietly, SharedSink } from './copy.js';
import { StdinFifo } from './stdin.js';
import { BinaryIO, type LoggerContext } from './binary.js';
import { ConsoleIO } from './console.js';
import { parseStdioUri, type IOConfig, type ProcessIO } from './stdio.js';

export type { IOConfig, ProcessIO } from './stdio.js';
export { parseStdioUri } from './stdio.js';

export function createProcessIO(cfg: IOConfig, ctx: LoggerContext): ProcessIO {
  if (cfg.terminal) return new ConsoleIO(cfg, ctx);
  if (!cfg.stdin && !cfg.stdout && !cfg.stderr) return new NullIO();
  const out = parseStdioUri(cfg.stdout);
  switch (out.scheme) {
    case 'fifo':
      return new PipeIO(cfg, cfg.stdout, cfg.stderr);
    case 'file': {
      fs.mkdirSync(path.dirname(out.path), { recursive: true, mode: 0o755 });
      fs.closeSync(fs.openSync(out.path, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o644));
      return new PipeIO(cfg, out.path, out.path);
    }
    case 'binary':
    case 'binary-v2': // containerd 2.3: the logger must write to fd 5 to be ready (binary.ts)
      return new BinaryIO(out.url!, ctx);
    default:
      throw new Error(`unknown STDIO scheme ${out.scheme}`);
  }
}

class NullIO implements ProcessIO {
  readonly stdio: Stdio = { fds: [-1, -1, -1] };
  async start(): Promise<void> {}
  closeStdin(): void {}
  async drain(): Promise<void> {}
  close(): void {}
}

/** Real pipes between runc/the container and the shim, as the reference uses (§4.3). */
class PipeIO implements ProcessIO {
  readonly stdio: Stdio;
  private readonly childEnds: number[] = [];
  private readonly shimEnds: number[] = [];
  private stdinW = -1;
  private stdoutR = -1;
  private stderrR = -1;
  private stdinFifo?: StdinFifo;
  private copies: Promise<void>[] = [];
  private streams: { destroy(): void }[] = [];
  private sinks: SharedSink[] = [];
  private closed = false;

  constructor(private readonly cfg: IOConfig, private readonly stdoutTarget: string, private readonly stderrTarget: string) {
    const fds: [number, number, number] = [-1, -1, -1];
    try {
      if (cfg.stdin) {
        const [r, w] = native.pipe();
        fds[0] = r; this.stdinW = w;
        this.childEnds.push(r); this.shimEnds.push(w);
      }
      if (stdoutTarget) {
        const [r, w] = native.pipe();
        fds[1] = w; this.stdoutR = r;
        this.childEnds.push(w); this.shimEnds.push(r);
      }
      if (stderrTarget) {
        const [r, w] = native.pipe();
        fds[2] = w; this.stderrR = r;
        this.childEnds.push(w); this.shimEnds.push(r);
      }
      for (const fd of this.childEnds) fs.fchownSync(fd, cfg.uid, cfg.gid);
    } catch (e) {
      this.close();
      throw e;
    }
    this.stdio = { fds };
  }

  async start(): Promise<void> {
    // runc passed the child ends to the container; our copies would hold EOF back.
    for (const fd of this.childEnds) closeQuietly(fd);
    this.childEnds.length = 0;
    const sinks = new Map<string, SharedSink>();
    const sinkFor = (target: string) => {
      let s = sinks.get(target);
      if (!s) { s = openOutput(target); sinks.set(target, s); this.sinks.push(s); }
      return s;
    };
    if (this.stdoutR >= 0) {
      const src = pipeSocket(this.stdoutR, 'r');
      this.streams.push(src);
      this.stdoutR = -1;
      this.copies.push(copyInto(src, sinkFor(this.stdoutTarget)));
    }
    if (this.stderrR >= 0) {
      const src = pipeSocket(this.stderrR, 'r');
      this.streams.push(src);
      this.stderrR = -1;
      this.copies.push(copyInto(src, sinkFor(this.stderrTarget)));
    }
    if (this.stdinW >= 0) {
      const dst = pipeSocket(this.stdinW, 'w');
      this.streams.push(dst);
      this.stdinW = -1;
      dst.on('finish', () => dst.destroy());
      this.stdinFifo = new StdinFifo(this.cfg.stdin, dst);
    }
    this.shimEnds.length = 0;
  }

  closeStdin(): void {
    this.stdinFifo?.closeWriter();
  }

  /**
   * Resolves once both output copies reached EOF, their fifo or file got every byte and the
   * client has read the fifos (SharedSink.delivered), or after `timeoutMs`.
   */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const copied = await Promise.race([
      Promise.all(this.copies).then(() => true),
      new Promise<boolean>((r) => { timer = setTimeout(() => r(false), timeoutMs); }),
    ]);
    if (timer) clearTimeout(timer);
    if (copied) await Promise.all(this.sinks.map((s) => s.delivered(deadline)));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stdinFifo?.closeWriter();
    for (const s of this.streams) s.destroy();
    // Still open only when the drain gave up (the client stopped reading): drop the rest.
    for (const s of this.sinks) s.destroy();
    for (const fd of [...this.childEnds, ...this.shimEnds]) closeQuietly(fd);
    this.childEnds.length = 0;
    this.shimEnds.length = 0;
  }
}
