// SPDX-License-Identifier: Apache-2.0
// Runs our shim binary the way containerd does (start / delete), from a test.
import path from 'node:path';
import fs from 'node:fs';
import { execFile } from 'node:child_process';

export function repoRoot(): string {
  let dir = path.dirname(new URL(import.meta.url).pathname);
  while (!fs.existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
  return dir;
}

export const OUR_SHIM_BIN = path.join(repoRoot(), 'bin', 'containerd-shim-runc-v2');

export interface ShimRun { code: number; stdout: Buffer; stderr: string }

export function runShim(args: string[], o: { cwd: string; env?: NodeJS.ProcessEnv; input?: Buffer; bin?: string }): Promise<ShimRun> {
  return new Promise((resolve, reject) => {
    const child = execFile(o.bin ?? OUR_SHIM_BIN, args, { cwd: o.cwd, env: o.env ?? process.env, encoding: 'buffer', timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      // (An ExecFileException is an Error; its @types/node type, built with Omit<>, does not say so.)
      const error: Error | null = err;
      if (error && code === -1) return reject(error);
      resolve({ code, stdout, stderr: stderr.toString('utf8') });
    });
    child.stdin?.end(o.input ?? Buffer.alloc(0));
  });
}

/** Wait until a pid is gone (and not a zombie of ours). */
export async function waitGone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return true;
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

export function mountedUnder(dir: string): string[] {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return text.split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p === dir || p.startsWith(dir + '/'));
}
