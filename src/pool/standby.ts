// SPDX-License-Identifier: Apache-2.0
// A standby: a shim process booted and warmed ahead of need, waiting on a post (a unix socket)
// for one `start` or `delete` offered by the launcher, or for the listening socket of a Node
// `start`. A `start` makes it that container's daemon; a `delete` runs in place and it waits
// again. The conversation on each connection is the hand-over protocol (protocol.ts,
// docs/standby-protocol.md); this module is the standby's side of it and its life on the post.
// It runs the shim's own actions, handed in by the command line (src/shim/main.ts).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import * as native from '../sys/native.js';
import { COMMIT_TIMEOUT_MS, MAX_STANDBYS, MSG_ACCEPT, MSG_COMMIT, MSG_REFUSE, MSG_RUNNING, OFFER_TIMEOUT_MS } from './constants.js';
import { applyJobEnv, baseOf, ownPoolBase, postsOf } from './key.js';
import { claimBoot, postServed, releaseBoot, standbysOnMachine, sweepLitter } from './claim.js';
import { recordHome } from './cgroup.js';
import { forgetStandbys, reapStandbys, refillAtOnce, spawnStandby } from './spawn.js';
import { foreignPeer } from './peer.js';
import { standbyFault } from './faults.js';
import { inode, isLive } from './sockfile.js';
import { ByteReader, closeAll, connFd, receiveOffer, writeByte, type Offer } from './protocol.js';

const DEFAULT_IDLE_S = 120;
const WATCH_MS = 5000;

/** The flags of a job, as the shim's parser gives them. */
export interface JobFlags { action: string; namespace: string; id: string; address: string; debug: boolean }

/** Where a `start` job runs (the shim's StartContext). */
interface JobStartContext {
  cwd: string;
  ppid: number;
  argv0?: string;
  readStdin(): Buffer;
  launch(fd: number, shimCgroup: string): Promise<number>;
}

/** The shim's actions a standby runs. */
export interface ShimRunners<F extends JobFlags> {
  parseFlags(argv: readonly string[]): F;
  start(flags: F, ctx: JobStartContext): Promise<Uint8Array>;
  deleteAction(flags: F, warn: (m: string) => void, cwd: string): Uint8Array;
  /** Serve as the daemon of `flags` on the listening socket `fd`, in the bundle (cwd), to run in `shimCgroup`. */
  serve(flags: F, fd: number, onQuiet: (() => void) | undefined, shimCgroup: string): Promise<void>;
  readCapped(fd: number): Buffer;
  warmUp(): Promise<void>;
}

/** What the standby was started with (`-standby POST [-job-fd N]`). */
export interface StandbyFlags { standby: string; jobFd: string }

/** What one job asks of a daemon-to-be: the flags to serve with, the bundle, the binary's path to show, its shim_cgroup. */
interface Adoption<F> { flags: F; bundle: string; argv0?: string; shimCgroup?: string }

