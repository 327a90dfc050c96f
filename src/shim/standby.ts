// SPDX-License-Identifier: Apache-2.0
// A pre-booted standby daemon. Booting Node and loading the daemon takes far longer than the
// Go shim's whole `start`, and containerd waits for it. So a pool of standbys (pool.ts) waits,
// warmed up, for `start`/`delete` jobs from the native launcher (or a socket handed over by a
// Node `start`): a `start` makes the standby that container's daemon, a `delete` runs in place.
// Standbys retire after an idle period; SHIM_STANDBY=0 in containerd's environment turns the
// mechanism off.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import * as native from '../sys/native.js';
import { SOCKET_DIR, socketPath } from './address.js';
import type { ShimFlags } from './flags.js';
import { claimBoot, poolOf, postServed, releaseBoot, spawnStandby, sweepLitter } from './pool.js';
import { ADOPT_TIMEOUT_MS, CONNECT_TIMEOUT_MS, type Adoption } from './handover.js';

/** A request waiting longer than this is refused: its sender may have given up and gone on. */
const STALE_MS = 1000;
const DEFAULT_IDLE_S = 120;

/** A `start`/`delete` handed over by the native launcher, with its stdin/stdout/stderr. */
interface Job { kind: 'job'; argv: string[]; cwd: string; ppid: number; sent?: number; argv0?: string }
/** `sent`: the sender's clock (epoch ms) when it sent the request. */
type Request = ({ kind?: 'adopt'; sent?: number } & Adoption) | Job;

/**
 * Standby mode: load the daemon, then wait. It runs `start`/`delete` jobs for the native
 * launcher (saving Node's boot on containerd's critical path), and on a `start` — or a socket
 * handed over by a `start` process — it becomes that container's daemon. With `-job-fd`, the
 * launcher found no standby and booted this one for the job on that fd: it runs it first, and
 * after a `delete` goes on as a pool standby if a post is free.
 */
