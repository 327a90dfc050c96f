// SPDX-License-Identifier: Apache-2.0
/**
 * OOM monitoring (runc-and-io.md §7.3). Emits `'oom'` with the container id.
 *
 * cgroup v1 — eventfd:
 *   efd = eventfd(0, EFD_CLOEXEC); open <memcg>/memory.oom_control; write
 *   "<efd> <oom_control fd> " to <memcg>/cgroup.event_control; close the
 *   oom_control fd; hand efd to the native fd watcher (epoll thread). Each
 *   readiness (the watcher consumes the 8-byte counter) arrives as a token on
 *   the watcher pipe; if the memory cgroup directory is gone (the kernel
 *   signals registered eventfds when the cgroup is removed) the watch is
 *   dropped and efd closed, otherwise 'oom' is emitted.
 *
 * cgroup v2 — inotify via fs.watch on <cg>/memory.events and <cg>/cgroup.events:
 *   on any notification memory.events is re-read; if oom_kill grew past the
 *   last value seen (initially 0) 'oom' is emitted; the watch ends when
 *   memory.events cannot be read (cgroup gone) or cgroup.events says
 *   `populated 0` (memory.events is read once more then: see onV2Event).
 *   flush() does the same read on demand, for the exit path. Tested on
 *   fixtures (test/unit) and end to end on a pure cgroup v2 host next to the
 *   Go shim (test/e2e/cgroups-v2.test.ts in scripts/v2-lane.sh's guest).
 */

