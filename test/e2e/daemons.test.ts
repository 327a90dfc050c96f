// SPDX-License-Identifier: Apache-2.0
// Cross-daemon suite: the same scenarios on containerd 1.7 (Debian 13), 2.1 (Debian unstable) and
// 2.3 (release tarball), each a private instance started side by side with nothing else, and on
// each with that daemon's own Go shim (the reference) and ours. 1.6 is covered by the full suite.
//
// Per daemon × shim: run (output, exit code), exec (output, exit code), tty run and tty exec
// (terminal output, exit code), kill (an exec by SIGTERM → 143, the init by SIGKILL → 137),
// pause/resume (/tasks/paused, /tasks/resumed), metrics (`ctr task metrics`), containerd
// restarted while a container runs (the task is still usable: exec works, its exit is
// forwarded), the shim daemon SIGKILLed (the task exits 137, nothing is left), and a CRI pod with
// two app containers (one shim serves the pod). What each shim shows is recorded and ours must
// equal the reference: same exit codes, same outputs, same task event topics in order.
//
// A daemon that is not installed (scripts/daemons.sh installs them) is skipped with the reason.
// At the end a table daemon × scenario × reference × ours is printed to stdout.
//
// SHIM_DAEMON_LANES="2.1 2.3" runs a subset; SHIM_UNDER_TEST=ours|reference one shim (no parity).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, readdirSync, readlinkSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { spawnSync, type ChildProcess } from 'node:child_process';
import {
  argValue, fullPath, listProcesses, NOTHING_LEFT, pidAlive, startContainerd, taskAddress, waitFor, waitForNoLeftovers,
  type Containerd, type ProcInfo,
} from '../support/containerd.js';
import { DAEMON_NAMES, daemonVersion, findDaemon, type Daemon, type DaemonName } from '../support/daemons.js';
import { DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF, ensureBusyboxImage, ensurePauseImage } from '../support/image.js';
import { PTY_DRIVE, parseEvents, runProcess, stripLogTimes } from '../support/parity.js';
import { OUR_SHIM, REPO_ROOT, shimsUnderTest, type ShimName, type ShimUnderTest } from '../support/shims.js';
import { ContainerState, CriClient, containerConfig, criRuntimeConfig, podSandboxConfig } from '../support/cri.js';

const NS = 'default';
const CRI_NS = 'k8s.io';
const TEST_TIMEOUT = 60_000;
const CTR_TIMEOUT = 30_000;
const PYTHON = '/usr/bin/python3';
/** CRI runtime handler of each shim. */
const CRI_HANDLER: Record<ShimName, string> = { reference: 'runc', ours: 'ours' };

const ALL_LANES: DaemonName[] = ['1.7', '2.1', '2.3'];
const LANES: DaemonName[] = (() => {
  const want = (process.env.SHIM_DAEMON_LANES ?? '').trim();
  if (want === '') return ALL_LANES;
  const names = want.split(/[\s,]+/);
  for (const n of names) {
    if (!(DAEMON_NAMES as readonly string[]).includes(n)) throw new Error(`SHIM_DAEMON_LANES: unknown daemon ${n}`);
  }
  return names as DaemonName[];
})();

const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
let seq = 0;

// ---------------------------------------------------------------------------------------------
// What was seen, for the parity checks and the table

interface Outcome {
  ok: boolean;
  value?: unknown;
  error?: string;
  /** The reference shim's /tasks/delete never arrived (see Lane.waitDeleted). */
  lostDelete?: boolean;
}
/** daemon → scenario → shim → outcome */
const results = new Map<string, Map<string, Map<ShimName, Outcome>>>();
const laneNotes = new Map<string, string>();
const notes: string[] = [];

function put(daemon: string, scenario: string, shim: ShimName, o: Outcome): void {
  if (!results.has(daemon)) results.set(daemon, new Map());
  const d = results.get(daemon)!;
  if (!d.has(scenario)) d.set(scenario, new Map());
  d.get(scenario)!.set(shim, o);
}

function firstLine(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.split('\n').find((l) => l.trim() !== '')?.trim().slice(0, 160) ?? '';
}

/**
 * The two observations to compare: as recorded, or — when the reference's /tasks/delete was lost
 * (Lane.waitDeleted) — both without /tasks/delete entries.
 */
function comparable(ours: Outcome, ref: Outcome): [unknown, unknown] {
  if (!ref.lostDelete) return [ours.value, ref.value];
  const drop = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.filter((x) => !(typeof x === 'string' && x.startsWith('/tasks/delete'))).map(drop);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, drop(x)]));
    return v;
  };
  return [drop(ours.value), drop(ref.value)];
}

// ---------------------------------------------------------------------------------------------
// One daemon's environment

/** `ctr events` of one containerd, subscribed before start() returns; restartable. */
class Events {
  text = '';
  private proc?: ChildProcess;
  private exited?: Promise<void>;

  constructor(private readonly c: Containerd) {}

