// SPDX-License-Identifier: Apache-2.0
// The stdin fifo: we hold our own write handle (the "closer") so the fifo always has a writer
// while clients attach and detach; the container sees EOF only after CloseIO (runc-and-io §4.6).
import fs from 'node:fs';
import type { Writable } from 'node:stream';
import { pipeSocket, closeQuietly } from './copy.js';

const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;

export class StdinFifo {
  private closerFd: number;
  private readonly done: Promise<void>;

  /** Open `path` and start copying into `dst`; dst is ended when the fifo reaches EOF. */
  constructor(path: string, dst: Writable) {
    // Reader first (non-blocking open never waits), then our writer, which succeeds at once
    // because a reader now exists. Reading can only see EOF once both are gone.
    const rfd = fs.openSync(path, O_RDONLY | O_NONBLOCK);
    try {
      this.closerFd = fs.openSync(path, O_WRONLY | O_NONBLOCK);
    } catch (e) {
      closeQuietly(rfd);
      throw e;
    }
    const src = pipeSocket(rfd, 'r');
    this.done = new Promise((resolve) => {
      const end = () => { dst.end(); src.destroy(); resolve(); };
      src.once('end', end);
      src.once('close', end);
      dst.once('error', () => { src.destroy(); resolve(); });
      src.pipe(dst, { end: false });
    });
  }

  /** CloseIO: drop our writer; the copy ends once the client's writer is closed too. */
  closeWriter(): void {
    closeQuietly(this.closerFd);
    this.closerFd = -1;
  }

  finished(): Promise<void> { return this.done; }
}
