// SPDX-License-Identifier: Apache-2.0
/**
 * Typed access to the `shim_native` addon (native/src/*.cc): the few Linux
 * facilities Node lacks — child reaping, spawning without libuv, prctl,
 * pidfds, mount, SCM_RIGHTS, TIOCSWINSZ, eventfd watching.
 *
 * Rules for users of this module:
 * - Load it from the main thread only (it owns process-wide threads and fds);
 *   loading it in a worker thread throws.
 * - Never use `node:child_process` in a process that runs the reaper: libuv
 *   would wait for its own children while the reaper thread reaps *every*
 *   child, so exits would be lost on one side or the other. Spawn with
 *   {@link spawn} instead.
 * - Every fd returned here is `O_CLOEXEC`; the caller owns it and closes it
 *   (e.g. `fs.closeSync`, or by destroying the `net.Socket` wrapping it),
 *   except the reaper and fd-watcher pipes, which live for the whole process.
 *
 * Errors from system calls are `Error`s shaped like Node's own system errors
 * (see {@link NativeError}); argument mistakes throw `TypeError`.
 *
 * The addon is loaded lazily, on the first call that needs it; constants and
 * the record parsers work without it.
 */

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';

/** An error raised by a failed system call inside the addon. */
export interface NativeError extends Error {
  /** errno name, e.g. `'ESRCH'`, `'EBUSY'`, `'ENOENT'`, `'ETIMEDOUT'`. */
  code: string;
  /** Negative errno number, as in Node's own system errors (ENOENT → -2). */
  errno: number;
  /** The failing system call, e.g. `'mount'`, `'execve'`, `'chdir'`. */
  syscall: string;
  /** The path involved, when there is one. */
  path?: string;
  /** {@link spawn} only: pid of the child that failed before exec (already exited). */
  pid?: number;
}

/** True if `err` is an error from this addon (optionally with the given errno name). */
export function isNativeError(err: unknown, code?: string): err is NativeError {
  return (
    err instanceof Error &&
    typeof (err as NativeError).code === 'string' &&
    typeof (err as NativeError).syscall === 'string' &&
    (code === undefined || (err as NativeError).code === code)
  );
}

// ---------------------------------------------------------------------------
// Constants (Linux x86_64/arm64 values; `nativeConstants()` exposes the values
// the addon was compiled with, and the unit tests compare both).

/** prctl option: set the parent-death signal of the calling process. */
export const PR_SET_PDEATHSIG = 1;
/** prctl option: make the calling process a child subreaper. */
export const PR_SET_CHILD_SUBREAPER = 36;

export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_SYNCHRONOUS = 0x10;
export const MS_REMOUNT = 0x20;
export const MS_MANDLOCK = 0x40;
export const MS_DIRSYNC = 0x80;
export const MS_NOATIME = 0x400;
export const MS_NODIRATIME = 0x800;
export const MS_BIND = 0x1000;
export const MS_MOVE = 0x2000;
export const MS_REC = 0x4000;
export const MS_PRIVATE = 0x40000;
export const MS_SLAVE = 0x80000;
export const MS_SHARED = 0x100000;
export const MS_RELATIME = 0x200000;
export const MS_STRICTATIME = 0x1000000;

/** umount2 flag: force unmount (mostly NFS). */
export const MNT_FORCE = 0x1;
/** umount2 flag: lazy unmount — detach now, clean up when no longer busy. */
export const MNT_DETACH = 0x2;
export const MNT_EXPIRE = 0x4;
/** umount2 flag: do not follow a symlink in `target`. */
export const UMOUNT_NOFOLLOW = 0x8;

export const EFD_SEMAPHORE = 0x1;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

/** Size in bytes of one record on the reaper pipe. */
export const EXIT_RECORD_SIZE = 24;
/** Size in bytes of one token on the fd-watcher pipe. */
export const WATCH_TOKEN_SIZE = 4;

// ---------------------------------------------------------------------------
// Loading

