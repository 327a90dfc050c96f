// SPDX-License-Identifier: Apache-2.0
/**
 * ttrpc client (containerd/ttrpc v1.2.x client.go; containerd's shim event publisher uses it).
 *
 * One connection multiplexes any number of concurrent unary calls, with odd increasing stream
 * ids starting at 1. When the connection goes away every pending call fails with `ttrpc: closed`.
 */
import { EventEmitter } from "node:events";
import * as net from "node:net";
import { Response } from "../gen/ttrpc/request.js";
import { FrameReader, MAX_MESSAGE, MessageType, encodeRequestFrame, oversizeMessage, type FrameItem } from "./frame.js";
import type { MessageCodec } from "./server.js";
import {
  CANCELED_MESSAGE,
  CLOSED_MESSAGE,
  Code,
  DEADLINE_EXCEEDED_MESSAGE,
  TtrpcError,
  fromStatus,
} from "./status.js";


export interface CallOptions {
  /** Per-call timeout: sent as timeout_nano and enforced locally (DeadlineExceeded). */
  timeoutMs?: number;
  /** Request metadata, e.g. `{ "containerd-namespace-ttrpc": "default" }`. */
  metadata?: Record<string, string>;
  /** Cancels the call locally (Canceled). */
  signal?: AbortSignal;
}

export interface ConnectOptions {
  /** Overall dial timeout (default 5000 ms). */
  timeoutMs?: number;
  /** Retry every 10 ms while the socket file does not exist (ENOENT), until the timeout. */
  retryOnEnoent?: boolean;
}

const MAX_STREAM_ID = 0xffffffff;

/** Strips a leading `unix://` from an address. */
export function socketPath(address: string): string {
  return address.startsWith("unix://") ? address.slice("unix://".length) : address;
}

class PendingCall {
  readonly id: number;
  readonly resolve: (payload: Uint8Array) => void;
  readonly reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;

  constructor(id: number, resolve: (payload: Uint8Array) => void, reject: (err: Error) => void) {
    this.id = id;
    this.resolve = resolve;
    this.reject = reject;
  }

  /** Releases the timer and the abort listener. */
  release(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.signal !== undefined && this.onAbort !== undefined) {
      this.signal.removeEventListener("abort", this.onAbort);
      this.signal = undefined;
      this.onAbort = undefined;
    }
  }
}

function uncorkClient(c: TtrpcClient): void {
  c.uncorkNow();
}

/**
 * Events: 'close' (err?: Error) once the connection is gone.
 */
export class TtrpcClient extends EventEmitter {
  private readonly socket: net.Socket;
  private readonly reader = new FrameReader(MAX_MESSAGE);
  private readonly pending = new Map<number, PendingCall>();
  private nextId = 1;
  private closedError: TtrpcError | undefined;
  private corked = false;
  private readonly onItem = (item: FrameItem): void => this.handleItem(item);

