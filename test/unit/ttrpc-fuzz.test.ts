// SPDX-License-Identifier: Apache-2.0
/**
 * Fuzz test for the ttrpc server: random and mutated frames must never crash it; every
 * Request-type frame (and every oversize header) must be answered by exactly one well-formed
 * Response on its stream id, and nothing else may be written.
 *
 * Most cases drive a ServerConnection in-process (server.attach + feed); a smaller number go
 * over a real unix socket. Env: TTRPC_FUZZ_SEED, TTRPC_FUZZ_CASES, TTRPC_FUZZ_SOCKET_CASES.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import {
  FrameReader,
  HEADER_SIZE,
  MAX_MESSAGE,
  MessageType,
  TtrpcClient,
  TtrpcServer,
  encodeRequestFrame,
  invoke,
  method,
  notFound,
  type ConnectionTransport,
  type FrameItem,
  type ServiceMethods,
  type ServerConnection,
} from "../../src/ttrpc/index.js";
import { Response } from "../../src/gen/ttrpc/request.js";
import { StateRequest, StateResponse } from "../../src/gen/containerd/task/v2/shim.js";
import { rng } from "../support/ttrpc-vectors.js";

const SEED = Number(process.env.TTRPC_FUZZ_SEED ?? 0xc0ffee) >>> 0;
const CASES = Number(process.env.TTRPC_FUZZ_CASES ?? 200_000);
const SOCKET_CASES = Number(process.env.TTRPC_FUZZ_SOCKET_CASES ?? 3_000);
const TIME_BUDGET_MS = 60_000;

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "ttrpc-fuzz-"));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));

const r = rng(SEED);
const int = (n: number): number => Math.floor(r() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
const u32 = (): number => int(0x100000000);

function randomBytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(256);
  return b;
}

// ---- server under test ----------------------------------------------------------------------

const SVC = "fuzz.v1.Fuzz";
type Empty = Record<string, never>;
const Empty = { encode: (_m: Empty) => ({ finish: () => new Uint8Array(0) }), decode: (_b: Uint8Array): Empty => ({}) };

function makeServer(errors: unknown[]): TtrpcServer {
  const server = new TtrpcServer({ onError: (e) => errors.push(e) });
  const methods: ServiceMethods = {
    Echo: method(StateRequest, StateResponse, async (req, ctx) =>
      StateResponse.fromPartial({ id: req.id, execId: req.execId, pid: ctx.streamId, bundle: [...ctx.metadata.keys()].join(",") }),
    ),
    Empty: method(StateRequest, Empty, async () => ({})),
    Throw: method(StateRequest, Empty, async (req) => {
      throw notFound(`container ${req.id}`);
    }),
    Async: method(StateRequest, StateResponse, async (req) => {
      await new Promise((res) => setImmediate(res));
      return StateResponse.fromPartial({ id: req.id });
    }),
    Signal: method(StateRequest, StateResponse, async (_req, ctx) =>
      StateResponse.fromPartial({ terminal: ctx.signal.aborted, pid: ctx.deadline === undefined ? 0 : 1 }),
    ),
    Nil: method(StateRequest, Empty, async () => null as unknown as Empty),
    Sync: { decode: (b: Uint8Array) => b.length, encode: (n: number) => StateResponse.encode(StateResponse.fromPartial({ pid: n })).finish(), handler: (n: number) => n },
  };
  server.register(SVC, methods);
  server.register("containerd.task.v2.Task", {
    State: method(StateRequest, StateResponse, async (req) => StateResponse.fromPartial({ id: req.id })),
  });
  return server;
}

// ---- case generation ------------------------------------------------------------------------

const GOOD_METHODS = ["Echo", "Empty", "Throw", "Async", "Signal", "Nil", "Sync"];
const BAD_SERVICES = ["nope.Svc", "", "constructor", "__proto__", SVC + "x"];
const BAD_METHODS = ["Nope", "", "toString", "hasOwnProperty", "State"];

function serviceAndMethod(): [string, string] {
  const k = r();
  if (k < 0.7) return [SVC, r() < 0.85 ? pick(GOOD_METHODS) : pick(BAD_METHODS)];
  if (k < 0.8) return ["containerd.task.v2.Task", r() < 0.8 ? "State" : pick(GOOD_METHODS)];
  return [pick(BAD_SERVICES), pick(GOOD_METHODS)];
}

interface Gen {
  nextId: number;
}

function validRequest(g: Gen): Buffer {
  let sid: number;
  const k = r();
  if (k < 0.8) {
    sid = g.nextId;
    g.nextId += 2 * (1 + int(3));
  } else if (k < 0.9) sid = int(20);
  else sid = u32();
  let payload: Uint8Array;
  const pk = r();
  if (pk < 0.6) payload = StateRequest.encode(StateRequest.fromPartial({ id: "c" + int(1000), execId: r() < 0.3 ? "e" : "" })).finish();
  else if (pk < 0.8) payload = randomBytes(int(40));
  else payload = new Uint8Array(0);
  const tk = r();
  const timeout = tk < 0.7 ? 0n : tk < 0.85 ? BigInt(1 + int(1e9)) : tk < 0.95 ? -BigInt(int(1e9)) : BigInt.asIntN(64, (BigInt(u32()) << 32n) | BigInt(u32()));
  const md: Array<[string, string]> = [];
  const mdN = r() < 0.5 ? 0 : int(4);
  for (let i = 0; i < mdN; i++) md.push([pick(["containerd-namespace-ttrpc", "X-Key", "", "k" + int(10)]), pick(["default", "", "v"])]);
  const [service, meth] = serviceAndMethod();
  return encodeRequestFrame(sid, service, meth, payload, timeout, md);
}

function setLength(f: Buffer): void {
  f.writeUInt32BE(f.length - HEADER_SIZE, 0);
}

function mutate(f: Buffer): Buffer {
  let b = Buffer.from(f);
  switch (int(10)) {
    case 0: {
      // bit flips anywhere
      const n = 1 + int(8);
      for (let i = 0; i < n && b.length > 0; i++) b[int(b.length)] ^= 1 << int(8);
      return b;
    }
    case 1: // truncation
      return b.subarray(0, int(b.length));
    case 2: {
      // length field changes
      const k = r();
      if (k < 0.25) b.writeUInt32BE(u32(), 0);
      else if (k < 0.5) b.writeUInt32BE(Math.max(0, b.length - HEADER_SIZE + int(21) - 10), 0);
      else if (k < 0.75) b.writeUInt32BE(MAX_MESSAGE + 1 + int(1000), 0);
      else b.writeUInt32BE(int(4), 0);
      return b;
    }
    case 3: // random stream id
      b.writeUInt32BE(pick([0, 2, 0xffffffff, 0xfffffffe, u32(), (u32() | 1) >>> 0]), 4);
      return b;
    case 4: // random type / flags
      b[8] = r() < 0.5 ? int(256) : pick([0, 2, 3, 4]);
      if (r() < 0.5) b[9] = int(256);
      return b;
    case 5: // pure garbage
      return randomBytes(int(64));
    case 6: {
      // envelope bit flips with the length fixed up: always parsed as a frame
      const n = 1 + int(6);
      for (let i = 0; i < n && b.length > HEADER_SIZE; i++) b[HEADER_SIZE + int(b.length - HEADER_SIZE)] ^= 1 << int(8);
      return b;
    }
    case 7: {
      // envelope truncated / extended, length fixed up
      if (r() < 0.5) b = Buffer.from(b.subarray(0, HEADER_SIZE + int(b.length - HEADER_SIZE + 1)));
      else b = Buffer.concat([b, randomBytes(1 + int(16))]);
      setLength(b);
      return b;
    }
    case 8: {
      // random bytes inserted into the envelope, length fixed up
      const at = HEADER_SIZE + int(b.length - HEADER_SIZE + 1);
      b = Buffer.concat([b.subarray(0, at), randomBytes(1 + int(8)), b.subarray(at)]);
      setLength(b);
      return b;
    }
    default: {
      // a header with a random (small) payload of random bytes
      const body = randomBytes(int(48));
      const h = Buffer.alloc(HEADER_SIZE);
      h.writeUInt32BE(body.length, 0);
      h.writeUInt32BE(r() < 0.5 ? u32() : 1 + 2 * int(50), 4);
      h[8] = r() < 0.7 ? MessageType.Request : int(256);
      return Buffer.concat([h, body]);
    }
  }
}

function makeCase(): Buffer {
  const g: Gen = { nextId: 1 };
  const n = 1 + (r() < 0.7 ? 0 : int(5));
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const f = validRequest(g);
    const k = r();
    if (k < 0.25) parts.push(f);
    else if (k < 0.3) parts.push(f, f); // re-used stream id
    else parts.push(mutate(f));
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/** Stream ids that must be answered: one per Request-type frame and per oversize header. */
function expectedIds(bytes: Buffer): number[] {
  const ids: number[] = [];
  new FrameReader().push(bytes, (it) => {
    if (it.kind === "oversize" || it.type === MessageType.Request) ids.push(it.streamId);
  });
  return ids;
}