  async start(): Promise<void> {
    const proc = this.c.ctrSpawn(['events']);
    this.proc = proc;
    this.exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => { this.text += d; });
    // Creating a namespace publishes /namespaces/create: once it shows, the watcher is subscribed.
    const marker = `evsync${unique}${++seq}`;
    const ok = await waitFor(async () => {
      if (proc.exitCode !== null) return true;
      await this.c.ctr(['namespaces', 'create', marker], { allowFail: true, timeoutMs: CTR_TIMEOUT });
      await this.c.ctr(['namespaces', 'remove', marker], { allowFail: true, timeoutMs: CTR_TIMEOUT });
      return waitFor(() => this.text.includes(marker), 1000);
    }, 15_000, 0);
    assert.ok(ok && proc.exitCode === null, 'ctr events subscribed');
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null && p.pid !== undefined) {
      try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ }
    }
    await this.exited;
  }

  /**
   * The task events of container `id` as comparable strings: topic, exec id, which process
   * exited and with what status (ids, pids and times left out).
   */
  of(id: string, from = 0): string[] {
    return parseEvents(this.text.slice(from))
      .filter((e) => e.topic.startsWith('/tasks/') && e.event.container_id === id)
      .map((e) => {
        const ev = e.event;
        let s = e.topic;
        if (typeof ev.exec_id === 'string' && ev.exec_id !== '') s += ` exec=${ev.exec_id}`;
        if (e.topic === '/tasks/exit') s += ` ${ev.id === id ? 'init' : `exec=${String(ev.id)}`} status=${Number(ev.exit_status ?? 0)}`;
        if (e.topic === '/tasks/delete') s += ` status=${Number(ev.exit_status ?? 0)}`;
        return s;
      });
  }

  async waitFor(id: string, pred: (evs: string[]) => boolean, what: string, from = 0, timeoutMs = 20_000): Promise<string[]> {
    const ok = await waitFor(() => pred(this.of(id, from)), timeoutMs, 20);
    assert.ok(ok, `${what}: events of ${id} so far: ${JSON.stringify(this.of(id, from))}`);
    return this.of(id, from);
  }
}

class Lane {
  c!: Containerd;
  image = DEFAULT_IMAGE_REF;
  events!: Events;
  cri!: CriClient;
  tmp = '';
  /** Where the gated runc lives (start()). */
  gate = '';
  cgroupParents: string[] = [];
  /** Set by waitDeleted() when the reference shim's /tasks/delete was lost in the current test. */
  lostDelete = false;

  constructor(readonly daemon: Daemon) {}

  async start(): Promise<void> {
    this.tmp = mkdtempSync('/tmp/dmn-');
    mkdirSync(join(this.tmp, 'logs'));
    // A `runc` first on the daemon's PATH (the shims find runc there) that holds the `runc exec`
    // of a container whose `hold-<id>` file exists, until `release-<id>` appears; every other
    // call goes straight to the real runc.
    this.gate = join(this.tmp, 'gate');
    mkdirSync(this.gate);
    const real = spawnSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8', env: { ...process.env, PATH: fullPath() } }).stdout.trim();
    writeFileSync(join(this.gate, 'runc'), [
      '#!/bin/sh',
      'for id; do :; done',
      `if [ -e "${this.gate}/hold-$id" ]; then for a; do if [ "$a" = exec ]; then`,
      `  mv "${this.gate}/hold-$id" "${this.gate}/entered-$id" 2>/dev/null &&`,
      `  while [ ! -e "${this.gate}/release-$id" ]; do sleep 0.05; done; break; fi; done; fi`,
      `exec ${real} "$@"`, ''].join('\n'), { mode: 0o755 });
    // Two CRI runtime handlers with the same runtime type (so the same runtime-options message),
    // each naming its shim binary: `runc` (the default handler, which must exist once any runtime
    // is configured) this daemon's Go shim, `ours` this repository's.
    this.c = await startContainerd({
      daemon: this.daemon,
      pathPrepend: [this.gate],
      cri: true,
      criSettings: `sandbox_image = ${JSON.stringify(PAUSE_IMAGE_REF)}`,
      extraConfig: criRuntimeConfig({
        handlers: [
          { name: CRI_HANDLER.reference, runtimePath: this.daemon.shim },
          { name: CRI_HANDLER.ours, runtimePath: OUR_SHIM },
        ],
      }),
    });
    await ensureBusyboxImage(this.c, [NS, CRI_NS]);
    await ensurePauseImage(this.c, [CRI_NS]);
    this.cri = new CriClient(this.c.address);
    // The CRI plugin learns of imported images from containerd's image events.
    for (const ref of [DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF]) {
      const img = await waitFor(() => this.cri.imageStatus(ref), 15_000, 50);
      assert.ok(img, `the CRI plugin does not see ${ref}`);
    }
    this.events = new Events(this.c);
    await this.events.start();
  }

  async stop(): Promise<void> {
    await this.events?.stop();
    this.cri?.close();
    await this.c?.stop();
    for (const p of this.cgroupParents) removeCgroupParent(p);
    if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
  }

  /** A remark for the table's footnotes. */
  note(msg: string): void {
    notes.push(msg);
  }

