// SPDX-License-Identifier: Apache-2.0
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import {
  Code,
  FrameReader,
  HEADER_SIZE,
  MAX_MESSAGE,
  MessageType,
  TtrpcClient,
  TtrpcError,
  TtrpcServer,
  alreadyExists,
  encodeFrame,
  encodeRequestFrame,
  encodeResponseFrame,
  encodeErrorFrame,
  failedPrecondition,
  fromStatus,
  invalidArgument,
  invoke,
  isClosedError,
  method,
  notFound,
  notImplemented,
  toStatus,
  unavailable,
  type CallContext,
  type ConnectionTransport,
  type MethodDef,
  type ServiceMethods,
  type ServerOptions,
  type FrameItem,
} from "../../src/ttrpc/index.js";
import { Response } from "../../src/gen/ttrpc/request.js";
import { StateRequest, StateResponse } from "../../src/gen/containerd/task/v2/shim.js";
import { forwardVectorPayload } from "../support/ttrpc-vectors.js";

// ---- helpers ------------------------------------------------------------------------------

const SVC = "test.v1.Test";
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "ttrpc-test-"));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));
let sockSeq = 0;
const sockPath = (): string => path.join(TMP, `s${sockSeq++}.sock`);

type Empty = Record<string, never>;
const Empty = {
  encode: (_m: Empty) => ({ finish: () => new Uint8Array(0) }),
  decode: (_b: Uint8Array): Empty => ({}),
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it holds; throws after `timeoutMs` naming `what`. */
async function until(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

function waitAbort(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((r) => signal.addEventListener("abort", () => r(signal.reason), { once: true }));
}

async function startServer(
  methods: ServiceMethods,
  opts: ServerOptions = {},
): Promise<{ server: TtrpcServer; listener: net.Server; path: string; errors: unknown[] }> {
  const errors: unknown[] = [];
  const server = new TtrpcServer({ onError: (e) => errors.push(e), ...opts });
  server.register(SVC, methods);
  const listener = net.createServer();
  const p = sockPath();
  await new Promise<void>((resolve, reject) => listener.listen(p, resolve).once("error", reject));
  server.serve(listener);
  return { server, listener, path: p, errors };
}

async function stop(s: { server: TtrpcServer }): Promise<void> {
  await s.server.shutdown();
}

interface Reply {
  streamId: number;
  type: number;
  flags: number;
  code: number;
  message: string;
  payload: Uint8Array;
  raw: Buffer;
}

/** A raw socket client that writes bytes and reads frames. */
class RawConn {
  readonly socket: net.Socket;
  private readonly reader = new FrameReader();
  readonly replies: Reply[] = [];
  private waiter: (() => void) | undefined;
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (c: Buffer) =>
      this.reader.push(c, (it: FrameItem) => {
        assert.equal(it.kind, "frame");
        if (it.kind !== "frame") return;
        const res = Response.decode(it.payload);
        this.replies.push({
          streamId: it.streamId,
          type: it.type,
          flags: it.flags,
          code: res.status?.code ?? 0,
          message: res.status?.message ?? "",
          payload: res.payload,
          raw: Buffer.from(it.payload),
        });
        this.waiter?.();
      }),
    );
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
      this.waiter?.();
    });
  }

  static open(p: string): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(p, () => resolve(new RawConn(s)));
      s.once("error", reject);
    });
  }

  send(b: Buffer): void {
    this.socket.write(b);
  }

  async next(timeoutMs = 3000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error("connection closed");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out waiting for a reply");
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiter = () => {
          clearTimeout(t);
          r();
        };
      });
      this.waiter = undefined;
    }
    return this.replies.shift()!;
  }

  async waitClosed(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error("not closed");
      await sleep(5);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

const stateReq = (id: string): Uint8Array => StateRequest.encode(StateRequest.fromPartial({ id })).finish();
const reqFrame = (sid: number, m: string, payload: Uint8Array = stateReq("x"), timeoutNano = 0n): Buffer =>
  encodeRequestFrame(sid, SVC, m, payload, timeoutNano);

const echo = method(StateRequest, StateResponse, async (req, ctx) =>
  StateResponse.fromPartial({
    id: req.id,
    pid: ctx.streamId,
    bundle: JSON.stringify({
      service: ctx.service,
      method: ctx.method,
      md: [...ctx.metadata],
      hasDeadline: ctx.deadline !== undefined,
      hasSocket: ctx.peer.socket !== undefined,
      credentials: ctx.peer.credentials ?? null,
    }),
  }),
);

// ---- tests --------------------------------------------------------------------------------

test("unary round trip: metadata lower-cased, context fields, stream ids 1,3,5", async () => {
  const s = await startServer({ Echo: echo });
  const client = await TtrpcClient.connect(s.path);
  for (let i = 0; i < 3; i++) {
    const res = await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: `c${i}` }), {
      metadata: { "Containerd-Namespace-TTRPC": "default", other: "v" },
    });
    assert.equal(res.id, `c${i}`);
    assert.equal(res.pid, 1 + 2 * i);
    const info: unknown = JSON.parse(res.bundle);
    assert.deepEqual(info, {
      service: SVC,
      method: "Echo",
      md: [
        ["containerd-namespace-ttrpc", ["default"]],
        ["other", ["v"]],
      ],
      hasDeadline: false,
      hasSocket: true,
      credentials: null,
    });
  }
  const withTimeout = await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: "t" }), {
    timeoutMs: 1000,
  });
  assert.equal((JSON.parse(withTimeout.bundle) as { hasDeadline: boolean }).hasDeadline, true);
  client.close();
  await stop(s);
  assert.deepEqual(s.errors, []);
});