interface NativeBinding {
  EXIT_RECORD_SIZE: number;
  constants: Record<string, number>;
  startReaper(): number;
  spawn(opts: SpawnOptions): number;
  waitChild(pid: number, timeoutMs: number): number | null;
  prctl(option: number, arg2?: number, arg3?: number, arg4?: number, arg5?: number): number;
  pipe(): [number, number];
  pidfdOpen(pid: number): number;
  pidfdSendSignal(pidfd: number, signal: number): void;
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): void;
  mountInDir(
    dir: string,
    source: string | null,
    target: string,
    fstype: string | null,
    flags: number,
    data: string | null,
  ): void;
  umount2(target: string, flags: number): void;
  usernsFd(uidMap: string, gidMap: string): number;
  idmapMount(source: string, target: string, usernsFd: number): void;
  loopAttach(file: string, readOnly: boolean, directIo: boolean): { fd: number; device: string };
  setNonBlocking(fd: number, on: boolean): void;
  setCloexec(fd: number, on: boolean): void;
  dup(fd: number): number;
  dup2(oldFd: number, newFd: number): void;
  eventfd(initval: number, flags: number): number;
  setWinsize(fd: number, rows: number, cols: number): void;
  getWinsize(fd: number): Winsize;
  fionread(fd: number): number;
  listenUnix(path: string, backlog: number): number;
  acceptRecvFd(listenFd: number, timeoutMs: number): ReceivedFd;
  recvFd(connFd: number, timeoutMs: number, count?: number): ReceivedFd & { fds: number[] };
  sendFd(sockFd: number, fd: number, name: string): void;
  peerCred(fd: number): PeerCred;
  startFdWatcher(): number;
  watchFd(fd: number, token: number): void;
  unwatchFd(fd: number): boolean;
  setProcessTitle(args: string[], name: string): ProcessTitleResult;
}

/** Directory holding the package.json of this package (works from src/, dist/ or a bundle). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`shim_native: no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** Absolute path of the compiled addon. */
export function addonPath(): string {
  return join(packageRoot(), 'native', 'build', 'Release', 'shim_native.node');
}

let binding: NativeBinding | undefined;

function native(): NativeBinding {
  if (binding !== undefined) return binding;
  if (!isMainThread) throw new Error('shim_native must only be loaded in the main thread');
  const path = addonPath();
  try {
    binding = createRequire(join(packageRoot(), 'package.json'))(path) as NativeBinding;
  } catch (err) {
    throw new Error(`cannot load native addon ${path} (run \`npm run build:native\`): ${String(err)}`, {
      cause: err,
    });
  }
  return binding;
}

/** The constants as compiled into the addon (for cross-checking the values above). */
export function nativeConstants(): Readonly<Record<string, number>> {
  return { ...native().constants, EXIT_RECORD_SIZE: native().EXIT_RECORD_SIZE };
}

// ---------------------------------------------------------------------------
// Process title

/** What {@link setProcessTitle} did. */
export interface ProcessTitleResult {
  /** Bytes in this process's argument range (what execve gave it). */
  room: number;
  /** Bytes of the title written there, NULs included (at most `room`). */
  written: number;
  /**
   * Whether /proc/self/cmdline now ends where the title ends. False when the title is shorter
   * than the room and the kernel refused to move arg_end (that needs CAP_SYS_RESOURCE): the
   * rest of the range is then NUL bytes, which ps and pgrep drop.
   */
  exact: boolean;
  /** Whether the thread's name (comm) was set. */
  named: boolean;
}

/**
 * Rewrite what /proc/self/cmdline shows: `args`, each NUL-terminated, over the argument strings
 * execve placed in this process's memory (Node's process.argv is a copy and does not change),
 * the rest zero-filled; cut short (ending in a NUL) when it does not fit, never written past the
 * range. And, when `name` is not empty, the calling thread's name (PR_SET_NAME: the process's
 * comm when called from the main thread; the kernel keeps 15 bytes). Do not set
 * `process.title` afterwards: libuv would write over the same range.
 *
 * @throws TypeError for non-string or NUL-containing args; NativeError when /proc/self/stat
 *   cannot be read or shows no argument range.
 */
export function setProcessTitle(args: readonly string[], name = ''): ProcessTitleResult {
  return native().setProcessTitle([...args], name);
}

// ---------------------------------------------------------------------------
// prctl

/**
 * `prctl(2)` with integer arguments (missing ones are 0); returns the
 * syscall's non-negative result. Options that take a pointer argument cannot
 * be used (a number is never a valid pointer).
 * @throws NativeError (`syscall: 'prctl'`), e.g. EINVAL for an unknown option.
 */
export function prctl(option: number, arg2?: number, arg3?: number, arg4?: number, arg5?: number): number {
  return native().prctl(option, arg2, arg3, arg4, arg5);
}

/**
 * Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`, 1): orphaned
 * descendants are re-parented to it, so the reaper also collects them.
 */
export function setChildSubreaper(): void {
  native().prctl(PR_SET_CHILD_SUBREAPER, 1);
}

// ---------------------------------------------------------------------------
// Reaper