  newId(shim: ShimName, what: string): string {
    return `dm${this.daemon.name.replace('.', '')}-${shim === 'ours' ? 'ts' : 'go'}-${what}-${unique}-${++seq}`;
  }

  ctr(args: string[], allowFail = true) {
    return this.c.ctr(['-n', NS, ...args], { timeoutMs: CTR_TIMEOUT, allowFail });
  }

  /** `ctr run -d` of `sleep 100000` with the shim; returns the init's pid. */
  async detached(shim: ShimUnderTest, id: string, cmd = ['sleep', '100000']): Promise<number> {
    const r = await this.ctr(['run', '-d', '--runtime', shim.path, this.image, id, ...cmd]);
    assert.equal(r.code, 0, `ctr run -d: ${r.stdout}${r.stderr}`);
    const row = await this.taskRow(id);
    assert.equal(row?.status, 'RUNNING', `task ${id} RUNNING after ctr run -d`);
    return row.pid;
  }

  async taskRow(id: string): Promise<{ pid: number; status: string } | undefined> {
    const r = await this.ctr(['task', 'ls']);
    for (const line of r.stdout.split('\n').slice(1)) {
      const [task, pid, status] = line.trim().split(/\s+/);
      if (task === id && pid !== undefined) return { pid: Number(pid), status: status };
    }
    return undefined;
  }

  /**
   * Waits for the task's /tasks/delete. containerd 2.x's Go shim publishes TaskDelete itself and
   * then exits on Shutdown, and now and then the event never reaches containerd (measured here
   * with `ctr run --rm … true` in a loop: 3 of 15 lost with 2.1.9, 1 of 15 with 2.3.4, 0 of 10
   * with 1.7.24). So for the 2.x reference a missing /tasks/delete is noted (and left out of the
   * comparison), not failed; ours must always deliver it.
   */
  async waitDeleted(shim: ShimUnderTest, id: string, from: number): Promise<string[]> {
    const has = (e: string[]) => e.some((x) => x.startsWith('/tasks/delete'));
    if (shim.name === 'reference' && this.daemon.major >= 2) {
      if (!await waitFor(() => has(this.events.of(id, from)), 5000, 20)) {
        this.lostDelete = true;
        this.note(`the reference shim of containerd ${this.daemon.name} lost /tasks/delete of ${id}; compared without it`);
        return this.events.of(id, from);
      }
    }
    return this.events.waitFor(id, has, '/tasks/delete', from);
  }

  /** `ctr task delete`, which must succeed. */
  async deleteTask(id: string): Promise<void> {
    const r = await this.ctr(['task', 'delete', id]);
    assert.equal(r.code, 0, `ctr task delete ${id}: ${r.stdout}${r.stderr}`);
  }

  /** SIGKILLs the task (if it runs), waits for its exit, deletes task and container, checks nothing is left. */
  async remove(id: string): Promise<void> {
    const from = this.events.text.length;
    const row = await this.taskRow(id);
    if (row && row.status !== 'STOPPED') {
      await this.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
      await this.events.waitFor(id, (e) => e.some((s) => s.startsWith('/tasks/exit init')), 'exit after SIGKILL', from);
    }
    if (row) await this.deleteTask(id);
    await this.ctr(['container', 'rm', id]);
    const left = await waitForNoLeftovers(this.c, [{ namespace: NS, id }], 10_000);
    assert.deepEqual(left, { ...NOTHING_LEFT }, `${id} left things behind`);
  }

  /** ctr on a fresh pty, scripted by test/support/pty-drive.py. */
  async pty(args: string[], steps: unknown[]): Promise<{ output: string; status: number; error: string | null }> {
    const r = await runProcess(PYTHON, [PTY_DRIVE, JSON.stringify([{ size: [30, 100] }, ...steps]), this.c.ctrPath,
      '--address', this.c.address, '-n', NS, ...args], {
      timeoutMs: CTR_TIMEOUT + 5000,
      env: { ...process.env, CONTAINERD_SNAPSHOTTER: this.c.snapshotter, PTY_DRIVE_DEADLINE: String(CTR_TIMEOUT / 1000) },
    });
    assert.equal(r.code, 0, `pty-drive.py failed: ${r.stderr}`);
    const d = JSON.parse(r.stdout) as { output: string; status: number; error: string | null };
    return { output: Buffer.from(d.output, 'base64').toString('utf8'), status: d.status, error: d.error };
  }
}

// ---------------------------------------------------------------------------------------------
// Process and socket helpers (the CRI scenario)

function readlinkOr(p: string): string {
  try { return readlinkSync(p); } catch { return ''; }
}

function ppidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/**
 * Which shim a process runs: the daemon's Go binary, or Node (ours: its daemon may show the Go
 * shim's command line in ps, so the executable decides), else other.
 */
function shimKind(p: ProcInfo, d: Daemon): ShimName | 'other' {
  const exe = readlinkOr(`/proc/${p.pid}/exe`);
  if (exe === d.shim) return 'reference';
  const dist = join(REPO_ROOT, 'dist') + '/';
  if (basename(exe) === 'node' || p.argv.some((a) => a.startsWith(dist) && a.endsWith('/shim/main.js'))) return 'ours';
  return 'other';
}

