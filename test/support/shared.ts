// SPDX-License-Identifier: Apache-2.0
// Finding shared daemons (docs/shared-daemon.md) from outside: who listens on a unix socket,
// and which shared post a daemon holds.
import fs from 'node:fs';
import { listProcesses } from './containerd.js';

/** Inodes of the listening unix sockets bound to `path` (/proc/net/unix). */
function listeningInodes(path: string): Set<string> {
  const out = new Set<string>();
  for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[7] === path && (Number.parseInt(f[3], 16) & 0x10000) !== 0) out.add(f[6]);
  }
  return out;
}

/** The processes holding any of the socket `inodes`. */
function holders(inodes: Set<string>): number[] {
  const out: number[] = [];
  if (inodes.size === 0) return out;
  for (const p of listProcesses()) {
    let fds: string[];
    try { fds = fs.readdirSync(`/proc/${p.pid}/fd`); } catch { continue; }
    if (fds.some((fd) => {
      try { return inodes.has(/^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${p.pid}/fd/${fd}`))?.[1] ?? ''); } catch { return false; }
    })) out.push(p.pid);
  }
  return out;
}

/** Every process holding the listening unix socket `path`. */
export function listenerPids(path: string): number[] {
  return holders(listeningInodes(path));
}

/** The pid of the process listening on the unix socket `path`, if any. */
export function listenerPid(path: string): number | undefined {
  return holders(listeningInodes(path))[0];
}

/** The shared post (/run/containerd/s/shared-*) the daemon `pid` listens on, if any. */
export function sharedPostOfPid(pid: number, dir = '/run/containerd/s'): string | undefined {
  for (const n of fs.readdirSync(dir)) {
    if (n.startsWith('shared-') && holders(listeningInodes(`${dir}/${n}`)).includes(pid)) return `${dir}/${n}`;
  }
  return undefined;
}

/** Whether a shared post file is left that nobody listens on. */
export function stalePosts(dir = '/run/containerd/s'): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith('shared-') && listeningInodes(`${dir}/${n}`).size === 0);
}
