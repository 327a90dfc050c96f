// SPDX-License-Identifier: Apache-2.0
// Serve mode: the long-lived daemon. It is a child subreaper, serves the Task service over ttrpc
// on the socket `start` handed it as fd 3, publishes events to containerd, and exits when asked
// with no container left (or on SIGTERM/SIGINT). What belongs to one shim socket is a Tenant
// (tenant.ts); this module holds what belongs to the process. With SHIM_SHARED=1 in
// containerd's environment the daemon also takes further sockets of its key on a shared post
// (src/pool/shared.ts, docs/shared-daemon.md) and exits after the last one.
import fs from 'node:fs';
import * as native from '../sys/native.js';
import { Reaper } from '../reaper/reaper.js';
import { installCrashPolicy } from './crash.js';
import type { Fields } from '../log/logger.js';
import { Tenant, type TenantSpec } from './tenant.js';
import { isValidIdentifier } from '../task/identifiers.js';
import { parseFlags, type ShimFlags } from './flags.js';
import { SharedPost, sharedBound, sharedEnabled, sharedPost } from '../pool/shared.js';
import { jobEnv } from '../pool/key.js';
import { closeAll } from '../pool/protocol.js';
import { takeIdleIdentity, takeShimIdentity } from './identity.js';

const LISTEN_FD = 3;
/** How a daemon spawned by a Node `start` learns its shim_cgroup (dropped at once: runc must not see it). */
const SHIM_CGROUP_ENV = 'SHIM_SHARED_CGROUP';

export interface ServeOptions {
  /**
   * Called once when containerd is done with us for now: no RPC for QUIET_MS after the first
   * one, or QUIET_MAX_MS after serving began, whichever comes first. Not at shutdown: the
   * `delete` action follows at once (the standby that runs it refills the pool after it).
   */
  onQuiet?: () => void;
  /** The runc option shim_cgroup `start` puts the daemon in ('' for none): part of a shared daemon's key. */
  shimCgroup?: string;
}
/** How long an adopted tenant may wait for containerd's first connection (SHIM_SHARED_CONNECT_MS, for tests). */
const connectMs = () => Number(process.env.SHIM_SHARED_CONNECT_MS) || 30_000;
/**
 * How long a shared daemon whose last tenant left stays on its post for the next one
 * (SHIM_SHARED_IDLE_MS): as long as an idle standby (120 s), since it is the shared mode's
 * standby: a burst of starts that finds none boots Node for each start beyond the two standbys.
 */
const idleMs = () => { const v = Number(process.env.SHIM_SHARED_IDLE_MS); return Number.isFinite(v) && v >= 0 ? v : 120_000; };
/** RSS growth past which a shared daemon exits with its last tenant instead of waiting for the next. */
const GROWN_BYTES = 16 * 1024 * 1024;
const QUIET_MS = 50;
const QUIET_MAX_MS = 2000;

/** Serve on `listenFd` (fd 3 from `start`, or the socket a standby daemon was handed), in the bundle (cwd). */
export async function serve(flags: ShimFlags, listenFd = LISTEN_FD, o: ServeOptions = {}): Promise<void> {
  // The namespace names runc's root (<root>/<namespace>): it must not step elsewhere.
  if (!isValidIdentifier(flags.namespace)) throw new Error(`invalid namespace ${JSON.stringify(flags.namespace)}: invalid argument`);
  const shimCgroup = o.shimCgroup ?? process.env[SHIM_CGROUP_ENV] ?? '';
  delete process.env[SHIM_CGROUP_ENV];
  // Nothing the daemon or its runc children create (pid files, logs) may be world-writable,
  // whatever umask containerd (or the process that spawned a standby) had.
  process.umask(process.umask(0o022) | 0o022);
  stderrToLogFifo();
  const daemon = new Daemon();
  const first = await daemon.add({ flags, listenFd, bundle: process.cwd() });
  daemon.show(first); // ps/pgrep see what they see of the Go shim's daemon
  if (o.onQuiet) {
    const hook = o.onQuiet;
    let fired = false;
    const quiet = () => {
      if (fired || daemon.exiting) return;
      fired = true;
      clearTimeout(timer);
      hook();
    };
    const timer = setTimeout(quiet, QUIET_MAX_MS).unref();
    void first.server.whenQuiet(QUIET_MS).then(quiet);
  }
  // Shared: the post opens once containerd has connected, i.e. after `start` answered (and put
  // this daemon into shim_cgroup): a tenant never joins a daemon whose `start` may still fail.
  if (sharedEnabled()) void first.whenConnected().then(() => daemon.share(shimCgroup));
  first.log.info('shim started');
}

