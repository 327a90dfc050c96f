// SPDX-License-Identifier: Apache-2.0
// Helpers for the reliability suite (test/e2e/reliability-*.test.ts): /proc readers for the
// figures the tests report (open fds, children, zombies, RSS/PSS of the shim daemon), stress
// sizes, and a lab that plays containerd against our shim directly (bundles, start, events).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FakeEvents, TaskClient } from './taskclient.js';
import { makeBusyboxRootfs, makeBundle } from './rootfs.js';
import { FifoReader, mkfifo } from './fifo.js';
import { runShim, mountedUnder, OUR_SHIM_BIN } from './shimproc.js';
import * as E from '../../src/gen/containerd/events/task.js';
import type { Envelope } from '../../src/gen/containerd/services/ttrpc/events/v1/events.js';
import { Response } from '../../src/gen/ttrpc/request.js';
import { FrameReader, MessageType, encodeRequestFrame, type FrameItem } from '../../src/ttrpc/index.js';

// ---------------------------------------------------------------------------------------------
// Sizes

/** True under `npm run stress` (SHIM_STRESS=full). */
export const FULL_STRESS = process.env.SHIM_STRESS === 'full';

/** The CI size by default, the full size under SHIM_STRESS=full. */
export function stressSize(ci: number, full: number): number {
  return FULL_STRESS ? full : ci;
}

/** Container ids are unique per test process (runc's default cgroup path is the bare id). */
export const RUN_TAG = process.pid.toString(36);
export function uniqueId(name: string): string {
  return `${name}-${RUN_TAG}`;
}

// ---------------------------------------------------------------------------------------------
// /proc readers

/** Open fds of a process (entries of /proc/<pid>/fd). */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Open fds of a process grouped by kind: pipe, socket, pidfd, eventfd, eventpoll, file, ... */
export function fdKinds(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    let kind: string;
    if (target.startsWith('pipe:')) kind = 'pipe';
    else if (target.startsWith('socket:')) kind = 'socket';
    else if (target.startsWith('anon_inode:')) kind = target.slice('anon_inode:'.length).replace(/^\[|\]$/g, '');
    else if (target.startsWith('/dev/')) kind = 'dev';
    else kind = 'file';
    out[kind] = (out[kind] ?? 0) + 1;
  }
  return out;
}

/** Targets of a process's fds (for diagnostics). */
export function fdTargets(pid: number): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try { out.push(`${fd} -> ${fs.readlinkSync(`/proc/${pid}/fd/${fd}`)}`); } catch { /* closed */ }
  }
  return out;
}

/** Direct children of a process, from /proc/<pid>/task/*\/children. */
export function childrenOf(pid: number): number[] {
  const out = new Set<number>();
  let tasks: string[];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const t of tasks) {
    try {
      for (const c of fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/)) {
        if (c) out.add(Number(c));
      }
    } catch { /* thread gone */ }
  }
  return [...out].sort((a, b) => a - b);
}

/** A pre-booted standby daemon (`-standby <post>`), which a daemon may have as a child. */
export function isStandby(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('-standby');
  } catch {
    return false;
  }
}

/** Children of a daemon that are its work (containers, execs, runc, orphans), not standbys. */
export function workChildren(pid: number): number[] {
  return childrenOf(pid).filter((c) => !isStandby(c));
}

/** The one-letter state of a process (R, S, D, Z, ...), or undefined if it is gone. */
export function procState(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/** Children of `pid` that are zombies (exited, not reaped). */
export function zombiesOf(pid: number): number[] {
  return childrenOf(pid).filter((c) => procState(c) === 'Z');
}

/** True while the pid exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const s = procState(pid);
  return s !== undefined && s !== 'Z' && s !== 'X';
}

/** Kernel wait channel of a process ('' when running or unknown). */
export function wchan(pid: number): string {
  try { return fs.readFileSync(`/proc/${pid}/wchan`, 'utf8'); } catch { return ''; }
}

/** RSS and PSS in KiB from /proc/<pid>/smaps_rollup. */
export function memoryOf(pid: number): { rssKb: number; pssKb: number } {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssKb: kb('Rss'), pssKb: kb('Pss') };
}

export interface ProcFigures {
  fds: number;
  /** Standby daemons among the children (not counted in `children`). */
  standby: number;
  fdKinds: Record<string, number>;
  children: number;
  zombies: number;
  threads: number;
  rssKb: number;
  pssKb: number;
}