test("client wire bytes match the spec's Forward vector; client decodes OK / NotFound responses", async () => {
  const p = sockPath();
  const received: Buffer[] = [];
  const raw = net.createServer((sock) => {
    const reader = new FrameReader();
    sock.on("data", (c: Buffer) => {
      received.push(Buffer.from(c));
      reader.push(c, (it) => {
        if (it.streamId === 1) sock.write(encodeResponseFrame(1, new Uint8Array(0)));
        else sock.write(encodeErrorFrame(it.streamId, Code.NotFound, "container not created: not found"));
      });
    });
  });
  await new Promise<void>((r) => raw.listen(p, r));
  const client = await TtrpcClient.connect(`unix://${p}`);
  const payload = forwardVectorPayload();
  const out = await client.call("containerd.services.events.ttrpc.v1.Events", "Forward", payload, {
    timeoutMs: 5000,
    metadata: { "containerd-namespace-ttrpc": "default" },
  });
  assert.equal(out.length, 0);
  const first = Buffer.concat(received);
  const expected =
    "000000ac00000001" + "0100" + "0a2a" + Buffer.from("containerd.services.events.ttrpc.v1.Events").toString("hex") +
    "1207" + Buffer.from("Forward").toString("hex") + "1a480a46" + "0a060880e2cfaa06" + "1207" +
    Buffer.from("default").toString("hex") + "1a0c" + Buffer.from("/tasks/start").toString("hex") + "22250a1b" +
    Buffer.from("containerd.events.TaskStart").toString("hex") + "12060a026331102a" + "2080e497d012" + "2a250a1a" +
    Buffer.from("containerd-namespace-ttrpc").toString("hex") + "1207" + Buffer.from("default").toString("hex");
  assert.equal(first.toString("hex"), expected);

  await assert.rejects(client.call("x", "y", new Uint8Array(0)), (e: unknown) => {
    assert.ok(e instanceof TtrpcError);
    assert.equal(e.code, Code.NotFound);
    assert.equal(e.message, "container not created: not found");
    return true;
  });
  client.close();
  raw.close();
});

test("handler errors become statuses (errdefs classes, system errors, nil, sync throw)", async () => {
  const s = await startServer({
    NotFound: method(StateRequest, Empty, async () => {
      throw notFound("container not created");
    }),
    Boom: method(StateRequest, Empty, async () => {
      throw new Error("boom");
    }),
    Enoent: method(StateRequest, Empty, async () => {
      await fs.promises.readFile(path.join(TMP, "does-not-exist"));
      return {};
    }),
    Nil: method(StateRequest, Empty, async () => null as unknown as Empty),
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- the case under test: a handler throwing a non-Error
    SyncThrow: { decode: (b: Uint8Array) => b, encode: () => new Uint8Array(0), handler: () => { throw "plain string"; } },
    BadEncode: { decode: (b: Uint8Array) => b, encode: () => { throw new Error("nope"); }, handler: async () => ({}) },
    Ok: method(StateRequest, Empty, async () => ({})),
  });
  const c = await RawConn.open(s.path);
  const cases: Array<[string, number, string | RegExp]> = [
    ["NotFound", Code.NotFound, "container not created: not found"],
    ["Boom", Code.Unknown, "boom"],
    ["Enoent", Code.NotFound, /ENOENT/],
    ["Nil", Code.Unknown, "ttrpc: marshal called with nil"],
    ["SyncThrow", Code.Unknown, "plain string"],
    ["BadEncode", Code.Internal, "ttrpc: error marshaling payload: nope"],
  ];
  let sid = 1;
  for (const [m, code, msg] of cases) {
    c.send(reqFrame(sid, m));
    const r = await c.next();
    assert.equal(r.streamId, sid);
    assert.equal(r.type, MessageType.Response);
    assert.equal(r.flags, 0);
    assert.equal(r.code, code, m);
    if (typeof msg === "string") assert.equal(r.message, msg);
    else assert.match(r.message, msg);
    assert.equal(r.payload.length, 0);
    if (m === "NotFound") {
      assert.equal(r.raw.toString("hex"), "0a240805122" + "0" + Buffer.from("container not created: not found").toString("hex"));
    }
    sid += 2;
  }
  c.send(reqFrame(sid, "Ok"));
  const ok = await c.next();
  assert.equal(ok.raw.toString("hex"), "0a00");
  c.destroy();
  await stop(s);
});

