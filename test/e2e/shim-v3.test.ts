// SPDX-License-Identifier: Apache-2.0
// The containerd 2.x contract, with the test playing containerd (docs/containerd-2.md): the
// protobuf bootstrap of containerd 2.3 on `start`, task API v3, a pod's containers sent to one
// shim without `start` and deleted without Shutdown, `-info`, bad bootstrap input, and an exec
// started after its init exited while another exec's `runc exec` is slow (containerd's
// TestIssue10589): FailedPrecondition, with no RPC waiting on that runc.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { TaskClient, FakeEvents } from '../support/taskclient.js';
import { makeBusyboxRootfs, makeBundle } from '../support/rootfs.js';
import { mkfifo, FifoReader } from '../support/fifo.js';
import { runShim, waitGone, mountedUnder } from '../support/shimproc.js';
import { Status } from '../../src/gen/containerd/types/task.js';
import { DeleteResponse } from '../../src/gen/containerd/task/v2/shim.js';
import { BootstrapParams, BootstrapResult } from '../../src/gen/containerd/runtime/bootstrap/v1/bootstrap.js';
import { RuntimeInfo } from '../../src/gen/containerd/types/introspection.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import { Any } from '../../src/gen/google/protobuf/any.js';
import * as E from '../../src/gen/containerd/events/task.js';
import { Code } from '../../src/ttrpc/index.js';
import * as native from '../../src/sys/native.js';

const NS = `shimv3${process.pid}`;
const T_OPTS = { timeout: 90_000 };
const OPTIONS_URL = 'containerd.runc.v1.Options';
const PROCESS_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';

