// SPDX-License-Identifier: Apache-2.0
// Who may speak ttrpc to a daemon.
import type net from 'node:net';
import * as native from '../sys/native.js';

/** Only containerd's user may talk to us (the reference checks SO_PEERCRED the same way). */
export function fromOurUser(sock: net.Socket): boolean {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return false;
  const cred = native.peerCred(fd);
  return cred.uid === (process.geteuid?.() ?? 0) && cred.gid === (process.getegid?.() ?? 0);
}
