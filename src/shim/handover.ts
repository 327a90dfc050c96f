// SPDX-License-Identifier: Apache-2.0
// A Node `start` handing its listening shim socket to a standby daemon (standby.ts is the other
// side): the socket over SCM_RIGHTS with the container's identity, the standby's pid back once it
// serves. Used when `start` runs in Node (the launcher hands its jobs over itself).
import net from 'node:net';
import * as native from '../sys/native.js';

export const CONNECT_TIMEOUT_MS = 200;
export const ADOPT_TIMEOUT_MS = 2000;

/** argv0: the binary containerd ran (SHIM_ARGV0), which the daemon shows as its own (identity.ts). */
export interface Adoption { namespace: string; id: string; address: string; debug: boolean; bundle: string; argv0?: string }

/**
 * Hand `listenFd` to the standby at `path`. Resolves with the daemon's pid once it serves, or
 * undefined when there is no standby, it refused (busy, already adopted) or did not answer in
 * time; the caller then spawns a daemon itself. A standby never acts on a request older than
 * STALE_MS, which is well under our wait, so a request we gave up on is never adopted later and
 * two daemons never share one socket.
 */
export function handOver(path: string, a: Adoption, listenFd: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    let reply = '';
    const finish = (pid: number | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(pid);
    };
    let timer = setTimeout(() => finish(undefined), CONNECT_TIMEOUT_MS);
    sock.once('connect', () => {
      clearTimeout(timer);
      try {
        const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
        if (native.peerCred(fd).uid !== process.geteuid?.()) return finish(undefined);
        native.sendFd(fd, listenFd, JSON.stringify({ kind: 'adopt', argv0: process.env.SHIM_ARGV0, ...a, sent: Date.now() }));
      } catch {
        return finish(undefined);
      }
      timer = setTimeout(() => finish(undefined), ADOPT_TIMEOUT_MS);
    });
    sock.on('data', (c: Buffer) => { reply += c.toString('utf8'); });
    sock.once('end', () => {
      try {
        const pid = (JSON.parse(reply) as { pid?: unknown }).pid;
        finish(typeof pid === 'number' && pid > 0 ? pid : undefined);
      } catch {
        finish(undefined);
      }
    });
    sock.once('error', () => finish(undefined));
  });
}