/** Processes holding a listening unix socket bound at `path` (this network namespace). */
function socketHolders(path: string): ProcInfo[] {
  const inodes = new Set<string>();
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[7] === path && (Number.parseInt(f[3], 16) & 0x10000) !== 0) inodes.add(`socket:[${f[6]}]`);
  }
  if (inodes.size === 0) return [];
  return listProcesses().filter((p) => {
    let fds: string[];
    try { fds = readdirSync(`/proc/${p.pid}/fd`); } catch { return false; }
    return fds.some((fd) => inodes.has(readlinkOr(`/proc/${p.pid}/fd/${fd}`)));
  });
}

function removeCgroupParent(parent: string): void {
  let hierarchies: string[] = [];
  try { hierarchies = readdirSync('/sys/fs/cgroup'); } catch { /* none */ }
  for (const h of hierarchies) {
    const dir = join('/sys/fs/cgroup', h, parent);
    try { if (!statSync(dir).isDirectory()) continue; } catch { continue; }
    for (const child of readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory())) {
      try { rmdirSync(join(dir, child.name)); } catch { /* busy */ }
    }
    try { rmdirSync(dir); } catch { /* busy */ }
  }
}

// ---------------------------------------------------------------------------------------------
// The scenarios: each asserts what must hold for either shim and returns what it observed
// (ids, pids and times left out) for the comparison.

interface Scenario {
  name: string;
  run(l: Lane, shim: ShimUnderTest): Promise<unknown>;
}

// The script first waits (bounded, inside the container) until the terminal has ctr's window size:
// ctr resizes the pty right after Start returns, and a process that exits before that makes ctr
// log a failed resize — a race of the test, not a difference between shims (parity-tty.test.ts
// does the same).
const TTY_SCRIPT = 'i=0; while [ "$(stty size 2>/dev/null)" != "30 100" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; ' +
  'echo "tty:$(tty)"; read line; echo "got:$line"; exit';

