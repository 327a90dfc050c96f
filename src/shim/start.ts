// The `start` action (shared/spec/shim-cli.md §7): listen on the shim socket, hand it to a new
// daemon as fd 3, write ./address, print the address. Nothing may reach stderr on success.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as native from '../sys/native.js';
import { Options } from '../gen/containerd/runc/v1/runc.js';
import { Any } from '../gen/google/protobuf/any.js';
import { SOCKET_DIR, groupId, socketAddress, socketPath } from './address.js';
import { OPTIONS_TYPE, typeName } from './options.js';
import type { ShimFlags } from './flags.js';
import { handOver } from './standby.js';
import { spawnShimProcess, spawnStandby, standbyEnabled, standbyPath, standbyPosts } from './pool.js';

const BACKLOG = 128;

/** Where `start` runs: the `start` process itself, or a standby daemon doing the job for it. */
export interface StartContext {
  /** The bundle (containerd runs `start` in it). */
  cwd: string;
  /** containerd's pid, whose OOM score the shim's is derived from. */
  ppid: number;
  /** The runtime options containerd writes on stdin. */
  readStdin(): Buffer;
  /** Get a daemon serving the listening socket `fd` (the caller closes its own copy). */
  launch(fd: number): Promise<number>;
}

/** The `start` process: hand the socket to a standby, or spawn a daemon; leave a standby. */
export function processContext(flags: ShimFlags): StartContext {
  return {
    cwd: process.cwd(),
    ppid: process.ppid,
    readStdin: () => fs.readFileSync(0),
    async launch(fd) {
      const posts = standbyEnabled() ? standbyPosts(standbyPath(flags.address, process.env.TTRPC_ADDRESS ?? '')) : [];
      const adoption = { namespace: flags.namespace, id: flags.id, address: flags.address, debug: flags.debug, bundle: process.cwd() };
      let pid: number | undefined;
      let used: string | undefined;
      for (const post of posts) {
        pid = await handOver(post, adoption, fd);
        if (pid !== undefined) { used = post; break; }
      }
      if (pid === undefined) pid = spawnDaemon(flags, fd);
      // Refill the post we emptied; with none up yet, fill the whole pool.
      for (const post of used ? [used] : posts) spawnStandby(post);
      return pid;
    },
  };
}

export async function start(flags: ShimFlags, ctx: StartContext = processContext(flags)): Promise<string> {
  const spec = JSON.parse(fs.readFileSync(path.join(ctx.cwd, 'config.json'), 'utf8')) as { annotations?: Record<string, string> };
  const address = socketAddress(flags.address, flags.namespace, groupId(flags.id, spec));
  const sock = socketPath(address);

  const fd = await listenOrJoin(sock);
  if (fd === undefined) {
    // A shim already serves this group (a pod's later containers): reuse it.
    writeAddressFile(ctx.cwd, address);
    return address;
  }
  try {
    fs.chmodSync(sock, 0o600);
    writeAddressFile(ctx.cwd, address);
    const pid = await ctx.launch(fd);
    try {
      const opts = readOptions(ctx.readStdin);
      if (opts?.shimCgroup) joinCgroup(opts.shimCgroup, pid);
      adjustOomScore(pid, ctx.ppid);
    } catch (e) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      throw e;
    }
    return address;
  } catch (e) {
    fs.rmSync(sock, { force: true });
    throw e;
  } finally {
    fs.closeSync(fd);
  }
}

function spawnDaemon(flags: ShimFlags, fd: number): number {
  const args = ['-namespace', flags.namespace, '-id', flags.id, '-address', flags.address];
  if (flags.debug) args.push('-debug');
  try {
    return spawnShimProcess(args, { cwd: process.cwd(), fds: [-1, -1, -1, fd] });
  } catch (e) {
    throw new Error(`failed to start shim daemon: ${(e as Error).message}`);
  }
}

async function listenOrJoin(sock: string): Promise<number | undefined> {
  fs.mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o700 });
  try {
    return native.listenUnix(sock, BACKLOG);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw new Error(`create new shim socket: ${(e as Error).message}`);
  }
  if (await canConnect(sock, 100)) return undefined;
  fs.rmSync(sock, { force: true });
  try {
    return native.listenUnix(sock, BACKLOG);
  } catch (e) {
    throw new Error(`try create new shim socket 2x: ${(e as Error).message}`);
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

/** containerd sends the runtime options (an Any) on stdin; only runc Options matter here. */
function readOptions(read: () => Buffer): Options | undefined {
  let data: Buffer;
  try { data = read(); } catch { return undefined; }
  if (!data.length) return undefined;
  try {
    const any = Any.decode(data);
    if (typeName(any.typeUrl) !== OPTIONS_TYPE) return undefined;
    return Options.decode(any.value);
  } catch {
    return undefined;
  }
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
      throw new Error(`failed to join cgroup ${cgroup}: ${(e as Error).message}`);
    }
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
    throw new Error(`failed to adjust OOM score for shim: ${(e as Error).message}`);
  }
}
