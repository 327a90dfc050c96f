// Timestamps as containerd expects them (shared/spec/task-api.md §2).
import type { Timestamp } from '../gen/google/protobuf/timestamp.js';

/** Go's zero time: what the reference reports for "not exited". */
export const GO_ZERO_TIME: Timestamp = { seconds: -62135596800n, nanos: 0 };

export function now(): Timestamp {
  const ms = Date.now();
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}
