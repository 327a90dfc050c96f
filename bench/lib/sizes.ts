// SPDX-License-Identifier: Apache-2.0
// How much each workload does: the full sizes, the quick (smoke) sizes, and their shape.

export interface Sizes {
  startupIters: number;
  lifecycleIters: number;
  detachedIters: number;
  execIters: number;
  throughputIters: number;
  throughputMiB: number;
  memoryRounds: number;
  memoryContainers: number;
  /** The pods shape: memoryPods pods (one shim daemon each) of memoryPodContainers containers. */
  memoryPods: number;
  memoryPodContainers: number;
  churnRounds: number;
  churnPerRound: number;
  /** Containers in flight; each level is its own pair of rows. */
  churnConcurrencies: number[];
  warmup: number;
}

export const FULL: Sizes = {
  startupIters: 20,
  lifecycleIters: 30,
  detachedIters: 20,
  execIters: 50,
  throughputIters: 5,
  throughputMiB: 1024,
  memoryRounds: 3,
  memoryContainers: 20,
  memoryPods: 20,
  memoryPodContainers: 3,
  churnRounds: 4,
  churnPerRound: 50,
  churnConcurrencies: [4, 16],
  warmup: 2,
};

export const QUICK: Sizes = {
  startupIters: 3,
  lifecycleIters: 3,
  detachedIters: 2,
  execIters: 5,
  throughputIters: 1,
  throughputMiB: 64,
  memoryRounds: 1,
  memoryContainers: 4,
  memoryPods: 2,
  memoryPodContainers: 3,
  churnRounds: 1,
  churnPerRound: 16,
  churnConcurrencies: [4, 8],
  warmup: 1,
};
