// SPDX-License-Identifier: Apache-2.0
// Byte pumps between pipes and fifos, all through epoll-backed handles (never the libuv thread
// pool, which a blocked fifo would park). Back-pressure comes from stream piping.
import net from 'node:net';
import fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import * as native from '../sys/native.js';

/** How often delivered() looks at a fifo: a pipe has no readiness event for "emptied". */
const DELIVERY_POLL_MS = 2;

/** An epoll-backed stream over a pipe or fifo fd; it owns the fd and closes it when destroyed. */
export function pipeSocket(fd: number, mode: 'r' | 'w'): net.Socket {
  const s = new net.Socket({ fd, readable: mode === 'r', writable: mode === 'w' });
  s.on('error', () => s.destroy());
  return s;
}

/**
 * A writable sink that may be shared by stdout and stderr; ended after its last user, and
 * `closed` once everything written to it was flushed (or it failed, or was destroyed).
 */
export class SharedSink {
  private users = 0;
  private ended = false;
  readonly closed: Promise<void>;
  /** `fifo`: the path when the sink is containerd's fifo, for delivered(). */
  constructor(readonly stream: Writable, private readonly fifo?: string) {
    stream.on('error', () => { /* reader gone or disk full: the copy keeps draining the pipe */ });
    this.closed = new Promise((resolve) => {
      if (stream.destroyed) resolve();
      else stream.once('close', () => resolve());
    });
  }
  acquire(): Writable { this.users++; return this.stream; }
  /** Drops one user; the last one ends the stream. Resolves once the sink is flushed and closed. */
  release(): Promise<void> {
    if (--this.users <= 0 && !this.ended) {
      this.ended = true;
      this.stream.end(() => this.stream.destroy());
    }
    return this.closed;
  }
  /**
   * Once the sink is closed, waits (until `deadline`, a Date.now() time) for the fifo's reader to
   * take what is still in the fifo. containerd's client closes its end of the fifo when it gets
   * the exit (client task.go Delete) or DeleteProcess's answer, whatever the fifo still holds:
   * an exit published, or a Delete answered, before it read all is output lost.
   */
  async delivered(deadline: number): Promise<void> {
    if (!this.fifo) return;
    let fd: number;
    try {
      // ENXIO: no reader any more (a detached client), so nobody to wait for.
      fd = fs.openSync(this.fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch {
      return;
    }
    try {
      while (native.fionread(fd) > 0 && Date.now() < deadline) await sleep(DELIVERY_POLL_MS);
    } catch {
      /* not a pipe after all: nothing to wait for */
    } finally {
      closeQuietly(fd);
    }
  }
  /** Gives up on whatever is still unflushed and closes the fd (Delete after the drain timeout). */
  destroy(): void {
    this.ended = true;
    this.stream.destroy();
  }
}

/**
 * Pipe src → dst (without ending dst) until src ends or is destroyed. If dst fails, keep draining
 * src so that the writer never blocks on a full pipe because its reader went away.
 */
export function pump(src: Readable, dst: Writable): Promise<void> {
  return new Promise((resolve) => {
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      src.unpipe(dst);
      dst.off('error', onDstError);
      resolve();
    };
    const onDstError = () => { src.unpipe(dst); src.resume(); };
    dst.once('error', onDstError);
    src.once('end', finish);
    src.once('close', finish);
    src.pipe(dst, { end: false });
  });
}

/**
 * Copy src → sink until src ends; resolves once all of it was written out (the sink flushed and
 * closed after its last user), as the reference's copy goroutines return only after their last
 * write (containerd v2.3.4 cmd/containerd-shim-runc-v2/process/io.go, copyPipes).
 */
export async function copyInto(src: net.Socket, sink: SharedSink): Promise<void> {
  await pump(src, sink.acquire());
  src.destroy();
  await sink.release();
}

/** Open an output target: a fifo (kept open read-write so it never lacks a reader) or a file. */
export function openOutput(target: string): SharedSink {
  const st = fs.statSync(target);
  if (st.isFIFO()) {
    const fd = fs.openSync(target, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    return new SharedSink(pipeSocket(fd, 'w'), target);
  }
  const fd = fs.openSync(target, fs.constants.O_WRONLY | fs.constants.O_APPEND);
  return new SharedSink(fs.createWriteStream('', { fd, autoClose: true }));
}

export function closeQuietly(fd: number): void {
  if (fd < 0) return;
  try { fs.closeSync(fd); } catch { /* already closed */ }
}