test("unknown service / method → Unimplemented with the reference texts", async () => {
  const s = await startServer({ Echo: echo });
  const c = await RawConn.open(s.path);
  c.send(encodeRequestFrame(1, "nope.Svc", "Echo", new Uint8Array(0)));
  c.send(encodeRequestFrame(3, SVC, "Nope", new Uint8Array(0)));
  c.send(encodeRequestFrame(5, SVC, "constructor", new Uint8Array(0)));
  c.send(encodeRequestFrame(7, "__proto__", "toString", new Uint8Array(0)));
  assert.deepEqual(
    [await c.next(), await c.next(), await c.next(), await c.next()].map((r) => [r.streamId, r.code, r.message]),
    [
      [1, Code.Unimplemented, "service nope.Svc"],
      [3, Code.Unimplemented, "method Nope"],
      [5, Code.Unimplemented, "method constructor"],
      [7, Code.Unimplemented, "service __proto__"],
    ],
  );
  const client = await TtrpcClient.connect(s.path);
  await assert.rejects(client.call(SVC, "Missing", new Uint8Array(0)), (e: unknown) => e instanceof TtrpcError && e.code === Code.Unimplemented && e.message === "method Missing");
  client.close();
  c.destroy();
  await stop(s);
});

test("stream ids: even and non-increasing ids are rejected on that id; the connection keeps working", async () => {
  const s = await startServer({ Echo: echo });
  const c = await RawConn.open(s.path);
  const steps: Array<[number, Code, string]> = [
    [2, Code.InvalidArgument, "StreamID must be odd for client initiated streams"],
    [0, Code.InvalidArgument, "StreamID must be odd for client initiated streams"],
    [5, Code.OK, ""],
    [5, Code.InvalidArgument, "StreamID cannot be re-used and must increment"],
    [3, Code.InvalidArgument, "StreamID cannot be re-used and must increment"],
    [7, Code.OK, ""],
    [0xfffffffe, Code.InvalidArgument, "StreamID must be odd for client initiated streams"],
    [0xffffffff, Code.OK, ""],
  ];
  for (const [sid, code, msg] of steps) {
    c.send(reqFrame(sid, "Echo"));
    const r = await c.next();
    assert.deepEqual([r.streamId, r.code, r.message], [sid, code, msg]);
    if (code === Code.OK) assert.equal(StateResponse.decode(r.payload).pid, sid);
  }
  c.destroy();
  await stop(s);
});

test("garbage envelope → InvalidArgument; garbage method payload → Internal", async () => {
  const s = await startServer({ Echo: echo });
  const c = await RawConn.open(s.path);
  c.send(encodeFrame(1, MessageType.Request, 0, Buffer.from("0affffffff0f", "hex")));
  let r = await c.next();
  assert.equal(r.streamId, 1);
  assert.equal(r.code, Code.InvalidArgument);
  assert.match(r.message, /^unmarshal request error: .+/);
  c.send(reqFrame(3, "Echo", Buffer.from("0a05ab", "hex")));
  r = await c.next();
  assert.equal(r.streamId, 3);
  assert.equal(r.code, Code.Internal);
  assert.match(r.message, /^ttrpc: error unmarshalling payload: .+/);
  c.send(reqFrame(5, "Echo", stateReq("fine")));
  r = await c.next();
  assert.equal(r.code, Code.OK);
  assert.equal(StateResponse.decode(r.payload).id, "fine");
  c.destroy();
  await stop(s);
});