/** One reaped child, as read from the reaper pipe. */
export interface ExitRecord {
  pid: number;
  /** Exit code, or 128 + signal number if the process was killed (or dumped core). */
  status: number;
  /** CLOCK_REALTIME when the child was reaped. */
  exitedAt: { seconds: bigint; nanos: number };
}

/**
 * Starts the reaper thread (once; later calls return the same fd) and returns
 * the read end of its pipe.
 *
 * The thread reaps every child of the process — spawned ones and orphans
 * re-parented to a subreaper — with a blocking `waitid(P_ALL, WEXITED)` and
 * writes one {@link EXIT_RECORD_SIZE}-byte record per child (decode with
 * {@link parseExitRecords}). Records are never dropped: when the pipe is full
 * the thread waits (and reaping pauses), so keep reading it, e.g. via
 * `new net.Socket({ fd, readable: true, writable: false })` (which makes the
 * fd non-blocking; that does not affect the writer). Never close this fd.
 *
 * A child's record can only be read from the pipe after the synchronous
 * {@link spawn} call that created it has returned, so registering the pid
 * right after `spawn()` cannot miss its exit. Records for unknown pids
 * (orphans, failed spawns) must be ignored by the consumer.
 */
export function startReaper(): number {
  return native().startReaper();
}

/**
 * Decodes the complete records at the start of `buf`; `rest` is the trailing
 * partial record (keep it and prepend it to the next chunk).
 */
export function parseExitRecords(buf: Buffer): { records: ExitRecord[]; rest: Buffer } {
  const records: ExitRecord[] = [];
  let off = 0;
  for (; off + EXIT_RECORD_SIZE <= buf.length; off += EXIT_RECORD_SIZE) {
    records.push({
      pid: buf.readUInt32LE(off),
      status: buf.readInt32LE(off + 4),
      exitedAt: { seconds: buf.readBigInt64LE(off + 8), nanos: buf.readUInt32LE(off + 16) },
    });
  }
  return { records, rest: buf.subarray(off) };
}

// ---------------------------------------------------------------------------
// Spawning

export interface SpawnOptions {
  /** Executable. Without a '/', it is searched in the PATH of `env` (default PATH if unset). */
  file: string;
  /** The complete argv, including argv[0]. */
  args: string[];
  /** The complete environment, as "KEY=value" strings (nothing is inherited). */
  env: string[];
  /** Working directory of the child (default: inherited). A relative `file` containing '/' resolves against it. */
  cwd?: string;
  /**
   * The child's fd table: child fd `i` := parent fd `fds[i]`, or /dev/null
   * (O_RDWR) when `fds[i]` is -1. Sources may be any open fds, overlapping
   * targets included; every other fd is closed in the child.
   */
  fds: number[];
  /** Start a new session (`setsid`); takes precedence over `setpgid`. */
  setsid?: boolean;
  /** Start a new process group (`setpgid(0, 0)`). */
  setpgid?: boolean;
  /**
   * Signal the child receives when its parent dies (`PR_SET_PDEATHSIG`).
   * Linux ties it to the parent *thread*: spawning from the main thread (the
   * only supported one) makes it the whole process.
   */
  pdeathsig?: number;
}

/**
 * Starts a child process and returns its pid once it has successfully
 * exec'd. The child starts with all signals unblocked and every signal
 * disposition at its default (Node's ignored SIGPIPE is not inherited).
 *
 * The calling thread is suspended until the child has exec'd (vfork-style),
 * usually well under a millisecond.
 *
 * @throws NativeError when the child could not be set up or exec'd; `syscall`
 *   names the failing step (`'execve'`, `'chdir'`, `'dup'`, `'setsid'`, ...),
 *   `path` the file or cwd, and `pid` the failed child. That child exits with
 *   status 127: if the reaper is running its exit record still arrives on the
 *   reaper pipe (ignore it), otherwise it has already been waited for here.
 *   Argument errors throw TypeError.
 */
export function spawn(opts: SpawnOptions): number {
  return native().spawn(opts);
}

/**
 * Blocks until the child `pid` (spawned by {@link spawn}) exits, reaps it and returns its
 * status (exit code, or 128 + signal); null when `timeoutMs` passed first (it is still
 * running, still to be waited for). Only without the reaper thread (the `delete` action, a
 * standby's jobs): once the reaper runs it owns every wait, and this throws.
 */
export function waitChild(pid: number, timeoutMs: number): number | null {
  return native().waitChild(pid, timeoutMs);
}

// ---------------------------------------------------------------------------
// Pipes, pidfds, fd flags

