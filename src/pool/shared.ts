// SPDX-License-Identifier: Apache-2.0
// Opt-in shared daemons (docs/shared-daemon.md): with SHIM_SHARED=1 in containerd's environment,
// a daemon serves the shim sockets of up to SHIM_SHARED_TENANTS containers or pods (default 8),
// each with its own Task service, state and events. This module is the daemon's side of it: a
// post (`shared-<hash>`, key.ts sharedPostOf) where a `start` (or a standby running one) offers
// its listening shim socket by the hand-over protocol (protocol.ts, an `adopt` offer), and where
// the daemon says ACCEPT only while it has room and only to a tenant whose containerd addresses,
// namespace and shim_cgroup are its own. The post is open only while there is room, so the next
// daemon of the same key can hold it once this one is full.
import fs from 'node:fs';
import net from 'node:net';
import { COMMIT_TIMEOUT_MS, MSG_ACCEPT, MSG_COMMIT, MSG_REFUSE, MSG_RUNNING, OFFER_TIMEOUT_MS } from './constants.js';
import { jobEnv, ownPoolBase, sharedPostOf } from './key.js';
import { handOver, type Adoption } from './offer.js';
import { foreignPeer } from './peer.js';
import { sharedFault } from './faults.js';
import { inode, isListening } from './sockfile.js';
import { ByteReader, closeAll, connFd, receiveOffer, writeByte } from './protocol.js';

/** Tenants a shared daemon serves unless SHIM_SHARED_TENANTS says otherwise, and the most it may say. */
const DEFAULT_TENANTS = 8;
const MAX_TENANTS = 32;
/** How often a daemon with room and no post looks whether the post is free. */
const RETRY_MS = 2000;

export function sharedEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  // A core-scheduling cookie is the daemon's and every container's it starts: one per pod, never shared.
  return env.SHIM_SHARED === '1' && !env.SCHED_CORE;
}

/** The tenant bound: SHIM_SHARED_TENANTS within 1..32, else 8. */
export function sharedBound(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.SHIM_SHARED_TENANTS);
  return Number.isSafeInteger(n) && n >= 1 ? Math.min(n, MAX_TENANTS) : DEFAULT_TENANTS;
}

/** What the daemon does with a tenant it accepted (T: its handle). */
export interface SharedHost<F, T> {
  /** The shim's flag parser (a tenant's argv is a daemon's flags). */
  parseFlags(argv: readonly string[]): F;
  /** Whether one more tenant fits now. */
  room(): boolean;
  /** Serve `flags` on the listening socket `fd`, its bundle `bundle`; rejects if it could not. */
  adopt(flags: F, fd: number, bundle: string): Promise<T>;
  /** Stop serving a tenant nobody will use. */
  drop(tenant: T, why: string): void;
}

/** A shared daemon's post: open while there is room, closed otherwise. */
export class SharedPost<F extends { action: string; namespace: string }, T> {
  private server?: net.Server;
  private ino = '';
  private queue: Promise<void> = Promise.resolve();
  private opening = false;
  private retry?: NodeJS.Timeout;

  constructor(readonly path: string, private readonly shimCgroup: string, private readonly host: SharedHost<F, T>) {}

  /** Open the post if there is room and nobody else holds it; close it if there is none. */
  async update(): Promise<void> {
    clearTimeout(this.retry);
    if (!this.host.room()) return this.close();
    if (this.server || this.opening) return;
    this.opening = true;
    try {
      fs.mkdirSync(this.path.replace(/\/[^/]*$/, ''), { recursive: true, mode: 0o700 });
      if (isListening(this.path)) return; // another daemon of this key has room: it takes the tenants
      fs.rmSync(this.path, { force: true });
      const srv = net.createServer({ pauseOnConnect: true });
      await new Promise<void>((resolve, reject) => srv.listen(this.path, resolve).once('error', reject));
      fs.chmodSync(this.path, 0o600);
      srv.unref(); // the tenants keep the daemon alive, not the post
      srv.on('connection', (sock: net.Socket) => {
        this.queue = this.queue.then(() => this.converse(sock)).catch(() => { sock.destroy(); });
      });
      this.server = srv;
      this.ino = inode(this.path);
    } catch {
      /* no post now: try again below */
    } finally {
      this.opening = false;
      // Another daemon holds the post (or it could not be made): look again now and then, so
      // that this one takes it once that one is full or gone.
      if (!this.server && this.host.room()) this.retry = setTimeout(() => void this.update(), RETRY_MS).unref();
    }
  }

