// SPDX-License-Identifier: Apache-2.0
// Timestamps as containerd expects them (protobuf Timestamps; Go's zero time for "not exited", as containerd v2.3.4 pkg/protobuf/timestamp.go converts it).
import type { Timestamp } from '../gen/google/protobuf/timestamp.js';

/** Go's zero time: what the reference reports for "not exited". */
export const GO_ZERO_TIME: Timestamp = { seconds: -62135596800n, nanos: 0 };

/**
 * Wall-clock now. Date.now() keeps it true to the system clock over weeks (a monotonic origin
 * would drift from NTP-adjusted time); the monotonic clock supplies the sub-millisecond digits,
 * so timestamps have the reference's nanosecond resolution and are within 1 ms of the truth.
 */
export function now(): Timestamp {
  const ms = Date.now();
  const sub = Number(process.hrtime.bigint() % 1_000_000n);
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 + sub };
}