/** `pipe2(O_CLOEXEC)`: returns `[readFd, writeFd]`, both blocking. */
export function pipe(): [number, number] {
  return native().pipe();
}

/**
 * `pidfd_open(pid, 0)`: a (close-on-exec) fd that refers to this exact
 * process, immune to pid reuse. Close it with `fs.closeSync`.
 * @throws NativeError ESRCH if no such process exists.
 */
export function pidfdOpen(pid: number): number {
  return native().pidfdOpen(pid);
}

/**
 * `pidfd_send_signal(pidfd, signal)` (signal 0 only checks the process).
 * @throws NativeError ESRCH once the process has exited and been reaped.
 */
export function pidfdSendSignal(pidfd: number, signal: number): void {
  native().pidfdSendSignal(pidfd, signal);
}

/** Sets or clears O_NONBLOCK on the open file description of `fd`. */
export function setNonBlocking(fd: number, on: boolean): void {
  native().setNonBlocking(fd, on);
}

/** Sets or clears FD_CLOEXEC on `fd`. */
export function setCloexec(fd: number, on: boolean): void {
  native().setCloexec(fd, on);
}

/**
 * Duplicates `fd` (`F_DUPFD_CLOEXEC`): a new close-on-exec fd sharing the
 * open file description (offset and O_NONBLOCK are shared).
 */
export function dup(fd: number): number {
  return native().dup(fd);
}

/** `dup2(oldFd, newFd)` (dup3 with O_CLOEXEC above fd 2): point `newFd` at `oldFd`'s file. */
export function dup2(oldFd: number, newFd: number): void {
  native().dup2(oldFd, newFd);
}

// ---------------------------------------------------------------------------
// Mounts

/**
 * `mount(2)`. `null` source/fstype/data pass NULL (e.g. for remounts and
 * bind mounts). Flags are the `MS_*` constants.
 * @throws NativeError (`syscall: 'mount'`, `path: target`).
 */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): void {
  native().mount(source, target, fstype, flags, data);
}

/**
 * Like {@link mount}, but performed by a short-lived helper thread whose
 * working directory is `dir` (it unshares its fs context first), so relative
 * paths — e.g. an overlay `lowerdir=` list shortened to fit a page — resolve
 * against `dir` without touching the process's cwd. Blocks until done.
 * @throws NativeError with `syscall` `'unshare'`, `'chdir'` or `'mount'`.
 */
export function mountInDir(
  dir: string,
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): void {
  native().mountInDir(dir, source, target, fstype, flags, data);
}

/**
 * `umount2(2)` with `MNT_*` / `UMOUNT_NOFOLLOW` flags.
 * @throws NativeError e.g. EINVAL (not a mount point), EBUSY, ENOENT.
 */
export function umount2(target: string, flags: number): void {
  native().umount2(target, flags);
}

/**
 * A new user namespace with these id maps (the kernel's `inside outside count` lines), as an
 * fd for {@link idmapMount}. Its holder process has exited and been waited for on return.
 * @throws NativeError with `syscall` `'clone'`, `'write uid_map'`, `'write gid_map'`, …
 */
export function usernsFd(uidMap: string, gidMap: string): number {
  return native().usernsFd(uidMap, gidMap);
}

/**
 * Attach an id-mapped clone of the mount tree at `source` onto `target` (open_tree,
 * mount_setattr MOUNT_ATTR_IDMAP with the user namespace `usernsFd`, move_mount).
 * @throws NativeError with `syscall` `'open_tree'`, `'mount_setattr'` or `'move_mount'`.
 */
export function idmapMount(source: string, target: string, usernsFd: number): void {
  native().idmapMount(source, target, usernsFd);
}

/**
 * Bind `file` to a free loop device with autoclear (read-only and direct I/O on request);
 * returns the device's path and an open fd of it, to close once the device is mounted.
 * @throws NativeError with `syscall` `'open'`, `'LOOP_CTL_GET_FREE'` or `'LOOP_CONFIGURE'`.
 */
export function loopAttach(file: string, readOnly: boolean, directIo: boolean): { fd: number; device: string } {
  return native().loopAttach(file, readOnly, directIo);
}

// ---------------------------------------------------------------------------
// Unix sockets

/** A file descriptor received over a unix socket, and the message payload. */
export interface ReceivedFd {
  fd: number;
  /** The message bytes as a string (runc: the pty master's name); trailing NULs removed. */
  name: string;
}

