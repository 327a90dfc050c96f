// SPDX-License-Identifier: Apache-2.0
// The `start` action (containerd v2.3.4 cmd/containerd-shim-runc-v2/manager/manager_linux.go
// Start; docs/containerd-2.md): read what containerd sent on stdin, listen on the shim socket,
// hand it to a new daemon as fd 3, write ./address, answer with the address in the form this
// containerd reads (bootstrap.ts). Nothing may reach stderr on success.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as native from '../sys/native.js';
import { SOCKET_DIR, SOCKET_PATH_LIMIT, groupId, socketAddress, socketPath } from './address.js';
import { parseStartInput, startOutput } from './bootstrap.js';
import { readCapped } from './stdin.js';
import type { ShimFlags } from './flags.js';
import { handOver } from '../pool/offer.js';
import { jobEnv, ownPoolBase, postsOf } from '../pool/key.js';
import { spawnShimProcess, spawnStandby, standbyEnabled } from '../pool/spawn.js';
import { joinShared, sharedEnabled } from '../pool/shared.js';

const BACKLOG = 128;

/** Where `start` runs: the `start` process itself, or a standby daemon doing the job for it. */
export interface StartContext {
  /** The bundle (containerd runs `start` in it). */
  cwd: string;
  /** containerd's pid, whose OOM score the shim's is derived from. */
  ppid: number;
  /** What containerd wrote on stdin (runtime options or BootstrapParams), at most MAX_STDIN + 1 bytes. */
  readStdin(): Buffer;
  /** The binary containerd ran (the daemon shows it as its own). */
  argv0?: string;
  /** Get a daemon serving the listening socket `fd` (the caller closes its own copy), to run in `shimCgroup` ('' for none). */
  launch(fd: number, shimCgroup: string): Promise<number>;
  /** False when `start` runs in a shared daemon: it must not offer the socket to itself. */
  joinShared?: boolean;
}

/** The `start` process: hand the socket to a standby, or spawn a daemon; leave a standby. */
function processContext(flags: ShimFlags): StartContext {
  return {
    cwd: process.cwd(),
    ppid: process.ppid,
    readStdin: () => readCapped(0),
    argv0: process.env.SHIM_ARGV0,
    launch: (fd, shimCgroup) => launchFresh(flags, fd, shimCgroup, { cwd: process.cwd(), argv0: process.env.SHIM_ARGV0, refill: true }),
  };
}

/**
 * A daemon of its own for the socket `fd`: a standby adopts it, else a spawned daemon serves it.
 * `refill`: spawn the standbys that replace the one taken (not from a shared daemon, whose
 * reaper waits for every child it has).
 */
export async function launchFresh(flags: ShimFlags, fd: number, shimCgroup: string, o: { cwd: string; argv0?: string; refill: boolean }): Promise<number> {
  const adoption = { argv: daemonArgs(flags), bundle: o.cwd, argv0: o.argv0, env: jobEnv(), ...(shimCgroup ? { shimCgroup } : {}) };
  const posts = standbyEnabled() ? postsOf(ownPoolBase()) : [];
  let pid: number | undefined;
  let used: string | undefined;
  for (const post of posts) {
    pid = await handOver(post, adoption, fd);
    if (pid !== undefined) { used = post; break; }
  }
  pid ??= spawnDaemon(flags, fd, shimCgroup, o.cwd);
  // Refill the post we emptied; with none up yet, fill the whole pool.
  if (o.refill) for (const post of used ? [used] : posts) spawnStandby(post);
  return pid;
}

/** Run `start`; resolves with what to print on stdout. `flags.debug` may be raised by containerd 2.3's log level. */
export async function start(flags: ShimFlags, ctx: StartContext = processContext(flags)): Promise<Uint8Array> {
  let stdin: Buffer;
  try { stdin = ctx.readStdin(); } catch { stdin = Buffer.alloc(0); }
  const input = parseStartInput(stdin, flags.id, flags.namespace);
  if (input.bootstrap?.debug) flags.debug = true;
  const spec = JSON.parse(fs.readFileSync(path.join(ctx.cwd, 'config.json'), 'utf8')) as { annotations?: Record<string, string> };
  const dir = input.bootstrap?.socketDir ?? SOCKET_DIR;
  const address = socketAddress(flags.address, flags.namespace, groupId(flags.id, spec), dir);
  const sock = socketPath(address);
  if (!path.isAbsolute(dir)) throw new Error(`create new shim socket: socket dir ${JSON.stringify(dir)} is not an absolute path`);
  if (sock.length > SOCKET_PATH_LIMIT) throw new Error(`create new shim socket: ${JSON.stringify(sock)}: unix socket path too long (> ${SOCKET_PATH_LIMIT})`);
  const out = startOutput(address, input);

  const fd = await listenOrJoin(sock);
  if (fd === undefined) {
    // A shim already serves this group (a pod's later containers): reuse it.
    writeAddressFile(ctx.cwd, address);
    return out;
  }
  try {
    fs.chmodSync(sock, 0o600);
    writeAddressFile(ctx.cwd, address);
    const cgroup = input.options?.shimCgroup ?? '';
    // Opt-in: a shared daemon of this key with room serves the socket. It runs as this start
    // would set it up (same shim_cgroup and containerd, no SCHED_CORE): nothing more to do.
    const adoption = { argv: daemonArgs(flags), bundle: ctx.cwd, argv0: ctx.argv0, env: jobEnv(), ...(cgroup ? { shimCgroup: cgroup } : {}) };
    if (ctx.joinShared !== false && await joinShared(adoption, fd) !== undefined) return out;
    const pid = await ctx.launch(fd, cgroup);
    try {
      if (cgroup) joinCgroup(cgroup, pid);
      if (process.env.SCHED_CORE) enableSchedCore(pid);
      adjustOomScore(pid, ctx.ppid);
    } catch (e) {
      // A standby running this job is the daemon itself: it exits once the job's status is out.
      // A daemon we spawned is killed and waited for, so that none is left (nor a zombie) when
      // containerd reads the failure.
      if (pid !== process.pid) {
        try { process.kill(pid, 'SIGKILL'); native.waitChild(pid, 5000); } catch { /* gone, or not our child */ }
      }
      throw e;
    }
    return out;
  } catch (e) {
    fs.rmSync(sock, { force: true });
    throw e;
  } finally {
    fs.closeSync(fd);
  }
}

