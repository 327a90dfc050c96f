// SPDX-License-Identifier: Apache-2.0
/**
 * ttrpc server (containerd/ttrpc v1.2.x server.go): unary Request → Response over unix sockets.
 *
 * Structure:
 *  - TtrpcServer holds the service table, accepts connections and tracks in-flight handlers.
 *  - ServerConnection is transport-agnostic: it is fed bytes (`feed`) and writes frames through
 *    a ConnectionTransport. `handleSocket` adapts a net.Socket; tests can drive a connection
 *    in-process with `attach` and any object implementing ConnectionTransport.
 *  - ServerCall is the per-call CallContext; its AbortController and deadline timer are created
 *    lazily, only if the handler looks at `signal`.
 */
import type * as net from "node:net";
import { Request, type KeyValue } from "../gen/ttrpc/request.js";
import {
  MessageType,
  FrameReader,
  MAX_MESSAGE,
  encodeErrorFrame,
  encodeResponseFrame,
  oversizeMessage,
  type FrameItem,
} from "./frame.js";
import { CANCELED_MESSAGE, Code, DEADLINE_EXCEEDED_MESSAGE, TtrpcError, toStatus } from "./status.js";

// ---------------------------------------------------------------------------------------------
// Public types

/** Information about the connected peer, shared by all calls on one connection. */
export interface PeerInfo {
  /** The socket, when the connection is a net.Socket. */
  readonly socket?: net.Socket;
  /** Free slot for the authorize hook to record e.g. SO_PEERCRED credentials. */
  credentials?: unknown;
}

export interface CallContext {
  readonly service: string;
  readonly method: string;
  readonly streamId: number;
  /** Request metadata; keys lower-cased, values in arrival order. */
  readonly metadata: Map<string, string[]>;
  /** Absolute deadline (ms since epoch) from timeout_nano, if the caller set one. */
  readonly deadline: number | undefined;
  /** Aborted when the deadline passes (reason: DeadlineExceeded TtrpcError) or the connection
   *  closes / the server shuts down (reason: Canceled TtrpcError). */
  readonly signal: AbortSignal;
  readonly peer: PeerInfo;
}

export interface MethodDef<Req, Res> {
  decode(bytes: Uint8Array): Req;
  encode(res: Res): Uint8Array;
  handler(req: Req, ctx: CallContext): Promise<Res> | Res;
}

// A registry holds methods of every request and response type; `unknown` would not accept them
// (a handler's parameter is contravariant), so the element type is erased here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMethodDef = MethodDef<any, any>;
export type ServiceMethods = Record<string, AnyMethodDef>;

/** Structural type of a ts-proto message codec (`MessageFns<T>`). */
export interface MessageCodec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
}

/** Builds a MethodDef from ts-proto codecs and a handler. */
export function method<Req, Res>(
  requestCodec: MessageCodec<Req>,
  responseCodec: MessageCodec<Res>,
  handler: (req: Req, ctx: CallContext) => Promise<Res> | Res,
): MethodDef<Req, Res> {
  return {
    decode: (bytes) => requestCodec.decode(bytes),
    encode: (res) => responseCodec.encode(res).finish(),
    handler,
  };
}

/** What a ServerConnection needs from its transport. */
export interface ConnectionTransport {
  /** Queue bytes for the peer. Return false when the peer is not draining fast enough: the
   *  connection then calls `pause()` and waits for `ServerConnection.drained()`. */
  write(data: Buffer): boolean;
  /** Stop delivering incoming bytes. */
  pause(): void;
  /** Resume delivering incoming bytes. */
  resume(): void;
  /** Flush queued writes, then close; must eventually lead to `ServerConnection.closedByPeer()`. */
  end(): void;
  /** Close immediately. */
  destroy(): void;
}

export interface ServerErrorInfo {
  where: string;
  service?: string;
  method?: string;
  streamId?: number;
}

export interface ServerOptions {
  /** Called for every accepted socket; returning false (or throwing) destroys it. */
  authorize?: (socket: net.Socket, peer: PeerInfo) => boolean;
  /** Concurrent in-flight calls per connection; more are answered with ResourceExhausted. */
  maxInflightPerConnection?: number;
  /** Stop reading from a client while its socket's write buffer exceeds this many bytes. */
  maxWriteBuffer?: number;
  /** Infrastructure errors (accept failures, socket errors, bugs). Handler errors are not
   *  reported here: they become statuses. */
  onError?: (err: unknown, info: ServerErrorInfo) => void;
}

