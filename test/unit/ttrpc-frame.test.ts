// SPDX-License-Identifier: Apache-2.0
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  FrameReader,
  HEADER_SIZE,
  MAX_MESSAGE,
  MessageType,
  encodeErrorFrame,
  encodeFrame,
  encodeRequestFrame,
  encodeResponseFrame,
  isTtrpcError,
  Code,
  type FrameItem,
} from "../../src/ttrpc/index.js";
import { Request, Response } from "../../src/gen/ttrpc/request.js";
import { StateRequest } from "../../src/gen/containerd/task/v2/shim.js";
import { forwardVectorPayload, rng } from "../support/ttrpc-vectors.js";
import { Timestamp } from "../../src/gen/google/protobuf/timestamp.js";

// ---- helpers ------------------------------------------------------------------------------

/** Builds bytes from spec-style parts: hex strings ("0a 17") and quoted ASCII ({ s: "..." }). */
function bytes(...parts: Array<string | { s: string }>): Buffer {
  return Buffer.concat(
    parts.map((p) => (typeof p === "string" ? Buffer.from(p.replace(/\s+/g, ""), "hex") : Buffer.from(p.s, "latin1"))),
  );
}

interface Plain {
  kind: string;
  streamId: number;
  type: number;
  flags: number;
  payload?: string;
  length?: number;
}

function plain(items: FrameItem[]): Plain[] {
  return items.map((i) =>
    i.kind === "frame"
      ? { kind: i.kind, streamId: i.streamId, type: i.type, flags: i.flags, payload: i.payload.toString("hex") }
      : { kind: i.kind, streamId: i.streamId, type: i.type, flags: i.flags, length: i.length },
  );
}

const NS_MD: Array<[string, string]> = [["containerd-namespace-ttrpc", "default"]];

// ---- spec test vectors (ttrpc-wire.md §8) ----------------------------------------------------

const STATE_VECTOR = bytes(
  "00 00 00 4d 00 00 00 01 01 00",
  "0a 17",
  { s: "containerd.task.v2.Task" },
  "12 05",
  { s: "State" },
  "1a 04 0a 02 63 31",
  "2a 25 0a 1a",
  { s: "containerd-namespace-ttrpc" },
  "12 07",
  { s: "default" },
);

const FORWARD_VECTOR = bytes(
  "00 00 00 ac 00 00 00 01 01 00",
  "0a 2a",
  { s: "containerd.services.events.ttrpc.v1.Events" },
  "12 07",
  { s: "Forward" },
  "1a 48 0a 46",
  "0a 06 08 80 e2 cf aa 06",
  "12 07",
  { s: "default" },
  "1a 0c",
  { s: "/tasks/start" },
  "22 25 0a 1b",
  { s: "containerd.events.TaskStart" },
  "12 06 0a 02 63 31 10 2a",
  "20 80 e4 97 d0 12",
  "2a 25 0a 1a",
  { s: "containerd-namespace-ttrpc" },
  "12 07",
  { s: "default" },
);

const NOT_FOUND_RESPONSE = bytes("0a 24 08 05 12 20", { s: "container not created: not found" });

test("vector: State request frame", () => {
  const payload = StateRequest.encode(StateRequest.fromPartial({ id: "c1" })).finish();
  const frame = encodeRequestFrame(1, "containerd.task.v2.Task", "State", payload, 0n, NS_MD);
  assert.equal(frame.toString("hex"), STATE_VECTOR.toString("hex"));
  // The generic path (ts-proto envelope + encodeFrame) produces the same bytes.
  const env = Request.encode(
    Request.fromPartial({
      service: "containerd.task.v2.Task",
      method: "State",
      payload: Buffer.from(payload),
      metadata: [{ key: "containerd-namespace-ttrpc", value: "default" }],
    }),
  ).finish();
  assert.equal(encodeFrame(1, MessageType.Request, 0, env).toString("hex"), STATE_VECTOR.toString("hex"));
  // And the reader parses it back.
  const items = new FrameReader().feed(STATE_VECTOR);
  assert.equal(items.length, 1);
  const it = items[0];
  assert.equal(it.kind, "frame");
  if (it.kind !== "frame") return;
  assert.deepEqual([it.streamId, it.type, it.flags, it.payload.length], [1, 1, 0, 77]);
  const req = Request.decode(it.payload);
  assert.equal(req.service, "containerd.task.v2.Task");
  assert.equal(req.method, "State");
  assert.equal(StateRequest.decode(req.payload).id, "c1");
});

