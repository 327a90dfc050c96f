// SPDX-License-Identifier: Apache-2.0
// The runc driver: builds runc command lines (as go-runc v1.1.0 runc.go builds them) and runs them as
// children of the daemon through the reaper, so their exits are collected by the one reaper.
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as native from '../sys/native.js';
import { Reaper, envList } from '../reaper/reaper.js';
import { execError } from './logjson.js';

export const DEFAULT_RUNC_ROOT = '/run/containerd/runc';
/** Upper bounds for one runc call (overridable for tests through the environment). */
const RUNC_TIMEOUT_MS = Number(process.env.SHIM_RUNC_TIMEOUT_MS) || 120_000;
const CRIU_TIMEOUT_MS = Number(process.env.SHIM_CRIU_TIMEOUT_MS) || 600_000;
const SIGKILL = 9;

export interface RuncConfig {
  command: string;
  /** Effective --root: <root or /run/containerd/runc>/<namespace>. */
  root: string;
  log: string;
  systemdCgroup?: boolean;
  criu?: string;
}

export class RuncError extends Error {
  constructor(message: string, readonly status: number, readonly output: string) {
    super(message);
  }
}

export interface Stdio {
  /** fds for runc's 0, 1, 2 (-1 = /dev/null). */
  fds: [number, number, number];
}

export interface CreateOpts {
  pidFile: string;
  consoleSocket?: string;
  noPivot?: boolean;
  noNewKeyring?: boolean;
  stdio?: Stdio;
}

export interface ExecOpts {
  pidFile: string;
  consoleSocket?: string;
  stdio?: Stdio;
}

export interface CheckpointOpts {
  imagePath: string;
  workPath: string;
  leaveRunning: boolean;
  tcpEstablished?: boolean;
  extUnixSk?: boolean;
  shellJob?: boolean;
  fileLocks?: boolean;
  emptyNamespaces?: string[];
  parentPath?: string;
}

export interface RestoreOpts {
  imagePath: string;
  workPath: string;
  parentPath?: string;
  pidFile: string;
  consoleSocket?: string;
  noPivot?: boolean;
  stdio?: Stdio;
}

/** runc's environment: ours without NOTIFY_SOCKET (runc would use it for sd_notify). */
export function runcEnv(): string[] {
  return envList(process.env, (k) => k === 'NOTIFY_SOCKET');
}

let tempSeq = 0;

/** Create `<dir>/<prefix>-<unique>` exclusively, mode 0600, holding `data`; returns its path. */
export function writePrivateTemp(dir: string, prefix: string, data: string): string {
  for (let attempt = 0; ; attempt++) {
    const file = path.join(dir, `${prefix}-${process.pid}-${++tempSeq}-${Math.random().toString(36).slice(2, 10)}`);
    try {
      fs.writeFileSync(file, data, { mode: 0o600, flag: 'wx' });
      return file;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 10) throw e;
    }
  }
}

/** A bounded wait for the captured output to reach EOF once runc itself has exited. */
const OUTPUT_GRACE_MS = 1000;

export class Runc {
  constructor(readonly cfg: RuncConfig, private readonly reaper: Reaper) {}

  private globalArgs(): string[] {
    const a = ['--root', this.cfg.root, '--log', this.cfg.log, '--log-format', 'json'];
    if (this.cfg.criu) a.push('--criu', this.cfg.criu);
    if (this.cfg.systemdCgroup) a.push('--systemd-cgroup');
    return a;
  }


  /**
   * Run runc with the given args. With `stdio`, runc's stdio are those fds and nothing is
   * captured; otherwise stdout+stderr are captured together through a real pipe.
   */
  async run(args: string[], opts: { stdio?: Stdio; input?: string } = {}): Promise<string> {
    const argv = [this.cfg.command, ...this.globalArgs(), ...args];
    let inR = -1, inW = -1, outR = -1, outW = -1;
    try {
      if (opts.input !== undefined) [inR, inW] = native.pipe();
      if (!opts.stdio) [outR, outW] = native.pipe();
      const fds: number[] = opts.stdio ? [...opts.stdio.fds] : [inR, outW, outW];
      if (opts.input !== undefined) fds[0] = inR;
      let child: ReturnType<Reaper['spawn']>;
      try {
        child = this.reaper.spawn({ file: this.cfg.command, args: argv, env: runcEnv(), fds, pdeathsig: SIGKILL });
      } catch (e) {
        throw execError(this.cfg.command, e);
      }
      const watchdog = this.watchdog(child.pid, child.exited, args[0] ?? '');
      if (inR >= 0) { fs.closeSync(inR); inR = -1; }
      if (outW >= 0) { fs.closeSync(outW); outW = -1; }
      const writing = inW >= 0 ? writeAll(inW, opts.input ?? '') : Promise.resolve();
      inW = -1;
      const reading = outR >= 0 ? readAll(outR, child.exited) : Promise.resolve('');
      outR = -1;
      const [exit, output] = await Promise.all([child.exited, reading, writing.catch(() => undefined)]).then(
        ([e, o]) => [e, o] as const,
      );
      if (watchdog.fired) {
        throw new RuncError(`${this.cfg.command} ${args[0]} did not finish within ${watchdog.limitMs / 1000} s and was killed`, exit.status, output);
      }
      if (exit.status !== 0) {
        // go-runc's wording (cmdOutput / runOrError): `<argv0> did not terminate successfully:
        // exit status N`, followed by `: <output>` when the output was captured.
        const msg = opts.stdio
          ? `${this.cfg.command} did not terminate successfully: exit status ${exit.status}`
          : `${this.cfg.command} did not terminate successfully: exit status ${exit.status}: ${output}`;
        throw new RuncError(msg, exit.status, output);
      }
      return output;
    } finally {
      for (const fd of [inR, inW, outR, outW]) if (fd >= 0) try { fs.closeSync(fd); } catch { /* already closed */ }
    }
  }