describe('containerd 2.x contract, the test playing containerd', () => {
  let tmp: string;
  let rootfsSrc: string;
  let events: FakeEvents;
  let env: NodeJS.ProcessEnv;
  const grpcAddress = () => path.join(tmp, 'containerd.sock');
  const rootfs = () => [{ type: 'bind', source: rootfsSrc, target: '', options: ['rbind', 'ro'] }];
  const shimArgs = (id: string, action: string, extra: string[] = []) =>
    ['-namespace', NS, '-address', grpcAddress(), '-publish-binary', '/usr/bin/containerd', '-id', id, ...extra, action];

  before(async () => {
    tmp = fs.mkdtempSync('/tmp/v3-');
    rootfsSrc = makeBusyboxRootfs(path.join(tmp, 'rootfs-src'));
    events = new FakeEvents(path.join(tmp, 'ttrpc.sock'));
    await events.listen();
    // No standby pool: this suite is about the contract, and must leave no process behind.
    env = { ...process.env, TTRPC_ADDRESS: events.path, SHIM_STANDBY: '0' };
  });

  after(async () => {
    await events.close();
    for (const m of mountedUnder(tmp).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(`/run/containerd/runc/${NS}`, { recursive: true, force: true });
  });

  function bundleFor(id: string, args: string[]) {
    const bundle = makeBundle(path.join(tmp, NS, id), { args });
    const log = new FifoReader(mkfifo(path.join(bundle, 'log')));
    return { bundle, log };
  }

  /** BootstrapParams as containerd 2.3 writes them (pkg/shim/util.go, v2.3.4). */
  function bootstrap(id: string, o: { socketDir?: string; options?: Partial<Options>; logLevel?: number } = {}): Buffer {
    return Buffer.from(BootstrapParams.encode(BootstrapParams.fromPartial({
      instanceId: id, namespace: NS, logLevel: o.logLevel ?? 0, containerdVersion: 'v2.3.4',
      containerdTtrpcAddress: events.path, containerdGrpcAddress: grpcAddress(), containerdBinary: '/usr/bin/containerd',
      extensions: o.options ? [{ value: { typeUrl: OPTIONS_URL, value: Options.encode(Options.fromPartial(o.options)).finish() } }] : [],
      socketDir: o.socketDir,
    })).finish());
  }

  const execSpec = (args: string[]) => ({ typeUrl: PROCESS_URL, value: Buffer.from(JSON.stringify({ args, cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } })) });

  test('BootstrapParams in, BootstrapResult v3 out; task v3; a second container joins the socket with no start and leaves with no Shutdown', T_OPTS, async () => {
    const socketDir = path.join(tmp, 's');
    const a = bundleFor('pod-a', ['sleep', '1000']);
    const b = bundleFor('pod-b', ['sh', '-c', 'echo from-b; exit 4']);
    const r = await runShim(shimArgs('pod-a', 'start'), { cwd: a.bundle, env, input: bootstrap('pod-a', { socketDir, logLevel: -4 }) });
    assert.equal(r.stderr, '', 'nothing on stderr');
    assert.equal(r.code, 0);
    const result = BootstrapResult.decode(r.stdout);
    assert.equal(result.version, 3);
    assert.equal(result.protocol, 'ttrpc');
    assert.match(result.address, new RegExp(`^unix://${socketDir}/[0-9a-f]{64}$`));
    assert.ok(fs.statSync(result.address.slice('unix://'.length)).isSocket(), 'socket in the socket dir containerd chose');
    assert.equal((fs.statSync(socketDir).mode & 0o777), 0o700);

    const client = await TaskClient.connect(result.address, NS, 3);
    const out = new FifoReader(mkfifo(path.join(tmp, 'pod-b-out')));
    try {
      const { shimPid } = await client.connect('pod-a');
      assert.ok(fs.readFileSync(`/proc/${shimPid}/cmdline`, 'utf8').split('\0').includes('-debug'), 'log level debug reached the daemon');
      await client.create({ id: 'pod-a', bundle: a.bundle, rootfs: rootfs() });
      await client.start('pod-a');
      // containerd 2.x with a version-3 shim: the next container of the pod is created on the
      // same socket, in its own bundle, with no `start` run for it.
      const created = await client.create({ id: 'pod-b', bundle: b.bundle, rootfs: rootfs(), stdout: path.join(tmp, 'pod-b-out') });
      await client.start('pod-b');
      assert.equal((await client.wait('pod-b')).exitStatus, 4);
      assert.equal(await out.until((t) => t.includes('from-b\n')), 'from-b\n');
      assert.equal((await client.delete('pod-b')).exitStatus, 4);
      // No Shutdown comes for it, and one that does is a no-op while pod-a remains.
      await client.shutdown('pod-b');
      assert.equal((await client.state('pod-a')).status, Status.RUNNING);
      // The v2 service stays available on the same socket.
      const v2 = await TaskClient.connect(result.address, NS, 2);
      assert.equal((await v2.state('pod-a')).status, Status.RUNNING);
      v2.close();
      // After a daemon restart containerd runs `delete` with that container's bundle and id.
      const d = await runShim(shimArgs('pod-b', 'delete', ['-bundle', b.bundle]), { cwd: b.bundle, env });
      assert.equal(d.code, 0, d.stderr);
      assert.equal(DeleteResponse.decode(d.stdout).pid, created.pid);
      assert.ok(fs.existsSync(result.address.slice('unix://'.length)), 'the live pod shim keeps its socket');

      await client.kill('pod-a', 9);
      assert.equal((await client.wait('pod-a')).exitStatus, 137);
      await client.delete('pod-a');
      await client.shutdown('pod-a');
      assert.ok(await waitGone(shimPid), 'daemon exits after the last container');
      assert.equal(fs.existsSync(result.address.slice('unix://'.length)), false, 'socket removed');
      await events.until((envs) => envs.filter((e) => e.namespace === NS && e.topic === '/tasks/delete').length >= 2);
      const byId = (id: string) => events.envelopes.filter((e) => e.namespace === NS && containerOf(e) === id).map((e) => e.topic);
      assert.deepEqual(byId('pod-b'), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
      assert.deepEqual(byId('pod-a'), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    } finally {
      client.close();
      out.close(); a.log.close(); b.log.close();
    }
  });

  test('an exec started after its init exited is FailedPrecondition, while another exec\'s runc exec is stuck (TestIssue10589)', T_OPTS, async () => {
    const id = 'issue10589';
    const { bundle, log } = bundleFor(id, ['sleep', '1000']);
    // A runc whose first `exec` waits until the test lets it go.
    const gate = path.join(tmp, 'gate');
    fs.mkdirSync(gate);
    const slow = path.join(gate, 'runc');
    const real = execFileSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim();
    fs.writeFileSync(slow, [
      '#!/bin/sh',
      `for a in "$@"; do if [ "$a" = exec ] && [ ! -e ${gate}/entered ]; then : > ${gate}/entered;`,
      `  while [ ! -e ${gate}/release ]; do sleep 0.05; done; break; fi; done`,
      `exec ${real} "$@"`, ''].join('\n'), { mode: 0o755 });
    const r = await runShim(shimArgs(id, 'start'), { cwd: bundle, env, input: bootstrap(id) });
    assert.equal(r.code, 0, r.stderr);
    const address = BootstrapResult.decode(r.stdout).address;
    const client = await TaskClient.connect(address, NS, 3);
    try {
      const { shimPid } = await client.connect(id);
      const options = { typeUrl: OPTIONS_URL, value: Options.encode(Options.fromPartial({ binaryName: slow })).finish() };
      const { pid } = await client.create({ id, bundle, rootfs: rootfs(), options });
      await client.start(id);
      await client.exec({ id, execId: 'slow', spec: execSpec(['true']) });
      const slowStart = client.start(id, 'slow').then(() => 'started', (e: { code: number }) => `failed ${e.code}`);
      await waitFile(path.join(gate, 'entered'));
      // The init dies while `runc exec` is stuck.
      await client.kill(id, 9);
      assert.ok(await waitGone(pid), 'init reaped');
      // Nothing waits on the stuck runc: State answers, and a new exec's Start is refused.
      const t0 = Date.now();
      await client.state(id);
      assert.ok(Date.now() - t0 < 1000, 'State answered at once');
      await client.exec({ id, execId: 'late', spec: execSpec(['true']) });
      let refused: { code: Code; message: string } | undefined;
      for (const deadline = Date.now() + 5000; !refused && Date.now() < deadline;) {
        // Until the reaper's record reached the service the exec may still be let through
        // (it then fails in runc); it must never wait on the stuck runc.
        const res = await Promise.race([
          client.start(id, 'late').then(() => undefined, (e: { code: Code; message: string }) => e),
          new Promise<'hung'>((res) => setTimeout(() => res('hung'), 3000).unref()),
        ]);
        if (res === 'hung') assert.fail('Start of an exec waited on another exec\'s runc');
        if (res && res.code === Code.FailedPrecondition) refused = res;
      }
      assert.equal(refused?.code, Code.FailedPrecondition);
      assert.equal(refused?.message, `container ${id} init process is not running: failed precondition`);
      // The init's exit is published only once the stuck exec start is over.
      assert.ok(!events.envelopes.some((e) => e.namespace === NS && e.topic === '/tasks/exit' && containerOf(e) === id));
      fs.writeFileSync(path.join(gate, 'release'), '');
      await slowStart;
      assert.equal((await client.wait(id)).exitStatus, 137);
      await events.until((envs) => envs.some((e) => e.namespace === NS && e.topic === '/tasks/exit' && containerOf(e) === id));
      await client.delete(id, 'late');
      await client.delete(id);
      await client.shutdown(id);
      assert.ok(await waitGone(shimPid), 'daemon exits');
    } finally {
      client.close();
      log.close();
    }
  });

  test('bad bootstrap input: params for another shim, an oversized stdin, a socket dir too long or relative', T_OPTS, async () => {
    // Params for another id: not ours, so the legacy answer (a plain address, default dir).
    const a = bundleFor('bad-a', ['true']);
    let r = await runShim(shimArgs('bad-a', 'start'), { cwd: a.bundle, env, input: bootstrap('someone-else', { socketDir: path.join(tmp, 'never') }) });
    assert.equal(r.code, 0, r.stderr);
    const plain = r.stdout.toString('utf8');
    assert.match(plain, /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    assert.equal(fs.existsSync(path.join(tmp, 'never')), false);
    await shutdownShim(plain, 'bad-a');

    // More than containerd's 10 MiB cap: read no further, taken as no options.
    const b = bundleFor('bad-b', ['true']);
    r = await runShim(shimArgs('bad-b', 'start'), { cwd: b.bundle, env, input: Buffer.alloc((10 << 20) + 4096, 0x0a) });
    assert.equal(r.code, 0, r.stderr);
    await shutdownShim(r.stdout.toString('utf8'), 'bad-b');

    // A socket path over the kernel's limit, or a relative dir: a clear error, nothing left.
    const c = bundleFor('bad-c', ['true']);
    const long = path.join(tmp, 'x'.repeat(60));
    r = await runShim(shimArgs('bad-c', 'start'), { cwd: c.bundle, env, input: bootstrap('bad-c', { socketDir: long }) });
    assert.equal(r.code, 1);
    assert.equal(r.stdout.length, 0);
    assert.match(r.stderr, /unix socket path too long \(> 106\)/);
    assert.equal(fs.existsSync(long), false);
    r = await runShim(shimArgs('bad-c', 'start'), { cwd: c.bundle, env, input: bootstrap('bad-c', { socketDir: 'rel/s' }) });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not an absolute path/);
    assert.equal(ourDaemons().length, 0, 'no daemon left');
    a.log.close(); b.log.close(); c.log.close();
  });

  test('-info prints RuntimeInfo with the runtime\'s features; bad options fail with a message and status 1', T_OPTS, async () => {
    let r = await runShim(['-info'], { cwd: '/', env });
    assert.equal(r.code, 0, r.stderr);
    const info = RuntimeInfo.decode(r.stdout);
    assert.equal(info.name, 'io.containerd.runc.v2');
    assert.equal(info.features?.typeUrl, 'types.containerd.io/opencontainers/runtime-spec/1/features/Features');
    const runcFeatures = JSON.parse(execFileSync('runc', ['features'], { encoding: 'utf8' })) as unknown;
    assert.equal(Buffer.from(info.features.value).toString(), JSON.stringify(runcFeatures));
    const opts = Any.encode({ typeUrl: OPTIONS_URL, value: Options.encode(Options.fromPartial({ binaryName: 'no-runc' })).finish() }).finish();
    r = await runShim(['-info'], { cwd: '/', env, input: Buffer.from(opts) });
    assert.equal(r.code, 1);
    assert.equal(r.stdout.length, 0);
    assert.equal(r.stderr, 'io.containerd.runc.v2: failed to look up the path of "no-runc": exec: "no-runc": executable file not found in $PATH');
  });

  test('a runtime binary not on PATH: Create fails with os/exec\'s wording, nothing left mounted', T_OPTS, async () => {
    const id = 'no-runc';
    const { bundle, log } = bundleFor(id, ['true']);
    const r = await runShim(shimArgs(id, 'start'), { cwd: bundle, env });
    assert.equal(r.code, 0, r.stderr);
    const client = await TaskClient.connect(r.stdout.toString('utf8'), NS);
    try {
      const options = { typeUrl: OPTIONS_URL, value: Options.encode(Options.fromPartial({ binaryName: 'no-runc' })).finish() };
      await assert.rejects(client.create({ id, bundle, rootfs: rootfs(), options }), (e: { message: string }) => {
        assert.equal(e.message, `OCI runtime create failed: unable to retrieve OCI runtime error (open ${bundle}/log.json: no such file or directory): exec: "no-runc": executable file not found in $PATH`);
        return true;
      });
      assert.deepEqual(mountedUnder(path.join(bundle, 'rootfs')), []);
    } finally {
      client.close();
      log.close();
    }
    await shutdownShim(r.stdout.toString('utf8'), id);
  });

  test('SCHED_CORE: the daemon gets a core-scheduling cookie, or start fails as the Go shim does where the kernel has none', T_OPTS, async () => {
    // Does this kernel do core scheduling? Ask for a cookie for a throwaway child.
    const probe = spawn('sleep', ['30']);
    let supported = true;
    try {
      native.prctl(62 /* PR_SCHED_CORE */, 1 /* CREATE */, probe.pid, 1 /* PIDTYPE_TGID */, 0);
    } catch {
      supported = false;
    } finally {
      probe.kill('SIGKILL');
    }
    for (const standby of ['1', '0']) {
      const id = `sched-core-${standby}`;
      const { bundle, log } = bundleFor(id, ['true']);
      const r = await runShim(shimArgs(id, 'start'), { cwd: bundle, env: { ...env, SCHED_CORE: '1', SHIM_STANDBY: standby } });
      try {
        if (supported) {
          assert.equal(r.code, 0, r.stderr);
          await shutdownShim(r.stdout.toString('utf8'), id);
        } else {
          assert.equal(r.code, 1);
          assert.equal(r.stderr, 'io.containerd.runc.v2: enable sched core support: invalid argument');
          assert.equal(r.stdout.length, 0);
          assert.equal(ourDaemons().length, 0, 'no daemon left');
        }
      } finally {
        log.close();
      }
    }
  });

  async function shutdownShim(address: string, id: string): Promise<void> {
    const client = await TaskClient.connect(address, NS);
    try {
      const { shimPid } = await client.connect(id);
      await client.shutdown(id);
      assert.ok(await waitGone(shimPid));
    } finally {
      client.close();
    }
  }

  /** Shim daemons serving this suite's namespace. */
  function ourDaemons(): number[] {
    return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
      try {
        // Daemons of this namespace; standbys name it too (their pool's), but serve no container.
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return argv.includes(NS) && !argv.includes('-standby') && pid !== process.pid;
      } catch {
        return false;
      }
    });
  }
});

function containerOf(e: { event?: { typeUrl: string; value: Uint8Array } }): string | undefined {
  const v = e.event?.value;
  if (!v) return undefined;
  // Every task event carries container_id as field 1.
  return E.TaskCreate.decode(v).containerId;
}

async function waitFile(p: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(p)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${p}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