const SCENARIOS: Scenario[] = [
  {
    name: 'run',
    async run(l, shim) {
      // The reference now and then loses the container's stderr line under containerd 2.1 (seen
      // once in CI: stdout and exit code right, stderr empty): it gets up to three tries, so a
      // flake of its own does not fail our comparison. Ours gets one.
      for (let attempt = 1; ; attempt++) {
        const id = l.newId(shim.name, 'run');
        const from = l.events.text.length;
        const r = await l.ctr(['run', '--rm', '--runtime', shim.path, l.image, id, 'sh', '-c', 'echo out; echo err >&2; exit 3']);
        assert.equal(r.timedOut, false, 'ctr run timed out');
        assert.equal(r.stdout, 'out\n', `stdout; stderr: ${r.stderr}`);
        assert.equal(r.code, 3, `exit code; stderr: ${r.stderr}`);
        const evs = await l.waitDeleted(shim, id, from);
        const stderr = stripLogTimes(r.stderr);
        if (shim.name === 'reference' && !stderr.includes('err\n') && attempt < 3) continue;
        return { code: r.code, stdout: r.stdout, stderr, events: evs };
      }
    },
  },
  {
    name: 'exec',
    async run(l, shim) {
      const id = l.newId(shim.name, 'exec');
      await l.detached(shim, id);
      try {
        const from = l.events.text.length;
        const r = await l.ctr(['task', 'exec', '--exec-id', 'x1', id, 'sh', '-c', 'echo exec-out; echo exec-err >&2; exit 5']);
        assert.equal(r.stdout, 'exec-out\n', `exec stdout; stderr: ${r.stderr}`);
        assert.equal(r.code, 5, `exec exit code; stderr: ${r.stderr}`);
        const evs = await l.events.waitFor(id, (e) => e.some((s) => s.startsWith('/tasks/exit exec=x1')), 'exec exit', from);
        return { code: r.code, stdout: r.stdout, stderr: stripLogTimes(r.stderr), events: evs };
      } finally {
        await l.remove(id);
      }
    },
  },
  {
    name: 'tty run',
    async run(l, shim) {
      const id = l.newId(shim.name, 'ttyrun');
      const from = l.events.text.length;
      const r = await l.pty(['run', '--rm', '-t', '--runtime', shim.path, l.image, id, 'sh', '-c', `${TTY_SCRIPT} 4`],
        [{ expect: 'tty:' }, { send: 'hello\r' }, { expect: 'got:hello' }]);
      assert.equal(r.error, null, `terminal output: ${JSON.stringify(r.output)}`);
      assert.match(r.output, /tty:\/dev\/pts\/\d+/, 'the container has a terminal');
      assert.equal(r.status, 4, `ctr run -t exit code; output ${JSON.stringify(r.output)}`);
      const evs = await l.waitDeleted(shim, id, from);
      return { output: r.output, status: r.status, events: evs };
    },
  },
  {
    name: 'tty exec',
    async run(l, shim) {
      const id = l.newId(shim.name, 'ttyexec');
      await l.detached(shim, id);
      try {
        const from = l.events.text.length;
        const r = await l.pty(['task', 'exec', '-t', '--exec-id', 't1', id, 'sh', '-c', `${TTY_SCRIPT} 6`],
          [{ expect: 'tty:' }, { send: 'hello\r' }, { expect: 'got:hello' }]);
        assert.equal(r.error, null, `terminal output: ${JSON.stringify(r.output)}`);
        assert.match(r.output, /tty:\/dev\/pts\/\d+/, 'the exec has a terminal');
        assert.equal(r.status, 6, `ctr task exec -t exit code; output ${JSON.stringify(r.output)}`);
        const evs = await l.events.waitFor(id, (e) => e.some((s) => s.startsWith('/tasks/exit exec=t1')), 'exec exit', from);
        return { output: r.output, status: r.status, events: evs };
      } finally {
        await l.remove(id);
      }
    },
  },
  {
    // containerd's TestIssue10589: an exec whose `runc exec` is slow, the init killed meanwhile,
    // then another exec. Containerd 2.x's Go shim answers FailedPrecondition; ours must too, and
    // must never hang (containerd gives State 2 s).
    name: 'exec after the init died, another exec stuck in runc',
    async run(l, shim) {
      const id = l.newId(shim.name, 'i10589');
      const pid = await l.detached(shim, id);
      try {
        writeFileSync(join(l.gate, `hold-${id}`), '');
        const slow = l.ctr(['task', 'exec', '--exec-id', 'slow', id, 'true']);
        assert.ok(await waitFor(() => existsSync(join(l.gate, `entered-${id}`)), 20_000, 20), 'the first exec reached runc exec');
        await l.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
        assert.ok(await waitFor(() => !pidAlive(pid), 10_000, 20), 'the init died');
        // Until the shim has seen the init's exit a new exec may still reach runc (and fail
        // there); once it has, the answer must be FailedPrecondition. Bounded either way.
        let late = { code: 0 as number | null, stderr: '', timedOut: false };
        for (let i = 0; i < 10; i++) {
          late = await l.c.ctr(['-n', NS, 'task', 'exec', '--exec-id', `late${i}`, id, 'true'], { timeoutMs: 8000, allowFail: true });
          if (late.timedOut || late.stderr.includes('failed precondition')) break;
        }
        writeFileSync(join(l.gate, `release-${id}`), '');
        const first = await slow;
        assert.equal(late.timedOut, false, 'the exec after the init died hung');
        if (shim.name === 'ours') {
          assert.match(late.stderr, new RegExp(`container ${id} init process is not running: failed precondition`));
        }
        return {
          late: late.timedOut ? 'hung' : stripLogTimes(late.stderr).replace(new RegExp(id, 'g'), '<id>').trim(),
          lateCode: late.code,
          firstCode: first.code === 0 ? 0 : 'failed',
        };
      } finally {
        writeFileSync(join(l.gate, `release-${id}`), '');
        await l.remove(id);
      }
    },
  },
  {
    name: 'kill',
    async run(l, shim) {
      const id = l.newId(shim.name, 'kill');
      const from = l.events.text.length;
      await l.detached(shim, id);
      try {
        // An exec (not pid 1: SIGTERM's default action applies) killed by SIGTERM → 143 ...
        const e = await l.ctr(['task', 'exec', '-d', '--exec-id', 'k1', id, 'sleep', '100000']);
        assert.equal(e.code, 0, `ctr task exec -d: ${e.stderr}`);
        await l.events.waitFor(id, (ev) => ev.includes('/tasks/exec-started exec=k1'), 'exec started', from);
        const k1 = await l.ctr(['task', 'kill', '-s', 'SIGTERM', '--exec-id', 'k1', id]);
        assert.equal(k1.code, 0, `ctr task kill --exec-id: ${k1.stderr}`);
        await l.events.waitFor(id, (ev) => ev.some((s) => s.startsWith('/tasks/exit exec=k1')), 'exec exit', from);
        // ... and the init (pid 1 ignores SIGTERM without a handler) by SIGKILL → 137.
        const k2 = await l.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
        assert.equal(k2.code, 0, `ctr task kill: ${k2.stderr}`);
        await l.events.waitFor(id, (ev) => ev.some((s) => s.startsWith('/tasks/exit init')), 'init exit', from);
        assert.equal((await l.taskRow(id))?.status, 'STOPPED');
        await l.deleteTask(id);
        const evs = await l.waitDeleted(shim, id, from);
        assert.ok(evs.includes('/tasks/exit exec=k1 status=143'), `exec killed by SIGTERM exits 143: ${JSON.stringify(evs)}`);
        assert.ok(evs.includes('/tasks/exit init status=137'), `init killed by SIGKILL exits 137: ${JSON.stringify(evs)}`);
        return { events: evs };
      } finally {
        await l.remove(id);
      }
    },
  },
  {
    name: 'pause/resume',
    async run(l, shim) {
      const id = l.newId(shim.name, 'pause');
      const from = l.events.text.length;
      await l.detached(shim, id);
      try {
        const p = await l.ctr(['task', 'pause', id]);
        assert.equal(p.code, 0, `ctr task pause: ${p.stderr}`);
        const paused = (await l.taskRow(id))?.status;
        assert.equal(paused, 'PAUSED');
        const r = await l.ctr(['task', 'resume', id]);
        assert.equal(r.code, 0, `ctr task resume: ${r.stderr}`);
        const resumed = (await l.taskRow(id))?.status;
        assert.equal(resumed, 'RUNNING');
        const evs = await l.events.waitFor(id, (ev) => ev.includes('/tasks/resumed'), '/tasks/resumed', from);
        assert.deepEqual(evs.filter((s) => s === '/tasks/paused' || s === '/tasks/resumed'), ['/tasks/paused', '/tasks/resumed']);
        return { paused, resumed, events: evs };
      } finally {
        await l.remove(id);
      }
    },
  },
  {
    name: 'metrics',
    async run(l, shim) {
      const id = l.newId(shim.name, 'metrics');
      await l.detached(shim, id);
      try {
        const r = await l.ctr(['task', 'metrics', id]);
        assert.equal(r.code, 0, `ctr task metrics: ${r.stderr}`);
        // A table "METRIC  VALUE" follows the "ID  TIMESTAMP" header: compare the metric names.
        const lines = r.stdout.split('\n');
        const at = lines.findIndex((x) => /^METRIC\s+VALUE/.test(x));
        assert.ok(at >= 0, `ctr task metrics prints a METRIC table:\n${r.stdout}`);
        const names = lines.slice(at + 1).map((x) => x.trim().split(/\s+/)[0]).filter((x): x is string => !!x).sort();
        assert.ok(names.length > 0, `metrics: ${r.stdout}`);
        return { names };
      } finally {
        await l.remove(id);
      }
    },
  },
  {
    name: 'containerd restart',
    async run(l, shim) {
      const id = l.newId(shim.name, 'restart');
      const init = await l.detached(shim, id);
      const shimPid = ppidOf(init);
      await l.events.stop();
      await l.c.restart();
      l.events = new Events(l.c);
      await l.events.start();
      try {
        assert.ok(pidAlive(shimPid), 'the shim kept running while containerd restarted');
        assert.equal((await l.taskRow(id))?.status, 'RUNNING', 'containerd reconnected to the task');
        const from = l.events.text.length;
        const e = await l.ctr(['task', 'exec', '--exec-id', 'r1', id, 'echo', 'after-restart']);
        assert.equal(e.stdout, 'after-restart\n', `exec after restart; stderr: ${e.stderr}`);
        assert.equal(e.code, 0);
        await l.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
        await l.events.waitFor(id, (ev) => ev.some((s) => s.startsWith('/tasks/exit init')), 'init exit after restart', from);
        await l.deleteTask(id);
        const evs = await l.waitDeleted(shim, id, from);
        assert.ok(evs.includes('/tasks/exit init status=137'), `the exit is forwarded after the restart: ${JSON.stringify(evs)}`);
        return { exec: { stdout: e.stdout, code: e.code }, events: evs };
      } finally {
        await l.remove(id);
      }
    },
  },
  {
    name: 'shim SIGKILLed',
    async run(l, shim) {
      const id = l.newId(shim.name, 'kill9');
      const init = await l.detached(shim, id);
      const shimPid = ppidOf(init);
      assert.notEqual(shimPid, l.c.pid, 'the init is a child of the shim');
      const from = l.events.text.length;
      process.kill(shimPid, 'SIGKILL');
      const evs = await l.events.waitFor(id, (ev) => ev.some((s) => s.startsWith('/tasks/delete')), '/tasks/delete', from);
      assert.ok(evs.includes('/tasks/exit init status=137'), `the task exits 137: ${JSON.stringify(evs)}`);
      const gone = await waitFor(() => !pidAlive(init), 10_000, 20);
      assert.ok(gone, 'the container init was killed');
      assert.equal(await l.taskRow(id), undefined, 'no task left');
      await l.ctr(['container', 'rm', id], false);
      const left = await waitForNoLeftovers(l.c, [{ namespace: NS, id }], 10_000);
      // containerd's Go shim removes its socket file only when it exits by itself (2.0+, containerd
      // commit d9dc2811a), and its `delete` action leaves it: measured here, the Go shims of 1.7.24,
      // 2.1.9 and 2.3.4 all leave the socket when SIGKILLed. That is reported (a note), not failed,
      // for the reference; ours must remove it (its `delete` does).
      if (shim.name === 'reference' && left.sockets.length > 0) {
        l.note(`shim SIGKILLed: the reference shim of containerd ${l.daemon.name} left its socket ${left.sockets.join(', ')} (removed by the test)`);
        for (const s of left.sockets) rmSync(s, { force: true });
        left.sockets = [];
      }
      assert.deepEqual(left, { ...NOTHING_LEFT }, 'nothing left');
      return { events: evs };
    },
  },
  {
    name: 'CRI pod, 2 containers',
    async run(l, shim) {
      const cgroupParent = `/dmn-${unique}-${l.daemon.name.replace('.', '')}-${shim.name}`;
      l.cgroupParents.push(cgroupParent);
      const logDirectory = join(l.tmp, 'logs', `${shim.name}-${++seq}`);
      mkdirSync(logDirectory, { recursive: true });
      const pod = podSandboxConfig({
        name: `pod-${shim.name}`, uid: `uid-${unique}-${seq}`, namespace: 'dmn', logDirectory, cgroupParent,
      });
      const sandboxId = await l.cri.runPodSandbox(pod, CRI_HANDLER[shim.name]);
      const bundle = (id: string) => join(l.c.state, 'io.containerd.runtime.v2.task', CRI_NS, id);
      const ids: string[] = [];
      try {
        for (const n of [1, 2]) {
          const cfg = containerConfig({
            name: `app${n}`, image: DEFAULT_IMAGE_REF,
            command: ['sh', '-c', `trap "exit 0" TERM; echo started-${n}; while :; do sleep 3600 & wait $!; done`],
          });
          const cid = await l.cri.createContainer(sandboxId, cfg, pod);
          ids.push(cid);
          await l.cri.startContainer(cid);
        }
        // One shim daemon serves the pod: the containers' tasks have the sandbox's address, one
        // process (the shim under test) listens there, no other shim daemon was started for them.
        const address = taskAddress(bundle(sandboxId));
        assert.ok(address?.startsWith('unix://'), `sandbox shim address: ${address}`);
        const addresses = ids.map((id) => taskAddress(bundle(id)));
        assert.deepEqual(addresses, ids.map(() => address), 'the app containers joined the sandbox shim');
        // How the pod's containers reached that shim (containerd v2.3.4 core/runtime/v2/
        // shim_manager.go): a daemon that got version 3 from the pause container's `start`
        // creates them on its socket with no `start` and marks their bundles `sandbox`; with a
        // version-2 answer it runs `start` per container (our `start` writes `address`). Ours
        // answers version 3 only to containerd 2.3+, the one that sends BootstrapParams.
        const reused = ids.map((id) => existsSync(join(bundle(id), 'sandbox')) && !existsSync(join(bundle(id), 'address')));
        const how = reused.every(Boolean) ? 'v3 socket reuse' : reused.some(Boolean) ? 'mixed' : 'start per container';
        if (shim.name === 'ours') {
          assert.equal(how, l.daemon.name === '2.3' ? 'v3 socket reuse' : 'start per container', 'how the app containers joined the pod shim');
        }
        l.note(`CRI pod on containerd ${l.daemon.name}, ${shim.name} shim: ${how}`);
        const holders = socketHolders(address!.slice('unix://'.length));
        assert.equal(holders.length, 1, `one process serves the pod: ${JSON.stringify(holders)}`);
        const kind = shimKind(holders[0], l.daemon);
        assert.equal(kind, shim.name, `the pod is served by the ${shim.name} shim: ${JSON.stringify(holders[0])}`);
        const others = listProcesses().filter((p) => argValue(p.argv, 'address') === l.c.address &&
          [sandboxId, ...ids].includes(argValue(p.argv, 'id') ?? '') && p.pid !== holders[0].pid &&
          !['start', 'delete'].includes(p.argv[p.argv.length - 1]));
        assert.deepEqual(others, [], 'no other shim daemon for the pod');

        const execs = [];
        for (const [i, cid] of ids.entries()) {
          const e = await l.cri.execSync(cid, ['sh', '-c', `echo exec-${i + 1}; exit ${i + 1}`], 10);
          execs.push({ stdout: Buffer.from(e.stdout).toString(), stderr: Buffer.from(e.stderr).toString(), code: e.exitCode });
        }
        assert.deepEqual(execs, [{ stdout: 'exec-1\n', stderr: '', code: 1 }, { stdout: 'exec-2\n', stderr: '', code: 2 }]);

        const exits = [];
        for (const cid of ids) {
          await l.cri.stopContainer(cid, 10);
          const st = (await l.cri.containerStatus(cid)).status;
          exits.push({ state: st?.state, code: st?.exitCode, reason: st?.reason });
        }
        assert.deepEqual(exits, ids.map(() => ({ state: ContainerState.CONTAINER_EXITED, code: 0, reason: 'Completed' })));
        const logs = ids.map((_, i) => readFileSync(join(logDirectory, `app${i + 1}.log`), 'utf8')
          .split('\n').filter((x) => x !== '').map((x) => x.split(' ').slice(1).join(' ')));
        for (const cid of ids) await l.cri.removeContainer(cid);
        await l.cri.stopPodSandbox(sandboxId);
        await l.cri.removePodSandbox(sandboxId);
        const servedBy = holders[0].pid;
        assert.ok(await waitFor(() => !pidAlive(servedBy), 10_000, 20), 'the pod shim exits after the pod is removed');
        const left = await waitForNoLeftovers(l.c, [sandboxId, ...ids].map((id) => ({ namespace: CRI_NS, id })), 10_000);
        assert.deepEqual(left, { ...NOTHING_LEFT }, 'nothing left of the pod');
        return { grouped: true, execs, exits, logs };
      } finally {
        // Best effort after a failure (no-ops after a clean run).
        for (const cid of ids) await l.cri.removeContainer(cid).catch(() => undefined);
        await l.cri.stopPodSandbox(sandboxId).catch(() => undefined);
        await l.cri.removePodSandbox(sandboxId).catch(() => undefined);
      }
    },
  },
];