  /**
   * No runc call may hang the shim: past a generous limit (CRIU gets more) runc is killed
   * through a pidfd, so a recycled pid is never hit.
   */
  private watchdog(pid: number, exited: Promise<unknown>, sub: string): { fired: boolean; limitMs: number } {
    const limitMs = sub === 'checkpoint' || sub === 'restore' ? CRIU_TIMEOUT_MS : RUNC_TIMEOUT_MS;
    const state = { fired: false, limitMs };
    let pidfd = -1;
    try { pidfd = native.pidfdOpen(pid); } catch { return state; } // already gone
    const timer = setTimeout(() => {
      state.fired = true;
      try { native.pidfdSendSignal(pidfd, SIGKILL); } catch { /* exited meanwhile */ }
    }, limitMs);
    timer.unref();
    void exited.then(() => {
      clearTimeout(timer);
      try { fs.closeSync(pidfd); } catch { /* ignore */ }
    });
    return state;
  }

  create(id: string, bundle: string, o: CreateOpts): Promise<string> {
    const a = ['create', '--bundle', bundle, '--pid-file', path.resolve(o.pidFile)];
    if (o.consoleSocket) a.push('--console-socket', o.consoleSocket);
    if (o.noPivot) a.push('--no-pivot');
    if (o.noNewKeyring) a.push('--no-new-keyring');
    a.push(id);
    return this.run(a, { stdio: o.stdio });
  }

  start(id: string): Promise<string> {
    return this.run(['start', id]);
  }

  /**
   * `runc exec --detach` with the process spec in a private temp file (0600, created with
   * O_EXCL so a planted name or symlink is never followed), removed afterwards. One file, as
   * the reference does: a temp directory cost ~1 ms more per exec on a disk-backed /tmp.
   */
  async exec(id: string, processSpec: unknown, o: ExecOpts): Promise<void> {
    const file = writePrivateTemp(process.env.XDG_RUNTIME_DIR || os.tmpdir(), 'runc-process', JSON.stringify(processSpec));
    try {
      const a = ['exec', '--process', file];
      if (o.consoleSocket) a.push('--console-socket', o.consoleSocket);
      a.push('--detach', '--pid-file', path.resolve(o.pidFile), id);
      await this.run(a, { stdio: o.stdio });
    } finally {
      try { fs.unlinkSync(file); } catch { /* already gone */ }
    }
  }

  kill(id: string, signal: number, all = false): Promise<string> {
    return this.run(all ? ['kill', '--all', id, String(signal)] : ['kill', id, String(signal)]);
  }

  delete(id: string, force = false): Promise<string> {
    return this.run(force ? ['delete', '--force', id] : ['delete', id]);
  }

  pause(id: string): Promise<string> { return this.run(['pause', id]); }
  resume(id: string): Promise<string> { return this.run(['resume', id]); }

  async ps(id: string): Promise<number[]> {
    const out = await this.run(['ps', '--format', 'json', id]);
    // runc may print nothing but the JSON; be lenient with surrounding whitespace.
    const parsed: unknown = JSON.parse(out.trim() || 'null');
    return Array.isArray(parsed) ? parsed.filter((p): p is number => typeof p === 'number') : [];
  }

  checkpoint(id: string, o: CheckpointOpts): Promise<string> {
    const a = ['checkpoint', '--image-path', o.imagePath, '--work-path', o.workPath];
    if (o.tcpEstablished) a.push('--tcp-established');
    if (o.extUnixSk) a.push('--ext-unix-sk');
    if (o.shellJob) a.push('--shell-job');
    if (o.fileLocks) a.push('--file-locks');
    for (const ns of o.emptyNamespaces ?? []) a.push('--empty-ns', ns);
    if (o.leaveRunning) a.push('--leave-running');
    // An incremental dump on top of a pre-dump (containerd v2.4 CheckpointOptions.parent_path).
    if (o.parentPath) a.push('--parent-path', o.parentPath);
    a.push(id);
    return this.run(a);
  }

  /** `runc restore --detach`; -no-subreaper so the restored init is re-parented to us. */
  restore(id: string, bundle: string, o: RestoreOpts): Promise<string> {
    const a = ['restore', '--image-path', o.imagePath, '--work-path', o.workPath];
    if (o.parentPath) a.push('--parent-path', o.parentPath);
    a.push('--detach', '--pid-file', path.resolve(o.pidFile));
    if (o.consoleSocket) a.push('--console-socket', o.consoleSocket);
    if (o.noPivot) a.push('--no-pivot');
    a.push('-no-subreaper', '--bundle', bundle, id);
    return this.run(a, { stdio: o.stdio });
  }

  update(id: string, resourcesJson: string): Promise<string> {
    return this.run(['update', '--resources', '-', id], { input: resourcesJson });
  }
}

function writeAll(fd: number, data: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = new net.Socket({ fd, readable: false, writable: true });
    s.on('error', (e) => { s.destroy(); reject(e); });
    s.end(data, () => { s.destroy(); resolve(); });
  });
}

/** Read a pipe to EOF; once `exited` resolves, wait at most OUTPUT_GRACE_MS more for EOF. */
function readAll(fd: number, exited: Promise<unknown>): Promise<string> {
  return new Promise((resolve) => {
    const s = new net.Socket({ fd, readable: true, writable: false });
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      if (timer) clearTimeout(timer);
      s.destroy();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', done);
    s.on('error', done);
    void exited.then(() => { timer = setTimeout(done, OUTPUT_GRACE_MS); timer.unref(); });
  });
}
