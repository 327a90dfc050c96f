// SPDX-License-Identifier: Apache-2.0
// A private containerd for end-to-end tests.
//
// startContainerd() runs `containerd --config <tmp>/config.toml` as a child of the test process,
// with its root, state, gRPC and ttrpc sockets all under a fresh /tmp/ctd-XXXXXX directory, so it
// never touches the system's /run/containerd/containerd.sock or /var/lib/containerd.
//
// Things that are NOT per-instance (hard-coded in containerd / the shim / ctr), which is why test
// container ids must be unique across instances:
//   * shim sockets:     /run/containerd/s/<sha256(grpc-address/namespace/id)>  (address-keyed: no clash)
//   * runc state:       /run/containerd/runc/<namespace>/<id>                  (id-keyed: can clash)
//   * ctr's IO FIFOs:   /run/containerd/fifo/<random>
//
// stop() tears everything down by pid / by path; it never uses pkill or killall.
//
// Which containerd: Debian 12's 1.6.20 by default; SHIM_DAEMON=1.7|2.1|2.3 picks another one
// (test/support/daemons.ts, installed by scripts/daemons.sh) for every suite, and
// StartOptions.daemon picks one per instance (test/e2e/daemons.test.ts). The config is written in
// the layout that daemon takes (version 2 for 1.x, 3 for 2.0–2.2, 4 for 2.3).

import { spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync,
  rmdirSync, rmSync, statSync, writeFileSync,
  readlinkSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { claimPath, warmupSocketPath } from '../../src/pool/claim.js';
import { baseOf, postsOf } from '../../src/pool/key.js';
import {
  CRI_PLUGINS, configVersion, selectedDaemon, splitCriSettings, translateCriToml, type Daemon,
} from './daemons.js';

/** The daemon of this test process (SHIM_DAEMON, default 1.6: Debian 12's /usr/bin/containerd). */
export const DAEMON: Daemon = selectedDaemon();
/** Its ctr (instances started with another `daemon` have theirs in Containerd.ctrPath). */
export const CTR = DAEMON.ctr;
export const CONTAINERD = DAEMON.containerd;
export const RUNC_ROOT = '/run/containerd/runc';
export const SHIM_SOCKET_DIR = '/run/containerd/s';

const SYSTEM_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

// ---------------------------------------------------------------------------------------------
// Generic process helpers

export interface RunResult {
  /** Exit code, or null when the process was killed by a signal (see `signal`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  allowFail?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** PATH with the usual sbin/bin directories appended when missing (runc lives in /usr/sbin). */
export function fullPath(path = process.env.PATH ?? ''): string {
  const parts = path.split(':').filter((p) => p !== '');
  for (const p of SYSTEM_PATH) if (!parts.includes(p)) parts.push(p);
  return parts.join(':');
}

/**
 * Runs a command to completion with a timeout; on timeout the process is SIGKILLed by its pid.
 * Rejects on a non-zero exit, a signal or a timeout unless `allowFail`.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'];
    const child = spawn(cmd, args, {
      stdio,
      env: opts.env ?? { ...process.env, PATH: fullPath() },
      cwd: opts.cwd,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let settled = false;
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) {
        try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
      }
    }, timeoutMs);
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${cmd} ${args.join(' ')}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const res: RunResult = {
        code, signal, timedOut,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (!opts.allowFail && (timedOut || code !== 0)) {
        const why = timedOut ? `timed out after ${timeoutMs} ms` : code === null ? `killed by ${signal}` : `exit code ${code}`;
        reject(Object.assign(
          new Error(`${cmd} ${args.join(' ')}: ${why}\n--- stdout ---\n${res.stdout}--- stderr ---\n${res.stderr}`),
          { result: res },
        ));
        return;
      }
      resolve(res);
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => { /* EPIPE if the process does not read its stdin */ });
      child.stdin!.end(opts.input);
    }
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Whether `pid` is a live process (a zombie counts as gone). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); treat it as dead.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Polls `fn` until it returns a truthy value or the timeout passes; returns the last value. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() >= deadline) return v;
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// /proc helpers

export interface ProcInfo {
  pid: number;
  ppid: number;
  argv: string[];
}

/**
 * What killed standbys leave under /run/containerd/s: the posts of their pools, the `.booting`
 * claim of one killed while booting, the `warmup-<pid>` socket of one killed while warming up
 * (src/shim/warmup.ts), and the post of a killed shared daemon. `posts`: posts the standbys held
 * (argv `-standby <post>`) and idle shared daemons held (`-shared <post>`).
 */
