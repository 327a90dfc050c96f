// SPDX-License-Identifier: Apache-2.0
/**
 * ttrpc framing (containerd/ttrpc v1.2.x channel.go) and hand-rolled encoders for the two envelope
 * messages (§3) that write the header and the protobuf envelope into one allocation.
 *
 * Frame: 10-byte header {uint32 BE length, uint32 BE stream id, uint8 type, uint8 flags}
 * followed by `length` payload bytes (at most MAX_MESSAGE).
 */
import { Code, TtrpcError } from "./status.js";

/** Size of the fixed frame header. */
export const HEADER_SIZE = 10;
/** Largest payload a frame may carry (4 MiB; exactly this many bytes is allowed). */
export const MAX_MESSAGE = 4 * 1024 * 1024;

/** Frame message types. */
export const MessageType = {
  Request: 0x01,
  Response: 0x02,
  Data: 0x03,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** Frame flags (only meaningful for streaming; unary calls use 0). */
export const Flags = {
  RemoteClosed: 0x01,
  RemoteOpen: 0x02,
  NoData: 0x04,
} as const;

/** A complete frame. `payload` may be a view into the chunk it arrived in (no copy). */
export interface Frame {
  readonly kind: "frame";
  readonly streamId: number;
  readonly type: number;
  readonly flags: number;
  readonly payload: Buffer;
}

/** A frame whose length exceeded the maximum; its payload is being skipped. */
export interface OversizeFrame {
  readonly kind: "oversize";
  readonly streamId: number;
  readonly type: number;
  readonly flags: number;
  readonly length: number;
}

export type FrameItem = Frame | OversizeFrame;

const EMPTY = Buffer.alloc(0);

/** The text the reference uses for a frame over the limit (ResourceExhausted). */
export function oversizeMessage(length: number, max: number = MAX_MESSAGE): string {
  return `message length ${length} exceed maximum message size of ${max}`;
}

function oversizeError(length: number): TtrpcError {
  return new TtrpcError(Code.ResourceExhausted, oversizeMessage(length));
}

function writeHeader(buf: Buffer, length: number, streamId: number, type: number, flags: number): void {
  buf.writeUInt32BE(length, 0);
  buf.writeUInt32BE(streamId >>> 0, 4);
  buf[8] = type;
  buf[9] = flags;
}

/**
 * Encodes one frame: header + payload in a single allocation.
 * Throws a ResourceExhausted TtrpcError if the payload is over MAX_MESSAGE.
 */
export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array): Buffer {
  const len = payload.length;
  if (len > MAX_MESSAGE) throw oversizeError(len);
  const buf = Buffer.allocUnsafe(HEADER_SIZE + len);
  writeHeader(buf, len, streamId, type, flags);
  if (len > 0) buf.set(payload, HEADER_SIZE);
  return buf;
}

/**
 * Streaming frame parser. Feed it arbitrary chunks with `push`; it invokes the callback once per
 * complete frame (or once per oversize header, whose payload is then discarded as it arrives).
 *
 * A frame lying entirely inside one chunk is delivered as a view of that chunk (zero copy); a
 * frame spanning chunks is assembled with a single Buffer.concat once complete, so memory held
 * is proportional to the bytes actually received.
 *
 * The callback must not throw (if it does, the rest of that chunk is lost).
 */
export class FrameReader {
  private readonly max: number;
  private readonly hdr = Buffer.allocUnsafe(HEADER_SIZE);
  private hdrFill = 0;
  /** Payload length of the frame being assembled across chunks, or -1 while reading a header. */
  private want = -1;
  private sid = 0;
  private type = 0;
  private flags = 0;
  private parts: Buffer[] = [];
  private partsLen = 0;
  /** Oversize payload bytes still to discard. */
  private skip = 0;

  constructor(maxMessage: number = MAX_MESSAGE) {
    this.max = maxMessage;
  }

  /** Bytes currently held waiting for the rest of a frame (excludes skipped bytes). */
  get buffered(): number {
    return this.hdrFill + this.partsLen;
  }

  /** Bytes of an oversize payload still to be discarded. */
  get skipping(): number {
    return this.skip;
  }

  /** True when no partial frame is pending. */
  get idle(): boolean {
    return this.hdrFill === 0 && this.want < 0 && this.skip === 0;
  }

  reset(): void {
    this.hdrFill = 0;
    this.want = -1;
    this.parts = [];
    this.partsLen = 0;
    this.skip = 0;
  }