test("oversize frame: skipped, answered ResourceExhausted, connection keeps working; exactly 4 MiB accepted", async () => {
  const sizeMethod: MethodDef<Uint8Array, number> = {
    decode: (b) => b,
    encode: (n) => StateResponse.encode(StateResponse.fromPartial({ pid: n })).finish(),
    handler: async (b) => b.length,
  };
  const s = await startServer({ Echo: echo, Size: sizeMethod });
  const c = await RawConn.open(s.path);
  const len = MAX_MESSAGE + 1;
  const hdr = Buffer.alloc(HEADER_SIZE);
  hdr.writeUInt32BE(len, 0);
  hdr.writeUInt32BE(1, 4);
  hdr[8] = MessageType.Request;
  c.send(hdr);
  const junk = Buffer.alloc(65536, 0x5a);
  for (let left = len; left > 0; left -= junk.length) c.send(junk.subarray(0, Math.min(left, junk.length)));
  let r = await c.next(10000);
  assert.deepEqual([r.streamId, r.code, r.message], [1, Code.ResourceExhausted, "message length 4194305 exceed maximum message size of 4194304"]);
  c.send(reqFrame(3, "Echo", stateReq("after")));
  r = await c.next(10000);
  assert.equal(r.code, Code.OK);
  assert.equal(StateResponse.decode(r.payload).id, "after");

  // A request whose envelope is exactly MAX_MESSAGE bytes is accepted.
  let n = MAX_MESSAGE - 40;
  while (encodeRequestFrame(1, SVC, "Size", new Uint8Array(n)).length - HEADER_SIZE < MAX_MESSAGE) n++;
  const exact = encodeRequestFrame(5, SVC, "Size", new Uint8Array(n));
  assert.equal(exact.length - HEADER_SIZE, MAX_MESSAGE);
  c.send(exact);
  r = await c.next(10000);
  assert.equal(r.code, Code.OK);
  assert.equal(StateResponse.decode(r.payload).pid, n);

  // The client refuses to send more than the max, without harming the connection.
  const client = await TtrpcClient.connect(s.path);
  await assert.rejects(client.call(SVC, "Size", new Uint8Array(MAX_MESSAGE)), (e: unknown) =>
    e instanceof TtrpcError && e.code === Code.ResourceExhausted && /exceed maximum message size of 4194304/.test(e.message));
  const ok = await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: "still" }));
  assert.equal(ok.id, "still");
  assert.equal(ok.pid, 1); // the refused call did not consume a stream id
  client.close();
  c.destroy();
  await stop(s);
});

test("Data frames and unknown message types are ignored", async () => {
  const s = await startServer({ Echo: echo });
  const c = await RawConn.open(s.path);
  c.send(encodeFrame(1, MessageType.Data, 0, Buffer.from("zz")));
  c.send(encodeFrame(2, 0x7f, 0, Buffer.alloc(0)));
  c.send(encodeFrame(3, MessageType.Response, 0, Buffer.from("0a00", "hex")));
  c.send(encodeFrame(9, 0, 0xff, Buffer.from("garbage")));
  c.send(reqFrame(1, "Echo", stateReq("only")));
  const r = await c.next();
  assert.equal(r.streamId, 1);
  assert.equal(StateResponse.decode(r.payload).id, "only");
  await sleep(50);
  assert.equal(c.replies.length, 0);
  c.destroy();
  await stop(s);
});

test("handlers run concurrently: a pending call does not block later ones (out-of-order replies)", async () => {
  const g = gate();
  const s = await startServer({
    Slow: method(StateRequest, StateResponse, async (req) => {
      await g.promise;
      return StateResponse.fromPartial({ id: req.id });
    }),
    Echo: echo,
  });
  const client = await TtrpcClient.connect(s.path);
  const order: string[] = [];
  const slow = invoke(client, SVC, "Slow", StateRequest, StateResponse, StateRequest.fromPartial({ id: "slow" })).then((r) => order.push(r.id));
  const fasts = [1, 2, 3].map((i) =>
    invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: `fast${i}` })).then((r) => order.push(r.id)),
  );
  await Promise.all(fasts);
  assert.deepEqual(order, ["fast1", "fast2", "fast3"]);
  assert.equal(s.server.inflight, 1);
  g.open();
  await slow;
  assert.deepEqual(order, ["fast1", "fast2", "fast3", "slow"]);
  client.close();
  await stop(s);
});