import { EventEmitter } from 'node:events';
import { type FSWatcher, closeSync, existsSync, openSync, readFileSync, watch, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { EFD_CLOEXEC, eventfd, parseWatchTokens, startFdWatcher, unwatchFd, watchFd } from '../sys/native.js';
import { parseKeyValues } from './files.js';
import type { CgroupHandle } from './stats.js';

// ---------------------------------------------------------------------------
// Token dispatch for the native fd watcher. The watcher pipe is process-wide
// (startFdWatcher returns the same fd every time), so it must have exactly one
// reader: this module. Other users of watchFd should go through these helpers.

let tokenSocket: Socket | undefined;
let tokenRest: Buffer = Buffer.alloc(0);
let nextToken = 1;
const tokenHandlers = new Map<number, () => void>();

function ensureTokenReader(): void {
  if (tokenSocket !== undefined) return;
  const fd = startFdWatcher();
  const s = new Socket({ fd, readable: true, writable: false });
  s.on('data', (chunk: Buffer) => {
    const buf = tokenRest.length > 0 ? Buffer.concat([tokenRest, chunk]) : chunk;
    const { tokens, rest } = parseWatchTokens(buf);
    tokenRest = Buffer.from(rest);
    for (const t of tokens) {
      const h = tokenHandlers.get(t);
      // Tokens of fds unwatched meanwhile may still arrive: ignore them.
      if (h !== undefined) h();
    }
  });
  s.on('error', () => {
    /* the pipe lives as long as the process; nothing sensible to do */
  });
  // The watcher must not keep the process alive by itself.
  s.unref();
  tokenSocket = s;
}

/**
 * Watches a readable fd (an eventfd) with the native fd watcher and calls
 * `onReady` on the main thread for each readiness. Returns the token.
 */
function watchReadable(fd: number, onReady: () => void): number {
  ensureTokenReader();
  let token = nextToken;
  while (tokenHandlers.has(token) || token === 0) token = (token + 1) >>> 0;
  nextToken = (token + 1) >>> 0;
  tokenHandlers.set(token, onReady);
  try {
    watchFd(fd, token);
  } catch (err) {
    tokenHandlers.delete(token);
    throw err;
  }
  return token;
}

/** Stops a {@link watchReadable} watch; the caller may close `fd` afterwards. */
function unwatchReadable(fd: number, token: number): void {
  tokenHandlers.delete(token);
  try {
    unwatchFd(fd);
  } catch {
    /* already gone */
  }
}

// ---------------------------------------------------------------------------

interface V1Watch {
  kind: 1;
  efd: number;
  token: number;
  memoryDir: string;
}

interface V2Watch {
  kind: 2;
  dir: string;
  watchers: FSWatcher[];
  lastOomKill: bigint;
}

type Watch = V1Watch | V2Watch;

export interface OomWatcherOptions {
  /** Called for unexpected failures while watching (the watch is dropped). */
  onError?: (id: string, err: unknown) => void;
  /** Called when a watch ends by itself (cgroup removed / emptied). */
  onStop?: (id: string, reason: string) => void;
  /** Reads a cgroup file (v2 watches); for tests. Default: readFileSync as UTF-8. */
  readFile?: (path: string) => string;
}

export interface OomWatcherEvents {
  oom: [id: string];
}

export class OomWatcher extends EventEmitter<OomWatcherEvents> {
  private readonly watches = new Map<string, Watch>();
  private closed = false;

  private readonly read: (path: string) => string;

  constructor(private readonly options: OomWatcherOptions = {}) {
    super();
    this.read = options.readFile ?? ((p) => readFileSync(p, 'utf8'));
  }

  /** Number of active watches. */
  get size(): number {
    return this.watches.size;
  }

  has(id: string): boolean {
    return this.watches.has(id);
  }

  /**
   * Starts watching the memory cgroup of `handle` for container `id`
   * (replacing an existing watch for that id).
   * @throws when the cgroup has no memory controller or registration fails.
   */
  add(id: string, handle: CgroupHandle): void {
    if (this.closed) throw new Error('OomWatcher is closed');
    this.remove(id);
    const w = handle.version === 2 ? this.addV2(id, handle.dir) : this.addV1(id, handle.memoryDir);
    this.watches.set(id, w);
  }

  /** Stops watching container `id` (no-op if not watched). */
  remove(id: string): void {
    const w = this.watches.get(id);
    if (w === undefined) return;
    this.watches.delete(id);
    this.release(w);
  }

  /**
   * Reads `id`'s memory.events now (v2) and emits 'oom' at once if oom_kill grew since the last
   * read. For the exit path: the kernel counts the kill before the victim dies, but its inotify
   * notification can still be queued when the exit is reaped, so a shim that publishes the exit
   * first sends /tasks/oom after /tasks/exit (the Go shim does, now and then: its OOM watcher and
   * its exit path are separate goroutines, containerd v1.6.20 pkg/oom/v2/v2.go). Calling this
   * before publishing an exit orders them. No-op for v1 watches and ids not watched.
   */
  flush(id: string): void {
    const w = this.watches.get(id);
    if (w?.kind === 2) this.onV2Event(id, w);
  }

  /** Stops every watch; the watcher cannot be reused. */
  close(): void {
    this.closed = true;
    for (const id of [...this.watches.keys()]) this.remove(id);
  }

  // -- v1 ------------------------------------------------------------------

  private addV1(id: string, memoryDir: string | undefined): V1Watch {
    if (memoryDir === undefined) throw new Error('cgroup has no memory controller');
    const efd = eventfd(0, EFD_CLOEXEC);
    try {
      const ofd = openSync(join(memoryDir, 'memory.oom_control'), 'r');
      try {
        // The fd numbers are resolved in this process's fd table by the kernel.
        writeFileSync(join(memoryDir, 'cgroup.event_control'), `${efd} ${ofd} `);
      } finally {
        closeSync(ofd);
      }
      const w: V1Watch = { kind: 1, efd, token: 0, memoryDir };
      w.token = watchReadable(efd, () => this.onV1Event(id, w));
      return w;
    } catch (err) {
      closeSync(efd);
      throw err;
    }
  }

  private onV1Event(id: string, w: V1Watch): void {
    if (this.watches.get(id) !== w) return; // removed/replaced meanwhile
    if (!existsSync(w.memoryDir)) {
      this.watches.delete(id);
      this.release(w);
      this.options.onStop?.(id, 'cgroup removed');
      return;
    }
    this.emit('oom', id);
  }

  // -- v2 ------------------------------------------------------------------

  private addV2(id: string, dir: string): V2Watch {
    const w: V2Watch = { kind: 2, dir, watchers: [], lastOomKill: 0n };
    const onChange = () => this.onV2Event(id, w);
    const onError = (err: unknown) => {
      if (this.watches.get(id) !== w) return;
      this.watches.delete(id);
      this.release(w);
      this.options.onError?.(id, err);
    };
    try {
      for (const file of ['memory.events', 'cgroup.events']) {
        const fw = watch(join(dir, file), { persistent: false }, onChange);
        fw.on('error', onError);
        w.watchers.push(fw);
      }
    } catch (err) {
      this.release(w);
      throw err;
    }
    return w;
  }

  private onV2Event(id: string, w: V2Watch): void {
    if (!this.readV2(id, w)) return;
    if (this.watches.get(id) === w && cgroupEmpty(w.dir, this.read)) {
      // The kernel counts an OOM kill before its victim leaves the cgroup (mm/oom_kill.c
      // __oom_kill_process: "Raise event before sending signal"), so once the cgroup is empty
      // every kill is in memory.events. Read it again: a kill and exit that fell between the
      // read above and this check would otherwise end the watch unreported. (containerd/cgroups
      // v1.1.0 v2/manager.go waitForEvents has that window: its isCgroupEmpty follows the read.)
      if (!this.readV2(id, w)) return;
      if (this.watches.get(id) !== w) return;
      this.watches.delete(id);
      this.release(w);
      this.options.onStop?.(id, 'cgroup empty');
    }
  }

  /** Reads memory.events, emits 'oom' when oom_kill grew; false when the watch ended (unreadable). */
  private readV2(id: string, w: V2Watch): boolean {
    if (this.watches.get(id) !== w) return false;
    let text: string;
    try {
      text = this.read(join(w.dir, 'memory.events'));
    } catch (err) {
      this.watches.delete(id);
      this.release(w);
      const code = (err as NodeJS.ErrnoException).code;
      // When the cgroup is removed, open fails with ENOENT or read with ENODEV.
      if (code === 'ENOENT' || code === 'ENODEV' || !existsSync(join(w.dir, 'memory.events'))) {
        this.options.onStop?.(id, 'cgroup removed');
      } else {
        this.options.onError?.(id, err);
      }
      return false;
    }
    const oomKill = parseKeyValues(text).get('oom_kill') ?? 0n;
    if (oomKill > 0n) {
      if (oomKill > w.lastOomKill) {
        w.lastOomKill = oomKill;
        this.emit('oom', id);
      }
    }
    return true;
  }

  // ------------------------------------------------------------------------

  private release(w: Watch): void {
    if (w.kind === 1) {
      unwatchReadable(w.efd, w.token);
      try {
        closeSync(w.efd);
      } catch {
        /* already closed */
      }
    } else {
      for (const fw of w.watchers) fw.close();
      w.watchers = [];
    }
  }
}

/** cgroup.events says `populated 0`, or cannot be read (treated as empty, as the reference does). */
function cgroupEmpty(dir: string, read: (path: string) => string): boolean {
  try {
    const populated = parseKeyValues(read(join(dir, 'cgroup.events'))).get('populated');
    return populated === undefined || populated === 0n;
  } catch {
    return true;
  }
}