/** The process: its reaper, its tenants, its exit. */
class Daemon {
  private readonly reaper = new Reaper();
  private readonly tenants = new Set<Tenant>();
  private post?: SharedPost<ShimFlags, Tenant>;
  /** Set once the process is on its way out: no tenant joins any more. */
  exiting = false;
  /** Runs while a shared daemon has no tenant: it exits when it fires. */
  private idle?: NodeJS.Timeout;
  /** RSS when the daemon began to share (bytes). */
  private sharedRss = 0;
  /** The tenant whose container the process title shows (none while a shared daemon idles). */
  private shown?: Tenant;

  constructor() {
    // What an uncaught exception says goes to every tenant's log: it ends all of them.
    const all = (level: 'fatal' | 'error') => (fields: Fields, msg: string) => { for (const t of this.tenants) t.log[level](fields, msg); };
    installCrashPolicy({ fatal: all('fatal'), error: all('error') });
    this.reaper.setMaxListeners(0); // one exit listener per tenant
    this.reaper.start();
    this.reaper.on('error', (err: Error) => { for (const t of this.tenants) t.log.error({ err: err.message }, 'reaper pipe error'); });
    process.on('SIGTERM', () => void this.exitAll('SIGTERM'));
    process.on('SIGINT', () => void this.exitAll('SIGINT'));
    process.on('SIGPIPE', () => { /* ignored */ });
  }

  /** Serve one more shim socket. The listening fd is ours from here on (closed if this fails). */
  async add(spec: TenantSpec): Promise<Tenant> {
    const t = new Tenant(spec, this.reaper, (x) => void this.leave(x, 'shutdown requested'));
    this.tenants.add(t);
    try {
      await t.listen();
    } catch (e) {
      this.tenants.delete(t);
      if (!spec.flags.socket) try { fs.closeSync(spec.listenFd); } catch { /* taken by the listener */ }
      void t.close();
      throw e;
    }
    return t;
  }

  /** Show `t`'s container in the process title, as the Go shim's daemon shows its own. */
  show(t: Tenant): void {
    this.shown = t;
    takeShimIdentity(t.spec.flags);
  }

