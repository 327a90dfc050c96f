// SPDX-License-Identifier: Apache-2.0
// How a shim daemon shows itself to the node's tools (ps, pgrep -f, systemd-cgls, monitoring
// agents): as the Go shim's daemon does. The Go shim's `start` re-executes its own binary
// (os.Executable(), i.e. /proc/self/exe: the absolute path with symlinks resolved) with
// `-namespace NS -id ID -address ADDR`, plus `-debug` when containerd runs it with -debug
// (containerd v2.3.4 cmd/containerd-shim-runc-v2/manager/manager_linux.go, newCommand; the same
// arguments in containerd v1.6/v1.7 runtime/v2/runc/v2/service.go). So its /proc/PID/cmdline is
// those arguments and its comm the binary's name cut to 15 bytes: `containerd-shim`.
//
// Ours is Node running dist/shim/main.js. Each daemon — spawned by `start`, booted by the
// launcher for a job, or a standby adopted for a start — takes the same identity when it starts
// serving: the binary is the one containerd ran (the wrapper exports SHIM_ARGV0="$0"). The
// spawner gives the process room in its argument range for that (empty arguments, see
// spawnShimProcess in pool.ts and run_direct in native/launcher/launcher.c).
import fs from 'node:fs';
import path from 'node:path';
import * as native from '../sys/native.js';
import type { ShimFlags } from './flags.js';

/**
 * Look like the Go shim's daemon for `flags`: /proc/self/cmdline becomes
 * `<binary> -namespace NS -id ID -address ADDR [-debug]` and comm the binary's base name (also
 * on the threads that still carry Node's name). The binary is SHIM_ARGV0 resolved as
 * os.Executable() resolves it; without SHIM_ARGV0 (Node run by hand) nothing changes. Best
 * effort: the daemon serves whatever happens here.
 */
export function takeShimIdentity(flags: ShimFlags, env: NodeJS.ProcessEnv = process.env): void {
  const args = ['-namespace', flags.namespace, '-id', flags.id, '-address', flags.address];
  if (flags.debug) args.push('-debug');
  showAs(args, env);
}

/**
 * A shared daemon (docs/shared-daemon.md) that serves no container for now and waits for the
 * next on its post: `<binary> -shared <post>`, no `-id`, as a standby shows `-standby <post>`.
 */
export function takeIdleIdentity(post: string, env: NodeJS.ProcessEnv = process.env): void {
  showAs(['-shared', post], env);
}

function showAs(flagArgs: string[], env: NodeJS.ProcessEnv): void {
  const argv0 = env.SHIM_ARGV0;
  if (!argv0) return;
  let binary = argv0;
  try { binary = fs.realpathSync(argv0); } catch { /* gone or unreadable: as containerd gave it */ }
  const args = [binary, ...flagArgs];
  // The kernel keeps the first 15 bytes (TASK_COMM_LEN), as it does for an execve'd binary.
  const name = path.basename(binary);
  let before: string;
  try {
    before = fs.readFileSync('/proc/self/comm', 'utf8').trimEnd();
    native.setProcessTitle(args, name);
  } catch {
    return;
  }
  // Threads Node started so far carry the process's old name; later ones inherit the new one.
  let tids: string[] = [];
  try { tids = fs.readdirSync('/proc/self/task'); } catch { /* no procfs */ }
  for (const tid of tids) {
    try {
      const comm = `/proc/self/task/${tid}/comm`;
      if (fs.readFileSync(comm, 'utf8').trimEnd() === before) fs.writeFileSync(comm, name);
    } catch { /* exited meanwhile */ }
  }
}