  push(chunk: Buffer, onItem: (item: FrameItem) => void): void {
    const n = chunk.length;
    let off = 0;
    while (off < n) {
      if (this.skip > 0) {
        const k = Math.min(this.skip, n - off);
        this.skip -= k;
        off += k;
        continue;
      }

      if (this.want >= 0) {
        // Continue assembling a payload that started in an earlier chunk.
        const k = Math.min(this.want - this.partsLen, n - off);
        this.parts.push(chunk.subarray(off, off + k));
        this.partsLen += k;
        off += k;
        if (this.partsLen === this.want) {
          const parts = this.parts;
          const payload = parts.length === 1 ? parts[0] : Buffer.concat(parts, this.want);
          this.parts = [];
          this.partsLen = 0;
          this.want = -1;
          onItem({ kind: "frame", streamId: this.sid, type: this.type, flags: this.flags, payload });
        }
        continue;
      }

      // Header.
      let h: Buffer;
      let ho: number;
      if (this.hdrFill === 0 && n - off >= HEADER_SIZE) {
        h = chunk;
        ho = off;
        off += HEADER_SIZE;
      } else {
        const k = Math.min(HEADER_SIZE - this.hdrFill, n - off);
        chunk.copy(this.hdr, this.hdrFill, off, off + k);
        this.hdrFill += k;
        off += k;
        if (this.hdrFill < HEADER_SIZE) return;
        this.hdrFill = 0;
        h = this.hdr;
        ho = 0;
      }
      const len = h.readUInt32BE(ho);
      const sid = h.readUInt32BE(ho + 4);
      const type = h[ho + 8];
      const flags = h[ho + 9];

      if (len > this.max) {
        this.skip = len;
        onItem({ kind: "oversize", streamId: sid, type, flags, length: len });
        continue;
      }
      if (n - off >= len) {
        const payload = len === 0 ? EMPTY : chunk.subarray(off, off + len);
        off += len;
        onItem({ kind: "frame", streamId: sid, type, flags, payload });
        continue;
      }
      this.want = len;
      this.sid = sid;
      this.type = type;
      this.flags = flags;
    }
  }