  /** Wraps an already connected socket. */
  constructor(socket: net.Socket) {
    super();
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => this.reader.push(chunk, this.onItem));
    socket.on("end", () => socket.destroy());
    socket.on("error", (err: Error) => this.terminate(err));
    socket.on("close", () => this.terminate(undefined));
  }

  /**
   * Dials a unix socket (a leading `unix://` is stripped). With `retryOnEnoent`, retries every
   * 10 ms while the socket file does not exist, until `timeoutMs` (default 5000) elapses.
   */
  static async connect(address: string, options: ConnectOptions = {}): Promise<TtrpcClient> {
    const path = socketPath(address);
    const timeoutMs = options.timeoutMs ?? 5000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw dialTimeout(path);
      try {
        return new TtrpcClient(await dialOnce(path, remaining));
      } catch (err) {
        if (options.retryOnEnoent === true && (err as NodeJS.ErrnoException).code === "ENOENT") {
          if (deadline - Date.now() <= 10) throw dialTimeout(path, err);
          await sleep(10);
          continue;
        }
        throw err;
      }
    }
  }

  /** True once the connection is closed (calls then fail with `ttrpc: closed`). */
  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Number of calls awaiting a response. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Unary call with an already encoded request message; resolves with the encoded response
   * message (empty for an all-default message). The bytes may be a view into the received
   * frame (no copy).
   */
  call(service: string, method: string, request: Uint8Array, options: CallOptions = {}): Promise<Uint8Array> {
    if (this.closedError !== undefined) return Promise.reject(this.newClosedError());
    const { timeoutMs, metadata, signal } = options;
    if (signal?.aborted) return Promise.reject(new TtrpcError(Code.Canceled, CANCELED_MESSAGE));
    const id = this.nextId;
    if (id > MAX_STREAM_ID) {
      return Promise.reject(new TtrpcError(Code.Unavailable, "ttrpc: stream ids exhausted; reconnect"));
    }
    let timeoutNano = 0n;
    if (timeoutMs !== undefined && timeoutMs > 0) timeoutNano = BigInt(Math.ceil(timeoutMs * 1e6));
    let frame: Buffer;
    try {
      frame = encodeRequestFrame(
        id,
        service,
        method,
        request,
        timeoutNano,
        metadata === undefined ? undefined : Object.entries(metadata),
      );
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    this.nextId = id + 2;

    return new Promise<Uint8Array>((resolve, reject) => {
      const p = new PendingCall(id, resolve, reject);
      if (timeoutNano !== 0n) p.timer = setTimeout(TtrpcClient.expire, timeoutMs, this, id);
      if (signal !== undefined) {
        p.signal = signal;
        p.onAbort = () => this.fail(id, new TtrpcError(Code.Canceled, CANCELED_MESSAGE));
        signal.addEventListener("abort", p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.write(frame);
    });
  }

  /**
   * Registers a listener called once when the connection is gone (immediately, on a microtask,
   * if it already is). Returns a function that unregisters it.
   */
  onClose(listener: (err?: Error) => void): () => void {
    if (this.closedError !== undefined) {
      const cause = this.closedError.cause as Error | undefined;
      queueMicrotask(() => listener(cause));
      return () => {};
    }
    this.once("close", listener);
    return () => {
      this.off("close", listener);
    };
  }

  /** Closes the connection; pending calls fail with `ttrpc: closed`. */
  close(): void {
    this.socket.destroy();
    this.terminate(undefined);
  }

  /** Lets the process exit while this connection is idle. */
  unref(): this {
    this.socket.unref();
    return this;
  }

  ref(): this {
    this.socket.ref();
    return this;
  }

  /** @internal */
  uncorkNow(): void {
    this.corked = false;
    this.socket.uncork();
  }

  private write(frame: Buffer): void {
    const s = this.socket;
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(uncorkClient, this);
    }
    s.write(frame);
  }

  private static expire(this: void, client: TtrpcClient, id: number): void {
    const p = client.pending.get(id);
    if (p === undefined) return;
    p.timer = undefined;
    client.fail(id, new TtrpcError(Code.DeadlineExceeded, DEADLINE_EXCEEDED_MESSAGE));
  }

  private fail(id: number, err: Error): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    p.release();
    p.reject(err);
  }

  private handleItem(item: FrameItem): void {
    const p = this.pending.get(item.streamId);
    if (p === undefined) return; // unknown, late (timed out) or server-initiated: ignore
    if (item.kind === "oversize") {
      this.fail(item.streamId, new TtrpcError(Code.ResourceExhausted, oversizeMessage(item.length)));
      return;
    }
    if (item.type !== MessageType.Response) return; // Data frames: not used by unary calls
    this.pending.delete(item.streamId);
    p.release();
    let res: Response;
    try {
      res = Response.decode(item.payload);
    } catch (err) {
      p.reject(
        new TtrpcError(Code.Internal, `ttrpc: failed to unmarshal response: ${(err as Error).message ?? err}`),
      );
      return;
    }
    const err = fromStatus(res.status);
    if (err !== undefined) p.reject(err);
    else p.resolve(res.payload);
  }

  private newClosedError(): TtrpcError {
    return new TtrpcError(Code.Unavailable, CLOSED_MESSAGE, { cause: this.closedError?.cause });
  }

  private terminate(cause: Error | undefined): void {
    if (this.closedError !== undefined) return;
    this.closedError = new TtrpcError(Code.Unavailable, CLOSED_MESSAGE, { cause });
    this.reader.reset();
    if (!this.socket.destroyed) this.socket.destroy();
    if (this.pending.size > 0) {
      const calls = [...this.pending.values()];
      this.pending.clear();
      for (const p of calls) {
        p.release();
        p.reject(this.newClosedError());
      }
    }
    this.emit("close", cause);
  }
}

/**
 * Typed unary call: encodes `req` with `requestCodec`, decodes the reply with `responseCodec`.
 */
export async function invoke<Req, Res>(
  client: TtrpcClient,
  service: string,
  method: string,
  requestCodec: MessageCodec<Req>,
  responseCodec: MessageCodec<Res>,
  req: Req,
  options?: CallOptions,
): Promise<Res> {
  const bytes = await client.call(service, method, requestCodec.encode(req).finish(), options);
  try {
    return responseCodec.decode(bytes);
  } catch (err) {
    throw new TtrpcError(Code.Internal, `ttrpc: error unmarshalling payload: ${(err as Error).message ?? err}`);
  }
}

function dialTimeout(path: string, cause?: unknown): TtrpcError {
  return new TtrpcError(Code.DeadlineExceeded, `dial ${path}: timeout`, { cause });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function dialOnce(path: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const socket = net.createConnection({ path });
    const timer = setTimeout(() => {
      cleanup();
      socket.destroy();
      reject(dialTimeout(path));
    }, timeoutMs);
    const onConnect = (): void => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: Error): void => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    function cleanup(): void {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("error", onError);
    }
    socket.once("connect", onConnect);
    socket.once("error", onError);
  });
}
