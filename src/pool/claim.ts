// SPDX-License-Identifier: Apache-2.0
// Who boots the standby for a post. Under a burst of starts the pool is empty, and every
// `start` that boots Node itself would leave a standby booting for each post (measured: three
// Node boots per container instead of one). So the boot of a post's standby is claimed first:
// `<post>.booting`, created exclusively, holding the pid and start time of the process that
// owns the claim (the spawner, then the booting standby). A claim is stale exactly when that
// process is gone: no clock is read, so a clock step or a slow machine cannot free a live claim.
import fs from 'node:fs';
import { POST_DIR } from './constants.js';
import { boundUnixSockets } from './sockfile.js';

/** The claim file of `post`. */
export function claimPath(post: string): string {
  return `${post}.booting`;
}

/** A process's start time (clock ticks since boot, /proc/<pid>/stat field 22): pid + this names it uniquely. */
function startTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

function owner(pid: number): string {
  return `${pid} ${startTime(pid) ?? '?'}\n`;
}

/** Whether the claim file `claim` names a live process. */
function claimLive(claim: string): boolean {
  let text: string;
  try { text = fs.readFileSync(claim, 'utf8'); } catch { return false; }
  const m = /^(\d+) (\d+)\n$/.exec(text);
  if (!m) return false;
  return startTime(Number(m[1])) === m[2];
}

/** Claim the boot of a standby for `post` for process `pid` (exclusive; a dead owner's claim is taken over). */
export function claimBoot(post: string, pid = process.pid): boolean {
  const claim = claimPath(post);
  // Written aside and linked into place: the claim never exists without its owner in it.
  const tmp = `${claim}.${process.pid}`;
  try {
    fs.writeFileSync(tmp, owner(pid), { mode: 0o600 });
    try {
      fs.linkSync(tmp, claim);
      return true;
    } catch {
      if (claimLive(claim)) return false;
      fs.renameSync(tmp, claim); // its owner died: take it over
      return true;
    }
  } catch {
    return false;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** Hand a claim to the process that will boot (its pid replaces ours in the file). */
export function passClaim(post: string, pid: number): void {
  const claim = claimPath(post);
  const tmp = `${claim}.${process.pid}`;
  try {
    fs.writeFileSync(tmp, owner(pid), { mode: 0o600 });
    fs.renameSync(tmp, claim);
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}

/** Whether `post` has a standby, or one booting for it (a live claim). */
export function postServed(post: string): boolean {
  return fs.existsSync(post) || claimLive(claimPath(post));
}

export function releaseBoot(post: string): void {
  try { fs.unlinkSync(claimPath(post)); } catch { /* not claimed */ }
}

/** Paths of the unix sockets bound in this network namespace (/proc/net/unix), or undefined when unreadable. */
function boundPaths(): Set<string> | undefined {
  const bound = boundUnixSockets();
  return bound && new Set(bound.keys());
}

/**
 * The standbys of the whole machine: posts somebody listens on, and boots claimed by a live
 * process (a post left by a killed standby is a file nobody has bound: not counted).
 */
export function standbysOnMachine(dir = POST_DIR): number {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return 0; }
  const bound = boundPaths();
  let n = 0;
  for (const name of names) {
    if (!name.startsWith('standby-')) continue;
    if (/-\d+$/.test(name)) {
      if (!bound || bound.has(`${dir}/${name}`)) n++;
    } else if (name.endsWith('.booting') && claimLive(`${dir}/${name}`) && !names.includes(name.slice(0, -'.booting'.length))) {
      n++;
    }
  }
  return n;
}

/** The socket a standby's warm-up listens on for a moment (src/shim/warmup.ts), named by its pid. */
export function warmupSocketPath(pid: number, dir = POST_DIR): string {
  return `${dir}/warmup-${pid}`;
}

/**
 * Litter of standbys that died: claims whose owner is gone, warm-up sockets of dead pids, posts
 * (and shared daemons' posts) nobody is bound to any more.
 */
export function sweepLitter(dir = POST_DIR): void {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return; }
  const bound = boundPaths();
  for (const n of names) {
    const p = `${dir}/${n}`;
    const warmPid = /^warmup-(\d+)$/.exec(n)?.[1];
    try {
      if (n.startsWith('standby-') && n.endsWith('.booting')) {
        if (!claimLive(p)) fs.unlinkSync(p);
      } else if ((n.startsWith('standby-') && /-\d+$/.test(n)) || n.startsWith('shared-')) {
        if (bound && !bound.has(p) && fs.lstatSync(p).isSocket()) fs.unlinkSync(p);
      } else if (warmPid && !fs.existsSync(`/proc/${warmPid}`)) {
        fs.unlinkSync(p);
      }
    } catch { /* gone */ }
  }
}
