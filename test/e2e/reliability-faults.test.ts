// SPDX-License-Identifier: Apache-2.0
// Reliability: faults, with the test playing containerd. The daemon SIGKILLed mid-flight (then the
// `delete` action cleans up and reports 137); runc missing or failing (a clear error, nothing
// half-created); the events endpoint unreachable for a while (queued, retried, bounded); a stdout
// reader that stops reading (back-pressure, bounded memory, no lost bytes); a full disk under a
// file:// log and under the bundle.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { spawnSync, execFileSync } from 'node:child_process';
import {
  ShimLab, figures, formatFigures, settle, within, sleep, crashLines, childrenOf, isAlive, wchan, exitEvents,
  EventsEndpoint, type LabShim, stressSize, uniqueId,
} from '../support/reliability.js';
import { runShim, mountedUnder } from '../support/shimproc.js';
import { DeleteResponse } from '../../src/gen/containerd/task/v2/shim.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import { Status } from '../../src/gen/containerd/types/task.js';
import { Code } from '../../src/ttrpc/index.js';
import { EventPublisher } from '../../src/events/publisher.js';
import type { Envelope } from '../../src/gen/containerd/services/ttrpc/events/v1/events.js';

let lab: ShimLab;

before(async () => { lab = await ShimLab.create('relflt'); });
after(async () => { await lab.cleanup(); });

function runcOptions(binaryName: string) {
  return { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from(Options.encode(Options.fromPartial({ binaryName })).finish()) };
}

/** What a Create failure may leave: mounts, runc state, a registered task, children, fds. */
async function assertNothingHalfCreated(shim: LabShim, id: string, bundle: string, base: ReturnType<typeof figures>) {
  assert.deepEqual(mountedUnder(path.join(bundle, 'rootfs')), [], `${id}: rootfs not left mounted`);
  assert.equal(fs.existsSync(path.join(lab.runcRoot(), id)), false, `${id}: no runc state`);
  await assert.rejects(shim.client.state(id), (e: { code: Code }) => e.code === Code.NotFound, `${id}: not registered`);
  const f = await settle(() => figures(shim.pid), (x) => x.fds === base.fds && x.children === base.children);
  assert.equal(f.fds, base.fds, `${id}: fds back to ${base.fds}`);
  assert.equal(f.children, base.children, `${id}: no child left`);
}

