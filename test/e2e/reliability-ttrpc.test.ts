// SPDX-License-Identifier: Apache-2.0
// Reliability: hostile input on the ttrpc socket of a real running daemon (started with `start`,
// serving a running container). Truncated and oversized frames, wrong message types, bad stream
// ids, unknown services and methods, garbage protobuf, huge metadata, many concurrent
// connections, clients that disconnect mid-request or never read: the shim answers with the
// right status or closes that connection, keeps serving everyone else, and never crashes. At the
// end its fds are back to the starting count and the container is still managed normally.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  ShimLab, RawConn, rawFrame, figures, formatFigures, settle, stressSize, within, crashLines, sleep, uniqueId, type LabShim, type ProcFigures,
} from '../support/reliability.js';
import * as T from '../../src/gen/containerd/task/v2/shim.js';
import { Code, MAX_MESSAGE, MessageType, encodeRequestFrame } from '../../src/ttrpc/index.js';
import { Status } from '../../src/gen/containerd/types/task.js';
import { rng } from '../support/ttrpc-vectors.js';

const TASK = 'containerd.task.v2.Task';
const ID = uniqueId('hostile');
let lab: ShimLab;
let shim: LabShim;
let base: ProcFigures;
const stats = { connections: 0, frames: 0, answered: 0, closedByServer: 0 };

function connectReq(): Uint8Array { return T.ConnectRequest.encode({ id: ID }).finish(); }
function stateReq(): Uint8Array { return T.StateRequest.encode({ id: ID, execId: '' }).finish(); }

/** What RawConn.response gave, for an assertion message: 'closed', 'timeout' or the status code. */
function outcome(r: Awaited<ReturnType<RawConn['response']>>): string {
  return typeof r === 'string' ? r : `a response (code ${r.status?.code ?? 0})`;
}

async function open(): Promise<RawConn> {
  stats.connections++;
  return RawConn.open(shim.socket);
}

/** The daemon still answers a well-formed call on a fresh connection. */
async function assertServing(what: string): Promise<void> {
  const c = await lab.connect(shim);
  try {
    const st = await within(c.state(ID), 5000, `State after ${what}`);
    assert.equal(st.status, Status.RUNNING, `serving after ${what}`);
  } finally {
    c.close();
  }
}

before(async () => {
  lab = await ShimLab.create('relttrpc');
  const bundle = lab.bundle(ID, { args: ['sleep', '100000'] });
  shim = await lab.startShim(ID, bundle);
  await shim.client.create({ id: ID, bundle, rootfs: lab.rootfs });
  await shim.client.start(ID);
  // Warm-up: one raw connection and one call, so lazily created handles are in the baseline.
  const pre = await settle(() => figures(shim.pid), (f) => f.children === 1);
  const c = await open();
  c.request(1, TASK, 'State', stateReq());
  await c.response(1);
  c.destroy();
  base = await settle(() => figures(shim.pid), (f) => f.fds === pre.fds);
});

after(async () => { await lab.cleanup(); });