export async function runStandby(flags: ShimFlags): Promise<void> {
  const { serve } = await import('./serve.js');
  const { start } = await import('./start.js');
  const { readCapped } = await import('./stdin.js');
  const { deleteAction } = await import('./delete.js');
  const { parseFlags } = await import('./flags.js');
  const posts = poolOf(flags.standby);
  const idleS = Number(process.env.SHIM_STANDBY_IDLE_SECONDS) || DEFAULT_IDLE_S;
  /** The post this standby holds once it listens ('' before, and for a direct job). */
  let post = '';
  let server: net.Server | undefined;
  let ino = -1;
  let idle: NodeJS.Timeout | undefined;
  let watch: NodeJS.Timeout | undefined;
  let adopted = false;
  /** Stop being a standby: no more jobs, the post is free for the next one. */
  const leavePost = () => {
    if (adopted) return;
    adopted = true;
    clearTimeout(idle);
    clearInterval(watch);
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
    server?.close();
    if (post) try { if (fs.statSync(post).ino === ino) fs.rmSync(post, { force: true }); } catch { /* gone */ }
  };
  function retire(unlink = true): void {
    if (adopted) return;
    if (unlink) leavePost(); else { adopted = true; server?.close(); }
    process.exit(0);
  }
  const onSignal = () => retire();
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  /** The post whose `.booting` claim this process holds until it listens (or exits). */
  let claimed = flags.jobFd ? '' : flags.standby;
  const release = () => { if (claimed) releaseBoot(claimed); claimed = ''; };
  process.once('exit', release);

  /**
   * Become the daemon of the container whose listening socket is `fd`. `refill` leaves new
   * standbys at the free posts once containerd is done with us for now: booting one keeps a
   * CPU busy for ~100 ms, and beside `runc create`/`exec`/`start` it slowed them by a quarter
   * or more (they wait for the CPUs, and for RCU grace periods that a busy CPU stretches).
   */
  const become = async (a: Adoption, fd: number, refill?: () => void): Promise<void> => {
    leavePost();
    process.chdir(a.bundle);
    // This job's binary, not the one of the `start` that spawned this standby (identity.ts).
    if (typeof a.argv0 === 'string' && a.argv0) process.env.SHIM_ARGV0 = a.argv0;
    await serve({ ...flags, standby: '', jobFd: '', namespace: a.namespace, id: a.id, address: a.address, debug: a.debug, action: '' }, fd,
      { onQuiet: refill });
  };
  /** A standby for every free post (spawnStandby skips held posts and ones already booting). */
  const refill = () => { for (const p of posts) spawnStandby(p); };

  /** What a `start` job does once its answer is out: become the daemon, refill the pool. */
  let afterReply: (() => void) | undefined;
  const runJob = async (job: Job, fds: number[], sock: net.Socket): Promise<void> => {
    const [stdin, stdout, stderr] = fds as [number, number, number];
    let code = 0;
    let isDelete = false;
    try {
      const jf = parseFlags(job.argv);
      isDelete = jf.action === 'delete';
      if (jf.action === 'start') {
        const address = await start(jf, {
          cwd: job.cwd,
          ppid: job.ppid,
          readStdin: () => readCapped(stdin),
          launch: async (fd) => {
            // The socket is bound and listening: containerd's dial waits in its backlog. So
            // answer first and set the daemon up while containerd reads the address.
            const own = native.dup(fd);
            leavePost();
            // With another standby up (or booting), refill once containerd is quiet; with the
            // pool empty (starts in a burst) refill now, or the next starts boot Node themselves.
            const poolUp = posts.some(postServed);
            if (!poolUp) refill();
            afterReply = () => {
              become({ namespace: jf.namespace, id: jf.id, address: jf.address, debug: jf.debug, bundle: job.cwd, argv0: job.argv0 }, own,
                poolUp ? refill : undefined)
                .catch(() => process.exit(1));
            };
            return process.pid;
          },
        });
        fs.writeSync(stdout, address);
      } else if (jf.action === 'delete') {
        fs.writeSync(stdout, deleteAction(jf, (m) => fs.writeSync(stderr, `${m}\n`), job.cwd));
      } else {
        throw new Error(`unsupported action ${JSON.stringify(jf.action)}`);
      }
    } catch (e) {
      code = 1;
      try { fs.writeSync(stderr, `io.containerd.runc.v2: ${(e as Error).message}`); } catch { /* gone */ }
    } finally {
      for (const fd of fds) try { fs.closeSync(fd); } catch { /* ignore */ }
    }
    if (code !== 0 && adopted) {
      // A failed start never leaves a daemon behind; the status byte goes out first.
      setTimeout(() => process.exit(1), 1000).unref();
      sock.end(Buffer.from([code]), () => process.exit(1));
      return;
    }
    sock.end(Buffer.from([code]));
    const then = afterReply;
    afterReply = undefined;
    then?.();
    // A `delete` ends a container's teardown: the moment to refill a post its daemon left
    // (a process booted for this job takes a post itself first, see below).
    if (isDelete && post) refill();
  };

  let queue: Promise<void> = Promise.resolve();
  /** Decline a request: close what it carried and say so (the sender does the work itself). */
  const refuse = (sock: net.Socket, fds: number[]) => {
    for (const f of fds) try { fs.closeSync(f); } catch { /* ignore */ }
    sock.end(JSON.stringify({ refused: true }));
  };
  /** Take one request (its message and fds) from the socket `fd`, then handle it in turn. */
  const handle = (sock: net.Socket, fd: number, received: number): Promise<void> => {
    if (adopted) return Promise.resolve(void sock.destroy());
    let req: Request;
    let fds: number[];
    try {
      if (native.peerCred(fd).uid !== process.geteuid?.()) return Promise.resolve(void sock.destroy());
      const msg = native.recvFd(fd, ADOPT_TIMEOUT_MS, 0);
      fds = msg.fds;
      try {
        req = JSON.parse(msg.name) as Request;
      } catch (e) {
        for (const f of fds) fs.closeSync(f);
        throw e;
      }
    } catch {
      return Promise.resolve(void sock.destroy());
    }
    // One job at a time; a job that finds the standby adopted is refused (the caller does it).
    queue = queue.then(async () => {
      if (idle) {
        clearTimeout(idle);
        idle = setTimeout(() => retire(), idleS * 1000);
      }
      // Stale counts from the sender's clock when it says (it may have waited in our backlog
      // while we were busy), else from when we saw it.
      const since = typeof req.sent === 'number' ? Math.min(req.sent, received) : received;
      if (adopted || Date.now() - since > STALE_MS) return refuse(sock, fds);
      if (req.kind === 'job') {
        if (fds.length !== 3 || !Array.isArray(req.argv) || typeof req.cwd !== 'string') {
          for (const f of fds) fs.closeSync(f);
          return void sock.destroy();
        }
        sock.write('A');
        await runJob(req, fds, sock);
        return;
      }
      const a = req;
      if (fds.length !== 1 || !a.namespace || !a.id || typeof a.bundle !== 'string') {
        for (const f of fds) fs.closeSync(f);
        return void sock.destroy();
      }
      await become(a, fds[0]).then(
        () => sock.end(JSON.stringify({ pid: process.pid })),
        () => process.exit(1),
      );
    }).catch(() => undefined);
    return queue;
  };

  if (flags.jobFd) {
    // The launcher's job, before anything else (the warm-up waits: containerd does not).
    const fd = Number(flags.jobFd);
    const sock = new net.Socket({ fd, readable: false, writable: true });
    sock.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => { sock.once('close', () => resolve()); setTimeout(resolve, 1000).unref(); });
    await handle(sock, fd, Date.now());
    if (adopted) return; // a `start`: this is the daemon now
    await closed;
    process.chdir('/'); // the job's bundle must not stay pinned by our cwd
    const free = posts.find((p) => !fs.existsSync(p) && claimBoot(p));
    if (!free) return process.exit(0);
    post = claimed = free;
    refill(); // the other posts
  } else {
    post = flags.standby;
  }

  // Warm before taking the post: jobs then never meet cold code.
  const { warmUp } = await import('./warmup.js');
  await warmUp();
  fs.mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o700 });
  if (await isLive(post)) return process.exit(0); // another standby holds this post
  fs.rmSync(post, { force: true });
  server = net.createServer({ pauseOnConnect: true });
  try {
    await new Promise<void>((resolve, reject) => server.listen(post, resolve).once('error', reject));
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
  idle = setTimeout(() => retire(), idleS * 1000);
  // Two standbys can race for one post: the one whose socket file was replaced retires. So
  // does one whose containerd is gone (its ttrpc socket removed): nobody will send it a job.
  ino = fs.statSync(post).ino;
  const ttrpc = socketPath(process.env.TTRPC_ADDRESS ?? '');
  const containerd = ttrpc.startsWith('/') ? ttrpc : '';
  watch = setInterval(() => {
    let cur = -1;
    try { cur = fs.statSync(post).ino; } catch { /* removed */ }
    if (cur !== ino) retire(false);
    else if (containerd && !fs.existsSync(containerd)) retire();
  }, 5000);
  server.on('connection', (sock: net.Socket) => {
    const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
    void handle(sock, fd, Date.now());
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
