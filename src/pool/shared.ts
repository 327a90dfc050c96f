// SPDX-License-Identifier: Apache-2.0
// Opt-in shared daemons (docs/shared-daemon.md): with SHIM_SHARED=1 in containerd's environment,
// a daemon serves the shim sockets of up to SHIM_SHARED_TENANTS containers or pods (default 8),
// each with its own Task service, state and events. This module is the daemon's side of it: a
// post (a slot `shared-<hash>-<i>` of its key, key.ts sharedPostOf) where a `start` (or a
// standby running one) offers its listening shim socket by the hand-over protocol (protocol.ts,
// an `adopt` offer), and where the daemon says ACCEPT only while it has room and only to a
// tenant whose containerd addresses, namespace and shim_cgroup are its own; and the start's
// side, which tries the slots in order.
import fs from 'node:fs';
import net from 'node:net';
import { COMMIT_TIMEOUT_MS, MSG_ACCEPT, MSG_COMMIT, MSG_REFUSE, MSG_RUNNING, OFFER_TIMEOUT_MS, SHARED_SLOTS } from './constants.js';
import { jobEnv, ownPoolBase, sharedPostOf } from './key.js';
import { handOver, type Adoption } from './offer.js';
import { foreignPeer } from './peer.js';
import { sharedFault } from './faults.js';
import { inode, isListening } from './sockfile.js';
import { ByteReader, closeAll, connFd, receiveOffer, writeByte, type Offer } from './protocol.js';

/** Tenants a shared daemon serves unless SHIM_SHARED_TENANTS says otherwise, and the most it may say. */
const DEFAULT_TENANTS = 8;
const MAX_TENANTS = 32;
/** How often a daemon with room and no slot looks whether one is free. */
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
  /**
   * Run a launcher's `start` job here (stdio in the offer's fds, which the host closes): its
   * status, and the tenant it made (none when the start failed, or when the socket went to
   * another daemon because its shim_cgroup is not this one's or the daemon filled up).
   */
  runStart(offer: Extract<Offer, { kind: 'job' }>, flags: F): Promise<{ status: number; tenant?: T }>;
  /** Stop serving a tenant nobody will use. */
  drop(tenant: T, why: string): void;
}

/**
 * A shared daemon's post: one of its key's SLOTS, held while the daemon has room, let go when it
 * is full. Several daemons with room each hold a slot, so a start finds room without waiting for
 * a full daemon's slot to be taken over; starts try the slots in order, which fills the daemon on
 * the lowest slot first.
 */
export class SharedPost<F extends { action: string; namespace: string }, T> {
  private server?: net.Server;
  private ino = '';
  /** The slot held ('' for none). */
  path = '';
  private queue: Promise<void> = Promise.resolve();
  private opening = false;
  private retry?: NodeJS.Timeout;

  /** `base`: the key's post name (key.ts sharedPostOf); its slots are `<base>-<i>`. */
  constructor(private readonly base: string, private readonly shimCgroup: string, private readonly host: SharedHost<F, T>) {}

  /** Hold a free slot if there is room; let the slot go if there is none. */
  async update(): Promise<void> {
    clearTimeout(this.retry);
    if (!this.host.room()) return this.close();
    if (this.server || this.opening) return;
    this.opening = true;
    try {
      fs.mkdirSync(this.base.replace(/\/[^/]*$/, ''), { recursive: true, mode: 0o700 });
      // A slot nobody listens on: free, or left by a daemon that died.
      for (const slot of sharedSlots(this.base)) {
        if (isListening(slot)) continue;
        fs.rmSync(slot, { force: true });
        const srv = net.createServer({ pauseOnConnect: true });
        try {
          await new Promise<void>((resolve, reject) => srv.listen(slot, resolve).once('error', reject));
        } catch {
          continue; // taken meanwhile
        }
        fs.chmodSync(slot, 0o600);
        srv.unref(); // the tenants keep the daemon alive, not the post
        srv.on('connection', (sock: net.Socket) => {
          this.queue = this.queue.then(() => this.converse(sock)).catch(() => { sock.destroy(); });
        });
        this.server = srv;
        this.path = slot;
        this.ino = inode(slot);
        break;
      }
    } catch {
      /* no post now: try again below */
    } finally {
      this.opening = false;
      // Every slot held by another daemon with room: look again now and then, so that this one
      // takes one once they are full or gone.
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
    this.path = '';
  }

  /**
   * The daemon's side of one conversation (docs/standby-protocol.md): a Node `start`'s `adopt`
   * offer of its own shim_cgroup, or a launcher's `start` job.
   */
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
    const adopt = offer.kind === 'adopt' && flags?.action === '' && (offer.shimCgroup ?? '') === this.shimCgroup;
    const job = offer.kind === 'job' && flags?.action === 'start';
    const fits = (adopt || job) && flags?.namespace !== '' && sameEnv && this.host.room();
    if (!fits || !flags || !writeByte(fd, MSG_ACCEPT)) {
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
    let status = 1;
    if (offer.kind === 'adopt') {
      try {
        tenant = await this.host.adopt(flags, offer.fds[0], offer.bundle); // the fd is the host's from here on
        status = 0;
      } catch { /* status 1: the start fails, containerd cleans up */ }
    } else {
      ({ status, tenant } = await this.host.runStart(offer, flags));
    }
    sharedFault('status');
    // A sender gone before the status means a `start` that failed: nobody will use this socket.
    if (!writeByte(fd, status) && tenant) this.host.drop(tenant, 'the start that handed it over is gone');
    sock.destroy();
    await this.update();
  }
}

/** The slots of a key's shared post, in the order starts try them. */
function sharedSlots(base: string): string[] {
  return Array.from({ length: SHARED_SLOTS }, (_, i) => `${base}-${i}`);
}

/** The post of the shared daemons for this process's pool and containerd's JOB_ENV `vars`. */
export function sharedPost(vars: Readonly<Record<string, string>>): string {
  return sharedPostOf(ownPoolBase(), vars);
}

/**
 * Hand the listening shim socket of `a` to the shared daemon of its key, if shared daemons are
 * on and one has room: resolves with that daemon's pid, or undefined (nothing ran: the caller
 * gets a daemon of its own, which then takes the post). Rejects if the daemon failed after RUNNING.
 */
export async function joinShared(a: Adoption, listenFd: number): Promise<number | undefined> {
  if (!sharedEnabled()) return undefined;
  for (const slot of sharedSlots(sharedPost(a.env))) {
    const pid = await handOver(slot, a, listenFd);
    if (pid !== undefined) return pid;
  }
  return undefined;
}
