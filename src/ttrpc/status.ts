// SPDX-License-Identifier: Apache-2.0
/**
 * gRPC status codes, the TtrpcError class, containerd errdefs-style constructors and the mapping
 * of arbitrary thrown values to a wire status (gRPC status codes, as containerd/ttrpc v1.2.x and containerd's errdefs map them).
 */

/** gRPC status codes (google.rpc.Code). */
export enum Code {
  OK = 0,
  Canceled = 1,
  Unknown = 2,
  InvalidArgument = 3,
  DeadlineExceeded = 4,
  NotFound = 5,
  AlreadyExists = 6,
  PermissionDenied = 7,
  ResourceExhausted = 8,
  FailedPrecondition = 9,
  Aborted = 10,
  OutOfRange = 11,
  Unimplemented = 12,
  Internal = 13,
  Unavailable = 14,
  DataLoss = 15,
  Unauthenticated = 16,
}

/** A status as carried on the wire (google.rpc.Status without details). */
export interface StatusLike {
  code: Code;
  message: string;
}

/** An error carrying a gRPC status code. `message` is exactly the wire message. */
export class TtrpcError extends Error {
  override readonly name = "TtrpcError";
  readonly code: Code;

  /** `code` may come off the wire: any number, as gRPC's own clients keep unknown codes. */
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** The status this error is sent as. */
  toStatus(): StatusLike {
    return { code: this.code, message: this.message };
  }
}

/** Text used by Go's context package; the reference server maps context errors to these. */
export const CANCELED_MESSAGE = "context canceled";
export const DEADLINE_EXCEEDED_MESSAGE = "context deadline exceeded";
/** Message of the error pending client calls fail with when the connection goes away. */
export const CLOSED_MESSAGE = "ttrpc: closed";

export function isTtrpcError(err: unknown): err is TtrpcError {
  if (err instanceof TtrpcError) return true;
  // Tolerate a second copy of this module (duck typing on name + numeric code).
  return (
    typeof err === "object" &&
    err !== null &&
    (err as { name?: unknown }).name === "TtrpcError" &&
    typeof (err as { code?: unknown }).code === "number" &&
    typeof (err as { message?: unknown }).message === "string"
  );
}

function classified(code: Code, classText: string, msg?: string): TtrpcError {
  return new TtrpcError(code, msg ? `${msg}: ${classText}` : classText);
}

// containerd errdefs classes: message is "<msg>: <class text>", as errors.Wrap(ErrX, msg) prints.
export const invalidArgument = (msg?: string): TtrpcError => classified(Code.InvalidArgument, "invalid argument", msg);
export const notFound = (msg?: string): TtrpcError => classified(Code.NotFound, "not found", msg);
export const alreadyExists = (msg?: string): TtrpcError => classified(Code.AlreadyExists, "already exists", msg);
export const failedPrecondition = (msg?: string): TtrpcError =>
  classified(Code.FailedPrecondition, "failed precondition", msg);
export const unavailable = (msg?: string): TtrpcError => classified(Code.Unavailable, "unavailable", msg);
export const notImplemented = (msg?: string): TtrpcError => classified(Code.Unimplemented, "not implemented", msg);
/** An unclassified error (code Unknown) with a verbatim message. */
export const unknown = (msg: string): TtrpcError => new TtrpcError(Code.Unknown, msg);
export const canceled = (): TtrpcError => new TtrpcError(Code.Canceled, CANCELED_MESSAGE);
export const deadlineExceeded = (): TtrpcError => new TtrpcError(Code.DeadlineExceeded, DEADLINE_EXCEEDED_MESSAGE);

/** True if `err` is a TtrpcError with the given code. */
export function hasCode(err: unknown, code: Code): boolean {
  return isTtrpcError(err) && err.code === code;
}
export const isNotFound = (err: unknown): boolean => hasCode(err, Code.NotFound);
export const isAlreadyExists = (err: unknown): boolean => hasCode(err, Code.AlreadyExists);
export const isUnimplemented = (err: unknown): boolean => hasCode(err, Code.Unimplemented);

function describe(err: unknown): string {
  if (typeof err === "string") return err;
  if (err instanceof Error) return err.message || err.name || "error";
  try {
    return String(err);
  } catch {
    return "unknown error";
  }
}

function safeGet(obj: object, key: string): unknown {
  try {
    return (obj as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

function toStatusInner(err: unknown, depth: number): StatusLike {
  if (isTtrpcError(err)) {
    return { code: err.code | 0, message: err.message };
  }
  if (typeof err === "object" && err !== null) {
    const name = safeGet(err, "name");
    if (name === "TimeoutError") {
      return { code: Code.DeadlineExceeded, message: DEADLINE_EXCEEDED_MESSAGE };
    }
    if (name === "AbortError") {
      // An AbortError raised because of one of our signals carries the reason as `cause`.
      const cause = safeGet(err, "cause");
      if (depth < 4 && cause !== undefined && cause !== err) {
        const inner = toStatusInner(cause, depth + 1);
        if (inner.code === Code.DeadlineExceeded || inner.code === Code.Canceled) return inner;
      }
      return { code: Code.Canceled, message: CANCELED_MESSAGE };
    }
    const sysCode = safeGet(err, "code");
    if (typeof sysCode === "string") {
      switch (sysCode) {
        case "ENOENT":
          return { code: Code.NotFound, message: describe(err) };
        case "EEXIST":
          return { code: Code.AlreadyExists, message: describe(err) };
        case "EACCES":
        case "EPERM":
          return { code: Code.PermissionDenied, message: describe(err) };
        case "ABORT_ERR":
          return { code: Code.Canceled, message: CANCELED_MESSAGE };
      }
    }
  }
  return { code: Code.Unknown, message: describe(err) };
}

/**
 * Maps any thrown value to the status sent on the wire:
 * TtrpcError keeps its code; AbortError → Canceled (or the code of its TtrpcError cause, e.g.
 * DeadlineExceeded); TimeoutError → DeadlineExceeded; Node system errors ENOENT / EEXIST /
 * EACCES|EPERM → NotFound / AlreadyExists / PermissionDenied; anything else → Unknown with the
 * error's message. Never throws.
 */
export function toStatus(err: unknown): StatusLike {
  try {
    return toStatusInner(err, 0);
  } catch {
    return { code: Code.Unknown, message: "unknown error" };
  }
}

/**
 * Client side: turns a received status into an error. Returns undefined for an absent status or
 * code OK (the call succeeded).
 */
export function fromStatus(status: { code?: number; message?: string } | undefined | null): TtrpcError | undefined {
  if (status === undefined || status === null) return undefined;
  const code: Code = status.code ?? Code.OK;
  if (code === Code.OK) return undefined;
  return new TtrpcError(code, status.message ?? "");
}

/** True if `err` is the error calls fail with when the connection closed (`ttrpc: closed`). */
export function isClosedError(err: unknown): boolean {
  return isTtrpcError(err) && err.message === CLOSED_MESSAGE;
}