/** Everything the leak checks compare, in one read. */
export function figures(pid: number): ProcFigures {
  const all = childrenOf(pid);
  const children = all.filter((c) => !isStandby(c));
  return {
    fds: fdCount(pid),
    standby: all.length - children.length,
    fdKinds: fdKinds(pid),
    children: children.length,
    zombies: children.filter((c) => procState(c) === 'Z').length,
    threads: fs.readdirSync(`/proc/${pid}/task`).length,
    ...memoryOf(pid),
  };
}

export function formatFigures(f: ProcFigures): string {
  const kinds = Object.entries(f.fdKinds).sort().map(([k, v]) => `${k}:${v}`).join(' ');
  return `fds=${f.fds} (${kinds}) children=${f.children}${f.standby ? ` (+${f.standby} standby)` : ''} zombies=${f.zombies} threads=${f.threads} ` +
    `rss=${(f.rssKb / 1024).toFixed(1)}MiB pss=${(f.pssKb / 1024).toFixed(1)}MiB`;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `read` until `ok` holds (returns that value) or the timeout passes (returns the last). */
export async function settle<T>(read: () => T, ok: (v: T) => boolean, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let v = read();
  while (!ok(v) && Date.now() < deadline) {
    await sleep(intervalMs);
    v = read();
  }
  return v;
}

/** Rejects if `p` does not settle within `ms` ("no call hangs"). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]);
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Events endpoint that can go away and come back on the same path

/** containerd's events endpoint as a FakeEvents that can be stopped and restarted; keeps all envelopes. */
export class EventsEndpoint {
  private current?: FakeEvents;
  private readonly old: Envelope[] = [];
  constructor(readonly path: string) {}

  async start(): Promise<void> {
    if (this.current) return;
    const f = new FakeEvents(this.path);
    await f.listen();
    this.current = f;
  }

  async stop(): Promise<void> {
    const f = this.current;
    if (!f) return;
    this.current = undefined;
    await f.close();
    this.old.push(...f.envelopes);
    fs.rmSync(this.path, { force: true });
  }

  get running(): boolean { return this.current !== undefined; }

  get envelopes(): Envelope[] {
    return [...this.old, ...(this.current?.envelopes ?? [])];
  }

  async until(pred: (envs: Envelope[]) => boolean, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.envelopes)) {
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for events; have ${this.envelopes.map((e) => e.topic).join(', ')}`);
      }
      await sleep(50);
    }
  }
}

export interface ExitEvent { containerId: string; id: string; pid: number; exitStatus: number }

/** Decoded /tasks/exit events of a namespace, in arrival order. */
export function exitEvents(envs: Envelope[], namespace: string): ExitEvent[] {
  return envs.filter((e) => e.namespace === namespace && e.topic === '/tasks/exit').map((e) => {
    const x = E.TaskExit.decode(e.event!.value);
    return { containerId: x.containerId, id: x.id, pid: x.pid, exitStatus: x.exitStatus };
  });
}

// ---------------------------------------------------------------------------------------------
// The lab: plays containerd against our shim

export interface LabShim {
  id: string;
  bundle: string;
  address: string;
  socket: string;
  client: TaskClient;
  pid: number;
  log: FifoReader;
}

interface OciMount { destination: string; type: string; source: string; options: string[] }

/** A parsed config.json: its mounts, and the rest as is. */
type OciConfig = Record<string, unknown> & { mounts: OciMount[] };

export interface BundleSpec {
  args: string[];
  hostPid?: boolean;
  /** Extra OCI mounts (e.g. a shared host dir). */
  mounts?: OciMount[];
  /** Edit the parsed config.json before it is written back. */
  edit?: (spec: OciConfig) => void;
}

/**
 * A temp dir with a busybox rootfs, an events endpoint, and helpers to make bundles, start shims
 * (`start` as containerd runs it) and clean everything up by pid and by path.
 */
export class ShimLab {
  readonly namespace: string;
  readonly tmp: string;
  readonly rootfsSrc: string;
  readonly events: EventsEndpoint;
  readonly env: NodeJS.ProcessEnv;
  private readonly shims: LabShim[] = [];
  private readonly ids = new Set<string>();
  private readonly extraPids = new Set<number>();
  private readonly readers: FifoReader[] = [];

  private constructor(prefix: string) {
    this.namespace = `${prefix}-${process.pid}`;
    this.tmp = fs.mkdtempSync(`/tmp/${prefix}-`);
    this.rootfsSrc = makeBusyboxRootfs(path.join(this.tmp, 'rootfs-src'));
    for (const a of ['usleep', 'touch', 'rm', 'mkfifo', 'base64', 'md5sum', 'tr']) {
      try { fs.symlinkSync('busybox', path.join(this.rootfsSrc, 'bin', a)); } catch { /* exists */ }
    }
    fs.mkdirSync(path.join(this.rootfsSrc, 'shared'));
    this.events = new EventsEndpoint(path.join(this.tmp, 'ttrpc.sock'));
    // SHIM_TEST_POOL: a standby pool of this fake containerd's own (containerd.ts says why).
    this.env = { ...process.env, TTRPC_ADDRESS: this.events.path, SHIM_TEST_POOL: this.events.path };
  }

  static async create(prefix: string): Promise<ShimLab> {
    const lab = new ShimLab(prefix);
    await lab.events.start();
    return lab;
  }

  /** What containerd passes as -address (only hashed into the socket name here). */
  get grpcAddress(): string { return path.join(this.tmp, 'containerd.sock'); }

  /** Rootfs mounts for Create: a read-only bind of the busybox tree. */
  get rootfs() {
    return [{ type: 'bind', source: this.rootfsSrc, target: '', options: ['rbind', 'ro'] }];
  }

  /** A bundle at <tmp>/<ns>/<id> as containerd lays it out (config.json, rootfs/, log fifo). */
  bundle(id: string, spec: BundleSpec): string {
    this.ids.add(id);
    const bundle = makeBundle(path.join(this.tmp, this.namespace, id), { args: spec.args, hostPid: spec.hostPid });
    if (spec.mounts || spec.edit) {
      const file = path.join(bundle, 'config.json');
      const cfg = JSON.parse(fs.readFileSync(file, 'utf8')) as OciConfig;
      if (spec.mounts) cfg.mounts.push(...spec.mounts);
      spec.edit?.(cfg);
      fs.writeFileSync(file, JSON.stringify(cfg, null, 2));
    }
    return bundle;
  }

  /** Remembers an id whose runc state must be removed at cleanup. */
  track(id: string): void { this.ids.add(id); }
  /** Remembers a pid to SIGKILL at cleanup. */
  trackPid(pid: number): void { this.extraPids.add(pid); }

  /** Runs `start` in the bundle (as containerd does), connects, returns the daemon. */
  async startShim(id: string, bundle: string, o: { env?: NodeJS.ProcessEnv; umask?: number } = {}): Promise<LabShim> {
    const log = new FifoReader(mkfifo(path.join(bundle, 'log')));
    this.readers.push(log);
    const args = ['-namespace', this.namespace, '-address', this.grpcAddress, '-publish-binary', '/usr/bin/containerd', '-id', id, 'start'];
    const env = { ...this.env, ...o.env };
    const r = o.umask === undefined
      ? await runShim(args, { cwd: bundle, env })
      : await runShim(['-c', `umask ${o.umask.toString(8).padStart(3, '0')}; exec "$0" "$@"`, OUR_SHIM_BIN, ...args], { cwd: bundle, env, bin: '/bin/sh' });
    if (r.code !== 0 || r.stderr !== '') throw new Error(`shim start failed (${r.code}): ${r.stderr}`);
    const address = r.stdout.toString('utf8');
    const client = await TaskClient.connect(address, this.namespace);
    const { shimPid } = await client.connect(id);
    const shim: LabShim = { id, bundle, address, socket: address.slice('unix://'.length), client, pid: shimPid, log };
    this.shims.push(shim);
    return shim;
  }

  /** A second connection to a running shim (as containerd opens one per task). */
  connect(shim: LabShim): Promise<TaskClient> {
    return TaskClient.connect(shim.address, this.namespace);
  }

  /** The exec spec Any for `args`. */
  static execSpec(args: string[], extra: Record<string, unknown> = {}) {
    const spec = { args, cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, ...extra };
    return { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(spec)) };
  }

  /** A fifo under the lab dir. */
  fifo(name: string): string {
    return mkfifo(path.join(this.tmp, name));
  }

  /** Reads a fifo until closed by cleanup. */
  reader(p: string): FifoReader {
    const r = new FifoReader(p);
    this.readers.push(r);
    return r;
  }

  exits(): ExitEvent[] {
    return exitEvents(this.events.envelopes, this.namespace);
  }

  runcRoot(): string { return `/run/containerd/runc/${this.namespace}`; }

  /** Kills what is left (by pid), removes runc state, unmounts, removes the temp dir. */
  async cleanup(): Promise<void> {
    for (const s of this.shims) {
      try { s.client.close(); } catch { /* closed */ }
    }
    for (const s of this.shims) {
      try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ }
      fs.rmSync(s.socket, { force: true });
    }
    for (const p of this.extraPids) {
      try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
    }
    // Standby daemons the shims of this lab left behind (they would idle out after a while).
    for (const { pid, post } of standbysOf(this.events.path)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      if (post) fs.rmSync(post, { force: true });
    }
    for (const id of this.ids) {
      if (fs.existsSync(path.join(this.runcRoot(), id))) {
        spawnSync('runc', ['--root', this.runcRoot(), 'delete', '--force', id], { stdio: 'ignore', timeout: 15_000 });
      }
    }
    fs.rmSync(this.runcRoot(), { recursive: true, force: true });
    for (const r of this.readers) r.close();
    await this.events.stop();
    for (const m of mountedUnder(this.tmp).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    if (mountedUnder(this.tmp).length === 0) fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** Standby daemons (pid and post) started for the events address `ttrpcAddress`. */
export function standbysOf(ttrpcAddress: string): { pid: number; post: string }[] {
  const out: { pid: number; post: string }[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('-standby');
      if (i < 0) continue;
      const env = fs.readFileSync(`/proc/${name}/environ`, 'utf8').split('\0');
      if (env.includes(`TTRPC_ADDRESS=${ttrpcAddress}`)) out.push({ pid: Number(name), post: argv[i + 1] ?? '' });
    } catch { /* gone */ }
  }
  return out;
}

/** Log lines of a daemon that report a crash-worthy error (uncaught exceptions, rejections). */
export function crashLines(logText: string): string[] {
  return logText.split('\n').filter((l) => /uncaught exception|unhandled rejection|level=fatal|"level":"fatal"/.test(l));
}

// ---------------------------------------------------------------------------------------------
// Raw ttrpc

/** A raw connection to a ttrpc socket that records every frame it receives. */
export class RawConn {
  readonly frames: Extract<FrameItem, { kind: 'frame' }>[] = [];
  closed = false;
  error?: string;
  private readonly reader = new FrameReader();
  private waiters: (() => void)[] = [];

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (c: Buffer) => {
      this.reader.push(c, (item) => { if (item.kind === 'frame') this.frames.push({ ...item, payload: Buffer.from(item.payload) }); });
      this.wake();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => { this.error = e.code ?? e.message; });
    sock.on('close', () => { this.closed = true; this.wake(); });
  }

  static open(socketPath: string): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(socketPath);
      s.once('connect', () => { s.off('error', reject); resolve(new RawConn(s)); });
      s.once('error', reject);
    });
  }

  private wake(): void { for (const w of this.waiters.splice(0)) w(); }

  write(b: Buffer | Uint8Array): void { if (!this.sock.destroyed) this.sock.write(b); }

  request(streamId: number, service: string, method: string, payload: Uint8Array, metadata?: [string, string][]): void {
    this.write(encodeRequestFrame(streamId, service, method, payload, 0n, metadata));
  }

  /** The response on `streamId`, or 'closed' if the connection closed first, or 'timeout'. */
  async response(streamId: number, timeoutMs = 5000): Promise<Response | 'closed' | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.find((x) => x.streamId === streamId && x.type === MessageType.Response);
      if (f) return Response.decode(f.payload);
      if (this.closed) return 'closed';
      const left = deadline - Date.now();
      if (left <= 0) return 'timeout';
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, Math.min(left, 100)); });
    }
  }

  /** Resolves true once the server closed the connection, false after timeoutMs. */
  async closedByServer(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 50); });
    return this.closed;
  }

  destroy(): void { this.sock.destroy(); }
}

/** A raw frame header + payload. */
export function rawFrame(length: number, streamId: number, type: number, flags: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(10);
  h.writeUInt32BE(length >>> 0, 0);
  h.writeUInt32BE(streamId >>> 0, 4);
  h[8] = type;
  h[9] = flags;
  return Buffer.concat([h, payload]);
}

/** Socket inodes of a process's fds. */
export function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1]);
    } catch { /* closed */ }
  }
  return out;
}

/** /proc/net/unix rows (inode → path, '' when unnamed, '@...' when abstract). */
export function unixSocketTable(): Map<string, string> {
  const out = new Map<string, string>();
  const lines = fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1);
  for (const l of lines) {
    const f = l.trim().split(/\s+/);
    if (f.length < 7) continue;
    out.set(f[6], f[7] ?? '');
  }
  return out;
}
