// SPDX-License-Identifier: Apache-2.0
// containerd's input to `start` and `-info` on stdin, read whole but bounded.
import fs from 'node:fs';
import * as native from '../sys/native.js';
import { MAX_STDIN } from './bootstrap.js';

/**
 * Read `fd` to its end, but no more than MAX_STDIN + 1 bytes (more is not a valid input, and
 * parseStartInput ignores it): containerd 2.3 caps the same stream at 10 MiB.
 */
export function readCapped(fd: number): Buffer {
  const chunks: Buffer[] = [];
  let total = 0;
  const buf = Buffer.allocUnsafe(65536);
  try { native.setNonBlocking(fd, false); } catch { /* not a pipe or socket: reads block anyway */ }
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(fd, buf, 0, Math.min(buf.length, MAX_STDIN + 1 - total), null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EOF') break;
      throw e;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
    total += n;
    if (total > MAX_STDIN) break;
  }
  return Buffer.concat(chunks);
}