export function removePoolLitter(posts: Iterable<string>, killed: Iterable<number>): void {
  const shared = [...posts].filter((p) => basename(p).startsWith('shared-'));
  const pool = [...posts].filter((p) => !shared.includes(p)).flatMap((p) => postsOf(baseOf(p)));
  const warm = [...killed].map((pid) => warmupSocketPath(pid));
  for (const f of [...pool, ...pool.map(claimPath), ...warm, ...shared]) rmSync(f, { force: true });
}

/** The process's environment (empty when unreadable). */
export function procEnviron(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/environ`).toString('utf8').split('\0').filter((e) => e !== '');
  } catch {
    return [];
  }
}

export function listProcesses(): ProcInfo[] {
  const res: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    try {
      const raw = readFileSync(`/proc/${pid}/cmdline`);
      if (raw.length === 0) continue; // kernel thread or zombie
      const argv = raw.toString('utf8').replace(/\0$/, '').split('\0');
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      res.push({ pid, ppid: Number(fields[1]), argv });
    } catch {
      // raced with exit
    }
  }
  return res;
}

/** Our own pid and its ancestors: never killed by the cleanup code. */
function selfAndAncestors(): Set<number> {
  const set = new Set<number>();
  let pid = process.pid;
  while (pid > 1 && !set.has(pid)) {
    set.add(pid);
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
      break;
    }
  }
  return set;
}

export interface MountInfo {
  mountPoint: string;
  fsType: string;
  source: string;
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function listMounts(): MountInfo[] {
  const res: MountInfo[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line === '') continue;
    const [pre, post] = line.split(' - ');
    const preF = pre.split(' ');
    const postF = (post ?? '').split(' ');
    res.push({ mountPoint: unescapeMountPath(preF[4]), fsType: postF[0] ?? '', source: postF[1] ?? '' });
  }
  return res;
}

/** Mount points at or under `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  const points = listMounts()
    .map((m) => m.mountPoint)
    .filter((p) => p === dir || p.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.split('/').length - a.split('/').length || b.length - a.length);
}

function unmountAllUnder(dir: string): void {
  // A path can be mounted several times over; loop until nothing is left (bounded).
  for (let round = 0; round < 5; round++) {
    const points = mountsUnder(dir);
    if (points.length === 0) return;
    for (const p of points) {
      const r = spawnSync('umount', [p], { stdio: 'ignore', timeout: 10_000, env: { ...process.env, PATH: fullPath() } });
      if (r.status !== 0) {
        spawnSync('umount', ['-l', p], { stdio: 'ignore', timeout: 10_000, env: { ...process.env, PATH: fullPath() } });
      }
    }
  }
}

function listDir(p: string): string[] {
  try {
    return readdirSync(p);
  } catch {
    return [];
  }
}

/**
 * Cgroup dirs /sys/fs/cgroup/<hierarchy>/<ns>/<id> that exist (ctr's default cgroupsPath is
 * /<ns>/<id>; on cgroup v1 hybrid each controller and `unified` has one).
 */
export function containerCgroups(namespace: string, id: string): string[] {
  const base = '/sys/fs/cgroup';
  const res: string[] = [];
  const candidates = [join(base, namespace, id), ...listDir(base).map((h) => join(base, h, namespace, id))];
  for (const p of candidates) {
    try {
      if (statSync(p).isDirectory()) res.push(p);
    } catch { /* absent */ }
  }
  return [...new Set(res)];
}

// ---------------------------------------------------------------------------------------------
// Shim socket naming (shim-cli.md §6)

/** The shim socket path for a task: /run/containerd/s/<sha256(<grpc address>/<ns>/<id>)>. */
export function shimSocketPath(grpcAddress: string, namespace: string, id: string): string {
  const key = `${grpcAddress}/${namespace}/${id}`.replace(/\/+/g, '/');
  return join(SHIM_SOCKET_DIR, createHash('sha256').update(key).digest('hex'));
}

// ---------------------------------------------------------------------------------------------
// Snapshotter probe

let snapshotterProbe: string | undefined;