/** The daemon's flags (the reference's daemon line, containerd v2.3.4 manager_linux.go newCommand). */
function daemonArgs(flags: ShimFlags): string[] {
  const args = ['-namespace', flags.namespace, '-id', flags.id, '-address', flags.address];
  if (flags.debug) args.push('-debug');
  return args;
}

function spawnDaemon(flags: ShimFlags, fd: number, shimCgroup: string, cwd: string): number {
  try {
    const env = shimCgroup && sharedEnabled() ? { ...process.env, SHIM_SHARED_CGROUP: shimCgroup } : undefined;
    return spawnShimProcess(daemonArgs(flags), { cwd, fds: [-1, -1, -1, fd], env });
  } catch (e) {
    throw new Error(`failed to start shim daemon: ${(e as Error).message}`, { cause: e });
  }
}

async function listenOrJoin(sock: string): Promise<number | undefined> {
  try {
    fs.mkdirSync(path.dirname(sock), { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new Error(`create new shim socket: ${(e as Error).message}`, { cause: e });
  }
  try {
    return native.listenUnix(sock, BACKLOG);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw new Error(`create new shim socket: ${(e as Error).message}`, { cause: e });
  }
  if (await canConnect(sock, 100)) return undefined;
  fs.rmSync(sock, { force: true });
  try {
    return native.listenUnix(sock, BACKLOG);
  } catch (e) {
    throw new Error(`try create new shim socket 2x: ${(e as Error).message}`, { cause: e });
  }
}

function canConnect(sock: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(sock);
    const t = setTimeout(() => { c.destroy(); resolve(false); }, timeoutMs);
    c.once('connect', () => { clearTimeout(t); c.destroy(); resolve(true); });
    c.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

/** ./address via ./.address and rename, no newline (containerd reads it raw). */
function writeAddressFile(dir: string, address: string): void {
  const tmp = path.join(dir, '.address');
  fs.rmSync(tmp, { force: true });
  const fd = fs.openSync(tmp, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY | fs.constants.O_SYNC, 0o644); // never world-writable, whatever the umask
  try { fs.writeSync(fd, address); } finally { fs.closeSync(fd); }
  fs.renameSync(tmp, path.join(dir, 'address'));
}

function joinCgroup(cgroup: string, pid: number): void {
  const root = '/sys/fs/cgroup';
  if (fs.existsSync(`${root}/cgroup.controllers`)) {
    fs.writeFileSync(`${root}/${cgroup}/cgroup.procs`, String(pid));
    return;
  }
  for (const ctrl of fs.readdirSync(root)) {
    const dir = `${root}/${ctrl}`;
    if (ctrl === 'unified' || !fs.statSync(dir).isDirectory() || fs.lstatSync(dir).isSymbolicLink()) continue;
    try {
      fs.mkdirSync(`${dir}/${cgroup}`, { recursive: true });
      fs.writeFileSync(`${dir}/${cgroup}/cgroup.procs`, String(pid));
    } catch (e) {
      throw new Error(`failed to join cgroup ${cgroup}: ${(e as Error).message}`, { cause: e });
    }
  }
}

const PR_SCHED_CORE = 62;
const PR_SCHED_CORE_CREATE = 1;
const PIDTYPE_TGID = 1;

/**
 * containerd's SCHED_CORE (any non-empty value): the daemon gets a core-scheduling cookie of its
 * own, which its threads, runc and the containers inherit, so no other pod's tasks share an SMT
 * core with them (containerd v2.3.4 manager_linux.go: schedcore.Create before the daemon starts).
 * A kernel without core scheduling fails the start, as with the Go shim.
 */
function enableSchedCore(pid: number): void {
  try {
    native.prctl(PR_SCHED_CORE, PR_SCHED_CORE_CREATE, pid, PIDTYPE_TGID, 0);
  } catch (e) {
    // Go prints the errno's text: "EINVAL (Invalid argument)" → "invalid argument".
    const text = /\(([^)]+)\)/.exec((e as Error).message)?.[1] ?? (e as Error).message;
    throw new Error(`enable sched core support: ${text.charAt(0).toLowerCase()}${text.slice(1)}`, { cause: e });
  }
}

/** The shim is a little more killable than containerd (containerd's score + 1). */
function adjustOomScore(pid: number, ppid: number): void {
  try {
    const parent = Number.parseInt(fs.readFileSync(`/proc/${ppid}/oom_score_adj`, 'utf8').trim(), 10);
    const score = Math.max(-1000, Math.min(1000, parent + 1));
    fs.writeFileSync(`/proc/${pid}/oom_score_adj`, String(score));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if ((code === 'EACCES' || code === 'EPERM') && process.geteuid?.() !== 0) return;
    throw new Error(`failed to adjust OOM score for shim: ${(e as Error).message}`, { cause: e });
  }
}
