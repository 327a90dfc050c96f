// SPDX-License-Identifier: Apache-2.0
// Who may talk on a pool socket: a process of our own user and group (SO_PEERCRED), running
// the Node that runs us or the shim's launcher. The posts are 0600 in a 0700 directory, so this
// is the second fence, not the first; it also keeps a pool of one user from ever serving
// another's jobs should a directory's mode be loosened.
import fs from 'node:fs';
import path from 'node:path';
import * as native from '../sys/native.js';

/** The executables a sender may run: this Node, and the launcher built beside the bundle. */
function allowedExes(): Set<string> {
  const out = new Set<string>();
  for (const p of [process.execPath, launcherPath()]) {
    try { out.add(fs.realpathSync(p)); } catch { /* not built */ }
  }
  return out;
}

/** The launcher of this build: native/build/Release/shim-launcher beside dist/shim/main.js. */
function launcherPath(entry = process.argv[1] ?? ''): string {
  return path.resolve(path.dirname(entry), '..', '..', 'native', 'build', 'Release', 'shim-launcher');
}

let allowed: Set<string> | undefined;

/** Why the peer of the connected socket `fd` is not ours, or undefined when it is. */
export function foreignPeer(fd: number): string | undefined {
  let cred: native.PeerCred;
  try { cred = native.peerCred(fd); } catch (e) { return `SO_PEERCRED: ${(e as Error).message}`; }
  if (cred.uid !== process.geteuid?.()) return `peer uid ${cred.uid}`;
  if (cred.gid !== process.getegid?.()) return `peer gid ${cred.gid}`;
  let exe: string;
  try { exe = fs.readlinkSync(`/proc/${cred.pid}/exe`); } catch { return undefined; } // gone, or another pid namespace: uid and gid stand
  allowed ??= allowedExes();
  return allowed.has(exe) ? undefined : `peer runs ${exe}`;
}