/** "overlayfs" when an overlay mount works on /tmp here, else "native". Env SHIM_TEST_SNAPSHOTTER overrides. */
export function pickSnapshotter(): string {
  const forced = process.env.SHIM_TEST_SNAPSHOTTER;
  if (forced) return forced;
  if (snapshotterProbe !== undefined) return snapshotterProbe;
  let ok = false;
  const d = mkdtempSync('/tmp/ovl-');
  try {
    for (const s of ['l', 'u', 'w', 'm']) mkdirSync(join(d, s));
    writeFileSync(join(d, 'l', 'f'), 'x');
    const r = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o',
      `lowerdir=${d}/l,upperdir=${d}/u,workdir=${d}/w`, `${d}/m`],
    { stdio: 'ignore', timeout: 10_000, env: { ...process.env, PATH: fullPath() } });
    if (r.status === 0) {
      try {
        ok = readFileSync(join(d, 'm', 'f'), 'utf8') === 'x';
      } finally {
        spawnSync('umount', [`${d}/m`], { stdio: 'ignore', timeout: 10_000, env: { ...process.env, PATH: fullPath() } });
      }
    }
  } catch {
    ok = false;
  } finally {
    if (mountsUnder(d).length === 0) rmSync(d, { recursive: true, force: true });
  }
  snapshotterProbe = ok ? 'overlayfs' : 'native';
  return snapshotterProbe;
}

// ---------------------------------------------------------------------------------------------
// The private containerd

export interface StartOptions {
  /** Enable the CRI plugin (disabled by default). */
  cri?: boolean;
  /**
   * Raw TOML appended at the end of config.toml. It must not repeat a table header this module
   * writes: [grpc], [ttrpc], [debug], [plugins."io.containerd.internal.v1.opt"] and, with cri,
   * [plugins."io.containerd.grpc.v1.cri"] and [plugins."io.containerd.grpc.v1.cri".containerd]
   * (use `criSettings` for keys of the cri table). Sub-tables such as
   * [plugins."io.containerd.grpc.v1.cri".cni] are fine. Write CRI tables in these 1.x names: for
   * a 2.x daemon they are moved to the 2.x plugins (daemons.ts translateCriToml).
   */
  extraConfig?: string;
  /** Raw TOML key lines placed inside [plugins."io.containerd.grpc.v1.cri"] (cri only). */
  criSettings?: string;
  /** Forces a snapshotter (default: overlayfs if it works here, else native). */
  snapshotter?: string;
  /** Readiness timeout (default 20 s). */
  readyTimeoutMs?: number;
  /**
   * Directories put first on containerd's PATH (containerd resolves a runtime name
   * io.containerd.<a>.<b> to the binary containerd-shim-<a>-<b> on its PATH, and shims inherit it).
   */
  pathPrepend?: string[];
  /** Extra environment for the containerd process (and so for the shims it starts). */
  env?: NodeJS.ProcessEnv;
  /**
   * Which containerd (default: DAEMON, from SHIM_DAEMON). A daemon other than 1.6 gets its bin
   * dir on PATH after `pathPrepend`, so a runtime name resolves to its own Go shim.
   */
  daemon?: Daemon;
}

export interface CtrOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  allowFail?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface Containerd {
  /** gRPC socket path (what shims get as `-address`). */
  address: string;
  /** ttrpc socket path (what shims get as TTRPC_ADDRESS). */
  ttrpcAddress: string;
  root: string;
  state: string;
  /** The temp dir holding all of the above, config.toml and containerd.log. */
  dir: string;
  configPath: string;
  logPath: string;
  snapshotter: string;
  /** containerd's pid. */
  pid: number;
  /** Which containerd this is. */
  daemon: Daemon;
  /** Its ctr binary. */
  ctrPath: string;
  /**
   * Stops containerd (SIGTERM by default, SIGKILL after 10 s) and starts it again on the same
   * config, state and sockets; shims and containers are left running. `whileDown` runs in between.
   */
  restart(opts?: { signal?: 'SIGTERM' | 'SIGKILL'; whileDown?: () => Promise<void> }): Promise<void>;
  /** Runs `ctr --address <sock> ...args`; rejects on failure unless allowFail. */
  ctr(args: string[], opts?: CtrOptions): Promise<RunResult>;
  /**
   * Spawns a long-running `ctr --address <sock> ...args` (e.g. `events`) with piped stdio.
   * The caller stops it by its pid; stop() also kills any that are left.
   */
  ctrSpawn(args: string[], opts?: { env?: NodeJS.ProcessEnv }): ChildProcess;
  /** Records a namespace/id pair as used, for leftovers() and stop() (ctr run/create args are tracked automatically). */
  track(namespace: string, id: string): void;
  /** Namespace/id pairs seen so far. */
  tracked(): Array<{ namespace: string; id: string }>;
  /** Last `maxBytes` of containerd.log. */
  logTail(maxBytes?: number): string;
  /** Stops containerd and removes everything it left (shims, containers, mounts, sockets, dir). */
  stop(): Promise<void>;
}