/** Credentials of the peer of a connected unix socket. */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * Creates a listening `AF_UNIX` stream socket (close-on-exec) bound to
 * `path`; a path starting with "\0" is an abstract name. Does not unlink an
 * existing file first. Returns the fd, which can be handed to
 * `net.Server.listen({ fd })` or to a child via {@link spawn}.
 * @throws NativeError e.g. EADDRINUSE, ENOENT, ENAMETOOLONG.
 */
export function listenUnix(path: string, backlog: number): number {
  return native().listenUnix(path, backlog);
}

/**
 * Accepts one connection on `listenFd` and receives one message that must
 * carry exactly one fd (one `SCM_RIGHTS` with a single fd, e.g. runc's pty
 * master on the console socket). The connection is closed; the received fd
 * is close-on-exec. Blocks the calling thread for at most `timeoutMs`: call
 * it once runc has returned (the message is then already queued) with a
 * short timeout.
 * @throws NativeError ETIMEDOUT when no connection/message came in time;
 *   EINVAL when the message carried no fd, several fds or other control data
 *   (anything received is closed).
 */
export function acceptRecvFd(listenFd: number, timeoutMs: number): ReceivedFd {
  return native().acceptRecvFd(listenFd, timeoutMs);
}

/**
 * Receives one message carrying exactly `count` fds (0: any number, at least
 * one; one SCM_RIGHTS) on an
 * accepted connection (left open). Blocks for at most `timeoutMs`; same
 * errors as acceptRecvFd.
 */
export function recvFd(connFd: number, timeoutMs: number, count = 1): ReceivedFd & { fds: number[] } {
  return native().recvFd(connFd, timeoutMs, count);
}

/**
 * Sends `fd` over the connected unix socket `sockFd` (one `SCM_RIGHTS`) with
 * `name` as payload — the sender side of the console-socket protocol
 * (used by tests and tooling).
 */
export function sendFd(sockFd: number, fd: number, name: string): void {
  native().sendFd(sockFd, fd, name);
}

/** `SO_PEERCRED` of a connected unix socket. */
export function peerCred(fd: number): PeerCred {
  return native().peerCred(fd);
}

// ---------------------------------------------------------------------------
// Terminals

/** A terminal window size. */
export interface Winsize {
  rows: number;
  cols: number;
}

/** `ioctl(TIOCSWINSZ)`: sets the window size of a terminal (e.g. a pty master). */
export function setWinsize(fd: number, rows: number, cols: number): void {
  native().setWinsize(fd, rows, cols);
}

/** `ioctl(TIOCGWINSZ)`: reads the window size of a terminal. */
export function getWinsize(fd: number): Winsize {
  return native().getWinsize(fd);
}

/** `ioctl(FIONREAD)`: the bytes waiting to be read, e.g. what a fifo's reader has not taken yet. */
export function fionread(fd: number): number {
  return native().fionread(fd);
}

// ---------------------------------------------------------------------------
// eventfd and the fd watcher (cgroup v1 OOM notifications)

/** `eventfd(initval, flags)` with `EFD_*` flags (pass EFD_CLOEXEC). */
export function eventfd(initval: number, flags: number): number {
  return native().eventfd(initval, flags);
}

/**
 * Starts the fd-watcher thread (once; later calls return the same fd) and
 * returns the read end of its token pipe: each time a watched fd becomes
 * readable (or reports HUP/ERR) the thread reads 8 bytes from it (consuming
 * an eventfd's counter) and writes that fd's 32-bit token (decode with
 * {@link parseWatchTokens}). Keep reading the pipe; never close it.
 */
export function startFdWatcher(): number {
  return native().startFdWatcher();
}

/**
 * Adds `fd` (an eventfd) to the watcher with the given u32 token.
 * Level-triggered; an fd reporting HUP/ERR yields one token and is then
 * disarmed until unwatched. Requires {@link startFdWatcher}.
 */
export function watchFd(fd: number, token: number): void {
  native().watchFd(fd, token);
}

/**
 * Removes `fd` from the watcher; once this returns the watcher thread no
 * longer touches it, so the caller may close it. Returns false if it was not
 * watched. Tokens already written to the pipe may still be read afterwards.
 */
export function unwatchFd(fd: number): boolean {
  return native().unwatchFd(fd);
}

/** Decodes the complete u32 LE tokens at the start of `buf`; `rest` is a trailing partial token. */
export function parseWatchTokens(buf: Buffer): { tokens: number[]; rest: Buffer } {
  const tokens: number[] = [];
  let off = 0;
  for (; off + WATCH_TOKEN_SIZE <= buf.length; off += WATCH_TOKEN_SIZE) tokens.push(buf.readUInt32LE(off));
  return { tokens, rest: buf.subarray(off) };
}