test("vector: Forward call frame", () => {
  const frame = encodeRequestFrame(
    1,
    "containerd.services.events.ttrpc.v1.Events",
    "Forward",
    forwardVectorPayload(),
    5_000_000_000n,
    NS_MD,
  );
  assert.equal(frame.toString("hex"), FORWARD_VECTOR.toString("hex"));
});

test("vector: NotFound error response and OK empty response", () => {
  const frame = encodeErrorFrame(7, Code.NotFound, "container not created: not found");
  assert.equal(frame.readUInt32BE(0), NOT_FOUND_RESPONSE.length);
  assert.equal(frame.readUInt32BE(4), 7);
  assert.equal(frame[8], MessageType.Response);
  assert.equal(frame[9], 0);
  assert.equal(frame.subarray(HEADER_SIZE).toString("hex"), NOT_FOUND_RESPONSE.toString("hex"));
  const ts = Response.encode({ status: { code: 5, message: "container not created: not found", details: [] }, payload: Buffer.alloc(0) }).finish();
  assert.equal(Buffer.from(ts).toString("hex"), NOT_FOUND_RESPONSE.toString("hex"));

  const ok = encodeResponseFrame(3, new Uint8Array(0));
  assert.equal(ok.toString("hex"), "00000002" + "00000003" + "02" + "00" + "0a00");
});

test("vector: Timestamp of Go's zero time (codec sanity)", () => {
  const b = Timestamp.encode({ seconds: -62135596800n, nanos: 0 }).finish();
  assert.equal(Buffer.from(b).toString("hex"), "088092b8c398feffffff01");
});

// ---- encoders ----------------------------------------------------------------------------------

test("encodeFrame: header layout, single buffer, max enforced", () => {
  const p = Buffer.from("hello");
  const f = encodeFrame(0xfffffffd, MessageType.Data, 0x05, p);
  assert.equal(f.length, 15);
  assert.equal(f.readUInt32BE(0), 5);
  assert.equal(f.readUInt32BE(4), 0xfffffffd);
  assert.equal(f[8], 3);
  assert.equal(f[9], 5);
  assert.equal(f.subarray(10).toString(), "hello");
  assert.equal(encodeFrame(1, 1, 0, new Uint8Array(0)).length, HEADER_SIZE);
  assert.equal(encodeFrame(1, 1, 0, new Uint8Array(MAX_MESSAGE)).length, HEADER_SIZE + MAX_MESSAGE);
  assert.throws(
    () => encodeFrame(1, 1, 0, new Uint8Array(MAX_MESSAGE + 1)),
    (e: unknown) =>
      isTtrpcError(e) && e.code === Code.ResourceExhausted &&
      e.message === `message length ${MAX_MESSAGE + 1} exceed maximum message size of 4194304`,
  );
  assert.throws(
    () => encodeRequestFrame(1, "s", "m", new Uint8Array(MAX_MESSAGE)),
    (e: unknown) => isTtrpcError(e) && e.code === Code.ResourceExhausted,
  );
});

function randomString(r: () => number, max: number): string {
  const n = Math.floor(r() * max);
  let s = "";
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.7) s += String.fromCharCode(0x20 + Math.floor(r() * 95));
    else if (k < 0.85) s += String.fromCharCode(0x80 + Math.floor(r() * 0x700));
    else if (k < 0.95) s += String.fromCodePoint(0x1f600 + Math.floor(r() * 50));
    else s += String.fromCharCode(0xd800 + Math.floor(r() * 0x800)); // lone surrogate
  }
  return s;
}