// ctr's global flags that take a value, and `ctr run`/`ctr container create` boolean flags.
const CTR_GLOBAL_VALUE_FLAGS = new Set(['--address', '-a', '--timeout', '--connect-timeout', '--namespace', '-n']);
const CTR_RUN_BOOL_FLAGS = new Set([
  '--rm', '--null-io', '--detach', '-d', '--cni', '--runc-systemd-cgroup', '--remap-labels', '--privileged',
  '--read-only', '--tty', '-t', '--allow-new-privs', '--seccomp', '--rootfs', '--no-pivot', '--net-host',
  '--debug', '--help', '-h',
]);

/** Finds [namespace, id] of a `ctr [global flags] run|c create|container create ... IMAGE ID` command line. */
export function parseCtrContainerArgs(args: string[]): { namespace: string; id: string } | undefined {
  let namespace = process.env.CONTAINERD_NAMESPACE || 'default';
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('-')) break;
    const [flag, inline] = a.split('=', 2);
    if (CTR_GLOBAL_VALUE_FLAGS.has(flag)) {
      const v = inline ?? args[++i];
      if (flag === '--namespace' || flag === '-n') namespace = v;
    }
  }
  const sub = args[i];
  let rest: string[];
  if (sub === 'run') rest = args.slice(i + 1);
  else if ((sub === 'c' || sub === 'container' || sub === 'containers') && args[i + 1] === 'create') rest = args.slice(i + 2);
  else return undefined;
  const positional: string[] = [];
  for (let j = 0; j < rest.length; j++) {
    const a = rest[j];
    if (positional.length > 0 || !a.startsWith('-')) {
      positional.push(a);
      if (positional.length === 2) break;
      continue;
    }
    if (a === '--') continue;
    const [flag, inline] = a.split('=', 2);
    if (inline !== undefined || CTR_RUN_BOOL_FLAGS.has(flag)) continue;
    j++; // a flag with a separate value
  }
  if (positional.length < 2) return undefined;
  return { namespace, id: positional[1] };
}