test("deadline: handler signal aborted with DeadlineExceeded; reply carries its status", async () => {
  let seen: { deadline?: number; reason?: unknown; at?: number } = {};
  const s = await startServer({
    WaitAbort: method(StateRequest, Empty, async (_req, ctx: CallContext) => {
      seen.deadline = ctx.deadline;
      seen.reason = await waitAbort(ctx.signal);
      seen.at = Date.now();
      throw ctx.signal.reason;
    }),
  });
  const c = await RawConn.open(s.path);
  const t0 = Date.now();
  c.send(reqFrame(1, "WaitAbort", stateReq("x"), 50_000_000n));
  const r = await c.next();
  assert.deepEqual([r.code, r.message], [Code.DeadlineExceeded, "context deadline exceeded"]);
  assert.ok(seen.deadline! >= t0 + 49 && seen.deadline! <= Date.now() + 1, `deadline ${seen.deadline! - t0}`);
  assert.ok(seen.at! - t0 >= 45, `aborted after ${seen.at! - t0} ms`);
  assert.ok(seen.reason instanceof TtrpcError && seen.reason.code === Code.DeadlineExceeded);

  // Negative timeout: already expired.
  seen = {};
  c.send(reqFrame(3, "WaitAbort", stateReq("x"), -1n));
  assert.equal((await c.next()).code, Code.DeadlineExceeded);

  // The client's own timer also fires (DeadlineExceeded), and a late reply is ignored.
  const client = await TtrpcClient.connect(s.path);
  const t1 = Date.now();
  await assert.rejects(client.call(SVC, "WaitAbort", stateReq("y"), { timeoutMs: 30 }), (e: unknown) => e instanceof TtrpcError && e.code === Code.DeadlineExceeded);
  assert.ok(Date.now() - t1 >= 25);
  assert.equal(client.pendingCount, 0);
  await sleep(30);
  assert.ok(!client.closed);
  client.close();
  c.destroy();
  await stop(s);
});

test("client disconnecting mid-request or mid-frame cancels handlers and doesn't hurt the server", async () => {
  let aborted: unknown;
  const started = gate();
  const s = await startServer({
    Hang: method(StateRequest, Empty, async (_r, ctx) => {
      started.open();
      aborted = await waitAbort(ctx.signal);
      return {};
    }),
    Echo: echo,
  });
  const c1 = await RawConn.open(s.path);
  c1.send(reqFrame(1, "Hang"));
  await started.promise;
  assert.equal(s.server.inflight, 1);
  c1.destroy();
  await until(() => aborted !== undefined, "the handler to see its call aborted");
  assert.ok(aborted instanceof TtrpcError && aborted.code === Code.Canceled);
  await until(() => s.server.inflight === 0, "no handler running");

  const c2 = await RawConn.open(s.path);
  c2.send(reqFrame(1, "Echo").subarray(0, 15)); // half a frame
  await sleep(10);
  c2.destroy();

  const c3 = await RawConn.open(s.path);
  c3.send(reqFrame(1, "Echo").subarray(0, 7)); // half a header, then half-close
  c3.socket.end();
  await c3.waitClosed();

  const client = await TtrpcClient.connect(s.path);
  const res = await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: "alive" }));
  assert.equal(res.id, "alive");
  client.close();
  await until(() => s.server.connectionCount === 0, "the server to see the client's close");
  assert.equal(s.server.connectionCount, 0);
  await stop(s);
  assert.deepEqual(s.errors, []);
});

test("client: pending calls fail with `ttrpc: closed` when the server drops the connection", async () => {
  const started = gate();
  const s = await startServer({
    Hang: method(StateRequest, Empty, async (_r, ctx) => {
      started.open();
      await waitAbort(ctx.signal);
      return {};
    }),
  });
  const client = await TtrpcClient.connect(s.path);
  let closeEvents = 0;
  client.onClose(() => closeEvents++);
  const pending = [client.call(SVC, "Hang", stateReq("a")), client.call(SVC, "Hang", stateReq("b"))];
  await started.promise;
  await s.server.shutdown();
  for (const p of pending) {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(isClosedError(e));
      assert.ok(e instanceof TtrpcError);
      assert.equal(e.message, "ttrpc: closed");
      assert.equal(e.code, Code.Unavailable);
      return true;
    });
  }
  assert.ok(client.closed);
  await assert.rejects(client.call(SVC, "Hang", stateReq("c")), (e: unknown) => isClosedError(e));
  await sleep(1);
  assert.equal(closeEvents, 1);
  let late = 0;
  client.onClose(() => late++);
  await sleep(1);
  assert.equal(late, 1);

  // A server that just hangs up on data.
  const p = sockPath();
  const rude = net.createServer((sock) => sock.on("data", () => sock.destroy()));
  await new Promise<void>((r) => rude.listen(p, r));
  const c2 = await TtrpcClient.connect(p);
  await assert.rejects(c2.call("a", "b", new Uint8Array(1)), (e: unknown) => isClosedError(e));
  rude.close();
});