export async function runStandby<F extends JobFlags>(sf: StandbyFlags, run: ShimRunners<F>): Promise<void> {
  recordHome();
  const base = baseOf(sf.standby);
  const posts = postsOf(base);
  // A standby whose environment is not what its pool is keyed by would run jobs differently
  // from a fresh shim: it serves no post (a job handed to it directly still runs, see below).
  const keyed = ownPoolBase() === base;
  const idleS = Number(process.env.SHIM_STANDBY_IDLE_SECONDS) || DEFAULT_IDLE_S;

  /** The post held once listening ('' before, and for a direct job). */
  let post = '';
  let server: net.Server | undefined;
  let ino = '';
  let idle: NodeJS.Timeout | undefined;
  let watch: NodeJS.Timeout | undefined;
  /** Set once this process stops being a standby (adopted, or retiring): no more offers. */
  let done = false;
  const leavePost = () => {
    if (done) return;
    done = true;
    clearTimeout(idle);
    clearInterval(watch);
    process.removeListener('SIGTERM', retire);
    process.removeListener('SIGINT', retire);
    server?.close();
    if (post && inode(post) === ino) fs.rmSync(post, { force: true });
  };
  function retire(): void {
    leavePost();
    process.exit(0);
  }
  process.once('SIGTERM', retire);
  process.once('SIGINT', retire);
  /** The post whose `.booting` claim this process holds until it listens (or exits). */
  let claimed = sf.jobFd ? '' : sf.standby;
  const release = () => { if (claimed) releaseBoot(claimed); claimed = ''; };
  process.once('exit', release);
  const refill = () => { for (const p of posts) spawnStandby(p); };

  /** Become the daemon of `a` on the listening socket `fd`: no longer a standby. */
  const become = async (a: Adoption<F>, fd: number, onQuiet?: () => void): Promise<void> => {
    leavePost();
    forgetStandbys(); // the daemon's reaper waits for every child from now on
    process.chdir(a.bundle);
    // This job's binary, not the one of the shim that spawned this standby (identity.ts).
    if (a.argv0) process.env.SHIM_ARGV0 = a.argv0;
    await run.serve(a.flags, fd, onQuiet, a.shimCgroup ?? '');
  };

  /** A `start` or `delete` job with the launcher's stdin/stdout/stderr; resolves with its status. */
  const runJob = async (o: Extract<Offer, { kind: 'job' }>, jf: F): Promise<{ status: number; andThen?: () => void }> => {
    const [stdin, stdout, stderr] = o.fds as [number, number, number];
    let andThen: (() => void) | undefined;
    try {
      if (jf.action === 'start') {
        const out = await run.start(jf, {
          cwd: o.cwd, ppid: o.ppid, argv0: o.argv0, readStdin: () => run.readCapped(stdin),
          launch: (fd, shimCgroup) => {
            // Bound and listening: containerd's dial waits in the backlog. So answer first,
            // and serve once the status is out.
            const own = native.dup(fd); // start closes its own copy
            leavePost();
            // With another standby up (or booting) refill once containerd is quiet; with the
            // pool empty (starts in a burst) now, or the next starts boot Node themselves.
            const later = posts.some((p) => postServed(p)) || !refillAtOnce();
            if (!later) refill();
            andThen = () => void become({ flags: jf, bundle: o.cwd, argv0: o.argv0, shimCgroup }, own, later ? refill : undefined).catch(() => process.exit(1));
            return Promise.resolve(process.pid);
          },
        });
        fs.writeSync(stdout, out);
      } else {
        fs.writeSync(stdout, run.deleteAction(jf, (m) => fs.writeSync(stderr, `${m}\n`), o.cwd));
      }
      return { status: 0, andThen };
    } catch (e) {
      try { fs.writeSync(stderr, `io.containerd.runc.v2: ${(e as Error).message}`); } catch { /* gone */ }
      return { status: 1 };
    } finally {
      closeAll(o.fds);
    }
  };

  /** The standby's side of one conversation (docs/standby-protocol.md). */
  const converse = async (sock: net.Socket): Promise<void> => {
    const fd = connFd(sock);
    if (done || foreignPeer(fd) !== undefined) return void sock.destroy();
    const offer = receiveOffer(fd, OFFER_TIMEOUT_MS);
    if (!offer) return void sock.destroy();
    // Only what a fresh shim would run: a `start` or `delete` job, or a daemon to become, with a
    // namespace (a fresh shim refuses an empty one; refused here, the launcher's last resort,
    // Node itself, says so to containerd).
    const jf = parseJob(run, offer.argv);
    const actionOk = offer.kind === 'job' ? jf?.action === 'start' || jf?.action === 'delete' : jf?.action === '';
    if (!jf || !actionOk || jf.namespace === '') {
      closeAll(offer.fds);
      writeByte(fd, MSG_REFUSE);
      return void sock.destroy();
    }
    standbyFault('offer');
    if (done || !writeByte(fd, MSG_ACCEPT)) return void (closeAll(offer.fds), sock.destroy());
    standbyFault('accept');
    // Nothing runs before the sender commits: it may have given up waiting for our ACCEPT.
    const commit = await new ByteReader(sock).next(COMMIT_TIMEOUT_MS);
    if (commit !== MSG_COMMIT || done) return void (closeAll(offer.fds), sock.destroy());
    standbyFault('commit');
    // RUNNING is the point of no return: delivered, the sender never offers this job again.
    if (!writeByte(fd, MSG_RUNNING)) return void (closeAll(offer.fds), sock.destroy());
    standbyFault('running');
    // containerd's addresses and namespace for this job, as a fresh shim gets them (key.ts).
    applyJobEnv(offer.env);
    if (offer.kind === 'adopt') {
      await become({ flags: jf, bundle: offer.bundle, argv0: offer.argv0, shimCgroup: offer.shimCgroup }, offer.fds[0]).catch(() => process.exit(1));
      standbyFault('status');
      // The Node `start` that handed us its socket is gone: nobody will hear of this daemon.
      if (!writeByte(fd, 0)) process.exit(1);
      return void sock.destroy();
    }
    const { status, andThen } = await runJob(offer, jf);
    standbyFault('status');
    const delivered = writeByte(fd, status);
    sock.destroy();
    reapStandbys();
    if (status !== 0 && done) process.exit(1); // a failed start left the post: nothing to go back to
    // A start whose answer found no launcher: containerd saw that `start` fail, so this daemon
    // would serve nobody (and containerd cleans up with `delete`).
    if (!delivered && andThen) process.exit(1);
    andThen?.();
    // A `delete` ends a container's teardown: the moment to refill a post its daemon left.
    if (jf.action === 'delete' && post) refill();
  };

  let queue: Promise<void> = Promise.resolve();
  /** One conversation at a time; the idle clock restarts with each. */
  const enqueue = (sock: net.Socket): Promise<void> => {
    queue = queue.then(async () => {
      if (idle) idle.refresh();
      await converse(sock);
    }).catch(() => { sock.destroy(); });
    return queue;
  };

  if (sf.jobFd) {
    // The launcher booted this process for one job, offered on the socketpair at -job-fd;
    // it goes first (the warm-up waits: containerd does not).
    const sock = new net.Socket({ fd: Number(sf.jobFd), readable: true, writable: true, pauseOnCreate: true } as net.SocketConstructorOpts);
    sock.on('error', () => undefined);
    await enqueue(sock);
    if (done) return; // a `start`: this is the daemon now
    process.chdir('/'); // the job's bundle must not stay pinned by our cwd
    // Stay on as a standby only within the machine's bound, as a spawned one would.
    const room = keyed && standbysOnMachine() < MAX_STANDBYS;
    const free = room ? posts.find((p) => !fs.existsSync(p) && claimBoot(p)) : undefined;
    if (!free) return process.exit(0);
    post = claimed = free;
    refill(); // the other posts
  } else {
    if (!keyed) return process.exit(0);
    post = sf.standby;
  }

  // Warm before taking the post: jobs then never meet cold code.
  await run.warmUp();
  fs.mkdirSync(baseOf(post).replace(/\/[^/]*$/, ''), { recursive: true, mode: 0o700 });
  if (await isLive(post)) return process.exit(0); // another standby holds this post
  fs.rmSync(post, { force: true });
  const srv = net.createServer({ pauseOnConnect: true });
  server = srv;
  try {
    await new Promise<void>((resolve, reject) => srv.listen(post, resolve).once('error', reject));
  } finally {
    release();
  }
  fs.chmodSync(post, 0o600);
  sweepLitter();
  // Booted: jobs run at normal priority. Linux nice values are per thread, so lift it from
  // every thread (V8 and libuv helpers were created during the boot and would keep it).
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try { os.setPriority(Number(tid), 0); } catch { /* not permitted: keep the boot priority */ }
  }
  idle = setTimeout(retire, idleS * 1000);
  ino = inode(post);
  // Two standbys can race for one post: the one whose socket file was replaced retires.
  // Nothing ties a standby to one containerd: a restarted containerd (or another daemon) with
  // the same environment is served as a fresh shim would serve it, since every job brings its
  // own flags, stdin and JOB_ENV; one with another environment keys another pool, and this
  // one, which no start can claim any more, retires when idle.
  watch = setInterval(() => {
    reapStandbys();
    if (inode(post) !== ino) { done = true; server?.close(); process.exit(0); }
  }, WATCH_MS);
  srv.on('connection', (sock: net.Socket) => void enqueue(sock));
}

function parseJob<F extends JobFlags>(run: ShimRunners<F>, argv: string[]): F | undefined {
  try { return run.parseFlags(argv); } catch { return undefined; }
}