const liveInstances = new Set<Instance>();
let exitHooksInstalled = false;

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', () => {
    for (const inst of liveInstances) inst.stopSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      for (const inst of liveInstances) inst.stopSync();
      process.removeListener(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

class Instance implements Containerd {
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly root: string;
  readonly state: string;
  readonly configPath: string;
  readonly logPath: string;
  pid = 0;
  child!: ChildProcess;
  exited: Promise<void>;
  private resolveExited!: () => void;
  private hasExited = false;
  private ids = new Map<string, { namespace: string; id: string }>();
  private spawned = new Set<ChildProcess>();
  private stopped = false;
  private startOpts: StartOptions = {};
  readonly ctrPath: string;

  constructor(readonly dir: string, readonly snapshotter: string, readonly daemon: Daemon = DAEMON) {
    this.ctrPath = daemon.ctr;
    this.address = join(dir, 'c.sock');
    this.ttrpcAddress = join(dir, 'c.sock.ttrpc');
    this.root = join(dir, 'root');
    this.state = join(dir, 'state');
    this.configPath = join(dir, 'config.toml');
    this.logPath = join(dir, 'containerd.log');
    this.exited = new Promise((r) => { this.resolveExited = r; });
  }

  ctrEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
    return { ...process.env, PATH: fullPath(), CONTAINERD_SNAPSHOTTER: this.snapshotter, ...extra };
  }

  start(opts: StartOptions = this.startOpts): void {
    this.startOpts = opts;
    const logFd = openSync(this.logPath, 'a');
    const daemonBin = this.daemon.name === '1.6' ? [] : [this.daemon.bin];
    const path = [...(opts.pathPrepend ?? []), ...daemonBin, fullPath()].join(':');
    try {
      this.child = spawn(this.daemon.containerd, ['--config', this.configPath], {
        stdio: ['ignore', logFd, logFd],
        detached: false,
        cwd: this.dir,
        // SHIM_TEST_POOL: our standby pool serves every containerd of one environment; this
        // gives each instance a pool of its own, so its shims and standbys are its own.
        env: { ...process.env, ...opts.env, PATH: path, SHIM_TEST_POOL: this.dir },
      });
    } finally {
      closeSync(logFd);
    }
    if (this.child.pid === undefined) throw new Error('containerd failed to spawn');
    this.pid = this.child.pid;
    this.child.on('exit', () => { this.hasExited = true; this.resolveExited(); });
    this.child.on('error', () => { this.hasExited = true; this.resolveExited(); });
  }

  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (this.hasExited) {
        throw new Error(`containerd exited during startup; log:\n${this.logTail()}`);
      }
      if (existsSync(this.address)) {
        const r = await run(this.ctrPath, ['--address', this.address, 'version'], {
          allowFail: true, timeoutMs: 3000, env: this.ctrEnv(),
        });
        if (r.code === 0) return;
        last = r.stderr;
      }
      await sleep(100);
    }
    throw new Error(`containerd not ready after ${timeoutMs} ms: ${last}\nlog:\n${this.logTail()}`);
  }

  ctr(args: string[], opts: CtrOptions = {}): Promise<RunResult> {
    const parsed = parseCtrContainerArgs(args);
    if (parsed) this.track(parsed.namespace, parsed.id);
    return run(this.ctrPath, ['--address', this.address, ...args], {
      input: opts.input,
      timeoutMs: opts.timeoutMs ?? 30_000,
      allowFail: opts.allowFail,
      env: this.ctrEnv(opts.env),
    });
  }

  ctrSpawn(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): ChildProcess {
    const parsed = parseCtrContainerArgs(args);
    if (parsed) this.track(parsed.namespace, parsed.id);
    const child = spawn(this.ctrPath, ['--address', this.address, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: this.ctrEnv(opts.env),
    });
    this.spawned.add(child);
    child.on('exit', () => this.spawned.delete(child));
    return child;
  }

  async restart(opts: { signal?: 'SIGTERM' | 'SIGKILL'; whileDown?: () => Promise<void> } = {}): Promise<void> {
    if (this.stopped) throw new Error('restart: this containerd was stopped');
    if (!this.hasExited) {
      try { process.kill(this.pid, opts.signal ?? 'SIGTERM'); } catch { /* gone */ }
      const t = setTimeout(() => {
        try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
      }, 10_000);
      await this.exited;
      clearTimeout(t);
    }
    await opts.whileDown?.();
    this.hasExited = false;
    this.exited = new Promise((r) => { this.resolveExited = r; });
    this.start();
    await this.waitReady(20_000);
  }

  track(namespace: string, id: string): void {
    this.ids.set(`${namespace}/${id}`, { namespace, id });
  }

  tracked(): Array<{ namespace: string; id: string }> {
    return [...this.ids.values()];
  }

  logTail(maxBytes = 8000): string {
    try {
      const s = readFileSync(this.logPath, 'utf8');
      return s.length > maxBytes ? s.slice(s.length - maxBytes) : s;
    } catch {
      return '';
    }
  }

  /** namespace/id pairs that have a task (bundle) dir, plus everything tracked. */
  knownTasks(): Array<{ namespace: string; id: string }> {
    const map = new Map(this.ids);
    const taskRoot = join(this.state, 'io.containerd.runtime.v2.task');
    for (const ns of listDir(taskRoot)) {
      for (const id of listDir(join(taskRoot, ns))) {
        if (id.startsWith('.')) continue;
        map.set(`${ns}/${id}`, { namespace: ns, id });
      }
    }
    return [...map.values()];
  }

  /**
   * Processes (other than us and our ancestors) that belong to this instance: their argv mentions
   * its address or dir, or their environment has TTRPC_ADDRESS=<its ttrpc socket> (containerd
   * gives every shim that variable, and the shim's children inherit it).
   */
  instanceProcesses(): ProcInfo[] {
    const keep = selfAndAncestors();
    const envMark = `TTRPC_ADDRESS=${this.ttrpcAddress}`;
    return listProcesses().filter((p) =>
      !keep.has(p.pid) && p.pid !== this.pid &&
      (p.argv.some((a) => a === this.address || a.includes(this.dir + '/') || a === this.dir) ||
        procEnviron(p.pid).includes(envMark)));
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    liveInstances.delete(this);
    for (const c of this.spawned) {
      if (c.pid !== undefined) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    if (!this.hasExited) {
      try { process.kill(this.pid, 'SIGTERM'); } catch { /* gone */ }
      const t = setTimeout(() => {
        try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
      }, 10_000);
      await this.exited;
      clearTimeout(t);
    }
    this.cleanupAfterDaemon();
  }

  /** Synchronous best-effort teardown for process exit / signals. */
  stopSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    liveInstances.delete(this);
    for (const c of this.spawned) {
      if (c.pid !== undefined) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    if (!this.hasExited) {
      try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
      const deadline = Date.now() + 5000;
      while (pidAlive(this.pid) && Date.now() < deadline) spawnSync('sleep', ['0.05']);
    }
    this.cleanupAfterDaemon();
  }

  private cleanupAfterDaemon(): void {
    const env = { ...process.env, PATH: fullPath() };
    const tasks = this.knownTasks();
    // 1. Containers still alive: runc delete --force kills them and removes runc state and cgroups.
    for (const { namespace, id } of tasks) {
      const runcRoot = join(RUNC_ROOT, namespace);
      if (existsSync(join(runcRoot, id))) {
        spawnSync('runc', ['--root', runcRoot, 'delete', '--force', id], { stdio: 'ignore', timeout: 15_000, env });
      }
    }
    // 2. Shims, our shim's idle standby daemons and stray ctr processes of this instance.
    const posts = new Set<string>();
    const killed: number[] = [];
    for (let round = 0; round < 3; round++) {
      const procs = this.instanceProcesses();
      if (procs.length === 0) break;
      for (const p of procs) {
        // A standby's post, or an idle shared daemon's (`-shared <post>`).
        const i = Math.max(p.argv.indexOf('-standby'), p.argv.indexOf('-shared'));
        if (i >= 0 && p.argv[i + 1]) posts.add(p.argv[i + 1]);
        try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
        killed.push(p.pid);
      }
      const deadline = Date.now() + 3000;
      while (procs.some((p) => pidAlive(p.pid)) && Date.now() < deadline) spawnSync('sleep', ['0.05']);
    }
    // 3. Sockets the shims of this instance created under /run/containerd/s.
    const sockets = new Set<string>();
    for (const { namespace, id } of tasks) sockets.add(shimSocketPath(this.address, namespace, id));
    const taskRoot = join(this.state, 'io.containerd.runtime.v2.task');
    for (const ns of listDir(taskRoot)) {
      for (const id of listDir(join(taskRoot, ns))) {
        const addr = taskAddress(join(taskRoot, ns, id));
        if (addr?.startsWith(`unix://${SHIM_SOCKET_DIR}/`)) sockets.add(addr.slice('unix://'.length));
      }
    }
    for (const s of sockets) rmSync(s, { force: true });
    removePoolLitter(posts, killed);
    // 4. Runc state dirs of tracked ids (runc delete normally removed them), and their cgroups
    //    (ctr puts a container in /<ns>/<id> of each hierarchy; rmdir fails harmlessly if busy).
    for (const { namespace, id } of tasks) {
      const p = join(RUNC_ROOT, namespace, id);
      if (existsSync(p)) rmSync(p, { recursive: true, force: true });
      for (const cg of containerCgroups(namespace, id)) {
        try { rmdirSync(cg); } catch { /* busy or gone */ }
      }
    }
    // 5. Mounts under the temp dir, deepest first, then the dir itself.
    unmountAllUnder(this.dir);
    if (mountsUnder(this.dir).length === 0) {
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
    } else {
      process.stderr.write(`containerd harness: mounts left under ${this.dir}; not removing it\n`);
    }
  }
}