test("many concurrent connections and calls", async () => {
  const s = await startServer({
    Echo: method(StateRequest, StateResponse, async (req) => {
      await new Promise((r) => setImmediate(r));
      return StateResponse.fromPartial({ id: req.id });
    }),
  });
  const clients = await Promise.all(Array.from({ length: 100 }, () => TtrpcClient.connect(s.path)));
  for (let i = 0; i < 200 && s.server.connectionCount < 100; i++) await sleep(5);
  assert.equal(s.server.connectionCount, 100);
  const results = await Promise.all(
    clients.flatMap((c, i) =>
      Array.from({ length: 20 }, (_, j) =>
        invoke(c, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: `${i}/${j}` })).then((r) => r.id === `${i}/${j}`),
      ),
    ),
  );
  assert.equal(results.length, 2000);
  assert.ok(results.every(Boolean));
  for (const c of clients) c.close();
  await stop(s);
  assert.deepEqual(s.errors, []);
});

test("authorize hook: refusal closes the connection; accepted peers' credentials reach the context", async () => {
  let allow = false;
  const s = await startServer({ Echo: echo }, {
    authorize: (sock, peer) => {
      assert.ok(sock instanceof net.Socket);
      peer.credentials = { uid: 42 };
      return allow;
    },
  });
  const denied = await TtrpcClient.connect(s.path);
  await assert.rejects(denied.call(SVC, "Echo", stateReq("x")), (e: unknown) => isClosedError(e));
  allow = true;
  const client = await TtrpcClient.connect(s.path);
  const res = await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: "ok" }));
  assert.deepEqual((JSON.parse(res.bundle) as { credentials: unknown }).credentials, { uid: 42 });
  client.close();
  await stop(s);
});

test("in-flight limit per connection → ResourceExhausted beyond it", async () => {
  const g = gate();
  const s = await startServer(
    { Slow: method(StateRequest, StateResponse, async (r) => { await g.promise; return StateResponse.fromPartial({ id: r.id }); }) },
    { maxInflightPerConnection: 3 },
  );
  const client = await TtrpcClient.connect(s.path);
  let refused = 0;
  const calls = Array.from({ length: 5 }, (_, i) =>
    invoke(client, SVC, "Slow", StateRequest, StateResponse, StateRequest.fromPartial({ id: `${i}` })).then(
      (r) => r.id,
      (e: TtrpcError) => { refused++; return `E${e.code}`; },
    ),
  );
  // All five have reached the server: three are held at the gate, two answered at once.
  await until(() => s.server.inflight === 3 && refused === 2, "three calls in flight and two answered");
  g.open();
  assert.deepEqual(await Promise.all(calls), ["0", "1", "2", "E8", "E8"]);
  client.close();
  await stop(s);
});

test("back-pressure: reading pauses while the transport is not draining (in-process transport)", async () => {
  const server = new TtrpcServer();
  server.register(SVC, { Echo: echo });
  const log: string[] = [];
  let writable = true;
  const written: Buffer[] = [];
  const transport: ConnectionTransport = {
    write: (b) => {
      written.push(b);
      return writable;
    },
    pause: () => log.push("pause"),
    resume: () => log.push("resume"),
    end: () => log.push("end"),
    destroy: () => log.push("destroy"),
  };
  const conn = server.attach(transport);
  writable = false;
  conn.feed(Buffer.concat([reqFrame(1, "Nope"), reqFrame(3, "Nope")]));
  assert.deepEqual(log, ["pause"]);
  assert.ok(conn.isPaused);
  assert.equal(written.length, 2);
  writable = true;
  conn.drained();
  assert.deepEqual(log, ["pause", "resume"]);
  conn.feed(reqFrame(5, "Echo"));
  await server.drain();
  assert.equal(written.length, 3);
  conn.destroy();
  assert.deepEqual(log, ["pause", "resume", "destroy"]);
  assert.equal(server.connectionCount, 0);
});

test("back-pressure over a socket: a client that never reads stops being read from", async () => {
  const big = "x".repeat(256 * 1024);
  let handled = 0;
  const s = await startServer(
    {
      Big: method(StateRequest, StateResponse, async () => {
        handled++;
        return StateResponse.fromPartial({ bundle: big });
      }),
    },
    { maxWriteBuffer: 512 * 1024 },
  );
  const c = await RawConn.open(s.path);
  c.socket.pause(); // don't read replies
  const pad = "p".repeat(8 * 1024);
  const frames: Buffer[] = [];
  for (let i = 0; i < 400; i++) frames.push(reqFrame(1 + 2 * i, "Big", stateReq(pad)));
  c.send(Buffer.concat(frames)); // ~3.2 MiB of requests → ~100 MiB of replies if all were served
  await sleep(300);
  assert.ok(handled < 100, `server kept reading: ${handled} requests handled`);
  c.socket.resume();
  for (let got = 0; got < 400; got++) {
    const r = await c.next(5000);
    assert.equal(r.code, Code.OK);
    assert.equal(r.streamId, 1 + 2 * got);
  }
  assert.equal(handled, 400);
  c.destroy();
  await stop(s);
});