test("envelope encoders are byte-identical to the ts-proto codecs", () => {
  const r = rng(1234);
  for (let i = 0; i < 3000; i++) {
    const service = randomString(r, 40);
    const method = randomString(r, 20);
    const payload = Buffer.alloc(Math.floor(r() * (r() < 0.1 ? 300 : 20)), i & 0xff);
    const pick = r();
    const timeoutNano =
      pick < 0.3 ? 0n : pick < 0.6 ? BigInt(Math.floor(r() * 1e12)) : pick < 0.8 ? -BigInt(Math.floor(r() * 1e12)) : BigInt.asIntN(64, BigInt(Math.floor(r() * 2 ** 53)) << 11n);
    const md: Array<[string, string]> = [];
    const mdN = Math.floor(r() * 4);
    for (let j = 0; j < mdN; j++) md.push([randomString(r, 12), randomString(r, 12)]);
    const ours = encodeRequestFrame(i * 2 + 1, service, method, payload, timeoutNano, md);
    const ref = Request.encode(
      Request.fromPartial({ service, method, payload, timeoutNano, metadata: md.map(([key, value]) => ({ key, value })) }),
    ).finish();
    assert.equal(ours.readUInt32BE(0), ref.length);
    assert.equal(ours.readUInt32BE(4), i * 2 + 1);
    assert.equal(ours.subarray(HEADER_SIZE).toString("hex"), Buffer.from(ref).toString("hex"), `case ${i}`);

    const code = r() < 0.8 ? Math.floor(r() * 17) : r() < 0.5 ? -Math.floor(r() * 2 ** 31) : Math.floor(r() * 2 ** 31);
    const message = randomString(r, 60);
    const err = encodeErrorFrame(1, code, message);
    const refErr = Response.encode(Response.fromPartial({ status: { code, message } })).finish();
    assert.equal(err.subarray(HEADER_SIZE).toString("hex"), Buffer.from(refErr).toString("hex"), `error case ${i}`);

    const ok = encodeResponseFrame(1, payload);
    const refOk = Response.encode(Response.fromPartial({ status: { code: 0 }, payload })).finish();
    assert.equal(ok.subarray(HEADER_SIZE).toString("hex"), Buffer.from(refOk).toString("hex"));
  }
  // Large payloads need multi-byte length varints.
  for (const n of [127, 128, 16383, 16384, 2097151, 2097152, MAX_MESSAGE - 10]) {
    const payload = Buffer.alloc(n, 7);
    const ok = encodeResponseFrame(1, payload);
    const refOk = Response.encode(Response.fromPartial({ status: { code: 0 }, payload })).finish();
    assert.ok(Buffer.from(refOk).equals(ok.subarray(HEADER_SIZE)), `payload ${n}`);
  }
});

test("encodeErrorFrame truncates huge messages to stay under the limit", () => {
  const frame = encodeErrorFrame(1, Code.Unknown, "é".repeat(3 * 1024 * 1024));
  assert.ok(frame.length - HEADER_SIZE <= MAX_MESSAGE);
  const res = Response.decode(frame.subarray(HEADER_SIZE));
  assert.equal(res.status?.code, Code.Unknown);
  assert.ok(res.status.message.length > 1000);
});

// ---- FrameReader -------------------------------------------------------------------------------

function sampleFrames(r: () => number, count: number): { stream: Buffer; expected: Plain[] } {
  const sizes = [0, 1, 2, 9, 10, 11, 100, 1000, 65535, 65536, 70001];
  const bufs: Buffer[] = [];
  const expected: Plain[] = [];
  for (let i = 0; i < count; i++) {
    const size = i < sizes.length ? sizes[i] : Math.floor(r() * (r() < 0.05 ? 200000 : 300));
    const payload = Buffer.allocUnsafe(size);
    for (let j = 0; j < size; j++) payload[j] = Math.floor(r() * 256);
    const sid = Math.floor(r() * 0x100000000);
    const type = Math.floor(r() * 256);
    const flags = Math.floor(r() * 256);
    bufs.push(encodeFrame(sid, type, flags, payload));
    expected.push({ kind: "frame", streamId: sid, type, flags, payload: payload.toString("hex") });
  }
  return { stream: Buffer.concat(bufs), expected };
}

test("FrameReader: many frames coalesced in one chunk (zero copy)", () => {
  const { stream, expected } = sampleFrames(rng(1), 200);
  const reader = new FrameReader();
  const items = reader.feed(stream);
  assert.deepEqual(plain(items), expected);
  assert.ok(reader.idle);
  for (const it of items) {
    if (it.kind === "frame" && it.payload.length > 0) assert.equal(it.payload.buffer, stream.buffer);
  }
});