describe('reliability: faults', () => {
  test('the daemon SIGKILLed mid-flight: calls fail instead of hanging, `delete` cleans up and reports 137', { timeout: 60_000 }, async (t) => {
    const id = uniqueId('killed');
    const bundle = lab.bundle(id, { args: ['sleep', '100000'] });
    const shim = await lab.startShim(id, bundle);
    const { client } = shim;
    const { pid: initPid } = await client.create({ id, bundle, rootfs: lab.rootfs });
    await client.start(id);
    await client.exec({ id, execId: 'e1', spec: ShimLab.execSpec(['sleep', '100000']) });
    const { pid: execPid } = await client.start(id, 'e1');
    await client.exec({ id, execId: 'e2', spec: ShimLab.execSpec(['sleep', '100000']) });
    // In flight when the daemon dies: two Waits and an exec Start.
    const inflight = [client.wait(id), client.wait(id, 'e1'), client.start(id, 'e2')];
    process.kill(shim.pid, 'SIGKILL');
    const settled = await within(Promise.allSettled(inflight), 10_000, 'calls in flight when the daemon died');
    assert.ok(settled.every((s) => s.status === 'rejected'), 'every call in flight failed (connection closed)');
    assert.ok(isAlive(initPid), 'the container outlives its shim');

    const d = await runShim(['-namespace', lab.namespace, '-address', lab.grpcAddress, '-publish-binary', '/usr/bin/containerd',
      '-id', id, '-bundle', bundle, 'delete'], { cwd: bundle, env: lab.env });
    assert.equal(d.code, 0, d.stderr);
    const resp = DeleteResponse.decode(d.stdout);
    assert.deepEqual([resp.exitStatus, resp.pid], [137, initPid], 'delete reports 137 and the init pid');
    assert.ok((resp.exitedAt?.seconds ?? 0n) > 1_600_000_000n, 'with a time');
    assert.deepEqual(mountedUnder(path.join(bundle, 'rootfs')), [], 'rootfs unmounted');
    assert.equal(fs.existsSync(path.join(lab.runcRoot(), id)), false, 'runc state removed');
    const gone = await settle(() => [initPid, execPid].filter(isAlive), (l) => l.length === 0, 5000);
    assert.deepEqual(gone, [], 'the container and its exec were killed');
    assert.equal(fs.existsSync(shim.socket), false, "the dead daemon's socket file is removed");
    fs.rmSync(bundle, { recursive: true }); // containerd's last step: must not fail on a busy mount

    // A socket that a live daemon still serves (a pod's shared shim) is never removed by `delete`.
    const peer = uniqueId('alivepeer');
    const peerShim = await lab.startShim(peer, lab.bundle(peer, { args: ['true'] }));
    const mateId = uniqueId('groupmate');
    const mate = lab.bundle(mateId, { args: ['true'] });
    fs.writeFileSync(path.join(mate, 'runtime'), '');
    fs.writeFileSync(path.join(mate, 'address'), peerShim.address);
    const d2 = await runShim(['-namespace', lab.namespace, '-address', lab.grpcAddress, '-publish-binary', '/usr/bin/containerd',
      '-id', mateId, '-bundle', mate, 'delete'], { cwd: mate, env: lab.env });
    assert.equal(d2.code, 0, d2.stderr);
    assert.ok(fs.existsSync(peerShim.socket), 'the live shared socket is kept');
    assert.equal((await peerShim.client.connect(peer)).shimPid, peerShim.pid);
    await peerShim.client.shutdown(peer).catch(() => undefined);
    t.diagnostic(`SIGKILL mid-flight: ${settled.length} in-flight calls failed fast; delete -> exit 0, status ${resp.exitStatus}, pid ${resp.pid}; mounts 0, runc state 0, container processes 0, stale socket removed (a live shared one kept); stderr: ${JSON.stringify(d.stderr.trim())}`);
  });

  test('runc missing, or failing at create, start or exec: a clear error and nothing half-created', { timeout: 60_000 }, async (t) => {
    const home = uniqueId('rfhome');
    const hb = lab.bundle(home, { args: ['sleep', '100000'] });
    const shim = await lab.startShim(home, hb);
    const { client } = shim;
    await client.create({ id: home, bundle: hb, rootfs: lab.rootfs });
    await client.start(home);
    const base = await settle(() => figures(shim.pid), (f) => f.children === 1);
    const errors: string[] = [];

    // 1. binary_name pointing at nothing.
    const missing = path.join(lab.tmp, 'no', 'such', 'runc');
    let id = uniqueId('rfmissing');
    let bundle = lab.bundle(id, { args: ['true'] });
    const out = lab.fifo('rf.out');
    const outReader = lab.reader(out);
    await assert.rejects(client.create({ id, bundle, rootfs: lab.rootfs, stdout: out, options: runcOptions(missing) }), (e: Error) => {
      errors.push(e.message);
      return e.message.includes(missing) && /ENOENT|no such file/i.test(e.message);
    }, 'the error names the missing binary');
    await assertNothingHalfCreated(shim, id, bundle, base);

    // 2. A runc that fails with an error in its JSON log (as runc does).
    const failing = path.join(lab.tmp, 'failing-runc');
    fs.writeFileSync(failing, [
      '#!/bin/sh',
      'prev=; log=',
      'for a; do [ "$prev" = --log ] && log=$a; prev=$a; done',
      'echo \'{"level":"error","msg":"fake runc: cannot create container: disk on fire","time":"2024-01-01T00:00:00Z"}\' >> "$log"',
      'echo "fake runc failed" >&2',
      'exit 1',
      '',
    ].join('\n'), { mode: 0o755 });
    id = uniqueId('rffailing');
    bundle = lab.bundle(id, { args: ['true'] });
    await assert.rejects(client.create({ id, bundle, rootfs: lab.rootfs, stdout: out, options: runcOptions(failing) }), (e: Error) => {
      errors.push(e.message);
      return e.message === 'OCI runtime create failed: fake runc: cannot create container: disk on fire';
    }, "the error carries runc's own message");
    await assertNothingHalfCreated(shim, id, bundle, base);

    // 3. A runc that works except `start`, then except `exec`.
    const partial = path.join(lab.tmp, 'partial-runc');
    fs.writeFileSync(partial, [
      '#!/bin/sh',
      `for a; do case "$a" in start|exec) [ -e ${lab.tmp}/fail-$a ] && { echo "refusing to $a" >&2; exit 2; } ;; esac; done`,
      'exec /usr/sbin/runc "$@"',
      '',
    ].join('\n'), { mode: 0o755 });
    id = uniqueId('rfpartial');
    bundle = lab.bundle(id, { args: ['sleep', '100000'] });
    fs.writeFileSync(path.join(lab.tmp, 'fail-start'), '');
    await client.create({ id, bundle, rootfs: lab.rootfs, options: runcOptions(partial) });
    await assert.rejects(client.start(id), (e: Error) => { errors.push(e.message); return /OCI runtime start failed: .*(exit status 2|refusing)/.test(e.message); });
    assert.equal((await client.state(id)).status, Status.CREATED, 'still created after a failed start');
    fs.rmSync(path.join(lab.tmp, 'fail-start'));
    await client.start(id);
    fs.writeFileSync(path.join(lab.tmp, 'fail-exec'), '');
    await client.exec({ id, execId: 'x', spec: ShimLab.execSpec(['sleep', '100000']), stdout: out });
    await assert.rejects(client.start(id, 'x'), (e: Error) => { errors.push(e.message); return /OCI runtime exec failed: .*(exit status 2|refusing)/.test(e.message); });
    const w = await within(client.wait(id, 'x'), 5000, 'Wait of an exec whose start failed');
    assert.equal(w.exitStatus, 0);
    assert.equal(fs.existsSync(path.join(bundle, 'x.pid')), false, 'no pid file');
    await client.delete(id, 'x');
    await client.kill(id, 9);
    await client.wait(id);
    await client.delete(id);
    await assertNothingHalfCreated(shim, id, bundle, base);
    const end = figures(shim.pid);
    t.diagnostic(`runc faults: ${errors.length} clear errors: ${errors.map((e) => JSON.stringify(e)).join('; ')}`);
    t.diagnostic(`shim before: ${formatFigures(base)}`);
    t.diagnostic(`shim after:  ${formatFigures(end)}`);
    assert.deepEqual(crashLines(shim.log.text), []);
    outReader.close();
  });

  test('the events endpoint unreachable for a while: events are queued, retried and delivered once, in order', { timeout: 60_000 }, async (t) => {
    const id = uniqueId('evdown');
    const bundle = lab.bundle(id, { args: ['sh', '-c', 'sleep 1; exit 7'] });
    const shim = await lab.startShim(id, bundle);
    const { client } = shim;
    await lab.events.stop();
    const downAt = Date.now();
    await client.create({ id, bundle, rootfs: lab.rootfs });
    await client.start(id);
    await client.exec({ id, execId: 'e', spec: ShimLab.execSpec(['sh', '-c', 'exit 5']) });
    await client.start(id, 'e');
    assert.equal((await within(client.wait(id, 'e'), 10_000, 'Wait e')).exitStatus, 5);
    assert.equal((await within(client.wait(id), 10_000, 'Wait')).exitStatus, 7, 'the task runs on without containerd');
    await client.delete(id);
    await sleep(Math.max(0, 3000 - (Date.now() - downAt)));
    await lab.events.start();
    const mine = (envs: Envelope[]) => envs.filter((e) => e.namespace === lab.namespace && containerOf(e) === id);
    await lab.events.until((envs) => mine(envs).length >= 7, 20_000);
    // A Shutdown drains the publisher before the daemon exits: once it is gone, nothing of its
    // queue (no retry, no duplicate) is still to come.
    await client.shutdown(id).catch(() => undefined);
    await settle(() => isAlive(shim.pid), (a) => !a, 10_000);
    const topics = mine(lab.events.envelopes).map((e) => e.topic);
    assert.deepEqual(topics, ['/tasks/create', '/tasks/start', '/tasks/exec-added', '/tasks/exec-started', '/tasks/exit', '/tasks/exit', '/tasks/delete']);
    const exits = exitEvents(mine(lab.events.envelopes), lab.namespace).map((e) => [e.id, e.exitStatus]);
    assert.deepEqual(exits, [['e', 5], [id, 7]]);
    t.diagnostic(`events down ${Date.now() - downAt} ms: ${topics.length} events queued and delivered once, in order, after the endpoint came back`);
  });

  test('the event queue is bounded: with the endpoint down, the oldest events beyond the bound are dropped and counted', { timeout: 60_000 }, async (t) => {
    const ep = new EventsEndpoint(path.join(lab.tmp, 'bound.sock'));
    const pub = new EventPublisher(ep.path, 'bound');
    const N = 5000;
    for (let i = 0; i < N; i++) pub.publish(`/tasks/e${i}`, 'containerd.events.TaskOOM', Buffer.from([0x0a, 0x01, 0x78]));
    const pending = pub.pending;
    const dropped = pub.dropped;
    await ep.start();
    await ep.until((envs) => envs.length >= pending, 30_000);
    // close() resolves once every queued event is acknowledged, i.e. recorded by the endpoint.
    const drained = await pub.close(5000);
    const got = ep.envelopes.map((e) => e.topic);
    await ep.stop();
    t.diagnostic(`publisher bound: ${N} published while down, ${pending} queued, ${dropped} dropped (oldest), ${got.length} delivered once in order`);
    assert.equal(pending + dropped, N);
    assert.ok(pending >= 1024 && pending < N, `bounded queue (${pending})`);
    assert.equal(got.length, pending, 'every queued event delivered exactly once');
    // The first event was in flight (retried) all along; the oldest waiting ones were evicted.
    const expected = ['/tasks/e0', ...Array.from({ length: pending - 1 }, (_, k) => `/tasks/e${N - pending + 1 + k}`)];
    assert.deepEqual(got, expected, 'in order: the one in flight, then the newest');
    assert.ok(drained);
  });

  test('a stdout reader that stops reading: back-pressure holds the container, memory stays bounded, no byte is lost', { timeout: 120_000 }, async (t) => {
    const id = uniqueId('bp');
    const lines = stressSize(6_000_000, 12_000_000);
    const bundle = lab.bundle(id, { args: ['seq', '1', String(lines)] });
    const shim = await lab.startShim(id, bundle);
    const { client } = shim;
    const expected = spawnSync('sh', ['-c', `seq 1 ${lines} | md5sum; seq 1 ${lines} | wc -c`], { encoding: 'utf8' }).stdout.split('\n');
    const expectedMd5 = expected[0].split(' ')[0];
    const expectedLen = Number(expected[1]);
    const fifo = lab.fifo('bp.out');
    const fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const { Socket } = await import('node:net');
    const sock = new Socket({ fd, readable: true, writable: false });
    const hash = createHash('md5');
    let received = 0;
    sock.on('data', (c: Buffer) => { hash.update(c); received += c.length; });
    const before = figures(shim.pid);
    const { pid } = await client.create({ id, bundle, rootfs: lab.rootfs, stdout: fifo });
    await client.start(id);
    await settle(() => received, (n) => n > 256 * 1024, 10_000, 5);
    sock.pause();
    // The pipe and the fifo fill up, then the container blocks writing its stdout.
    await settle(() => wchan(pid), (w) => /pipe_write$/.test(w), 20_000);
    const stalledAt = received;
    const during = figures(shim.pid);
    const blocked = wchan(pid);
    await sleep(500);
    assert.equal(received, stalledAt, 'nothing arrives while the reader is stopped');
    assert.equal((await client.state(id)).status, Status.RUNNING, 'the container waits (it is not killed, its output not dropped)');
    assert.match(blocked, /pipe_write$/, 'the container is blocked writing its stdout pipe');
    sock.resume();
    assert.equal((await within(client.wait(id), 60_000, 'Wait')).exitStatus, 0);
    await settle(() => received, (n) => n >= expectedLen, 30_000);
    const md5 = hash.digest('hex');
    await client.delete(id);
    sock.destroy();
    const growth = during.rssKb - before.rssKb;
    t.diagnostic(`back-pressure: ${(expectedLen / 1048576).toFixed(1)} MiB of stdout; reader stopped after ${(stalledAt / 1048576).toFixed(2)} MiB; ` +
      `container state ${blocked}; shim rss ${(before.rssKb / 1024).toFixed(1)} -> ${(during.rssKb / 1024).toFixed(1)} MiB while stalled; ` +
      `${(received / 1048576).toFixed(1)} MiB received, md5 ${md5 === expectedMd5 ? 'matches' : 'DIFFERS'}`);
    assert.equal(received, expectedLen, 'every byte arrived');
    assert.equal(md5, expectedMd5, 'in order, unchanged');
    assert.ok(growth < 16 * 1024, `shim RSS grew ${growth} KiB while the reader was stopped (output is ${expectedLen} bytes)`);
    await client.shutdown(id).catch(() => undefined);
  });

  test('a full disk: under a file:// log the container runs on and the shim keeps serving; under the bundle, Create fails cleanly', { timeout: 60_000 }, async (t) => {
    const disk = path.join(lab.tmp, 'smalldisk');
    fs.mkdirSync(disk);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs', disk]);
    try {
      const home = uniqueId('fullhome');
      const hb = lab.bundle(home, { args: ['sleep', '100000'] });
      const shim = await lab.startShim(home, hb);
      const { client } = shim;
      await client.create({ id: home, bundle: hb, rootfs: lab.rootfs });
      await client.start(home);
      const base = await settle(() => figures(shim.pid), (f) => f.children === 1);
      // 1. stdout+stderr of an exec to a file on a 1 MiB tmpfs; it writes ~4.5 MiB.
      const logFile = path.join(disk, 'logs', 'x.log');
      await client.exec({ id: home, execId: 'x', stdout: `file://${logFile}`, stderr: `file://${logFile}`,
        spec: ShimLab.execSpec(['sh', '-c', 'seq 1 600000; seq 1 1000 >&2; exit 6']) });
      const t0 = Date.now();
      await client.start(home, 'x');
      assert.equal((await within(client.wait(home, 'x'), 30_000, 'Wait of the exec writing to a full disk')).exitStatus, 6);
      const waitMs = Date.now() - t0;
      const size = fs.statSync(logFile).size;
      assert.ok(size > 0 && size <= 1024 * 1024, `log file filled the disk (${size} bytes)`);
      const t1 = Date.now();
      await client.delete(home, 'x');
      const deleteMs = Date.now() - t1;
      fs.rmSync(logFile);
      assert.equal((await client.state(home)).status, Status.RUNNING, 'the shim serves on');
      // 2. The disk is full; a bundle on it: Create cannot even write options.json.
      const id = uniqueId('fullbundle');
      const bundle = path.join(disk, id);
      fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
      fs.copyFileSync(path.join(hb, 'config.json'), path.join(bundle, 'config.json'));
      spawnSync('dd', ['if=/dev/zero', `of=${path.join(disk, 'filler')}`, 'bs=64k'], { stdio: 'ignore' });
      lab.track(id);
      let msg = '';
      await assert.rejects(client.create({ id, bundle, rootfs: lab.rootfs }), (e: Error) => { msg = e.message; return /ENOSPC|no space/i.test(e.message); });
      await assertNothingHalfCreated(shim, id, bundle, base);
      const end = figures(shim.pid);
      t.diagnostic(`full disk: exec wrote ~4.5 MiB into a 1 MiB tmpfs -> ${size} bytes kept, exit 6 reported after ${waitMs} ms, Delete took ${deleteMs} ms; Create on a full bundle disk -> ${JSON.stringify(msg)}`);
      t.diagnostic(`shim before: ${formatFigures(base)}`);
      t.diagnostic(`shim after:  ${formatFigures(end)}`);
      assert.equal(end.fds, base.fds);
      assert.deepEqual(crashLines(shim.log.text), []);
      await client.kill(home, 9);
      await client.wait(home);
      await client.delete(home);
    } finally {
      spawnSync('umount', ['-l', disk]);
    }
  });
});

function containerOf(e: Envelope): string {
  // Every task event starts with field 1 = container_id.
  const v = Buffer.from(e.event?.value ?? []);
  if (v[0] !== 0x0a) return '';
  return v.subarray(2, 2 + v[1]).toString('utf8');
}

void childrenOf;