test("close() stops accepting but keeps connections; drain() waits for handlers; shutdown() ends them", async () => {
  const g = gate();
  const s = await startServer({
    Slow: method(StateRequest, StateResponse, async (r) => { await g.promise; return StateResponse.fromPartial({ id: r.id }); }),
    Echo: echo,
  });
  const client = await TtrpcClient.connect(s.path);
  s.server.close();
  await assert.rejects(TtrpcClient.connect(s.path, { timeoutMs: 200 }));
  const res = await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: "still" }));
  assert.equal(res.id, "still");
  const slow = invoke(client, SVC, "Slow", StateRequest, StateResponse, StateRequest.fromPartial({ id: "slow" }));
  await until(() => s.server.inflight === 1, "the Slow call in flight");
  assert.equal(await s.server.drain(30), false);
  g.open();
  assert.equal(await s.server.drain(1000), true);
  assert.equal((await slow).id, "slow");
  // shutdown with grace: a handler that finishes within the grace period still gets its reply out.
  const g2 = gate();
  const s2 = await startServer({
    Slow: method(StateRequest, StateResponse, async (r) => { await g2.promise; return StateResponse.fromPartial({ id: r.id }); }),
  });
  const c2 = await TtrpcClient.connect(s2.path);
  const pending = invoke(c2, SVC, "Slow", StateRequest, StateResponse, StateRequest.fromPartial({ id: "graceful" }));
  await until(() => s2.server.inflight === 1, "the Slow call in flight");
  setTimeout(() => g2.open(), 20);
  const done = s2.server.shutdown({ graceMs: 1000 });
  assert.equal((await pending).id, "graceful");
  await done;
  assert.equal(s2.server.connectionCount, 0);
  await sleep(10);
  assert.ok(c2.closed);
  await s.server.shutdown();
  await sleep(10);
  assert.ok(client.closed);
});

test("client connect: unix:// prefix, retry while the socket file is missing, timeout", async () => {
  const p = sockPath();
  await assert.rejects(TtrpcClient.connect(p, { timeoutMs: 200 }), (e: NodeJS.ErrnoException) => e.code === "ENOENT");
  const t0 = Date.now();
  await assert.rejects(TtrpcClient.connect(p, { timeoutMs: 100, retryOnEnoent: true }), (e: unknown) =>
    e instanceof TtrpcError && e.code === Code.DeadlineExceeded && e.message === `dial ${p}: timeout`);
  assert.ok(Date.now() - t0 >= 90);

  const server = new TtrpcServer();
  server.register(SVC, { Echo: echo });
  const listener = net.createServer();
  server.serve(listener);
  const connecting = TtrpcClient.connect(`unix://${p}`, { timeoutMs: 2000, retryOnEnoent: true });
  await sleep(60);
  await new Promise<void>((r) => listener.listen(p, r));
  const client = await connecting;
  const res = await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: "late" }));
  assert.equal(res.id, "late");
  client.close();
  await server.shutdown();
});

test("client: abort signal cancels a call; oversize/garbage responses fail only that call", async () => {
  const p = sockPath();
  const raw = net.createServer((sock) => {
    const reader = new FrameReader();
    sock.on("data", (c: Buffer) =>
      reader.push(c, (it) => {
        if (it.streamId === 3) {
          const h = Buffer.alloc(10);
          h.writeUInt32BE(MAX_MESSAGE + 5, 0);
          h.writeUInt32BE(3, 4);
          h[8] = 2;
          sock.write(h);
          sock.write(Buffer.alloc(MAX_MESSAGE + 5));
        } else if (it.streamId === 5) {
          sock.write(encodeFrame(5, MessageType.Response, 0, Buffer.from("0affffff", "hex")));
        } else if (it.streamId === 7) {
          sock.write(encodeFrame(7, MessageType.Data, 0, Buffer.from("zz")));
          sock.write(encodeFrame(99, MessageType.Response, 0, Buffer.from("0a00", "hex")));
          sock.write(encodeResponseFrame(7, Buffer.from("ok")));
        }
      }),
    );
  });
  await new Promise<void>((r) => raw.listen(p, r));
  const client = await TtrpcClient.connect(p);
  const ac = new AbortController();
  const c1 = client.call("s", "m", new Uint8Array(0), { signal: ac.signal });
  ac.abort();
  await assert.rejects(c1, (e: unknown) => e instanceof TtrpcError && e.code === Code.Canceled);
  await assert.rejects(client.call("s", "m", new Uint8Array(0)), (e: unknown) => e instanceof TtrpcError && e.code === Code.ResourceExhausted);
  await assert.rejects(client.call("s", "m", new Uint8Array(0)), (e: unknown) => e instanceof TtrpcError && e.code === Code.Internal);
  assert.equal(Buffer.from(await client.call("s", "m", new Uint8Array(0))).toString(), "ok");
  client.close();
  raw.close();
});

