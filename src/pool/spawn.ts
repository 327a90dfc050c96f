// SPDX-License-Identifier: Apache-2.0
// Spawning shim processes (a daemon for `start`, or a standby for a post) and refilling posts:
// the environment and process group every shim daemon gets, the room for its command line, the
// machine-wide bound on standbys, the home cgroup, and waiting for every standby we spawn.
import fs from 'node:fs';
import os from 'node:os';
import * as native from '../sys/native.js';
import { envList } from '../reaper/reaper.js';
import { MAX_STANDBYS, TITLE_ROOM } from './constants.js';
import { claimBoot, passClaim, releaseBoot, standbysOnMachine } from './claim.js';
import { placeAtHome } from './cgroup.js';

const BOOT_NICE = 10;

export function standbyEnabled(env = process.env): boolean {
  return env.SHIM_STANDBY !== '0';
}

/**
 * Whether a standby taken from an empty pool is replaced at once (the default), or only once
 * containerd has gone quiet on the new daemon, as when another standby is up
 * (SHIM_POOL_REFILL=idle: a lever the bench measures, bench/results/levers.md).
 */
export function refillAtOnce(env = process.env): boolean {
  return env.SHIM_POOL_REFILL !== 'idle';
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
 * The environment standbys are spawned with: this process's as it booted. A daemon changes its
 * own later (the binary's path and containerd's JOB_ENV of the job it adopted), and a standby
 * must look exactly like one its pool key names. The JOB_ENV variables it boots with are its
 * spawner's (on a machine with one containerd, the same as every job's); each job brings its
 * own (key.ts).
 */
const bootEnv: NodeJS.ProcessEnv = { ...process.env };

/**
 * Spawn a shim process (daemon or standby) the way the reference spawns its daemon: its own
 * process group (signals to containerd's group miss it) but no new session. A new session
 * would also mean a new scheduler autogroup, and then neither the standby's low boot priority
 * nor runc's share of the CPU would weigh against each other or containerd as they do for the
 * reference shim; measured, a booting standby in its own autogroup slowed `runc create` and
 * `runc exec` by a quarter.
 */
export function spawnShimProcess(args: string[], o: { cwd: string; fds: number[]; env?: NodeJS.ProcessEnv }): number {
  return native.spawn({
    file: process.execPath,
    args: withTitleRoom([process.execPath, ...process.execArgv, process.argv[1], ...args]),
    env: envList(daemonEnv(o.env ?? process.env)), cwd: o.cwd, fds: o.fds, setpgid: true,
  });
}

/**
 * `argv` followed by as many empty arguments as it takes to fill TITLE_ROOM bytes: each is one
 * NUL byte of room, invisible to ps and pgrep (they drop trailing NULs), and the shim's flag
 * parser stops at the first one (an empty action: the daemon or standby mode, as without them).
 * TITLE_ROOM covers the Go shim's daemon line (src/shim/identity.ts): the binary's path and
 * `-namespace NS -id ID -address ADDR -debug`, each NUL-terminated: 31 bytes of flags, at most
 * 77 for each identifier and 108 for containerd's socket path, 293 in all, which leaves the
 * binary's path 731 bytes. A longer title is cut.
 */
export function withTitleRoom(argv: readonly string[]): string[] {
  const used = argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);
  return [...argv, ...new Array<string>(Math.max(0, TITLE_ROOM - used)).fill('')];
}

/** The standbys this process spawned and has not waited for yet (see reapStandbys). */
const spawned = new Set<number>();

/**
 * Leave a standby behind for a post (booting at low priority, off the critical path, in the
 * home cgroup): not when the post is held or one is booting for it, nor when the machine has
 * MAX_STANDBYS already.
 */
export function spawnStandby(post: string): void {
  if (fs.existsSync(post) || standbysOnMachine() >= MAX_STANDBYS || !claimBoot(post)) return;
  try {
    const pid = spawnShimProcess(['-standby', post], { cwd: '/', fds: [-1, -1, -1], env: bootEnv });
    spawned.add(pid);
    passClaim(post, pid);
    placeAtHome(pid);
    try { os.setPriority(pid, BOOT_NICE); } catch { /* best effort */ }
  } catch {
    releaseBoot(post); // best effort: the next start spawns one
  }
}

/**
 * Wait for the standbys this process spawned that have exited (a standby that lost its post, or
 * retired). Without the daemon's reaper (a standby that is not adopted yet), nothing else
 * would: called from the standby's watch and after each job. Once the reaper runs (a daemon)
 * it waits for every child, and this must not be called any more (forgetStandbys).
 */
export function reapStandbys(): void {
  for (const pid of spawned) {
    try {
      if (native.waitChild(pid, 0) !== null) spawned.delete(pid);
    } catch {
      spawned.delete(pid); // not our child any more
    }
  }
}

/** The reaper takes over waiting (the standby became a daemon). */
export function forgetStandbys(): void {
  spawned.clear();
}
