// SPDX-License-Identifier: Apache-2.0
// The sender's side of the hand-over protocol (protocol.ts, docs/standby-protocol.md) for a Node
// `start`: offer the listening shim socket to the standby on a post, and commit only once it
// accepted. The launcher (native/launcher/launcher.c) is the other sender, for whole jobs.
import net from 'node:net';
import * as native from '../sys/native.js';
import { ACCEPT_TIMEOUT_MS, MSG_ACCEPT, MSG_COMMIT, MSG_RUNNING } from './constants.js';
import { ByteReader, connFd, encodeOffer, writeByte } from './protocol.js';
import { foreignPeer } from './peer.js';
import { senderFault } from './faults.js';

/** The daemon a standby should become (or a shared daemon serve): its flags (as argv), its bundle, the binary containerd ran, containerd's JOB_ENV, the runc option shim_cgroup. */
export interface Adoption { argv: string[]; bundle: string; argv0?: string; env: Record<string, string>; shimCgroup?: string }

function connect(path: string): Promise<net.Socket | undefined> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    sock.once('connect', () => { sock.pause(); resolve(sock); });
    sock.once('error', () => resolve(undefined));
  });
}

/**
 * Offer `listenFd` to the standby at `post`. Resolves with the daemon's pid once it serves, or
 * undefined when the standby did not take it (none there, busy, refused, gone before RUNNING):
 * then it did not run, and the caller spawns a daemon itself. Rejects when the standby died
 * after RUNNING: the adoption ran there and is never offered again.
 */
export async function handOver(post: string, a: Adoption, listenFd: number): Promise<number | undefined> {
  const sock = await connect(post);
  if (!sock) return undefined;
  try {
    const fd = connFd(sock);
    if (foreignPeer(fd) !== undefined) return undefined;
    const pid = native.peerCred(fd).pid;
    senderFault('connect');
    try { native.sendFd(fd, listenFd, encodeOffer({ kind: 'adopt', ...a })); } catch { return undefined; }
    senderFault('offer');
    const reader = new ByteReader(sock);
    if (await reader.next(ACCEPT_TIMEOUT_MS) !== MSG_ACCEPT) return undefined;
    senderFault('accept');
    if (!writeByte(fd, MSG_COMMIT)) return undefined;
    senderFault('commit');
    // Committed: the standby either says RUNNING or closes without running anything.
    if (await reader.next() !== MSG_RUNNING) return undefined;
    senderFault('running');
    const status = await reader.next();
    if (status !== 0) throw new Error('the standby shim died during start');
    return pid;
  } finally {
    sock.destroy();
  }
}