test("status helpers: errdefs constructors, toStatus mapping, fromStatus", () => {
  const cases: Array<[TtrpcError, number, string]> = [
    [notFound("container not created"), 5, "container not created: not found"],
    [invalidArgument("bad id"), 3, "bad id: invalid argument"],
    [alreadyExists("id exec1"), 6, "id exec1: already exists"],
    [failedPrecondition("x"), 9, "x: failed precondition"],
    [unavailable("y"), 14, "y: unavailable"],
    [notImplemented("z"), 12, "z: not implemented"],
    [notFound(), 5, "not found"],
  ];
  for (const [err, code, msg] of cases) {
    assert.ok(err instanceof Error);
    assert.equal(err.name, "TtrpcError");
    assert.deepEqual(toStatus(err), { code, message: msg });
  }
  const sys = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: oops`), { code });
  assert.deepEqual(toStatus(sys("ENOENT")), { code: Code.NotFound, message: "ENOENT: oops" });
  assert.deepEqual(toStatus(sys("EEXIST")), { code: Code.AlreadyExists, message: "EEXIST: oops" });
  assert.deepEqual(toStatus(sys("EACCES")), { code: Code.PermissionDenied, message: "EACCES: oops" });
  assert.deepEqual(toStatus(sys("EPERM")), { code: Code.PermissionDenied, message: "EPERM: oops" });
  assert.deepEqual(toStatus(sys("EINVAL")), { code: Code.Unknown, message: "EINVAL: oops" });
  const ac = new AbortController();
  ac.abort();
  let abortErr: unknown;
  try {
    ac.signal.throwIfAborted();
  } catch (e) {
    abortErr = e;
  }
  assert.deepEqual(toStatus(abortErr), { code: Code.Canceled, message: "context canceled" });
  const abortWithCause = Object.assign(new Error("The operation was aborted"), {
    name: "AbortError",
    cause: new TtrpcError(Code.DeadlineExceeded, "context deadline exceeded"),
  });
  assert.deepEqual(toStatus(abortWithCause), { code: Code.DeadlineExceeded, message: "context deadline exceeded" });
  assert.deepEqual(toStatus(new DOMException("t", "TimeoutError")), { code: Code.DeadlineExceeded, message: "context deadline exceeded" });
  assert.deepEqual(toStatus(new Error("runc failed")), { code: Code.Unknown, message: "runc failed" });
  assert.deepEqual(toStatus("str"), { code: Code.Unknown, message: "str" });
  assert.deepEqual(toStatus(undefined), { code: Code.Unknown, message: "undefined" });
  const hostile = { get name(): string { throw new Error("x"); } };
  assert.equal(toStatus(hostile).code, Code.Unknown);
  assert.equal(toStatus(Object.create(null)).code, Code.Unknown);

  assert.equal(fromStatus(undefined), undefined);
  assert.equal(fromStatus({ code: 0, message: "" }), undefined);
  const e = fromStatus({ code: 5, message: "m" });
  assert.ok(e instanceof TtrpcError && e.code === Code.NotFound && e.message === "m");
});

test("whenQuiet(): not before the first call, not while a handler runs, then after the quiet period", async () => {
  const g = gate();
  const s = await startServer({
    Slow: method(StateRequest, StateResponse, async (r) => { await g.promise; return StateResponse.fromPartial({ id: r.id }); }),
    Echo: echo,
  });
  let quietAt = 0;
  const quiet = s.server.whenQuiet(40).then(() => { quietAt = performance.now(); });
  await sleep(80);
  assert.equal(quietAt, 0, "no call yet: not quiet");
  const client = await TtrpcClient.connect(s.path);
  const slow = invoke(client, SVC, "Slow", StateRequest, StateResponse, StateRequest.fromPartial({ id: "s" }));
  await sleep(80);
  assert.equal(quietAt, 0, "a handler is running");
  g.open();
  await slow;
  const finished = performance.now();
  await invoke(client, SVC, "Echo", StateRequest, StateResponse, StateRequest.fromPartial({ id: "e" }));
  const last = performance.now();
  await quiet;
  assert.ok(quietAt - last >= 35, `quiet ${quietAt - last} ms after the last call`);
  assert.ok(quietAt > finished);
  client.close();
  await stop(s);
});
