// SPDX-License-Identifier: Apache-2.0
// A FIFO async mutex: each process's lock over its state-changing RPCs (process.ts).
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((r) => { release = r; });
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    return release;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.lock();
    try { return await fn(); } finally { release(); }
  }
}