// ---------------------------------------------------------------------------------------------

const laneTimes = new Map<string, number>();

for (const name of LANES) {
  const found = findDaemon(name);
  if ('missing' in found) {
    process.stderr.write(`daemons.test: SKIPPING containerd ${name}: ${found.missing}\n`);
    laneNotes.set(name, `SKIPPED: ${found.missing}`);
    describe(`containerd ${name}`, () => {
      it(`containerd ${name} with its reference shim and ours`, { skip: `SKIPPED: ${found.missing}` }, () => undefined);
    });
    continue;
  }
  const daemon = found.daemon;
  const lane = new Lane(daemon);
  const shims = shimsUnderTest(daemon);
  let t0 = 0;
  describe(`containerd ${name} (${daemonVersion(daemon)}; ${daemon.source})`, () => {
    before(async () => {
      t0 = Date.now();
      await lane.start();
    }, { timeout: 120_000 });
    after(async () => {
      await lane.stop();
      laneTimes.set(name, Date.now() - t0);
    }, { timeout: 60_000 });

    for (const sc of SCENARIOS) {
      for (const shim of shims) {
        it(`${sc.name} with the ${shim.name} shim (${shim.path})`, { timeout: TEST_TIMEOUT }, async () => {
          const logFrom = (() => { try { return statSync(lane.c.logPath).size; } catch { return 0; } })();
          lane.lostDelete = false;
          try {
            const value = await sc.run(lane, shim);
            put(name, sc.name, shim.name, { ok: true, value, lostDelete: lane.lostDelete });
          } catch (e) {
            put(name, sc.name, shim.name, { ok: false, error: firstLine(e) });
            let log = '';
            try { log = readFileSync(lane.c.logPath).subarray(logFrom).toString('utf8'); } catch { /* none */ }
            if (log.length > 4000) log = '[...]\n' + log.slice(log.length - 4000);
            if (e instanceof Error && log) e.message += `\n--- containerd ${name} log during this test ---\n${log}`;
            throw e;
          }
        });
      }
      it(`${sc.name}: ours shows what the reference shows`, {
        timeout: TEST_TIMEOUT,
        skip: shims.length === 2 ? false : 'one shim under test (SHIM_UNDER_TEST)',
      }, () => {
        const got = results.get(name)?.get(sc.name);
        const ref = got?.get('reference');
        const ours = got?.get('ours');
        assert.ok(ref?.ok, `the reference shim failed "${sc.name}": ${ref?.error ?? 'no result'}`);
        assert.ok(ours?.ok, `our shim failed "${sc.name}": ${ours?.error ?? 'no result'}`);
        assert.deepEqual(...comparable(ours, ref));
      });
    }
  });
}