/**
 * The shim address a task's bundle records: containerd 2.x writes bootstrap.json
 * ({"version":…,"address":…,"protocol":…}; containerd v2.1.0:core/runtime/v2/binary.go), 1.x
 * shims write `address` (containerd v1.7.0:runtime/v2/shim/util_unix.go; returned as is, untrimmed).
 * Undefined when neither.
 */
export function taskAddress(bundle: string): string | undefined {
  try {
    const j = JSON.parse(readFileSync(join(bundle, 'bootstrap.json'), 'utf8')) as { address?: string };
    if (j.address) return j.address;
  } catch { /* none */ }
  try {
    return readFileSync(join(bundle, 'address'), 'utf8') || undefined;
  } catch {
    return undefined;
  }
}

function buildConfig(inst: Instance, opts: StartOptions): string {
  const q = (s: string) => JSON.stringify(s);
  const level = process.env.SHIM_TEST_DEBUG ? 'debug' : 'info';
  const version = configVersion(inst.daemon);
  const v2x = version >= 3;
  const disabled = [
    'io.containerd.snapshotter.v1.aufs',
    'io.containerd.snapshotter.v1.btrfs',
    'io.containerd.snapshotter.v1.devmapper',
    'io.containerd.snapshotter.v1.zfs',
  ];
  // NRI listens on a host-global socket (/var/run/nri/nri.sock; on by default in 2.x): two
  // daemons side by side would clash.
  if (inst.daemon.name !== '1.6') disabled.push('io.containerd.nri.v1.nri');
  if (!opts.cri) {
    disabled.unshift(CRI_PLUGINS.v1);
    if (v2x) disabled.unshift(CRI_PLUGINS.runtime, CRI_PLUGINS.images, 'io.containerd.podsandbox.controller.v1.podsandbox');
  }
  // 2.3 (config version 4) serves gRPC and ttrpc from the io.containerd.server.v1.* plugins
  // (containerd v2.3.4 `containerd config default`); before, from top-level [grpc] / [ttrpc].
  const sockets = version >= 4
    ? ['[plugins."io.containerd.server.v1.grpc"]', `  address = ${q(inst.address)}`, '',
      '[plugins."io.containerd.server.v1.ttrpc"]', `  address = ${q(inst.ttrpcAddress)}`, '']
    : ['[grpc]', `  address = ${q(inst.address)}`, '', '[ttrpc]', `  address = ${q(inst.ttrpcAddress)}`, ''];
  const lines = [
    `version = ${version >= 3 ? version : 2}`,
    `root = ${q(inst.root)}`,
    `state = ${q(inst.state)}`,
    ...(v2x ? ['imports = []'] : []),
    `disabled_plugins = [${disabled.map(q).join(', ')}]`,
    '',
    ...sockets,
    '[debug]',
    `  level = ${q(level)}`,
    '',
    '[plugins]',
    '  [plugins."io.containerd.internal.v1.opt"]',
    `    path = ${q(join(inst.dir, 'opt'))}`,
  ];
  const settings = opts.criSettings ? opts.criSettings.split('\n').map((l) => l.trim()).filter((l) => l !== '') : [];
  if (opts.cri && !v2x) {
    lines.push(
      '  [plugins."io.containerd.grpc.v1.cri"]',
      // Root here lacks CAP_SYS_RESOURCE: sandboxes would otherwise get oom_score_adj -998 and fail.
      '    restrict_oom_score_adj = true',
      // Avoid clashing on the default streaming port 10010 between instances.
      '    stream_server_address = "127.0.0.1"',
      '    stream_server_port = "0"',
      ...settings.map((l) => '    ' + l),
      '    [plugins."io.containerd.grpc.v1.cri".containerd]',
      `      snapshotter = ${q(inst.snapshotter)}`,
    );
  } else if (opts.cri) {
    // 2.x: the same settings in the split CRI plugins (test/support/daemons.ts).
    const t = splitCriSettings(settings);
    lines.push(
      `  [plugins."${CRI_PLUGINS.runtime}"]`,
      '    restrict_oom_score_adj = true',
      ...t.runtime.map((l) => '    ' + l),
      `  [plugins."${CRI_PLUGINS.images}"]`,
      `    snapshotter = ${q(inst.snapshotter)}`,
      ...t.images.map((l) => '    ' + l),
      ...(t.sandboxImage ? [`    [plugins."${CRI_PLUGINS.images}".pinned_images]`, `      sandbox = ${t.sandboxImage}`] : []),
      `  [plugins."${CRI_PLUGINS.v1}"]`,
      '    stream_server_address = "127.0.0.1"',
      '    stream_server_port = "0"',
      ...t.grpc.map((l) => '    ' + l),
    );
  }
  lines.push('');
  if (opts.extraConfig) lines.push(v2x ? translateCriToml(opts.extraConfig) : opts.extraConfig, '');
  return lines.join('\n');
}

