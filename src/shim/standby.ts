// A pre-booted standby daemon. Booting Node and loading the daemon takes far longer than the
// Go shim's whole `start`, and containerd's first RPC waits for it. So `start` hands the shim's
// listening socket (SCM_RIGHTS) to a standby that has already booted, and leaves a fresh
// standby behind for the next container. One standby per containerd (keyed by its addresses and
// this build); it exits after an idle period. SHIM_STANDBY=0 in containerd's environment turns
// the mechanism off.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { spawn } from 'node:child_process';
import * as native from '../sys/native.js';
import { SOCKET_DIR } from './address.js';
import type { ShimFlags } from './flags.js';

const CONNECT_TIMEOUT_MS = 200;
const ADOPT_TIMEOUT_MS = 2000;
const DEFAULT_IDLE_S = 120;
const BOOT_NICE = 10;

export interface Adoption { namespace: string; id: string; address: string; debug: boolean; bundle: string }

export function standbyEnabled(env = process.env): boolean {
  return env.SHIM_STANDBY !== '0';
}

/** FNV-1a, 64 bit: a stable short name for the key (not a security boundary: 0600 + peer uid). */
export function fnv1a64(s: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(s, 'utf8')) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, '0');
}

/** The control socket of the standby for this containerd and this build of the shim. */
export function standbyPath(grpcAddress: string, ttrpcAddress: string, entry = process.argv[1] ?? ''): string {
  let build = '';
  try {
    const real = fs.realpathSync(entry);
    build = `${real}\0${Math.floor(fs.statSync(real).mtimeMs)}`;
  } catch { /* unknown build: still keyed by the addresses */ }
  return `${SOCKET_DIR}/standby-${fnv1a64(`${grpcAddress}\0${ttrpcAddress}\0${build}`)}`;
}

/**
 * Hand `listenFd` to the standby at `path`. Resolves with the daemon's pid once it serves, or
 * undefined when there is no standby (the caller then spawns a daemon itself). A standby that
 * took the socket but did not confirm is killed, so two daemons never share one socket.
 */
export function handOver(path: string, a: Adoption, listenFd: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    let peer = 0;
    let sent = false;
    let reply = '';
    const finish = (pid: number | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      if (pid === undefined && sent && peer > 0) {
        try { process.kill(peer, 'SIGKILL'); } catch { /* gone */ }
      }
      resolve(pid);
    };
    let timer = setTimeout(() => finish(undefined), CONNECT_TIMEOUT_MS);
    sock.once('connect', () => {
      clearTimeout(timer);
      try {
        const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
        const cred = native.peerCred(fd);
        if (cred.uid !== process.geteuid?.()) return finish(undefined);
        peer = cred.pid;
        native.sendFd(fd, listenFd, JSON.stringify(a));
        sent = true;
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

/** Leave a standby behind for the next `start` (booting at low priority, off the critical path). */
export function spawnStandby(path: string): void {
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, '-standby', path], {
    cwd: '/',
    detached: true,
    stdio: 'ignore',
    env: process.env,
  });
  child.on('error', () => { /* best effort */ });
  child.unref();
  if (child.pid) try { os.setPriority(child.pid, BOOT_NICE); } catch { /* best effort */ }
}

/** Standby mode: load the daemon, wait for one socket, then become that container's shim. */
export async function runStandby(flags: ShimFlags): Promise<void> {
  const path = flags.standby;
  const { serve } = await import('./serve.js');
  fs.mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o700 });
  if (await isLive(path)) return; // another standby holds this post
  fs.rmSync(path, { force: true });
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve, reject) => server.listen(path, resolve).once('error', reject));
  fs.chmodSync(path, 0o600);
  // Two standbys can race for one post: the one whose socket file was replaced retires.
  const ino = fs.statSync(path).ino;
  const watch = setInterval(() => {
    let cur = -1;
    try { cur = fs.statSync(path).ino; } catch { /* removed */ }
    if (cur !== ino) { server.close(); process.exit(0); }
  }, 5000);
  const idleS = Number(process.env.SHIM_STANDBY_IDLE_SECONDS) || DEFAULT_IDLE_S;
  const retire = () => { server.close(); fs.rmSync(path, { force: true }); process.exit(0); };
  const idle = setTimeout(retire, idleS * 1000);
  process.once('SIGTERM', retire);
  process.once('SIGINT', retire);

  let adopted = false;
  server.on('connection', (sock) => {
    if (adopted) return void sock.destroy();
    let listenFd: number;
    let a: Adoption;
    try {
      const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
      if (native.peerCred(fd).uid !== process.geteuid?.()) return void sock.destroy();
      const msg = native.recvFd(fd, ADOPT_TIMEOUT_MS);
      listenFd = msg.fd;
      a = JSON.parse(msg.name) as Adoption;
      if (!a.namespace || !a.id || typeof a.bundle !== 'string') throw new Error('bad adoption request');
    } catch {
      return void sock.destroy();
    }
    adopted = true;
    clearTimeout(idle);
    clearInterval(watch);
    process.removeListener('SIGTERM', retire);
    process.removeListener('SIGINT', retire);
    server.close();
    fs.rmSync(path, { force: true });
    try { os.setPriority(0); } catch { /* not permitted: keep the boot priority */ }
    process.chdir(a.bundle);
    serve({ ...flags, standby: '', namespace: a.namespace, id: a.id, address: a.address, debug: a.debug }, listenFd)
      .then(() => sock.end(JSON.stringify({ pid: process.pid })))
      .catch(() => process.exit(1));
  });
}

function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(path);
    const t = setTimeout(() => { c.destroy(); resolve(false); }, CONNECT_TIMEOUT_MS);
    c.once('connect', () => { clearTimeout(t); c.destroy(); resolve(true); });
    c.once('error', () => { clearTimeout(t); resolve(false); });
  });
}