export const DEFAULT_MAX_INFLIGHT = 1024;
export const DEFAULT_MAX_WRITE_BUFFER = 1024 * 1024;

export const MSG_STREAM_ID_ODD = "StreamID must be odd for client initiated streams";
export const MSG_STREAM_ID_REUSE = "StreamID cannot be re-used and must increment";

// ---------------------------------------------------------------------------------------------
// Per-call context

function onCallDeadline(call: ServerCall): void {
  call.timer = undefined;
  call.cancel(new TtrpcError(Code.DeadlineExceeded, DEADLINE_EXCEEDED_MESSAGE));
}

/** Longest delay setTimeout accepts. */
const MAX_TIMER_MS = 0x7fffffff;

class ServerCall implements CallContext {
  readonly service: string;
  readonly method: string;
  readonly streamId: number;
  readonly deadline: number | undefined;
  readonly peer: PeerInfo;
  private readonly rawMetadata: KeyValue[];
  private md: Map<string, string[]> | undefined;
  private controller: AbortController | undefined;
  private reason: TtrpcError | undefined;
  timer: NodeJS.Timeout | undefined;

  constructor(streamId: number, req: Request, peer: PeerInfo, now: number) {
    this.streamId = streamId;
    this.service = req.service;
    this.method = req.method;
    this.rawMetadata = req.metadata;
    this.peer = peer;
    const t = req.timeoutNano;
    this.deadline = t !== 0n ? now + Number(t) / 1e6 : undefined;
  }

  get metadata(): Map<string, string[]> {
    let md = this.md;
    if (md === undefined) {
      md = new Map();
      for (const kv of this.rawMetadata) {
        const key = kv.key.toLowerCase();
        const list = md.get(key);
        if (list === undefined) md.set(key, [kv.value]);
        else list.push(kv.value);
      }
      this.md = md;
    }
    return md;
  }

  get signal(): AbortSignal {
    let c = this.controller;
    if (c === undefined) {
      c = this.controller = new AbortController();
      if (this.reason !== undefined) {
        c.abort(this.reason);
      } else if (this.deadline !== undefined) {
        const remaining = this.deadline - Date.now();
        if (remaining <= 0) {
          this.reason = new TtrpcError(Code.DeadlineExceeded, DEADLINE_EXCEEDED_MESSAGE);
          c.abort(this.reason);
        } else if (remaining <= MAX_TIMER_MS) {
          this.timer = setTimeout(onCallDeadline, Math.ceil(remaining), this);
        }
      }
    }
    return c.signal;
  }

  /** Cancels the call's context (first reason wins). */
  cancel(reason: TtrpcError): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.clearTimer();
    this.controller?.abort(reason);
  }

  clearTimer(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }
}

async function runCall(conn: ServerConnection, call: ServerCall, def: AnyMethodDef, arg: unknown): Promise<void> {
  let frame: Buffer;
  try {
    const res: unknown = await def.handler(arg, call);
    if (res === undefined || res === null) {
      throw new TtrpcError(Code.Unknown, "ttrpc: marshal called with nil");
    }
    let bytes: Uint8Array;
    try {
      bytes = def.encode(res);
    } catch (err) {
      throw new TtrpcError(Code.Internal, `ttrpc: error marshaling payload: ${errText(err)}`);
    }
    frame = encodeResponseFrame(call.streamId, bytes);
  } catch (err) {
    const st = toStatus(err);
    frame = encodeErrorFrame(call.streamId, st.code, st.message);
  }
  conn.complete(call, frame);
}

function errText(err: unknown): string {
  if (err instanceof Error) return err.message;
  try {
    return String(err);
  } catch {
    return "unknown error";
  }
}

// ---------------------------------------------------------------------------------------------
// Connection

export class ServerConnection {
  readonly peer: PeerInfo;
  private readonly server: TtrpcServer;
  private readonly transport: ConnectionTransport;
  private readonly reader = new FrameReader(MAX_MESSAGE);
  private readonly calls = new Set<ServerCall>();
  private readonly maxInflight: number;
  private lastStreamId = 0;
  private paused = false;
  private closed = false;
  private readonly onItem = (item: FrameItem): void => this.handleItem(item);

