// SPDX-License-Identifier: Apache-2.0
// Shared by the ttrpc tests: a deterministic PRNG for generated cases, and the Forward request
// of the spec's wire vector (containerd/ttrpc v1.2.x channel.go) as a protobuf payload.
import { ForwardRequest } from '../../src/gen/containerd/services/ttrpc/events/v1/events.js';
import { TaskStart } from '../../src/gen/containerd/events/task.js';

/** Deterministic PRNG (mulberry32): the same seed gives the same cases on every run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The spec vector's ForwardRequest: a /tasks/start TaskStart{c1, 42} at 1700000000 s in "default". */
export function forwardVectorPayload(): Uint8Array {
  return ForwardRequest.encode(
    ForwardRequest.fromPartial({
      envelope: {
        timestamp: { seconds: 1700000000n, nanos: 0 },
        namespace: 'default',
        topic: '/tasks/start',
        event: {
          typeUrl: 'containerd.events.TaskStart',
          value: Buffer.from(TaskStart.encode({ containerId: 'c1', pid: 42 }).finish()),
        },
      },
    }),
  ).finish();
}
