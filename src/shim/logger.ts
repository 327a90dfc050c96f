// SPDX-License-Identifier: Apache-2.0
// Daemon logging: logrus-style lines (src/log/logger.ts) into the bundle's `log` fifo, which
// containerd copies to its own log. The fifo is written through an epoll-backed handle; if containerd stops reading
// (restart), lines are dropped past a bound instead of blocking the shim or growing without
// end, and the fifo is reopened once a new containerd reads it again.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { lineLogger, type Format, type Logger } from '../log/logger.js';

const MAX_BACKLOG = 1 << 20;
const REOPEN_INTERVAL_MS = 1000;

class FifoSink {
  dropped = 0;
  private sock?: net.Socket;
  private lastOpen = 0;

  constructor(private readonly fifo: string) {
    this.open();
  }

  private open(): void {
    this.lastOpen = Date.now();
    let fd: number;
    try {
      // O_NONBLOCK: never park a thread on a fifo; ENXIO while nobody reads it.
      fd = fs.openSync(this.fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch {
      return;
    }
    if (!fs.fstatSync(fd).isFIFO()) {
      fs.closeSync(fd);
      return;
    }
    const sock = new net.Socket({ fd, readable: false, writable: true });
    // EPIPE once containerd's reader is gone: drop this handle, reopen later.
    sock.on('error', () => sock.destroy());
    sock.unref();
    this.sock = sock;
  }

  write(line: string): void {
    if (!this.sock || this.sock.destroyed) {
      this.sock = undefined;
      if (Date.now() - this.lastOpen < REOPEN_INTERVAL_MS) { this.dropped++; return; }
      this.open();
      if (!this.sock) { this.dropped++; return; }
    }
    if (this.sock.writableLength > MAX_BACKLOG) {
      this.dropped++;
      return;
    }
    this.sock.write(line);
  }
}

/**
 * The daemon's logger: debug with `-debug` (or containerd 2.3's debug log level), Go's text
 * format unless SHIM_LOG_FORMAT=json in containerd's environment.
 */
export function openLogger(debug: boolean, fifo = 'log', env: NodeJS.ProcessEnv = process.env): Logger {
  const sink = new FifoSink(path.resolve(fifo));
  const format: Format = env.SHIM_LOG_FORMAT === 'json' ? 'json' : 'text';
  return lineLogger((line) => sink.write(line), { debug, format, fields: { runtime: 'io.containerd.runc.v2' } });
}