after(() => {
  const cell = (o: Outcome | undefined) => (o === undefined ? '-' : o.ok ? 'ok' : `FAIL: ${o.error}`);
  const rows: string[][] = [['daemon', 'scenario', 'reference', 'ours', 'parity']];
  for (const name of LANES) {
    const note = laneNotes.get(name);
    if (note) {
      rows.push([name, '(all)', note, '', '']);
      continue;
    }
    for (const sc of SCENARIOS) {
      const r = results.get(name)?.get(sc.name);
      const ref = r?.get('reference');
      const ours = r?.get('ours');
      let parity = '-';
      if (ref?.ok && ours?.ok) {
        try {
          assert.deepEqual(...comparable(ours, ref));
          parity = ref.lostDelete ? 'same (ref lost /tasks/delete)' : 'same';
        } catch {
          parity = 'DIFFERS';
        }
      }
      rows.push([name, sc.name, cell(ref), cell(ours), parity]);
    }
  }
  const widths = rows[0].map((_, i) => Math.min(70, Math.max(...rows.map((r) => (r[i] ?? '').length))));
  const fmt = (r: string[]) => '| ' + r.map((c, i) => (c.length > widths[i] ? c.slice(0, widths[i] - 1) + '…' : c.padEnd(widths[i]))).join(' | ') + ' |';
  const lines = [
    '',
    'containerd daemons × scenarios (reference = the daemon\'s own Go shim; ours = bin/containerd-shim-runc-v2)',
    fmt(rows[0]),
    '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|',
    ...rows.slice(1).map(fmt),
    ...[...laneTimes].map(([n, ms]) => `containerd ${n} lane: ${(ms / 1000).toFixed(1)} s`),
    ...notes.map((n) => `note: ${n}`),
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');
});
