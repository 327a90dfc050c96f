// SPDX-License-Identifier: Apache-2.0
// The standby pool's bookkeeping: where a containerd's standbys wait (posts keyed by its
// addresses and this build), how shim processes are spawned (environment, process group,
// boot priority) and who may boot the standby for a post (one `.booting` claim at a time).
// standby.ts is what a standby does; start.ts and the launcher are its clients.
import fs from 'node:fs';
import os from 'node:os';
import * as native from '../sys/native.js';
import { envList } from '../reaper/reaper.js';
import { SOCKET_DIR } from './address.js';

const BOOT_NICE = 10;

export function standbyEnabled(env = process.env): boolean {
  return env.SHIM_STANDBY !== '0';
}

/**
 * Standbys kept per containerd. Two, because `start` consumes one (it becomes the daemon) and
 * the `delete` that follows a short-lived container should not wait for its replacement to boot.
 */
export const POOL_SIZE = 2;

/** The posts (control sockets) of the pool, in the order the launcher tries them. */
export function standbyPosts(base: string): string[] {
  return Array.from({ length: POOL_SIZE }, (_, i) => `${base}-${i}`);
}

/** All the posts of the pool `post` belongs to. */
export function poolOf(post: string): string[] {
  return standbyPosts(post.replace(/-\d+$/, ''));
}

/** FNV-1a, 64 bit: a stable short name for the key (not a security boundary: 0600 + peer uid). */
function fnv1a64(s: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(s, 'utf8')) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, '0');
}

/** The base name of the standby posts for this containerd and this build of the shim. */
export function standbyPath(grpcAddress: string, ttrpcAddress: string, entry = process.argv[1] ?? ''): string {
  let build = '';
  try {
    const real = fs.realpathSync(entry);
    build = `${real}\0${Math.floor(fs.statSync(real).mtimeMs)}`;
  } catch { /* unknown build: still keyed by the addresses */ }
  return `${SOCKET_DIR}/standby-${fnv1a64(`${grpcAddress}\0${ttrpcAddress}\0${build}`)}`;
}

/**
 * The daemon's environment: `start`'s plus GOMAXPROCS=4, as the reference shim sets it for its
 * daemon (containerd v2.3.4 manager_linux.go newCommand); it reaches every runc the daemon runs, so Go's runtime in
 * runc is sized the same under both shims. And, unless containerd set its own, one malloc arena
 * (MALLOC_ARENA_MAX=1: 0.5 MiB less per daemon, whose dozen threads barely allocate); glibc
 * reads it at exec, and the daemon drops it again (scrubMallocEnv) so its children never see it.
 */
export function daemonEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env, GOMAXPROCS: '4' };
  if (env.MALLOC_ARENA_MAX === undefined) Object.assign(out, { MALLOC_ARENA_MAX: '1', [MALLOC_MARK]: '1' });
  return out;
}

const MALLOC_MARK = 'SHIM_SET_MALLOC_ARENA_MAX';

/** Forget the malloc setting daemonEnv added (it has done its work at exec). */
export function scrubMallocEnv(env: NodeJS.ProcessEnv = process.env): void {
  if (env[MALLOC_MARK] === undefined) return;
  delete env.MALLOC_ARENA_MAX;
  delete env[MALLOC_MARK];
}

/**
 * Spawn a shim process (daemon or standby) the way the reference spawns its daemon: its own
 * process group (signals to containerd's group miss it) but no new session. A new session
 * would also mean a new scheduler autogroup, and then neither the standby's low boot priority
 * nor runc's share of the CPU would weigh against each other or containerd as they do for the
 * reference shim; measured, a booting standby in its own autogroup slowed `runc create` and
 * `runc exec` by a quarter.
 */
export function spawnShimProcess(args: string[], o: { cwd: string; fds: number[] }): number {
  const env = envList(daemonEnv());
  return native.spawn({
    file: process.execPath,
    args: withTitleRoom([process.execPath, ...process.execArgv, process.argv[1], ...args]),
    env, cwd: o.cwd, fds: o.fds, setpgid: true,
  });
}

