// SPDX-License-Identifier: Apache-2.0
// Fifos as containerd creates them for a task's stdio, read or written from the test side
// without parking libuv's thread pool.
import fs from 'node:fs';
import net from 'node:net';
import { execFileSync } from 'node:child_process';

export function mkfifo(p: string): string {
  execFileSync('mkfifo', ['-m', '0700', p]);
  return p;
}

/** Collects everything written into a fifo (opened read-write so it never sees EOF early). */
export class FifoReader {
  private readonly chunks: Buffer[] = [];
  readonly sock: net.Socket;
  constructor(p: string) {
    const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    this.sock = new net.Socket({ fd, readable: true, writable: false });
    this.sock.on('data', (c: Buffer) => this.chunks.push(c));
    this.sock.on('error', () => undefined);
  }
  get text(): string { return Buffer.concat(this.chunks).toString('utf8'); }
  async until(pred: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.text)) {
      if (Date.now() > deadline) throw new Error(`timed out; fifo has ${JSON.stringify(this.text)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.text;
  }
  close(): void { this.sock.destroy(); }
}

/** A writer on a fifo (as a client attaching to stdin). */
export function fifoWriter(p: string): net.Socket {
  const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const s = new net.Socket({ fd, readable: false, writable: true });
  s.on('error', () => undefined);
  return s;
}
