// SPDX-License-Identifier: Apache-2.0
// Follows `ctr events` and notes when each (topic, container) event line arrives.
import { performance } from 'node:perf_hooks';
import type { ChildProcess } from 'node:child_process';
import type { Containerd } from '../../test/support/containerd.js';
import { sleep } from './proc.js';

export class EventWatcher {
  private child: ChildProcess;
  private buf = '';
  /** `${topic} ${container_id}` → arrival time (performance.now()). */
  private seen = new Map<string, number>();
  private waiters = new Map<string, Array<(t: number) => void>>();

  constructor(c: Containerd) {
    this.child = c.ctrSpawn(['events']);
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (s: string) => this.onData(s));
  }

  /** Resolves once `ctr events` is subscribed (it prints nothing until an event; give it a moment). */
  async ready(): Promise<void> {
    await sleep(300);
  }

  private onData(s: string): void {
    const now = performance.now();
    this.buf += s;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      // 2026-11-29 18:19:23.94 +0000 UTC default /tasks/start {"container_id":"x","pid":1}
      const m = /^\S+ \S+ [+-]\d{4} \S+ \S+ (\/\S+) ?(.*)$/.exec(line.trim());
      if (!m) continue;
      let id: string | undefined;
      try {
        id = (JSON.parse(m[2] || '{}') as { container_id?: string }).container_id;
      } catch { /* not JSON */ }
      if (!id) continue;
      const key = `${m[1]} ${id}`;
      if (!this.seen.has(key)) this.seen.set(key, now);
      for (const w of this.waiters.get(key) ?? []) w(now);
      this.waiters.delete(key);
    }
  }

  /** Arrival time of the event, waiting up to timeoutMs (NaN on timeout). */
  wait(topic: string, id: string, timeoutMs = 30_000): Promise<number> {
    const key = `${topic} ${id}`;
    const t = this.seen.get(key);
    if (t !== undefined) return Promise.resolve(t);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(NaN), timeoutMs);
      const list = this.waiters.get(key) ?? [];
      list.push((x) => { clearTimeout(timer); resolve(x); });
      this.waiters.set(key, list);
    });
  }

  forget(id: string): void {
    for (const k of [...this.seen.keys()]) if (k.endsWith(` ${id}`)) this.seen.delete(k);
  }

  stop(): void {
    if (this.child.pid !== undefined) try { process.kill(this.child.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}