export async function startContainerd(opts: StartOptions = {}): Promise<Containerd> {
  installExitHooks();
  const snapshotter = opts.snapshotter ?? pickSnapshotter();
  // Short: unix socket paths are limited to 108 bytes.
  const dir = mkdtempSync('/tmp/ctd-');
  const inst = new Instance(dir, snapshotter, opts.daemon ?? DAEMON);
  writeFileSync(inst.configPath, buildConfig(inst, opts));
  liveInstances.add(inst);
  try {
    inst.start(opts);
    await inst.waitReady(opts.readyTimeoutMs ?? 20_000);
  } catch (e) {
    await inst.stop().catch(() => undefined);
    throw e;
  }
  return inst;
}

// ---------------------------------------------------------------------------------------------
// Leak checks

export interface Leftovers {
  /** Shim processes of this instance (argv has `-id` and this instance's address). */
  shims: Array<{ pid: number; cmdline: string }>;
  /** Mount points under the instance dir (bundles' rootfs, snapshots). */
  mounts: string[];
  /** <state>/io.containerd.runtime.v2.task/<ns>/<id> dirs. */
  taskDirs: string[];
  /** /run/containerd/runc/<ns>/<id> dirs of the ids asked about. */
  runcStateDirs: string[];
  /** /run/containerd/s/<hash> sockets of the ids asked about. */
  sockets: string[];
  /** /sys/fs/cgroup/<hierarchy>/<ns>/<id> dirs of the ids asked about. */
  cgroups: string[];
}