  /** Take further tenants of this key on the shared post while there is room. */
  async share(shimCgroup: string): Promise<void> {
    if (this.exiting || this.post) return;
    this.sharedRss = process.memoryUsage.rss();
    const bound = sharedBound();
    const room = () => !this.exiting && this.tenants.size < bound;
    const adopt = async (flags: ShimFlags, fd: number, bundle: string, how: string) => {
      clearTimeout(this.idle);
      const t = await this.add({ flags, listenFd: fd, bundle });
      if (!this.shown) this.show(t); // it showed no container while idle
      t.log.info(`shim started (shared, ${how})`);
      // containerd dials as soon as `start` has answered. A socket nobody dials belongs to a
      // start that failed after handing it over: it must not hold a place for ever.
      const timer = setTimeout(() => void this.leave(t, 'containerd never connected'), connectMs()).unref();
      void t.whenConnected().then(() => clearTimeout(timer));
      return t;
    };
    this.post = new SharedPost(sharedPost(jobEnv()), shimCgroup, {
      parseFlags,
      room,
      adopt: (flags, fd, bundle) => adopt(flags, fd, bundle, 'handed over by start'),
      runStart: async (o, jf) => {
        // The launcher's `start` job, run here as a standby runs it (src/pool/standby.ts), so a
        // start in a burst boots no Node: the socket becomes a tenant if its shim_cgroup is ours.
        const [stdin, stdout, stderr] = o.fds as [number, number, number];
        const { start, launchFresh } = await import('./start.js');
        const { readCapped } = await import('./stdin.js');
        let tenant: Tenant | undefined;
        try {
          const out = await start(jf, {
            cwd: o.cwd, ppid: o.ppid, argv0: o.argv0, readStdin: () => readCapped(stdin), joinShared: false,
            launch: async (fd, cg) => {
              if (cg !== shimCgroup || !room()) return launchFresh(jf, fd, cg, { cwd: o.cwd, argv0: o.argv0, refill: false });
              tenant = await adopt({ ...jf, action: '' }, native.dup(fd), o.cwd, 'start run by the launcher'); // start closes its own copy
              return process.pid;
            },
          });
          fs.writeSync(stdout, out);
          return { status: 0, tenant };
        } catch (e) {
          try { fs.writeSync(stderr, `io.containerd.runc.v2: ${(e as Error).message}`); } catch { /* gone */ }
          if (tenant) void this.leave(tenant, 'its start failed');
          return { status: 1 };
        } finally {
          closeAll(o.fds);
        }
      },
      drop: (t, why) => void this.leave(t, why),
    });
    await this.post.update();
  }

  private async leave(t: Tenant, why: string): Promise<void> {
    if (!this.tenants.delete(t)) return;
    t.log.info({ why }, 'shutting down');
    const drained = await t.close();
    if (this.tenants.size > 0 || this.exiting) {
      // ps shows a container the daemon still serves (it shows one: a pod's shim shows one too).
      if (t === this.shown) this.show(this.tenants.values().next().value!);
      return void this.post?.update();
    }
    const post = this.post;
    // A daemon that grew (a tenant's heavy stdio leaves buffers and heap behind) is a poor one
    // to keep: a fresh process is smaller.
    const grown = process.memoryUsage.rss() > this.sharedRss + GROWN_BYTES;
    if (post?.open && drained && idleMs() > 0 && !grown) {
      // A shared daemon stays on its post for a while: the next container joins it.
      this.shown = undefined;
      takeIdleIdentity(post.path);
      process.chdir('/'); // no bundle stays pinned by our cwd
      this.idle = setTimeout(() => this.exitIdle(), idleMs());
      return;
    }
    this.exitIdle(drained ? 0 : 1);
  }

  /** No tenant: exit. Nothing may join between the check and the exit. */
  private exitIdle(code = 0): void {
    if (this.tenants.size > 0 || this.exiting) return;
    this.exiting = true;
    this.post?.close();
    process.exit(code);
  }

  private async exitAll(why: string): Promise<void> {
    if (this.exiting) return;
    clearTimeout(this.idle);
    this.exiting = true;
    this.post?.close();
    const all = [...this.tenants];
    for (const t of all) t.log.info({ why }, 'shutting down');
    const drained = await Promise.all(all.map((t) => t.close()));
    process.exit(drained.every(Boolean) ? 0 : 1);
  }
}

/**
 * Point fd 2 at the log fifo, as the reference does, so that what Node itself prints on a fatal
 * error (out of memory, an abort) reaches containerd's log. The shim never writes to fd 2 itself.
 */
function stderrToLogFifo(): void {
  let fd: number;
  try {
    fd = fs.openSync('log', fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    return; // nobody reads the fifo (tests, manual runs): keep /dev/null
  }
  try {
    if (fs.fstatSync(fd).isFIFO()) native.dup2(fd, 2);
  } catch { /* keep /dev/null */ } finally {
    fs.closeSync(fd);
  }
}
