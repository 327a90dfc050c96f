// SPDX-License-Identifier: Apache-2.0
// Publishes task events to containerd over its ttrpc socket (TTRPC_ADDRESS), one at a time and in
// order (containerd v1.7.0 runtime/v2/shim/publisher.go, v2.3.4 pkg/shim/publisher.go). Unlike the reference, an event that cannot be delivered
// because containerd is unreachable is not dropped after a few retries: it stays at the head of
// a bounded queue and is retried with backoff, so ordering holds and a containerd restart loses
// nothing. Events containerd itself rejects are logged and dropped.
import type { Logger } from '../log/logger.js';
import { Code, TtrpcClient, TtrpcError, invoke } from '../ttrpc/index.js';
import { ForwardRequest } from '../gen/containerd/services/ttrpc/events/v1/events.js';
import { Empty } from './empty.js';
import { now } from './timestamp.js';

const SERVICE = 'containerd.services.events.ttrpc.v1.Events';
const CALL_TIMEOUT_MS = 5000;
const DIAL_TIMEOUT_MS = 5000;
const MAX_QUEUE = 4096;
const MAX_BACKOFF_MS = 5000;

export interface EventSink {
  publish(topic: string, typeUrl: string, value: Uint8Array): void;
}

interface Pending { topic: string; typeUrl: string; value: Uint8Array; timestamp: ReturnType<typeof now> }

export class EventPublisher implements EventSink {
  private readonly queue: Pending[] = [];
  private client?: TtrpcClient;
  private running = false;
  private closing = false;
  private idle: (() => void)[] = [];
  private backoffTimer?: NodeJS.Timeout;
  private wake?: () => void;
  dropped = 0;
  delivered = 0;

  constructor(private readonly address: string, private readonly namespace: string, private readonly log?: Logger) {}

  publish(topic: string, typeUrl: string, value: Uint8Array): void {
    if (this.closing) {
      this.log?.warn({ topic }, 'event published after shutdown began; dropped');
      return;
    }
    if (this.queue.length >= MAX_QUEUE) {
      // Evict the oldest event that is not being sent: the head may be in flight, and run()
      // removes it once its Forward settles.
      const [old] = this.queue.splice(this.running ? 1 : 0, 1);
      this.dropped++;
      this.log?.error({ topic: old.topic }, 'event queue full: evicting oldest event');
    }
    this.queue.push({ topic, typeUrl, value, timestamp: now() });
    if (!this.running) void this.run();
  }

  get pending(): number { return this.queue.length; }

  private async run(): Promise<void> {
    this.running = true;
    let backoff = 100;
    while (this.queue.length) {
      const ev = this.queue[0];
      try {
        await this.forward(ev);
        this.queue.shift();
        this.delivered++;
        backoff = 100;
      } catch (err) {
        if (err instanceof TtrpcError && !isTransport(err)) {
          this.queue.shift();
          this.dropped++;
          this.log?.error({ topic: ev.topic, err: err.message }, 'containerd rejected event; dropped');
          continue;
        }
        this.dropClient();
        if (this.closing) break;
        this.log?.warn({ topic: ev.topic, err: (err as Error).message, retryInMs: backoff }, 'post event failed; retrying');
        await new Promise<void>((r) => { this.wake = r; this.backoffTimer = setTimeout(r, backoff); });
        this.wake = undefined;
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
    this.running = false;
    for (const r of this.idle.splice(0)) r();
  }

  private async forward(ev: Pending): Promise<void> {
    if (!this.client) {
      const c = await TtrpcClient.connect(this.address, { timeoutMs: DIAL_TIMEOUT_MS, retryOnEnoent: true });
      c.once('close', () => { if (this.client === c) this.client = undefined; });
      this.client = c;
    }
    const client = this.client;
    const req = ForwardRequest.fromPartial({
      envelope: {
        timestamp: ev.timestamp,
        namespace: this.namespace,
        topic: ev.topic,
        event: { typeUrl: ev.typeUrl, value: ev.value },
      },
    });
    await invoke(client, SERVICE, 'Forward', ForwardRequest, Empty, req, {
      timeoutMs: CALL_TIMEOUT_MS,
      metadata: { 'containerd-namespace-ttrpc': this.namespace },
    });
  }

  private dropClient(): void {
    try { this.client?.close(); } catch { /* ignore */ }
    this.client = undefined;
  }

  /** Deliver what is queued (bounded by timeoutMs), then close the connection. */
  async close(timeoutMs: number): Promise<boolean> {
    let drained = !this.running && this.queue.length === 0;
    if (!drained) {
      drained = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), timeoutMs);
        this.idle.push(() => { clearTimeout(t); resolve(true); });
      });
    }
    this.closing = true;
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.wake?.();
    this.dropClient();
    return drained;
  }
}

function isTransport(err: TtrpcError): boolean {
  // Codes the client itself produces for a dead or slow connection.
  return err.code === Code.Unavailable || err.code === Code.DeadlineExceeded || err.code === Code.Canceled;
}