function split(bytes: Buffer): Buffer[] {
  if (bytes.length < 2 || r() < 0.5) return [bytes];
  const out: Buffer[] = [];
  let off = 0;
  while (off < bytes.length) {
    const n = Math.min(bytes.length - off, 1 + int(r() < 0.3 ? 4 : 64));
    out.push(bytes.subarray(off, off + n));
    off += n;
  }
  return out;
}

/** Parses the server's output and checks it is only well-formed Responses; returns their ids. */
function checkOutput(out: Buffer, where: string): number[] {
  const ids: number[] = [];
  const reader = new FrameReader();
  reader.push(out, (it: FrameItem) => {
    assert.equal(it.kind, "frame", `${where}: oversize reply`);
    if (it.kind !== "frame") return;
    assert.equal(it.type, MessageType.Response, `${where}: reply type ${it.type}`);
    assert.equal(it.flags, 0, `${where}: reply flags`);
    let res: Response;
    try {
      res = Response.decode(it.payload);
    } catch (e) {
      assert.fail(`${where}: undecodable Response ${it.payload.toString("hex")}: ${String(e)}`);
    }
    assert.ok(res.status !== undefined, `${where}: status missing`);
    const { code, message } = res.status;
    assert.ok(Number.isInteger(code) && code >= 0 && code <= 16, `${where}: code ${code}`);
    if (code !== 0) {
      assert.equal(res.payload.length, 0, `${where}: payload on error`);
      assert.ok(message.length > 0, `${where}: empty error message`);
    } else {
      StateResponse.decode(res.payload); // all our success replies are StateResponse-compatible
    }
    ids.push(it.streamId);
  });
  assert.ok(reader.idle, `${where}: trailing partial frame in output`);
  return ids;
}