  /** Convenience for tests and tools: returns the items completed by this chunk. */
  feed(chunk: Buffer): FrameItem[] {
    const out: FrameItem[] = [];
    this.push(chunk, (item) => out.push(item));
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Protobuf primitives for the envelope encoders.

function varintSize(v: number): number {
  // v is a non-negative integer < 2^53
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 4;
  v = Math.floor(v / 0x10000000);
  while (v > 0) {
    n++;
    v = Math.floor(v / 0x80);
  }
  return n;
}

function writeVarint(buf: Buffer, off: number, v: number): number {
  while (v >= 0x80) {
    buf[off++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[off++] = v;
  return off;
}

const SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

/** int64 as a varint (two's complement, negative values take 10 bytes). */
function bigVarintSize(v: bigint): number {
  if (v >= 0n && v <= SAFE_BIG) return varintSize(Number(v));
  let u = BigInt.asUintN(64, v);
  let n = 1;
  while (u >= 0x80n) {
    u >>= 7n;
    n++;
  }
  return n;
}

function writeBigVarint(buf: Buffer, off: number, v: bigint): number {
  if (v >= 0n && v <= SAFE_BIG) return writeVarint(buf, off, Number(v));
  let u = BigInt.asUintN(64, v);
  while (u >= 0x80n) {
    buf[off++] = Number(u & 0x7fn) | 0x80;
    u >>= 7n;
  }
  buf[off++] = Number(u);
  return off;
}

/** int32 as a varint: negative values are sign-extended to 64 bits (10 bytes). */
function int32VarintSize(v: number): number {
  return v < 0 ? 10 : varintSize(v);
}

function writeInt32Varint(buf: Buffer, off: number, v: number): number {
  return v < 0 ? writeBigVarint(buf, off, BigInt(v)) : writeVarint(buf, off, v);
}

/** Size of a length-delimited field (key + length + body) with a one-byte key. */
function ldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

function writeString(buf: Buffer, off: number, tag: number, s: string, byteLen: number): number {
  buf[off++] = tag;
  off = writeVarint(buf, off, byteLen);
  if (byteLen > 0) off += buf.write(s, off, byteLen, "utf8");
  return off;
}

function writeBytes(buf: Buffer, off: number, tag: number, b: Uint8Array): number {
  buf[off++] = tag;
  off = writeVarint(buf, off, b.length);
  buf.set(b, off);
  return off + b.length;
}

// ---------------------------------------------------------------------------------------------
// Envelope encoders (byte-identical to the Go/ts-proto encoding: fields in ascending order,
// defaults omitted).

export type MetadataEntries = ReadonlyArray<readonly [string, string]>;

/**
 * Encodes a Request frame (type 0x01, flags 0) carrying
 * `Request{service, method, payload, timeout_nano, metadata}` in a single allocation.
 * Throws a ResourceExhausted TtrpcError if the envelope would exceed MAX_MESSAGE.
 */
export function encodeRequestFrame(
  streamId: number,
  service: string,
  method: string,
  payload: Uint8Array,
  timeoutNano: bigint = 0n,
  metadata?: MetadataEntries,
): Buffer {
  const sLen = Buffer.byteLength(service, "utf8");
  const mLen = Buffer.byteLength(method, "utf8");
  let size = 0;
  if (sLen > 0) size += ldSize(sLen);
  if (mLen > 0) size += ldSize(mLen);
  if (payload.length > 0) size += ldSize(payload.length);
  if (timeoutNano !== 0n) size += 1 + bigVarintSize(timeoutNano);
  let mdLens: number[] | undefined;
  if (metadata !== undefined && metadata.length > 0) {
    mdLens = new Array<number>(metadata.length * 3);
    for (let i = 0; i < metadata.length; i++) {
      const [k, v] = metadata[i];
      const kl = Buffer.byteLength(k, "utf8");
      const vl = Buffer.byteLength(v, "utf8");
      const el = (kl > 0 ? ldSize(kl) : 0) + (vl > 0 ? ldSize(vl) : 0);
      mdLens[i * 3] = kl;
      mdLens[i * 3 + 1] = vl;
      mdLens[i * 3 + 2] = el;
      size += ldSize(el);
    }
  }
  if (size > MAX_MESSAGE) throw oversizeError(size);

  const buf = Buffer.allocUnsafe(HEADER_SIZE + size);
  writeHeader(buf, size, streamId, MessageType.Request, 0);
  let off = HEADER_SIZE;
  if (sLen > 0) off = writeString(buf, off, 0x0a, service, sLen);
  if (mLen > 0) off = writeString(buf, off, 0x12, method, mLen);
  if (payload.length > 0) off = writeBytes(buf, off, 0x1a, payload);
  if (timeoutNano !== 0n) {
    buf[off++] = 0x20;
    off = writeBigVarint(buf, off, timeoutNano);
  }
  if (mdLens !== undefined) {
    for (let i = 0; i < metadata!.length; i++) {
      const [k, v] = metadata![i];
      buf[off++] = 0x2a;
      off = writeVarint(buf, off, mdLens[i * 3 + 2]);
      if (mdLens[i * 3] > 0) off = writeString(buf, off, 0x0a, k, mdLens[i * 3]);
      if (mdLens[i * 3 + 1] > 0) off = writeString(buf, off, 0x12, v, mdLens[i * 3 + 1]);
    }
  }
  return buf;
}

/**
 * Encodes a successful Response frame: `Response{status: {} (0a 00), payload}`.
 * An empty payload omits field 2. Throws a ResourceExhausted TtrpcError if over MAX_MESSAGE.
 */
export function encodeResponseFrame(streamId: number, payload: Uint8Array): Buffer {
  const pLen = payload.length;
  const size = 2 + (pLen > 0 ? ldSize(pLen) : 0);
  if (size > MAX_MESSAGE) throw oversizeError(size);
  const buf = Buffer.allocUnsafe(HEADER_SIZE + size);
  writeHeader(buf, size, streamId, MessageType.Response, 0);
  buf[HEADER_SIZE] = 0x0a;
  buf[HEADER_SIZE + 1] = 0x00;
  if (pLen > 0) writeBytes(buf, HEADER_SIZE + 2, 0x12, payload);
  return buf;
}

/** Longest status message (UTF-16 code units) put on the wire; longer ones are truncated. */
const MAX_STATUS_MESSAGE_CHARS = 1 << 20; // ≤ 3 MiB of UTF-8, well under MAX_MESSAGE

/**
 * Encodes an error Response frame: `Response{status: {code, message}}` with no payload.
 * Never throws: over-long messages are truncated so the frame stays under the limit.
 */
export function encodeErrorFrame(streamId: number, code: number, message: string): Buffer {
  if (message.length > MAX_STATUS_MESSAGE_CHARS) {
    let cut = MAX_STATUS_MESSAGE_CHARS;
    const c = message.charCodeAt(cut - 1);
    if (c >= 0xd800 && c <= 0xdbff) cut--; // don't split a surrogate pair
    message = message.slice(0, cut);
  }
  code = code | 0;
  const msgLen = Buffer.byteLength(message, "utf8");
  const stLen = (code !== 0 ? 1 + int32VarintSize(code) : 0) + (msgLen > 0 ? ldSize(msgLen) : 0);
  const size = ldSize(stLen);
  const buf = Buffer.allocUnsafe(HEADER_SIZE + size);
  writeHeader(buf, size, streamId, MessageType.Response, 0);
  let off = HEADER_SIZE;
  buf[off++] = 0x0a;
  off = writeVarint(buf, off, stLen);
  if (code !== 0) {
    buf[off++] = 0x08;
    off = writeInt32Varint(buf, off, code);
  }
  if (msgLen > 0) writeString(buf, off, 0x12, message, msgLen);
  return buf;
}
