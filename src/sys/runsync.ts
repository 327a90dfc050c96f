// SPDX-License-Identifier: Apache-2.0
// Running a short command to completion from a process with no reaper thread (the `delete` and
// `-info` actions, a standby's jobs).
import fs from 'node:fs';
import * as native from './native.js';

/**
 * Run a command to completion, its stdout and stderr captured together (or stderr discarded).
 * Through the addon's vfork spawn and a blocking wait rather than `spawnSync`, which forks the
 * whole Node process and sets up an event loop (~1 ms here). Output beyond a pipe's buffer
 * (64 KiB) would block the child: for short outputs only.
 */
export function runSync(
  file: string, args: string[], env: string[], timeoutMs: number, o: { stderr?: 'merge' | 'discard' } = {},
): { status: number; output: string; error?: string } {
  const [r, w] = native.pipe();
  let pid: number;
  try {
    pid = native.spawn({ file, args: [file, ...args], env, fds: [-1, w, o.stderr === 'discard' ? -1 : w] });
  } catch (e) {
    fs.closeSync(r);
    return { status: -1, output: '', error: (e as Error).message };
  } finally {
    fs.closeSync(w);
  }
  let error: string | undefined;
  let status = native.waitChild(pid, timeoutMs);
  if (status === null) {
    error = `${file} did not finish within ${timeoutMs} ms and was killed`;
    try { process.kill(pid, 'SIGKILL'); } catch { /* exited meanwhile */ }
    status = native.waitChild(pid, -1) ?? -1;
  }
  // The writer is gone: whatever it wrote is in the pipe (a non-blocking read never waits on
  // a grandchild that kept the write end).
  const chunks: Buffer[] = [];
  try {
    native.setNonBlocking(r, true);
    const buf = Buffer.alloc(65536);
    for (let n; (n = fs.readSync(r, buf)) > 0;) chunks.push(Buffer.from(buf.subarray(0, n)));
  } catch { /* EAGAIN: all read */ } finally {
    fs.closeSync(r);
  }
  return { status, output: Buffer.concat(chunks).toString('utf8'), error };
}