/** The value of a Go-style flag (`-name v`, `-name=v`, `--name v`, `--name=v`) in an argv. */
export function argValue(argv: string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === `-${name}` || a === `--${name}`) return argv[i + 1];
    if (a.startsWith(`-${name}=`)) return a.slice(name.length + 2);
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  return undefined;
}

/**
 * What is left of this instance's tasks. With `ids`, only those containers are looked at
 * (namespace "default" unless given as "ns/id" or `{namespace, id}`); without, every id seen
 * (tracked from ctr run/create, or present as a task dir).
 * Mounts are all mounts under <dir>/state (bundle rootfs) — or, with `ids`, under those bundles.
 */
export function leftovers(c: Containerd, ids?: Array<string | { namespace: string; id: string }>): Leftovers {
  const inst = c as Instance;
  const targets = ids
    ? ids.map((x) => typeof x === 'string'
      ? (x.includes('/') ? { namespace: x.split('/')[0], id: x.split('/').slice(1).join('/') } : { namespace: 'default', id: x })
      : x)
    : inst.knownTasks();
  const want = new Set(targets.map((t) => `${t.namespace}/${t.id}`));
  const taskRoot = join(c.state, 'io.containerd.runtime.v2.task');

  // A shim: argv has `-address <this address>` and `-id <id>`; or a process carrying this
  // instance's TTRPC_ADDRESS in its environment whose cwd is a task's bundle (our shim's
  // daemons that were pre-booted as standbys keep their standby argv). An idle standby (cwd /,
  // no container) or idle shared daemon (`-shared <post>`) is not a leftover of any task: it
  // retires by itself after an idle period.
  const envMark = `TTRPC_ADDRESS=${c.ttrpcAddress}`;
  const bundleOf = (pid: number): string | undefined => {
    let cwd: string;
    try { cwd = readlinkSync(`/proc/${pid}/cwd`); } catch { return undefined; }
    const rel = cwd.startsWith(taskRoot + '/') ? cwd.slice(taskRoot.length + 1).split('/') : [];
    return rel.length === 2 ? `${rel[0]}/${rel[1].replace(/^\./, '')}` : undefined;
  };
  const shims = listProcesses()
    .filter((p) => {
      const id = argValue(p.argv, 'id');
      if (argValue(p.argv, 'address') === c.address && id !== undefined) {
        return !ids || want.has(`${argValue(p.argv, 'namespace') ?? 'default'}/${id}`);
      }
      if (!procEnviron(p.pid).includes(envMark)) return false;
      const task = bundleOf(p.pid);
      if (ids) return task !== undefined && want.has(task);
      return task !== undefined || !(p.argv.includes('-standby') || p.argv.includes('-shared'));
    })
    .map((p) => ({ pid: p.pid, cmdline: p.argv.join(' ') }));

  const mounts = ids
    ? targets.flatMap((t) => mountsUnder(join(taskRoot, t.namespace, t.id)))
    : mountsUnder(taskRoot);

  const taskDirs: string[] = [];
  for (const ns of listDir(taskRoot)) {
    for (const id of listDir(join(taskRoot, ns))) {
      const bare = id.startsWith('.') ? id.slice(1) : id;
      if (!ids || want.has(`${ns}/${bare}`)) taskDirs.push(join(taskRoot, ns, id));
    }
  }

  const runcStateDirs = targets.map((t) => join(RUNC_ROOT, t.namespace, t.id)).filter((p) => existsSync(p));
  const sockets = targets.map((t) => shimSocketPath(c.address, t.namespace, t.id)).filter((p) => existsSync(p));
  const cgroups = targets.flatMap((t) => containerCgroups(t.namespace, t.id));
  return { shims, mounts, taskDirs, runcStateDirs, sockets, cgroups };
}

export const NOTHING_LEFT: Leftovers = Object.freeze({
  shims: [], mounts: [], taskDirs: [], runcStateDirs: [], sockets: [], cgroups: [],
});

export function isClean(l: Leftovers): boolean {
  return l.shims.length + l.mounts.length + l.taskDirs.length + l.runcStateDirs.length + l.sockets.length +
    l.cgroups.length === 0;
}

/** Polls leftovers() until clean (shims may take a moment to exit after Shutdown). */
export async function waitForNoLeftovers(
  c: Containerd, ids?: Array<string | { namespace: string; id: string }>, timeoutMs = 5000,
): Promise<Leftovers> {
  let last = leftovers(c, ids);
  const deadline = Date.now() + timeoutMs;
  while (!isClean(last) && Date.now() < deadline) {
    await sleep(100);
    last = leftovers(c, ids);
  }
  return last;
}