  /** @internal use TtrpcServer.attach / handleSocket */
  constructor(server: TtrpcServer, transport: ConnectionTransport, peer: PeerInfo, maxInflight: number) {
    this.server = server;
    this.transport = transport;
    this.peer = peer;
    this.maxInflight = maxInflight;
  }

  /** Number of calls whose handler has not finished. */
  get inflight(): number {
    return this.calls.size;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** True while reading is paused for back-pressure. */
  get isPaused(): boolean {
    return this.paused;
  }

  /** Feed bytes received from the peer. Never throws. */
  feed(chunk: Buffer): void {
    if (this.closed) return;
    try {
      this.reader.push(chunk, this.onItem);
    } catch (err) {
      // Not expected: handleItem catches everything. Drop the connection rather than desync.
      this.server.reportError(err, { where: "feed" });
      this.destroy();
    }
  }

  /** The transport's write buffer drained: resume reading if paused for back-pressure. */
  drained(): void {
    if (this.paused && !this.closed) {
      this.paused = false;
      this.transport.resume();
    }
  }

  /** The transport is gone (EOF, error, close): cancel in-flight calls, drop their replies. */
  closedByPeer(): void {
    this.teardown();
    this.server.connectionClosed(this);
  }

  /** Close the connection now; in-flight calls are cancelled and their replies dropped. */
  destroy(): void {
    if (this.teardown()) this.safeTransport("destroy");
    this.server.connectionClosed(this);
  }

  /**
   * Gracefully end: cancel in-flight calls, flush what was already written, then close. The
   * connection counts as open until the transport reports `closedByPeer()`.
   */
  end(): void {
    if (this.teardown()) this.safeTransport("end");
  }

  private safeTransport(op: "end" | "destroy"): void {
    try {
      this.transport[op]();
    } catch (err) {
      this.server.reportError(err, { where: `transport.${op}` });
    }
  }

  private teardown(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.reader.reset();
    if (this.calls.size > 0) {
      const reason = new TtrpcError(Code.Canceled, CANCELED_MESSAGE);
      for (const call of this.calls) call.cancel(reason);
    }
    return true;
  }

  /** Cancel all in-flight calls' contexts (server shutdown) without closing. */
  cancelAll(reason: TtrpcError): void {
    for (const call of this.calls) call.cancel(reason);
  }

  private handleItem(item: FrameItem): void {
    try {
      if (item.kind === "oversize") {
        this.sendError(item.streamId, Code.ResourceExhausted, oversizeMessage(item.length));
        return;
      }
      if (item.type !== MessageType.Request) return; // Data frames and unknown types: ignored
      this.handleRequest(item.streamId, item.payload);
    } catch (err) {
      this.server.reportError(err, { where: "handleItem", streamId: item.streamId });
      this.sendError(item.streamId, Code.Internal, `ttrpc: internal error: ${errText(err)}`);
    }
  }

  private handleRequest(streamId: number, payload: Buffer): void {
    if ((streamId & 1) === 0) {
      this.sendError(streamId, Code.InvalidArgument, MSG_STREAM_ID_ODD);
      return;
    }
    if (streamId <= this.lastStreamId) {
      this.sendError(streamId, Code.InvalidArgument, MSG_STREAM_ID_REUSE);
      return;
    }
    this.lastStreamId = streamId;

    let req: Request;
    try {
      req = Request.decode(payload);
    } catch (err) {
      this.sendError(streamId, Code.InvalidArgument, `unmarshal request error: ${errText(err)}`);
      return;
    }
    const service = this.server.lookupService(req.service);
    if (service === undefined) {
      this.sendError(streamId, Code.Unimplemented, `service ${req.service}`);
      return;
    }
    const def = service.get(req.method);
    if (def === undefined) {
      this.sendError(streamId, Code.Unimplemented, `method ${req.method}`);
      return;
    }
    if (this.calls.size >= this.maxInflight) {
      this.sendError(
        streamId,
        Code.ResourceExhausted,
        `ttrpc: too many in-flight requests on this connection (limit ${this.maxInflight})`,
      );
      return;
    }
    let arg: unknown;
    try {
      arg = def.decode(req.payload);
    } catch (err) {
      this.sendError(streamId, Code.Internal, `ttrpc: error unmarshalling payload: ${errText(err)}`);
      return;
    }
    const call = new ServerCall(streamId, req, this.peer, Date.now());
    this.calls.add(call);
    this.server.callStarted();
    void runCall(this, call, def, arg);
  }

  /** @internal called by runCall when a handler settled. Never throws. */
  complete(call: ServerCall, frame: Buffer): void {
    try {
      call.clearTimer();
      if (this.calls.delete(call)) this.server.callFinished();
      this.send(frame);
    } catch (err) {
      this.server.reportError(err, { where: "complete", streamId: call.streamId });
    }
  }

  private sendError(streamId: number, code: Code, message: string): void {
    this.send(encodeErrorFrame(streamId, code, message));
  }

  private send(frame: Buffer): void {
    if (this.closed) return;
    let ok: boolean;
    try {
      ok = this.transport.write(frame);
    } catch (err) {
      this.server.reportError(err, { where: "transport.write" });
      this.destroy();
      return;
    }
    if (!ok && !this.paused && !this.closed) {
      this.paused = true;
      this.transport.pause();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// net.Socket adapter

const END_TIMEOUT_MS = 2000;

function destroySocket(s: net.Socket): void {
  s.destroy();
}

function uncorkTransport(t: SocketTransport): void {
  t.corked = false;
  t.socket.uncork();
}

class SocketTransport implements ConnectionTransport {
  readonly socket: net.Socket;
  private readonly maxWriteBuffer: number;
  corked = false;

  constructor(socket: net.Socket, maxWriteBuffer: number) {
    this.socket = socket;
    this.maxWriteBuffer = maxWriteBuffer;
  }

  write(data: Buffer): boolean {
    const s = this.socket;
    if (s.destroyed || !s.writable) return true;
    // Coalesce the frames written within one tick into a single writev.
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(uncorkTransport, this);
    }
    s.write(data);
    return s.writableLength < this.maxWriteBuffer;
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  end(): void {
    const s = this.socket;
    if (s.destroyed) return;
    s.pause();
    // Flush queued responses, then close without waiting for the peer; a peer that doesn't
    // read can't hold the connection open for more than END_TIMEOUT_MS.
    s.end(() => s.destroy());
    setTimeout(destroySocket, END_TIMEOUT_MS, s).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Server

export class TtrpcServer {
  private readonly services = new Map<string, Map<string, AnyMethodDef>>();
  private readonly listeners = new Set<net.Server>();
  private readonly conns = new Set<ServerConnection>();
  private readonly opts: Required<Omit<ServerOptions, "authorize" | "onError">> & ServerOptions;
  private inflightTotal = 0;
  private idleWaiters: Array<() => void> = [];
  private connWaiters: Array<() => void> = [];
  private closing = false;
  private readonly onConnection = (socket: net.Socket): void => {
    this.handleSocket(socket);
  };
  private readonly onListenerError = (err: Error): void => {
    this.reportError(err, { where: "accept" });
  };

  constructor(options: ServerOptions = {}) {
    this.opts = {
      ...options,
      maxInflightPerConnection: options.maxInflightPerConnection ?? DEFAULT_MAX_INFLIGHT,
      maxWriteBuffer: options.maxWriteBuffer ?? DEFAULT_MAX_WRITE_BUFFER,
    };
  }

  /** Registers a service's methods. Throws if the service name is already registered. */
  register(serviceName: string, methods: ServiceMethods): this {
    if (this.services.has(serviceName)) throw new Error(`duplicate service ${serviceName} registered`);
    this.services.set(serviceName, new Map(Object.entries(methods)));
    return this;
  }

  /** @internal */
  lookupService(name: string): Map<string, AnyMethodDef> | undefined {
    return this.services.get(name);
  }

  /**
   * Serves connections accepted by `listener` (which may or may not be listening yet).
   * Attaches an 'error' listener so accept failures (e.g. EMFILE) are reported via onError
   * instead of crashing the process.
   */
  serve(listener: net.Server): void {
    if (this.closing) throw new Error("ttrpc: server closed");
    if (this.listeners.has(listener)) return;
    this.listeners.add(listener);
    listener.on("connection", this.onConnection);
    listener.on("error", this.onListenerError);
  }

  /** Takes over an accepted socket. Returns undefined if it was refused. */
  handleSocket(socket: net.Socket): ServerConnection | undefined {
    if (this.closing) {
      socket.destroy();
      return undefined;
    }
    const peer: PeerInfo = { socket };
    if (this.opts.authorize !== undefined) {
      let ok = false;
      try {
        ok = this.opts.authorize(socket, peer) === true;
      } catch (err) {
        this.reportError(err, { where: "authorize" });
      }
      if (!ok) {
        socket.destroy();
        return undefined;
      }
    }
    const transport = new SocketTransport(socket, this.opts.maxWriteBuffer);
    const conn = this.attach(transport, peer);
    const onClose = (): void => conn.closedByPeer();
    socket.on("data", (chunk: Buffer) => conn.feed(chunk));
    socket.on("drain", () => conn.drained());
    socket.on("end", () => {
      // EOF: the client went away; cancel in-flight calls and close (as the reference does).
      conn.closedByPeer();
      socket.destroy();
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "ECONNRESET" && err.code !== "EPIPE") this.reportError(err, { where: "socket" });
      onClose();
    });
    socket.on("close", onClose);
    return conn;
  }

  /** Creates a connection driven by an arbitrary transport (used by tests and fuzzers). */
  attach(transport: ConnectionTransport, peer: PeerInfo = {}): ServerConnection {
    const conn = new ServerConnection(this, transport, peer, this.opts.maxInflightPerConnection);
    this.conns.add(conn);
    return conn;
  }

  /** Number of open connections. */
  get connectionCount(): number {
    return this.conns.size;
  }

  /** Number of handlers currently running (all connections). */
  get inflight(): number {
    return this.inflightTotal;
  }

  /** Stops accepting new connections; existing ones keep being served until shutdown(). */
  close(): void {
    this.closing = true;
    for (const l of this.listeners) {
      l.off("connection", this.onConnection);
      try {
        l.close();
      } catch {
        // not listening
      }
    }
    this.listeners.clear();
  }

  /**
   * Resolves true once no handler is running (on any connection), or false after `timeoutMs`.
   */
  drain(timeoutMs?: number): Promise<boolean> {
    if (this.inflightTotal === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          const i = this.idleWaiters.indexOf(done);
          if (i >= 0) this.idleWaiters.splice(i, 1);
          resolve(false);
        }, timeoutMs);
      }
    });
  }

  /**
   * Stops accepting, optionally waits up to `graceMs` for running handlers to answer, then
   * cancels the remaining calls and ends every connection (queued replies are flushed).
   * Resolves when all connections are closed.
   */
  async shutdown(options: { graceMs?: number } = {}): Promise<void> {
    this.close();
    const grace = options.graceMs ?? 0;
    if (grace > 0) await this.drain(grace);
    const reason = new TtrpcError(Code.Canceled, CANCELED_MESSAGE);
    for (const conn of [...this.conns]) {
      conn.cancelAll(reason);
      conn.end();
    }
    if (this.conns.size > 0) {
      await new Promise<void>((resolve) => this.connWaiters.push(resolve));
    }
  }

  /** @internal */
  connectionClosed(conn: ServerConnection): void {
    if (this.conns.delete(conn) && this.conns.size === 0 && this.connWaiters.length > 0) {
      const waiters = this.connWaiters;
      this.connWaiters = [];
      for (const w of waiters) w();
    }
  }

  /**
   * Resolves once no handler has run for `quietMs` (none running, the last one finished at
   * least that long ago), counting from the first call.
   */
  async whenQuiet(quietMs: number): Promise<void> {
    for (;;) {
      await this.drain(); // a call starting after this moves lastActivity on
      const since = this.lastActivity === undefined ? 0 : performance.now() - this.lastActivity;
      if (this.lastActivity !== undefined && since >= quietMs) return;
      await new Promise((r) => setTimeout(r, Math.max(1, quietMs - since)));
    }
  }

  private lastActivity: number | undefined;

  /** @internal */
  callStarted(): void {
    this.inflightTotal++;
    this.lastActivity = performance.now();
  }

  /** @internal */
  callFinished(): void {
    this.inflightTotal--;
    this.lastActivity = performance.now();
    if (this.inflightTotal === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** @internal */
  reportError(err: unknown, info: ServerErrorInfo): void {
    const cb = this.opts.onError;
    if (cb === undefined) return;
    try {
      cb(err, info);
    } catch {
      // a failing logger must not take the server down
    }
  }
}