  /** Whether this daemon holds the post. */
  get open(): boolean { return this.server !== undefined; }

  close(): void {
    clearTimeout(this.retry);
    if (!this.server) return;
    this.server.close();
    this.server = undefined;
    if (inode(this.path) === this.ino) fs.rmSync(this.path, { force: true });
  }

  /** The daemon's side of one conversation (docs/standby-protocol.md, an `adopt` offer only). */
  private async converse(sock: net.Socket): Promise<void> {
    const fd = connFd(sock);
    if (!this.server || foreignPeer(fd) !== undefined) return void sock.destroy();
    const offer = receiveOffer(fd, OFFER_TIMEOUT_MS);
    if (!offer) return void sock.destroy();
    sharedFault('offer');
    let flags: F | undefined;
    try { flags = this.host.parseFlags(offer.argv); } catch { /* refused below */ }
    const own = jobEnv();
    const sameEnv = Object.keys(own).length === Object.keys(offer.env).length && Object.entries(own).every(([k, v]) => offer.env[k] === v);
    const fits = offer.kind === 'adopt' && flags?.action === '' && flags.namespace !== '' && sameEnv &&
      (offer.shimCgroup ?? '') === this.shimCgroup && this.host.room();
    if (!fits || !flags || offer.kind !== 'adopt' || !writeByte(fd, MSG_ACCEPT)) {
      closeAll(offer.fds);
      writeByte(fd, MSG_REFUSE);
      return void sock.destroy();
    }
    sharedFault('accept');
    // Nothing runs before the sender commits: it may have given up waiting for our ACCEPT.
    if (await new ByteReader(sock).next(COMMIT_TIMEOUT_MS) !== MSG_COMMIT || !this.server) return void (closeAll(offer.fds), sock.destroy());
    sharedFault('commit');
    if (!writeByte(fd, MSG_RUNNING)) return void (closeAll(offer.fds), sock.destroy());
    sharedFault('running');
    let tenant: T | undefined;
    try {
      tenant = await this.host.adopt(flags, offer.fds[0], offer.bundle); // the fd is the host's from here on
    } catch { /* status 1: the start fails, containerd cleans up */ }
    sharedFault('status');
    // A sender gone before the status means a `start` that failed: nobody will use this socket.
    if (!writeByte(fd, tenant ? 0 : 1) && tenant) this.host.drop(tenant, 'the start that handed it over is gone');
    sock.destroy();
    await this.update();
  }
}

/** The post of the shared daemon for this process's pool, containerd's JOB_ENV `vars` and `shimCgroup`. */
export function sharedPost(vars: Readonly<Record<string, string>>, shimCgroup: string): string {
  return sharedPostOf(ownPoolBase(), vars, shimCgroup);
}

/**
 * Hand the listening shim socket of `a` to the shared daemon of its key, if shared daemons are
 * on and one has room: resolves with that daemon's pid, or undefined (nothing ran: the caller
 * gets a daemon of its own, which then takes the post). Rejects if the daemon failed after RUNNING.
 */
export function joinShared(a: Adoption, listenFd: number): Promise<number | undefined> {
  if (!sharedEnabled()) return Promise.resolve(undefined);
  return handOver(sharedPost(a.env, a.shimCgroup ?? ''), a, listenFd);
}