test("FrameReader: fed byte by byte", () => {
  const { stream, expected } = sampleFrames(rng(2), 40);
  const reader = new FrameReader();
  const items: FrameItem[] = [];
  for (let i = 0; i < stream.length; i++) reader.push(stream.subarray(i, i + 1), (it) => items.push(it));
  assert.deepEqual(plain(items), expected);
  assert.equal(reader.buffered, 0);
});

test("FrameReader: random splits", () => {
  for (let seed = 10; seed < 60; seed++) {
    const r = rng(seed);
    const { stream, expected } = sampleFrames(r, 60);
    const reader = new FrameReader();
    const items: FrameItem[] = [];
    let off = 0;
    while (off < stream.length) {
      const max = r() < 0.3 ? 12 : r() < 0.7 ? 4096 : 100000;
      const n = Math.min(stream.length - off, 1 + Math.floor(r() * max));
      // Copy so that views into earlier chunks would be caught if the reader reused them wrongly.
      reader.push(Buffer.from(stream.subarray(off, off + n)), (it) => items.push(it));
      off += n;
    }
    assert.deepEqual(plain(items), expected, `seed ${seed}`);
    assert.ok(reader.idle);
  }
});

test("FrameReader: oversize frame reported at its header and skipped without buffering", () => {
  const len = MAX_MESSAGE + 1;
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32BE(len, 0);
  header.writeUInt32BE(5, 4);
  header[8] = 1;
  const after = encodeFrame(7, 1, 0, Buffer.from("next"));
  const reader = new FrameReader();
  const items: FrameItem[] = [];
  const sink = (it: FrameItem): void => {
    items.push(it);
  };
  reader.push(header.subarray(0, 4), sink);
  reader.push(header.subarray(4), sink);
  assert.deepEqual(plain(items), [{ kind: "oversize", streamId: 5, type: 1, flags: 0, length: len }]);
  const junk = Buffer.alloc(65536, 0xab);
  let left = len;
  while (left > 0) {
    const n = Math.min(left, junk.length);
    reader.push(junk.subarray(0, n), sink);
    left -= n;
    assert.equal(reader.buffered, 0);
    assert.equal(reader.skipping, left);
  }
  reader.push(after, sink);
  assert.equal(items.length, 2);
  assert.deepEqual(plain(items.slice(1)), [{ kind: "frame", streamId: 7, type: 1, flags: 0, payload: Buffer.from("next").toString("hex") }]);

  // Same thing, byte by byte with a small limit, the next frame in the same chunk as the tail.
  const small = new FrameReader(100);
  const out: FrameItem[] = [];
  const big = encodeFrame(9, 3, 1, Buffer.alloc(1000, 1));
  const stream = Buffer.concat([big, after]);
  for (let i = 0; i < stream.length - after.length - 3; i++) small.push(stream.subarray(i, i + 1), (it) => out.push(it));
  small.push(stream.subarray(stream.length - after.length - 3), (it) => out.push(it));
  assert.deepEqual(plain(out), [
    { kind: "oversize", streamId: 9, type: 3, flags: 1, length: 1000 },
    { kind: "frame", streamId: 7, type: 1, flags: 0, payload: Buffer.from("next").toString("hex") },
  ]);
});

test("FrameReader: a payload of exactly MAX_MESSAGE is a frame", () => {
  const f = encodeFrame(1, 1, 0, Buffer.alloc(MAX_MESSAGE, 3));
  const reader = new FrameReader();
  const items: FrameItem[] = [];
  for (let off = 0; off < f.length; off += 65536) reader.push(f.subarray(off, off + 65536), (it) => items.push(it));
  assert.equal(items.length, 1);
  assert.equal(items[0].kind, "frame");
  if (items[0].kind === "frame") assert.equal(items[0].payload.length, MAX_MESSAGE);
});

test("FrameReader: reset drops a partial frame", () => {
  const f = encodeFrame(1, 1, 0, Buffer.from("abcdef"));
  const reader = new FrameReader();
  assert.equal(reader.feed(f.subarray(0, 12)).length, 0);
  assert.equal(reader.buffered, 2); // header parsed, 2 payload bytes held
  reader.reset();
  assert.ok(reader.idle);
  assert.equal(reader.feed(f).length, 1);
});
