// Byte pumps between pipes and fifos, all through epoll-backed handles (never the libuv thread
// pool, which a blocked fifo would park). Back-pressure comes from stream piping.
import net from 'node:net';
import fs from 'node:fs';
import type { Writable } from 'node:stream';

/** An epoll-backed stream over a pipe or fifo fd; it owns the fd and closes it when destroyed. */
export function pipeSocket(fd: number, mode: 'r' | 'w'): net.Socket {
  const s = new net.Socket({ fd, readable: mode === 'r', writable: mode === 'w' });
  s.on('error', () => s.destroy());
  return s;
}

/** A writable sink that may be shared by stdout and stderr; closed after its last user. */
export class SharedSink {
  private users = 0;
  private closed = false;
  constructor(readonly stream: Writable) {
    stream.on('error', () => { /* reader gone or disk full: the copy keeps draining the pipe */ });
  }
  acquire(): Writable { this.users++; return this.stream; }
  release(): void {
    if (--this.users > 0 || this.closed) return;
    this.closed = true;
    this.stream.end(() => this.stream.destroy());
  }
}

/**
 * Copy src → sink until src ends. If the sink fails, keep draining src so that the container
 * never blocks on a full pipe because its reader went away.
 */
export function copyInto(src: net.Socket, sink: SharedSink): Promise<void> {
  const dst = sink.acquire();
  return new Promise((resolve) => {
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      src.unpipe(dst);
      sink.release();
      src.destroy();
      resolve();
    };
    dst.once('error', () => { src.unpipe(dst); src.resume(); });
    src.once('end', finish);
    src.once('close', finish);
    src.pipe(dst, { end: false });
  });
}

/** Open an output target: a fifo (kept open read-write so it never lacks a reader) or a file. */
export function openOutput(target: string): SharedSink {
  const st = fs.statSync(target);
  if (st.isFIFO()) {
    const fd = fs.openSync(target, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    return new SharedSink(pipeSocket(fd, 'w'));
  }
  const fd = fs.openSync(target, fs.constants.O_WRONLY | fs.constants.O_APPEND);
  return new SharedSink(fs.createWriteStream('', { fd, autoClose: true }));
}

export function closeQuietly(fd: number): void {
  if (fd < 0) return;
  try { fs.closeSync(fd); } catch { /* already closed */ }
}