const sortNum = (a: number[]): number[] => a.sort((x, y) => x - y);

// ---- in-process fuzzing ---------------------------------------------------------------------

class CollectingTransport implements ConnectionTransport {
  chunks: Buffer[] = [];
  destroyed = false;
  write(data: Buffer): boolean {
    assert.ok(!this.destroyed, "write after destroy");
    this.chunks.push(data);
    return true;
  }
  pause(): void {}
  resume(): void {}
  end(): void {
    this.destroyed = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}

test(`fuzz: random and mutated frames (seed ${SEED})`, async (t) => {
  const t0 = Date.now();
  const errors: unknown[] = [];
  const server = makeServer(errors);
  const BATCH = 512;
  let cases = 0;
  let frames = 0;
  let replies = 0;
  const codes = new Map<number, number>();
  while (cases < CASES) {
    const batch: Array<{ bytes: Buffer; conn: ServerConnection; tr: CollectingTransport }> = [];
    const n = Math.min(BATCH, CASES - cases);
    for (let i = 0; i < n; i++) {
      const bytes = makeCase();
      const tr = new CollectingTransport();
      const conn = server.attach(tr);
      for (const part of split(bytes)) conn.feed(part); // must never throw
      batch.push({ bytes, conn, tr });
    }
    // Let async handlers finish (Async waits one setImmediate).
    await new Promise((res) => setImmediate(res));
    await new Promise((res) => setImmediate(res));
    for (const { bytes, conn, tr } of batch) {
      const where = `case ${cases} (${bytes.subarray(0, 64).toString("hex")})`;
      const want = expectedIds(bytes);
      const out = Buffer.concat(tr.chunks);
      const got = checkOutput(out, where);
      assert.deepEqual(sortNum(got), sortNum(want), `${where}: replies vs requests`);
      assert.equal(conn.inflight, 0, `${where}: handler still running`);
      new FrameReader().push(out, (it) => {
        if (it.kind === "frame") {
          const code = Response.decode(it.payload).status!.code;
          codes.set(code, (codes.get(code) ?? 0) + 1);
        }
      });
      frames += want.length;
      replies += got.length;
      conn.destroy();
      cases++;
    }
    if (Date.now() - t0 > TIME_BUDGET_MS) break;
  }
  const ms = Date.now() - t0;
  assert.equal(server.inflight, 0);
  assert.equal(server.connectionCount, 0);
  assert.deepEqual(errors, []);
  const summary = `in-process: ${cases} cases, ${frames} request/oversize frames, ${replies} replies in ${ms} ms (seed ${SEED}); codes ${JSON.stringify(Object.fromEntries([...codes].sort((a, b) => a[0] - b[0])))}`;
  t.diagnostic(summary);
  console.log(`# ${summary}`);
  assert.ok(cases >= Math.min(CASES, 100_000), `only ${cases} cases within the time budget`);
  assert.ok(ms <= TIME_BUDGET_MS);
});

// ---- fuzzing over a real unix socket ------------------------------------------------------------

test(`fuzz over a unix socket, then a fresh client still works (seed ${SEED})`, async (t) => {
  const t0 = Date.now();
  const errors: unknown[] = [];
  const server = makeServer(errors);
  const listener = net.createServer();
  const sock = path.join(TMP, "fuzz.sock");
  await new Promise<void>((res, rej) => listener.listen(sock, res).once("error", rej));
  server.serve(listener);
  // Don't keep the process alive if an assertion fails half-way.
  t.after(() => server.shutdown());

  let answered = 0;
  let abandoned = 0;
  async function runOne(idx: number): Promise<void> {
    const bytes = makeCase();
    const want = expectedIds(bytes);
    const mode = r(); // < 0.1: disconnect right after writing; < 0.55: destroy after replies; else half-close
    const s = net.createConnection(sock);
    const chunks: Buffer[] = [];
    let closed = false;
    let notify: (() => void) | undefined;
    const countFrames = (): number => {
      let n = 0;
      new FrameReader().push(Buffer.concat(chunks), () => n++);
      return n;
    };
    s.on("data", (c: Buffer) => {
      chunks.push(c);
      notify?.();
    });
    s.on("error", () => {});
    s.on("close", () => {
      closed = true;
      notify?.();
    });
    await new Promise<void>((res, rej) => {
      s.once("connect", res);
      s.once("error", rej);
    });
    for (const part of split(bytes)) s.write(part);
    if (mode < 0.1) {
      s.destroy();
      abandoned++;
      return;
    }
    const deadline = Date.now() + 10_000;
    while (countFrames() < want.length && !closed) {
      assert.ok(Date.now() < deadline, `socket case ${idx}: timed out (${countFrames()}/${want.length})`);
      await new Promise<void>((res) => {
        notify = res;
        setTimeout(res, 50);
      });
      notify = undefined;
    }
    assert.ok(!closed || countFrames() === want.length, `socket case ${idx}: server closed the connection early`);
    if (mode < 0.55) {
      s.destroy();
    } else {
      s.end();
      while (!closed) {
        assert.ok(Date.now() < deadline, `socket case ${idx}: server did not close after EOF`);
        await new Promise<void>((res) => {
          notify = res;
          setTimeout(res, 50);
        });
        notify = undefined;
      }
    }
    const got = checkOutput(Buffer.concat(chunks), `socket case ${idx}`);
    assert.deepEqual(sortNum(got), sortNum(want), `socket case ${idx}: replies vs requests`);
    answered++;
  }

  const CONCURRENCY = 16;
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < SOCKET_CASES) await runOne(next++);
    }),
  );

  const client = await TtrpcClient.connect(sock);
  const res = await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: "fresh" }), {
    metadata: { "containerd-namespace-ttrpc": "default" },
  });
  assert.equal(res.id, "fresh");
  assert.equal(res.pid, 1);
  const st = await invoke(client, "containerd.task.v2.Task", "State", StateRequest, StateResponse, StateRequest.fromPartial({ id: "c1" }));
  assert.equal(st.id, "c1");
  client.close();
  for (let i = 0; i < 200 && server.connectionCount > 0; i++) await new Promise((r2) => setTimeout(r2, 5));
  assert.equal(server.connectionCount, 0);
  assert.deepEqual(errors, []);
  await server.shutdown();
  const ms = Date.now() - t0;
  const summary = `unix socket: ${SOCKET_CASES} cases (${answered} fully checked, ${abandoned} abandoned mid-request) in ${ms} ms`;
  t.diagnostic(summary);
  console.log(`# ${summary}`);
  assert.ok(ms <= TIME_BUDGET_MS);
});