describe('reliability: hostile ttrpc input to a running daemon', () => {
  test('truncated frames: a partial header or payload, then EOF or silence; others are served meanwhile', { timeout: 30_000 }, async () => {
    const a = await open();
    a.write(rawFrame(100, 1, MessageType.Request, 0).subarray(0, 5));
    a.destroy();
    const b = await open();
    b.write(Buffer.concat([rawFrame(100, 1, MessageType.Request, 0), Buffer.alloc(50, 0x0a)]));
    b.destroy();
    const c = await open();
    c.write(Buffer.concat([rawFrame(1000, 1, MessageType.Request, 0), Buffer.alloc(10)])); // and then nothing
    await assertServing('a connection stuck in a partial frame');
    assert.equal(c.closed, false, 'an idle partial frame does not close the connection by itself');
    c.destroy();
    stats.frames += 3;
    await assertServing('truncated frames');
  });

  test('oversized frames: ResourceExhausted on that stream, the payload is skipped, the connection stays usable', { timeout: 60_000 }, async () => {
    const c = await open();
    c.write(rawFrame(MAX_MESSAGE + 1, 1, MessageType.Request, 0));
    const r = await c.response(1);
    assert.ok(r !== 'closed' && r !== 'timeout', `answered: ${outcome(r)}`);
    assert.equal(r.status?.code, Code.ResourceExhausted);
    assert.match(r.status?.message ?? '', /exceed maximum message size/);
    c.write(Buffer.alloc(MAX_MESSAGE + 1, 0xff)); // the oversized payload, discarded
    c.request(3, TASK, 'State', stateReq());
    const ok = await c.response(3, 10_000);
    assert.ok(ok !== 'closed' && ok !== 'timeout', `the same connection answers afterwards: ${outcome(ok)}`);
    assert.equal(ok.status?.code ?? 0, Code.OK);
    c.destroy();
    const d = await open();
    d.write(rawFrame(0xffffffff, 1, MessageType.Request, 0));
    const r2 = await d.response(1);
    assert.ok(r2 !== 'closed' && r2 !== 'timeout');
    assert.equal(r2.status?.code, Code.ResourceExhausted);
    d.destroy();
    stats.frames += 4; stats.answered += 3;
    await assertServing('oversized frames');
  });

  test('wrong message types are ignored; bad stream ids get InvalidArgument; the connection keeps working', { timeout: 30_000 }, async () => {
    const c = await open();
    for (const type of [0, MessageType.Response, MessageType.Data, 0x7f, 0xff]) {
      c.write(rawFrame(3, 1, type, 0xff, Buffer.from([0x0a, 0x01, 0x41])));
    }
    c.request(1, TASK, 'Connect', connectReq());
    const r = await c.response(1);
    assert.ok(r !== 'closed' && r !== 'timeout');
    assert.equal(r.status?.code ?? 0, Code.OK);
    assert.equal(T.ConnectResponse.decode(r.payload).shimPid, shim.pid);
    c.request(4, TASK, 'Connect', connectReq());
    const even = await c.response(4);
    assert.ok(even !== 'closed' && even !== 'timeout');
    assert.equal(even.status?.code, Code.InvalidArgument, 'even stream id');
    c.request(7, TASK, 'State', stateReq());
    assert.equal(((await c.response(7)) as { status?: { code: number } }).status?.code ?? 0, Code.OK);
    c.request(5, TASK, 'State', stateReq());
    const reused = await c.response(5);
    assert.ok(reused !== 'closed' && reused !== 'timeout');
    assert.equal(reused.status?.code, Code.InvalidArgument, 'stream id going backwards');
    await sleep(200);
    assert.deepEqual(c.frames.map((f) => f.streamId), [1, 4, 7, 5], 'no answer to the non-request frames');
    c.destroy();
    stats.frames += 9; stats.answered += 4;
  });

  test('unknown services and methods: Unimplemented', { timeout: 30_000 }, async () => {
    const c = await open();
    const cases: [string, string, RegExp][] = [
      ['containerd.task.v2.Nope', 'State', /^service containerd\.task\.v2\.Nope/],
      [TASK, 'Nope', /^method Nope/],
      ['', '', /^service /],
      ['grpc.health.v1.Health', 'Check', /^service /],
      [TASK, 'state', /^method state/],
    ];
    let sid = 1;
    for (const [svc, m, re] of cases) {
      c.request(sid, svc, m, stateReq());
      const r = await c.response(sid);
      assert.ok(r !== 'closed' && r !== 'timeout', `${svc}/${m}`);
      assert.equal(r.status?.code, Code.Unimplemented, `${svc}/${m}`);
      assert.match(r.status?.message ?? '', re);
      sid += 2;
    }
    c.destroy();
    stats.frames += cases.length; stats.answered += cases.length;
  });

  test('garbage protobuf in the envelope and in every Task method payload: always an answer, never a crash', { timeout: 120_000 }, async (t) => {
    const rand = rng(0x5eed);
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
    const methods = ['State', 'Create', 'Start', 'Delete', 'Pids', 'Pause', 'Resume', 'Checkpoint', 'Kill', 'Exec',
      'ResizePty', 'CloseIO', 'Update', 'Wait', 'Stats', 'Connect', 'Shutdown'];
    const N = stressSize(400, 4000);
    const codes = new Map<number, number>();
    const d = await open();
    let sid = 1;
    const pending: number[] = [];
    for (let i = 0; i < N; i++) {
      if (i % 3 === 0) {
        const body = bytes(1 + Math.floor(rand() * 64));
        d.write(rawFrame(body.length, sid, MessageType.Request, 0, body));
      } else {
        // A valid envelope for a real method, with a garbage payload.
        const m = methods[Math.floor(rand() * methods.length)];
        d.request(sid, TASK, m, bytes(Math.floor(rand() * 48)));
      }
      pending.push(sid);
      sid += 2;
      if (pending.length >= 50) {
        for (const s of pending.splice(0)) {
          const r = await d.response(s, 10_000);
          if (r === 'timeout' || r === 'closed') continue;
          codes.set(r.status?.code ?? 0, (codes.get(r.status?.code ?? 0) ?? 0) + 1);
        }
      }
    }
    for (const s of pending) {
      const r = await d.response(s, 10_000);
      if (r !== 'timeout' && r !== 'closed') codes.set(r.status?.code ?? 0, (codes.get(r.status?.code ?? 0) ?? 0) + 1);
    }
    const answered = [...codes.values()].reduce((a, b) => a + b, 0);
    d.destroy();
    stats.frames += N; stats.answered += answered;
    t.diagnostic(`garbage: ${N} frames, ${answered} answered; status codes ${JSON.stringify(Object.fromEntries([...codes].sort((a, b) => a[0] - b[0])))}`);
    assert.ok(answered >= N * 0.95, `${answered} of ${N} garbage requests answered`);
    await assertServing('garbage protobuf');
  });

  test('huge metadata: a request carrying ~3.9 MiB of metadata, or 100,000 entries, is answered', { timeout: 60_000 }, async () => {
    const c = await open();
    const big: [string, string][] = Array.from({ length: 1000 }, (_, i) => [`k${i}`, 'v'.repeat(4000)]);
    c.request(1, TASK, 'State', stateReq(), big);
    const r = await c.response(1, 20_000);
    assert.ok(r !== 'closed' && r !== 'timeout', `answered: ${outcome(r)}`);
    assert.equal(r.status?.code ?? 0, Code.OK);
    const many: [string, string][] = Array.from({ length: 100_000 }, (_, i) => [String(i % 10), 'x']);
    c.request(3, TASK, 'State', stateReq(), many);
    const r2 = await c.response(3, 20_000);
    assert.ok(r2 !== 'closed' && r2 !== 'timeout', `answered: ${outcome(r2)}`);
    assert.equal(r2.status?.code ?? 0, Code.OK);
    c.destroy();
    stats.frames += 2; stats.answered += 2;
  });

  test('many concurrent connections are all served, then released', { timeout: 120_000 }, async (t) => {
    const N = stressSize(300, 1000);
    const conns = await Promise.all(Array.from({ length: N }, () => open()));
    const during = figures(shim.pid);
    conns.forEach((c, i) => c.request(1, TASK, i % 2 ? 'State' : 'Connect', i % 2 ? stateReq() : connectReq()));
    const rs = await Promise.all(conns.map((c) => c.response(1, 30_000)));
    const ok = rs.filter((r) => r !== 'closed' && r !== 'timeout' && ((r.status?.code ?? 0) as Code) === Code.OK).length;
    for (const c of conns) c.destroy();
    stats.frames += N; stats.answered += ok;
    const after = await settle(() => figures(shim.pid), (f) => f.fds === base.fds);
    t.diagnostic(`concurrent connections: ${N} open at once (shim fds ${during.fds}), ${ok} answered OK; fds after closing ${after.fds} (start ${base.fds})`);
    assert.equal(ok, N);
    assert.equal(after.fds, base.fds);
  });

  test('clients that disconnect mid-request, or never read their answers, do not disturb the daemon', { timeout: 120_000 }, async (t) => {
    // A Wait that will never be answered to its (gone) client.
    const a = await open();
    a.request(1, TASK, 'Wait', T.WaitRequest.encode({ id: ID, execId: '' }).finish());
    await sleep(100);
    a.destroy();
    // Half a request, then gone.
    const b = await open();
    const frame = encodeRequestFrame(1, TASK, 'State', stateReq());
    b.write(frame.subarray(0, frame.length - 3));
    b.destroy();
    // An exec Start whose client leaves while runc exec runs: the exec must still be consistent.
    const admin = await lab.connect(shim);
    await admin.exec({ id: ID, execId: 'orphaned', spec: ShimLab.execSpec(['sleep', '100000']) });
    const c = await open();
    c.request(1, TASK, 'Start', T.StartRequest.encode({ id: ID, execId: 'orphaned' }).finish(), [['containerd-namespace-ttrpc', lab.namespace]]);
    c.destroy();
    const running = await (async () => {
      for (let i = 0; i < 100; i++) {
        const s = await admin.state(ID, 'orphaned');
        if (s.status !== Status.CREATED) return s;
        await sleep(50);
      }
      return admin.state(ID, 'orphaned');
    })();
    assert.equal(running.status, Status.RUNNING, 'the exec started although its client left');
    await admin.kill(ID, 9, { execId: 'orphaned' });
    assert.equal((await within(admin.wait(ID, 'orphaned'), 10_000, 'Wait orphaned')).exitStatus, 137);
    await admin.delete(ID, 'orphaned');
    // A client that sends many requests and never reads: the daemon stops reading it (bounded).
    const pre = figures(shim.pid);
    const d = await open();
    d.sock.pause();
    const N = stressSize(20_000, 100_000);
    const frames: Buffer[] = [];
    for (let i = 0; i < N; i++) frames.push(encodeRequestFrame(2 * i + 1, TASK, 'State', stateReq()));
    d.write(Buffer.concat(frames));
    await sleep(1500);
    const stalled = figures(shim.pid);
    await assertServing('a client that never reads');
    d.destroy();
    admin.close();
    const end = await settle(() => figures(shim.pid), (x) => x.fds === base.fds && x.children === base.children);
    t.diagnostic(`disconnects: Wait, half a frame then close, exec Start left by its client (exec consistent); a non-reader sent ${N} requests: shim rss ${(pre.rssKb / 1024).toFixed(1)} -> ${(stalled.rssKb / 1024).toFixed(1)} MiB while stalled`);
    assert.ok(stalled.rssKb - pre.rssKb < 32 * 1024, `memory bounded while a client does not read (${stalled.rssKb - pre.rssKb} KiB)`);
    assert.equal(end.fds, base.fds);
    stats.frames += N + 4;
  });

  test('after all of it: same daemon, same fds, no child leaked, no crash logged, the container still managed', { timeout: 60_000 }, async (t) => {
    const end = await settle(() => figures(shim.pid), (f) => f.fds === base.fds && f.children === base.children && f.zombies === 0);
    t.diagnostic(`hostile input: ${stats.connections} connections, ${stats.frames} hostile or stress frames, ${stats.answered} counted answers`);
    t.diagnostic(`shim before: ${formatFigures(base)}`);
    t.diagnostic(`shim after:  ${formatFigures(end)}`);
    assert.equal((await shim.client.connect(ID)).shimPid, shim.pid, 'the same daemon, and the original connection, still serve');
    assert.equal(end.fds, base.fds);
    assert.equal(end.children, base.children);
    assert.equal(end.zombies, 0);
    assert.deepEqual(crashLines(shim.log.text), []);
    await shim.client.kill(ID, 9);
    assert.equal((await within(shim.client.wait(ID), 10_000, 'Wait')).exitStatus, 137);
    await shim.client.delete(ID);
    await shim.client.shutdown(ID).catch(() => undefined);
  });
});
