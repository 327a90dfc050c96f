// SPDX-License-Identifier: Apache-2.0
// CRI end-to-end suite: a private containerd 1.6 with the CRI plugin on runs pods through our own
// CRI client (test/support/cri.ts), once with each shim as the runtime of the default runtime
// handler (`runc`, runtime_type io.containerd.runc.v2):
//
//   * ours: a temp dir holding a symlink `containerd-shim-runc-v2` → <repo>/bin/containerd-shim-runc-v2
//     is put first on containerd's PATH (containerd resolves io.containerd.runc.v2 to the binary
//     containerd-shim-runc-v2 on its PATH);
//   * reference: the same PATH without that dir, i.e. /usr/bin/containerd-shim-runc-v2.
//
// Every container of a pod carries the annotation io.kubernetes.cri.sandbox-id, so one shim daemon
// serves the sandbox and all its containers. The flow: RunPodSandbox (host network) → CreateContainer
// and StartContainer of several containers → ExecSync (stdout, stderr, exit code, timeout) →
// ContainerStats → exit codes and reasons (Completed, Error, OOMKilled) → StopContainer →
// RemoveContainer → StopPodSandbox → RemovePodSandbox, and the same for a pod on a CNI bridge
// network when Debian's containernetworking-plugins are installed. Then the results of both shims
// are compared.
//
// "One shim served the pod" is checked by socket ownership: exactly one process holds the listening
// socket at the sandbox's shim address (however it was started), it is the shim under test, and no
// other daemon was started for the sandbox or its containers.
//
// SHIM_UNDER_TEST=reference|ours runs one shim only (the comparison is then skipped);
// SHIM_TEST_VERBOSE=1 prints both shims' recorded results.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmdirSync, rmSync, statSync,
  symlinkSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  argValue, fullPath, leftovers, listProcesses, mountsUnder, NOTHING_LEFT, pidAlive, procEnviron, shimSocketPath, startContainerd, taskAddress, waitFor,
  waitForNoLeftovers, type Containerd, type Leftovers, type ProcInfo,
} from '../support/containerd.js';
import { DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF, ensureBusyboxImage, ensurePauseImage } from '../support/image.js';
import { OUR_SHIM, REFERENCE_SHIM, REPO_ROOT, shimsUnderTest, type ShimName } from '../support/shims.js';
import {
  ContainerState, CriClient, CriError, NamespaceMode, PodSandboxState, containerConfig, criRuntimeConfig, podSandboxConfig,
  type PodSandboxConfig,
} from '../support/cri.js';

const NS = 'k8s.io';
const TEST_TIMEOUT = 60_000;
const CNI_BIN_DIR = '/usr/lib/cni';
const BRIDGE_PLUGIN = join(CNI_BIN_DIR, 'bridge');

const shims = shimsUnderTest();
const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;

/** Observable results per shim and scenario, for the comparison at the end. */
const observed = new Map<ShimName, Map<string, unknown>>();
function record(shim: ShimName, scenario: string, value: unknown): void {
  if (!observed.has(shim)) observed.set(shim, new Map());
  observed.get(shim)!.set(scenario, value);
}

// ---------------------------------------------------------------------------------------------
// helpers

function readlinkOr(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '';
  }
}

/** Which implementation a process runs: the Go binary, or Node running this repo's build of the shim. */
function shimKind(p: ProcInfo): ShimName | 'other' {
  if (readlinkOr(`/proc/${p.pid}/exe`) === REFERENCE_SHIM) return 'reference';
  // A daemon shows the Go shim's command line with our binary's resolved path (src/shim/identity.ts).
  if (p.argv[0] === realpathSync(OUR_SHIM)) return 'ours';
  const dist = join(REPO_ROOT, 'dist') + '/';
  // dist/src/shim/main.js (tsc output) or dist/shim/main.js (bundled build); see bin/containerd-shim-runc-v2.
  if (p.argv.some((a) => a.startsWith(dist) && a.endsWith('/shim/main.js'))) return 'ours';
  return 'other';
}

