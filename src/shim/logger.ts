// Daemon logging: pino JSON lines into the bundle's `log` fifo, which containerd copies to its
// own log. The fifo is written through an epoll-backed handle; if containerd stops reading
// (restart), lines are dropped past a bound instead of blocking the shim or growing without end.
import fs from 'node:fs';
import net from 'node:net';
import pino, { type Logger } from 'pino';

const MAX_BACKLOG = 1 << 20;

class FifoSink {
  dropped = 0;
  constructor(private readonly sock: net.Socket) {
    sock.on('error', () => { /* containerd went away; writes are dropped */ });
    sock.unref();
  }
  write(line: string): void {
    if (this.sock.destroyed || this.sock.writableLength > MAX_BACKLOG) {
      this.dropped++;
      return;
    }
    this.sock.write(line);
  }
}

export function openLogger(debug: boolean, fifo = 'log'): Logger {
  let sink: { write(s: string): void } = { write() { /* no log fifo */ } };
  try {
    // O_NONBLOCK: never park a thread on a fifo; ENXIO if nobody reads it (tests, manual runs).
    const fd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    if (fs.fstatSync(fd).isFIFO()) sink = new FifoSink(new net.Socket({ fd, readable: false, writable: true }));
    else fs.closeSync(fd);
  } catch { /* no reader: logging is off */ }
  return pino({
    level: debug ? 'debug' : 'info',
    base: { runtime: 'io.containerd.runc.v2', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  }, sink);
}