/**
 * Bytes of argument range a shim process gets, so that as a daemon it can show the Go shim's
 * command line in place of its own (identity.ts). That line is the binary's path and
 * `-namespace NS -id ID -address ADDR -debug`, each NUL-terminated: 31 bytes of flags, at most
 * 77 for each identifier (76 characters, identifiers.ts) and 108 for containerd's socket path
 * (sun_path), 293 in all, which leaves the path of the binary 731 bytes. A longer title is cut.
 * The same bound is TITLE_ROOM in native/launcher/launcher.c.
 */
export const TITLE_ROOM = 1024;

/**
 * `argv` followed by as many empty arguments as it takes to fill TITLE_ROOM bytes: each is one
 * NUL byte of room, invisible to ps and pgrep (they drop trailing NULs), and the shim's flag
 * parser stops at the first one (an empty action: the daemon or standby mode, as without them).
 */
export function withTitleRoom(argv: readonly string[]): string[] {
  const used = argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);
  return [...argv, ...new Array<string>(Math.max(0, TITLE_ROOM - used)).fill('')];
}

/** Leave a standby behind for the next `start` (booting at low priority, off the critical path). */
export function spawnStandby(post: string): void {
  // Held, or one already booting for it: under a burst of starts the pool is empty, and every
  // `start` that boots Node itself would otherwise leave two more standbys booting (measured:
  // three Node boots per container instead of one).
  if (fs.existsSync(post) || !claimBoot(post)) return;
  try {
    const pid = spawnShimProcess(['-standby', post], { cwd: '/', fds: [-1, -1, -1] });
    try { os.setPriority(pid, BOOT_NICE); } catch { /* best effort */ }
  } catch {
    releaseBoot(post); // best effort: the next start spawns one
  }
}

/** A booting standby's claim on its post; younger than this, nobody else boots one for it. */
const BOOT_CLAIM_MS = 10_000;

/** The claim file of `post`. */
export function claimPath(post: string): string {
  return `${post}.booting`;
}

/** Whether the claim file `claim` exists and is younger than BOOT_CLAIM_MS. */
function claimFresh(claim: string): boolean {
  try {
    return Date.now() - fs.statSync(claim).mtimeMs < BOOT_CLAIM_MS;
  } catch {
    return false;
  }
}

/** Claim the boot of a standby for `post` (exclusive; a claim older than BOOT_CLAIM_MS is stale). */
export function claimBoot(post: string): boolean {
  const claim = claimPath(post);
  try {
    fs.writeFileSync(claim, '', { flag: 'wx', mode: 0o600 });
    return true;
  } catch {
    if (claimFresh(claim)) return false;
    try {
      fs.writeFileSync(claim, '', { mode: 0o600 }); // stale: its standby died booting
      return true;
    } catch {
      return false;
    }
  }
}

/** Whether `post` has a standby, or one booting for it (a fresh claim). */
export function postServed(post: string): boolean {
  return fs.existsSync(post) || claimFresh(claimPath(post));
}

export function releaseBoot(post: string): void {
  try { fs.unlinkSync(claimPath(post)); } catch { /* not claimed */ }
}

/** The socket a standby's warm-up listens on for a moment (warmup.ts), named by its pid. */
export function warmupSocketPath(pid: number, dir = SOCKET_DIR): string {
  return `${dir}/warmup-${pid}`;
}

/**
 * Litter of standbys that died booting: `.booting` claims past BOOT_CLAIM_MS, and warm-up
 * sockets (`warmup-<pid>`, see warmup.ts) whose process is gone.
 */
export function sweepLitter(): void {
  let names: string[];
  try { names = fs.readdirSync(SOCKET_DIR); } catch { return; }
  for (const n of names) {
    const p = `${SOCKET_DIR}/${n}`;
    const warmPid = /^warmup-(\d+)$/.exec(n)?.[1];
    try {
      if (n.startsWith('standby-') && n.endsWith('.booting')) {
        if (!claimFresh(p)) fs.unlinkSync(p);
      } else if (warmPid && !fs.existsSync(`/proc/${warmPid}`)) {
        fs.unlinkSync(p);
      }
    } catch { /* gone */ }
  }
}