/** Inodes of the listening unix sockets bound at `path` (this network namespace's /proc/net/unix). */
function listeningInodes(path: string): Set<string> {
  const res = new Set<string>();
  // Num RefCount Protocol Flags Type St Inode Path; Flags has __SO_ACCEPTCON (0x10000) when listening.
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[7] === path && (Number.parseInt(f[3], 16) & 0x10000) !== 0) res.add(f[6]);
  }
  return res;
}

interface SocketHolder extends ProcInfo {
  kind: ShimName | 'other';
  cwd: string;
}

/**
 * The processes that hold the listening socket at `path` open: the shim daemon(s) serving it,
 * however they were started (argv, a pre-booted standby that adopted it, ...).
 */
function socketHolders(path: string): SocketHolder[] {
  const inodes = listeningInodes(path);
  if (inodes.size === 0) return [];
  const links = new Set([...inodes].map((i) => `socket:[${i}]`));
  const res: SocketHolder[] = [];
  for (const p of listProcesses()) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p.pid}/fd`);
    } catch {
      continue;
    }
    if (fds.some((fd) => links.has(readlinkOr(`/proc/${p.pid}/fd/${fd}`)))) {
      res.push({ ...p, kind: shimKind(p), cwd: readlinkOr(`/proc/${p.pid}/cwd`) });
    }
  }
  return res;
}

/**
 * Processes of this containerd instance that look like shim daemons for any of `ids`: argv has
 * `-address <its socket>` and `-id <one of ids>`, without a trailing `start`/`delete` action
 * (those are short-lived invocations).
 */
function daemonsForIds(c: Containerd, ids: string[]): ProcInfo[] {
  return listProcesses()
    .filter((p) => argValue(p.argv, 'address') === c.address && ids.includes(argValue(p.argv, 'id') ?? ''))
    .filter((p) => !['start', 'delete'].includes(p.argv[p.argv.length - 1]));
}

/**
 * Shim processes left for this containerd: leftovers().shims (daemons found by argv, or by
 * TTRPC_ADDRESS plus a task bundle as cwd), and separately our shim's idle pre-booted standbys
 * (argv `-standby`, no task), which leftovers() does not count: they retire after an idle period.
 */
function shimsLeft(c: Containerd): { daemons: Leftovers['shims']; standbys: number[] } {
  const mark = `TTRPC_ADDRESS=${c.ttrpcAddress}`;
  const standbys = listProcesses()
    .filter((p) => p.argv.includes('-standby') && procEnviron(p.pid).includes(mark))
    .map((p) => p.pid);
  return { daemons: leftovers(c).shims, standbys };
}

function bundleDir(c: Containerd, id: string): string {
  return join(c.state, 'io.containerd.runtime.v2.task', NS, id);
}

/** cgroup dirs /sys/fs/cgroup/<hierarchy><parent> that exist. */
function cgroupDirs(parent: string): string[] {
  const base = '/sys/fs/cgroup';
  const res: string[] = [];
  let hierarchies: string[] = [];
  try {
    hierarchies = readdirSync(base);
  } catch { /* none */ }
  for (const h of hierarchies) {
    const p = join(base, h, parent);
    try {
      if (statSync(p).isDirectory()) res.push(p);
    } catch { /* absent */ }
  }
  return res;
}

function subdirs(p: string): string[] {
  try {
    return readdirSync(p, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => join(p, d.name));
  } catch {
    return [];
  }
}

/** Removes a pod cgroup parent (children first); rmdir fails harmlessly while busy. */
function removeCgroupParent(parent: string): void {
  for (const dir of cgroupDirs(parent)) {
    for (const child of subdirs(dir)) {
      try { rmdirSync(child); } catch { /* busy */ }
    }
    try { rmdirSync(dir); } catch { /* busy */ }
  }
}

function netnsEntries(): string[] {
  try {
    return readdirSync('/var/run/netns').filter((n) => n.startsWith('cni-'));
  } catch {
    return [];
  }
}

function describeLeftovers(l: unknown): string {
  return JSON.stringify(l, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

function assertClean(l: Leftovers, what: string): void {
  assert.deepEqual(l, { ...NOTHING_LEFT }, `${what} left things behind:\n${describeLeftovers(l)}`);
}

/** CRI log lines (`<time> <stream> <P|F> <text>`) as [stream, text] pairs. */
function criLog(path: string): Array<[string, string]> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter((l) => l !== '').map((l) => {
    const [, stream, , ...rest] = l.split(' ');
    return [stream, rest.join(' ')] as [string, string];
  });
}

// ---------------------------------------------------------------------------------------------

for (const shim of shims) {
  const label = shim.name === 'ours' ? 'TypeScript' : 'reference (Go)';
  describe(`CRI pods with the ${label} shim as runtime io.containerd.runc.v2`, () => {
    let c: Containerd;
    let cri: CriClient;
    let testDir: string;
    /** The path containerd resolves io.containerd.runc.v2 to (containerd-shim-runc-v2 on its PATH). */
    let shimBinary = REFERENCE_SHIM;
    const bridgeName = `crt${unique}`.slice(0, 15);
    let ipForwardBefore: string | undefined;
    const cgroupParents: string[] = [];
    /** Network namespaces (/var/run/netns/cni-*) our bridge pods got: removed in after() if a failure left them. */
    const podNetns: string[] = [];
    // A /24 unlikely to be in use here; the third octet varies per run.
    const subnetOctet = 100 + (process.pid % 100);
    const subnet = `10.231.${subnetOctet}.0/24`;

    /**
     * Runs a test body; on failure appends what containerd logged during the test (which includes
     * the shims' log output) to the error.
     */
    const withLog = (fn: () => Promise<void>) => async () => {
      let from = 0;
      try { from = statSync(c.logPath).size; } catch { /* none */ }
      try {
        await fn();
      } catch (e) {
        let log = '';
        try { log = readFileSync(c.logPath).subarray(from).toString('utf8'); } catch { /* none */ }
        if (log.length > 8000) log = '[...]\n' + log.slice(log.length - 8000);
        if (e instanceof Error && log) e.message += `\n--- containerd.log during this test ---\n${log}`;
        throw e;
      }
    };

    /**
     * The one process serving the pod: exactly one process holds the listening socket at the
     * sandbox's shim address, it is the shim under test, its cwd is the sandbox bundle, and no
     * other shim daemon was started for the sandbox or any of `containerIds`.
     */
    const servingShim = (sandboxId: string, containerIds: string[], what: string): SocketHolder => {
      const socket = shimSocketPath(c.address, NS, sandboxId);
      const holders = socketHolders(socket);
      assert.equal(holders.length, 1, `${what}: exactly one process serves ${socket}:\n${describeLeftovers(holders)}`);
      const h = holders[0];
      assert.equal(h.kind, shim.name, `${what}: the process serving the pod is the ${shim.name} shim:\n${describeLeftovers(h)}`);
      assert.equal(h.cwd, bundleDir(c, sandboxId), `${what}: the daemon's cwd is the sandbox bundle`);
      const others = daemonsForIds(c, [sandboxId, ...containerIds]).filter((p) => p.pid !== h.pid);
      assert.deepEqual(others, [], `${what}: no other shim daemon for the pod`);
      return h;
    };

    /** No shim daemon of this containerd is left (pre-booted standbys, if any, are reported, not failed). */
    const assertNoShimLeft = (t: { diagnostic(msg: string): void }, what: string) => {
      const { daemons, standbys } = shimsLeft(c);
      assert.deepEqual(daemons, [], `${what}: no shim daemon of this containerd is left`);
      if (standbys.length > 0) t.diagnostic(`${what}: ${standbys.length} idle standby shim process(es) remain (not counted): ${standbys.join(', ')}`);
      return standbys.length;
    };

    before(async () => {
      testDir = mkdtempSync('/tmp/crit-');
      const netd = join(testDir, 'net.d');
      mkdirSync(netd);
      mkdirSync(join(testDir, 'logs'));
      const pathPrepend: string[] = [];
      if (shim.name === 'ours') {
        const bin = join(testDir, 'shimbin');
        mkdirSync(bin);
        shimBinary = join(bin, 'containerd-shim-runc-v2');
        symlinkSync(OUR_SHIM, shimBinary);
        pathPrepend.push(bin);
      }
      if (existsSync(BRIDGE_PLUGIN)) {
        try { ipForwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(); } catch { /* none */ }
        // L2 bridge without gateway or masquerade: no iptables rules, no default route needed.
        writeFileSync(join(netd, '10-crit.conflist'), JSON.stringify({
          cniVersion: '0.4.0',
          name: `crit-${shim.name}`,
          plugins: [{
            type: 'bridge',
            bridge: bridgeName,
            isGateway: false,
            ipMasq: false,
            ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir: join(testDir, 'ipam') },
          }],
        }, null, 2));
      }
      c = await startContainerd({
        cri: true,
        pathPrepend,
        criSettings: `sandbox_image = ${JSON.stringify(PAUSE_IMAGE_REF)}`,
        extraConfig: criRuntimeConfig({ cniBinDir: CNI_BIN_DIR, cniConfDir: netd }),
      });
      await ensureBusyboxImage(c, [NS]);
      await ensurePauseImage(c, [NS]);
      cri = new CriClient(c.address);
      // The CRI plugin learns of imported images from containerd's image events.
      for (const ref of [DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF]) {
        const img = await waitFor(() => cri.imageStatus(ref), 15_000, 100);
        assert.ok(img, `the CRI plugin does not see ${ref}`);
      }
    }, { timeout: 120_000 });

    after(async () => {
      cri?.close();
      await c?.stop();
      for (const p of cgroupParents) removeCgroupParent(p);
      for (const n of podNetns) {
        if (existsSync(join('/var/run/netns', n))) {
          spawnSync('ip', ['netns', 'delete', n], { stdio: 'ignore', timeout: 10_000, env: { ...process.env, PATH: fullPath() } });
        }
      }
      if (existsSync(`/sys/class/net/${bridgeName}`)) {
        spawnSync('ip', ['link', 'del', bridgeName], { stdio: 'ignore', timeout: 10_000, env: { ...process.env, PATH: fullPath() } });
      }
      if (ipForwardBefore !== undefined) {
        try {
          if (readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() !== ipForwardBefore) {
            writeFileSync('/proc/sys/net/ipv4/ip_forward', ipForwardBefore);
          }
        } catch { /* leave it */ }
      }
      if (testDir) rmSync(testDir, { recursive: true, force: true });
    }, { timeout: 60_000 });

    it('the CRI plugin answers Version and Status', { timeout: TEST_TIMEOUT }, withLog(async () => {
      const v = await cri.version();
      assert.equal(v.runtimeName, 'containerd');
      assert.equal(v.runtimeApiVersion, 'v1');
      const st = await cri.status();
      const runtimeReady = st.status?.conditions.find((x) => x.type === 'RuntimeReady');
      assert.equal(runtimeReady?.status, true, `RuntimeReady: ${JSON.stringify(st.status)}`);
    }));

    it('a host-network pod: one shim serves the sandbox and its containers; exec, stats, exit reasons, stop and removal', { timeout: 90_000 }, (t) => withLog(async () => {
      const cgroupParent = `/crit-${unique}-${shim.name}-host`;
      cgroupParents.push(cgroupParent);
      const logDirectory = join(testDir, 'logs', 'host');
      mkdirSync(logDirectory, { recursive: true });
      const pod: PodSandboxConfig = podSandboxConfig({
        name: `host-${shim.name}`, uid: `uid-${unique}-${shim.name}-host`, namespace: 'crit', logDirectory, cgroupParent,
      });

      // --- RunPodSandbox
      const sandboxId = await cri.runPodSandbox(pod);
      const ps = await cri.podSandboxStatus(sandboxId);
      assert.equal(ps.status?.state, PodSandboxState.SANDBOX_READY);
      assert.equal(ps.status?.linux?.namespaces?.options?.network, NamespaceMode.NODE, 'host network namespace');

      const shimProc = servingShim(sandboxId, [], 'after RunPodSandbox');
      const socket = shimSocketPath(c.address, NS, sandboxId);
      const address = `unix://${socket}`;
      assert.equal(taskAddress(bundleDir(c, sandboxId)), address, 'sandbox bundle address');
      assert.ok(existsSync(socket), `shim socket ${socket}`);
      // containerd records which binary it resolved for io.containerd.runc.v2 (PATH lookup).
      assert.equal(readFileSync(join(bundleDir(c, sandboxId), 'shim-binary-path'), 'utf8'), shimBinary,
        'containerd ran the shim under test');

      // --- CreateContainer ×4, StartContainer
      const specs = {
        app: containerConfig({
          name: 'app', image: DEFAULT_IMAGE_REF,
          command: ['sh', '-c', 'trap "exit 0" TERM; echo started; echo warming >&2; while :; do sleep 3600 & wait $!; done'],
        }),
        done: containerConfig({ name: 'done', image: DEFAULT_IMAGE_REF, command: ['sh', '-c', 'echo bye; sleep 1; exit 0'] }),
        fail: containerConfig({ name: 'fail', image: DEFAULT_IMAGE_REF, command: ['sh', '-c', 'echo oops >&2; sleep 1; exit 3'] }),
        // The init (exec'd dd) allocates and touches 128 MiB in one buffer under a 32 MiB limit, a
        // second after start (the shim's OOM watch is set up after `runc start`).
        oom: containerConfig({
          name: 'oom', image: DEFAULT_IMAGE_REF, memoryLimitBytes: 32 * 1024 * 1024,
          command: ['sh', '-c', 'sleep 1; exec dd if=/dev/zero of=/dev/null bs=128M count=1'],
        }),
      };
      const ids: Record<keyof typeof specs, string> = { app: '', done: '', fail: '', oom: '' };
      for (const name of Object.keys(specs) as Array<keyof typeof specs>) {
        ids[name] = await cri.createContainer(sandboxId, specs[name], pod);
      }
      const addresses: Record<string, string> = {};
      for (const name of Object.keys(specs) as Array<keyof typeof specs>) {
        await cri.startContainer(ids[name]);
        // The task (bundle) exists from StartContainer on; read before short-lived ones exit.
        addresses[name] = taskAddress(bundleDir(c, ids[name])) ?? '';
      }
      for (const [name, a] of Object.entries(addresses)) {
        assert.equal(a, address, `container ${name} joined the sandbox's shim (bundle address file)`);
      }
      const shimProc1 = servingShim(sandboxId, Object.values(ids), 'with all containers started');
      assert.equal(shimProc1.pid, shimProc.pid, 'the same shim process serves the sandbox and the containers');

      const listed = await cri.listContainers({ podSandboxId: sandboxId });
      assert.deepEqual(listed.map((x) => x.id).sort(), Object.values(ids).sort(), 'ListContainers of the pod');
      const appListed = listed.find((x) => x.id === ids.app);
      assert.equal(appListed?.state, ContainerState.CONTAINER_RUNNING);
      assert.equal(appListed?.metadata?.name, 'app');

      // --- ExecSync: stdout, stderr, exit code
      const e1 = await cri.execSync(ids.app, ['sh', '-c', 'echo out; echo err >&2; exit 7'], 10);
      assert.equal(Buffer.from(e1.stdout).toString(), 'out\n');
      assert.equal(Buffer.from(e1.stderr).toString(), 'err\n');
      assert.equal(e1.exitCode, 7);
      const e2 = await cri.execSync(ids.app, ['echo', 'hello']);
      assert.equal(Buffer.from(e2.stdout).toString(), 'hello\n');
      assert.equal(Buffer.from(e2.stderr).toString(), '');
      assert.equal(e2.exitCode, 0);
      const big = await cri.execSync(ids.app, ['sh', '-c', 'seq 1 20000'], 10);
      const bigOut = Buffer.from(big.stdout).toString();
      assert.equal(bigOut.split('\n').length - 1, 20000, 'all of a larger output arrives');
      assert.equal(big.exitCode, 0);

      // --- ExecSync timeout: the exec is killed and the call fails after ~timeout
      const t0 = Date.now();
      let timeoutErr: CriError | undefined;
      try {
        await cri.execSync(ids.app, ['sleep', '30'], 1);
      } catch (e) {
        if (!(e instanceof CriError)) throw e;
        timeoutErr = e;
      }
      const timeoutMs = Date.now() - t0;
      assert.ok(timeoutErr, 'ExecSync with timeout 1 s of `sleep 30` must fail');
      assert.match(timeoutErr.details, /timeout 1s exceeded/);
      assert.ok(timeoutMs < 10_000, `ExecSync timeout took ${timeoutMs} ms`);
      const psOut = Buffer.from((await cri.execSync(ids.app, ['ps', '-o', 'args'], 10)).stdout).toString();
      assert.ok(!psOut.includes('sleep 30'), `the timed-out exec was killed; ps:\n${psOut}`);

      // --- ContainerStats / ListContainerStats
      const stats = await cri.containerStats(ids.app);
      assert.equal(stats?.attributes?.id, ids.app);
      assert.ok((stats?.cpu?.usageCoreNanoSeconds?.value ?? 0n) > 0n, `cpu usage: ${describeLeftovers(stats?.cpu)}`);
      assert.ok(stats?.memory?.workingSetBytes !== undefined, 'memory working set present');
      assert.ok((stats?.memory?.usageBytes?.value ?? 0n) > 0n, 'memory usage > 0');
      const listStats = await cri.listContainerStats({ podSandboxId: sandboxId });
      assert.ok(listStats.some((s) => s.attributes?.id === ids.app), 'ListContainerStats has the app container');

      // --- exit codes and reasons
      const exitedStatus = async (id: string, needReason: boolean) => waitFor(async () => {
        const s = (await cri.containerStatus(id)).status;
        return s && s.state === ContainerState.CONTAINER_EXITED && (!needReason || s.reason !== '') ? s : undefined;
      }, 20_000, 100);
      const doneSt = await exitedStatus(ids.done, true);
      const failSt = await exitedStatus(ids.fail, true);
      const oomSt = await exitedStatus(ids.oom, true);
      assert.deepEqual([doneSt?.exitCode, doneSt?.reason], [0, 'Completed'], 'done: exit 0, Completed');
      assert.deepEqual([failSt?.exitCode, failSt?.reason], [3, 'Error'], 'fail: exit 3, Error');
      assert.deepEqual([oomSt?.exitCode, oomSt?.reason], [137, 'OOMKilled'], 'oom: killed, OOMKilled');
      assert.ok((doneSt?.finishedAt ?? 0n) >= (doneSt?.startedAt ?? 0n) && (doneSt?.startedAt ?? 0n) > 0n, 'started/finished times');

      // Container logs went through the shim's IO into the CRI log files.
      const appLog = criLog(join(logDirectory, 'app.log'));
      assert.ok(appLog.some(([s, t]) => s === 'stdout' && t === 'started'), `app log: ${describeLeftovers(appLog)}`);
      assert.ok(appLog.some(([s, t]) => s === 'stderr' && t === 'warming'), `app log: ${describeLeftovers(appLog)}`);
      const failLog = criLog(join(logDirectory, 'fail.log'));
      assert.deepEqual(failLog, [['stderr', 'oops']], 'fail log');

      // containerd deleted the exited containers' tasks (Delete + Shutdown to the shared shim):
      // the daemon must still be there, serving the sandbox and the app.
      for (const name of ['done', 'fail', 'oom'] as const) {
        await waitFor(() => !existsSync(bundleDir(c, ids[name])), 10_000, 100);
        assert.equal(existsSync(bundleDir(c, ids[name])), false, `task of ${name} deleted after its exit`);
      }
      assert.ok(pidAlive(shimProc.pid), 'the shim survives the Shutdown after other tasks were deleted');
      assert.equal(servingShim(sandboxId, Object.values(ids), 'after the exited tasks were deleted').pid, shimProc.pid);
      const e3 = await cri.execSync(ids.app, ['echo', 'still'], 10);
      assert.equal(Buffer.from(e3.stdout).toString(), 'still\n', 'the app is still served after the others were deleted');

      // --- StopContainer (SIGTERM, trapped → exit 0)
      await cri.stopContainer(ids.app, 10);
      const appSt = await exitedStatus(ids.app, true);
      assert.deepEqual([appSt?.exitCode, appSt?.reason], [0, 'Completed'], 'app after StopContainer');
      assert.ok(pidAlive(shimProc.pid), 'the shim still serves the sandbox after StopContainer');

      // --- RemoveContainer ×4
      for (const id of Object.values(ids)) await cri.removeContainer(id);
      assert.deepEqual(await cri.listContainers({ podSandboxId: sandboxId }), [], 'no containers after RemoveContainer');
      assert.ok(pidAlive(shimProc.pid), 'the shim still serves the sandbox after RemoveContainer');
      const sandboxStill = await cri.podSandboxStatus(sandboxId);
      assert.equal(sandboxStill.status?.state, PodSandboxState.SANDBOX_READY);

      // --- StopPodSandbox: the last task is deleted, the daemon exits
      await cri.stopPodSandbox(sandboxId);
      const stopped = await cri.podSandboxStatus(sandboxId);
      assert.equal(stopped.status?.state, PodSandboxState.SANDBOX_NOTREADY);
      await waitFor(() => !pidAlive(shimProc.pid), 10_000, 50);
      assert.equal(pidAlive(shimProc.pid), false, 'the shim daemon exits once its last task is deleted');

      // --- RemovePodSandbox: nothing left
      await cri.removePodSandbox(sandboxId);
      assert.deepEqual((await cri.listPodSandbox()).map((p) => p.id), [], 'no sandboxes after RemovePodSandbox');
      const left = await waitForNoLeftovers(c, [sandboxId, ...Object.values(ids)].map((id) => ({ namespace: NS, id })), 10_000);
      assertClean(left, 'the host-network pod');
      assertNoShimLeft(t, 'after the host-network pod');
      assert.deepEqual(socketHolders(socket), [], 'nothing serves the pod socket');
      assert.deepEqual(mountsUnder(c.dir), [], 'no mounts under the containerd dir (rootfs, sandbox shm)');
      assert.equal(existsSync(socket), false, 'shim socket removed');
      const cgLeft = cgroupDirs(cgroupParent).flatMap(subdirs);
      assert.deepEqual(cgLeft, [], 'no container cgroups left under the pod parent');

      record(shim.name, 'host-pod', {
        sandboxState: ps.status?.state,
        network: ps.status?.linux?.namespaces?.options?.network,
        shimProcesses: 1,
        daemonCwdIsSandboxBundle: shimProc.cwd === bundleDir(c, sandboxId),
        sameShimForAll: Object.values(addresses).every((a) => a === address),
        exec: {
          e1: { stdout: Buffer.from(e1.stdout).toString(), stderr: Buffer.from(e1.stderr).toString(), exitCode: e1.exitCode },
          e2: { stdout: Buffer.from(e2.stdout).toString(), exitCode: e2.exitCode },
          bigLines: bigOut.split('\n').length - 1,
        },
        execTimeout: { code: timeoutErr.code, details: timeoutErr.details },
        stats: {
          cpu: (stats?.cpu?.usageCoreNanoSeconds?.value ?? 0n) > 0n,
          workingSet: stats?.memory?.workingSetBytes !== undefined,
          usage: (stats?.memory?.usageBytes?.value ?? 0n) > 0n,
        },
        exits: {
          done: [doneSt?.exitCode, doneSt?.reason],
          fail: [failSt?.exitCode, failSt?.reason],
          oom: [oomSt?.exitCode, oomSt?.reason],
          app: [appSt?.exitCode, appSt?.reason],
        },
        // stdout and stderr are separate pipes: their relative order in the log is not defined.
        logs: { app: appLog.filter(([, t]) => t === 'started' || t === 'warming').sort(), fail: failLog },
        left,
      });
    })());

    it('a pod on a CNI bridge network: its own network namespace and IP, one shim, nothing left',
      { timeout: TEST_TIMEOUT, skip: existsSync(BRIDGE_PLUGIN) ? false : `${BRIDGE_PLUGIN} is not installed (Debian package containernetworking-plugins)` },
      (t) => withLog(async () => {
        const cgroupParent = `/crit-${unique}-${shim.name}-br`;
        cgroupParents.push(cgroupParent);
        const logDirectory = join(testDir, 'logs', 'bridge');
        mkdirSync(logDirectory, { recursive: true });
        const netnsBefore = new Set(netnsEntries());
        const pod = podSandboxConfig({
          name: `br-${shim.name}`, uid: `uid-${unique}-${shim.name}-br`, namespace: 'crit', logDirectory, cgroupParent,
          hostNetwork: false, hostname: 'brpod',
        });
        const sandboxId = await cri.runPodSandbox(pod);
        const ps = await cri.podSandboxStatus(sandboxId);
        assert.equal(ps.status?.state, PodSandboxState.SANDBOX_READY);
        assert.equal(ps.status?.linux?.namespaces?.options?.network, NamespaceMode.POD);
        const ip = ps.status?.network?.ip ?? '';
        assert.ok(ip.startsWith(`10.231.${subnetOctet}.`), `pod IP ${ip} in ${subnet}`);
        const newNetns = netnsEntries().filter((n) => !netnsBefore.has(n));
        podNetns.push(...newNetns);
        assert.equal(newNetns.length, 1, `one new network namespace under /var/run/netns: ${newNetns.join(', ')}`);

        const cfg = containerConfig({
          name: 'web', image: DEFAULT_IMAGE_REF, hostNetwork: false,
          command: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'],
        });
        const id = await cri.createContainer(sandboxId, cfg, pod);
        await cri.startContainer(id);
        const shimProc = servingShim(sandboxId, [id], 'bridge pod running');
        assert.equal(taskAddress(bundleDir(c, id)), `unix://${shimSocketPath(c.address, NS, sandboxId)}`);

        const addr = await cri.execSync(id, ['ip', 'addr', 'show', 'dev', 'eth0'], 10);
        const addrOut = Buffer.from(addr.stdout).toString();
        assert.equal(addr.exitCode, 0, `ip addr: ${addrOut}${Buffer.from(addr.stderr).toString()}`);
        assert.ok(addrOut.includes(`inet ${ip}/24`), `eth0 has the pod IP:\n${addrOut}`);
        const host = await cri.execSync(id, ['hostname'], 10);
        assert.equal(Buffer.from(host.stdout).toString(), 'brpod\n');

        // StopPodSandbox stops the running container too; RemovePodSandbox removes it.
        await cri.stopPodSandbox(sandboxId);
        const cst = (await cri.containerStatus(id)).status;
        assert.equal(cst?.state, ContainerState.CONTAINER_EXITED);
        await waitFor(() => !pidAlive(shimProc.pid), 10_000, 50);
        assert.equal(pidAlive(shimProc.pid), false, 'the shim daemon exits after StopPodSandbox');
        await cri.removePodSandbox(sandboxId);
        assert.deepEqual(await cri.listContainers({ podSandboxId: sandboxId }), []);
        assert.deepEqual((await cri.listPodSandbox()).map((p) => p.id), []);
        const left = await waitForNoLeftovers(c, [sandboxId, id].map((x) => ({ namespace: NS, id: x })), 10_000);
        assertClean(left, 'the bridge pod');
        assertNoShimLeft(t, 'after the bridge pod');
        assert.deepEqual(mountsUnder(c.dir), [], 'no mounts under the containerd dir');
        assert.deepEqual(netnsEntries().filter((n) => !netnsBefore.has(n)), [], 'the pod network namespace is removed');
        assert.deepEqual(cgroupDirs(cgroupParent).flatMap(subdirs), [], 'no container cgroups left under the pod parent');

        record(shim.name, 'bridge-pod', {
          network: ps.status?.linux?.namespaces?.options?.network,
          ipInSubnet: true,
          shimProcesses: 1,
          eth0HasIp: true,
          hostname: Buffer.from(host.stdout).toString(),
          stoppedContainer: [cst?.state, cst?.exitCode, cst?.reason],
          left,
        });
      })());
  });
}

describe('the TypeScript shim behaves like the reference shim under CRI', () => {
  const both = shims.length === 2;
  for (const scenario of ['host-pod', 'bridge-pod']) {
    it(`${scenario}: same observable result with both shims`, {
      timeout: TEST_TIMEOUT,
      skip: !both ? 'only one shim under test (SHIM_UNDER_TEST)'
        : scenario === 'bridge-pod' && !existsSync(BRIDGE_PLUGIN) ? `${BRIDGE_PLUGIN} is not installed` : false,
    }, (t) => {
      const ref = observed.get('reference')?.get(scenario);
      if (process.env.SHIM_TEST_VERBOSE) {
        t.diagnostic(JSON.stringify({ ref, ours: observed.get('ours')?.get(scenario) }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
      }
      const ours = observed.get('ours')?.get(scenario);
      assert.ok(ref !== undefined, `no result recorded for the reference shim in "${scenario}"`);
      assert.ok(ours !== undefined, `no result recorded for our shim in "${scenario}" (its test failed)`);
      assert.deepEqual(ours, ref);
    });
  }
});
