// SPDX-License-Identifier: Apache-2.0
// A post's socket file: who holds it (a live listener) and which one it is (a post replaced by
// another process's is not ours to remove).
import fs from 'node:fs';
import net from 'node:net';

/** A file's identity: its inode and change time (a socket made anew may get the same inode number). */
export function inode(p: string): string {
  try {
    const st = fs.statSync(p, { bigint: true });
    return `${st.ino}:${st.ctimeNs}`;
  } catch {
    return '';
  }
}

/** Whether something accepts connections on the unix socket `path` (within 200 ms). */
export function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(path);
    const t = setTimeout(() => { c.destroy(); resolve(false); }, 200);
    c.once('connect', () => { clearTimeout(t); c.destroy(); resolve(true); });
    c.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

/**
 * The unix sockets bound in this network namespace, from /proc/net/unix (path → listening), or
 * undefined when unreadable. Nothing connects: a connection would be a conversation the holder
 * has to sit through.
 */
export function boundUnixSockets(): Map<string, boolean> | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/net/unix', 'latin1');
  } catch {
    return undefined;
  }
  const out = new Map<string, boolean>();
  // Num RefCount Protocol Flags Type St Inode Path; a listener has __SO_ACCEPTCON (0x10000) in Flags.
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[7].startsWith('/')) out.set(f[7], out.get(f[7]) === true || (Number.parseInt(f[3], 16) & 0x10000) !== 0);
  }
  return out;
}

/** Whether some process listens on the unix socket `path` (unknown counts as yes). */
export function isListening(path: string): boolean {
  const bound = boundUnixSockets();
  return bound ? bound.get(path) === true : true;
}
