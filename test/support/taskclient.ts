// SPDX-License-Identifier: Apache-2.0
// A typed client of the Task service over our ttrpc client, and a stand-in for containerd's
// events service: what a test needs to play containerd against the shim directly.
import net from 'node:net';
import * as T from '../../src/gen/containerd/task/v2/shim.js';
import { ForwardRequest, type Envelope } from '../../src/gen/containerd/services/ttrpc/events/v1/events.js';
import { TtrpcClient, TtrpcServer, invoke, method, type CallOptions } from '../../src/ttrpc/index.js';
import { Empty } from '../../src/events/empty.js';

/** containerd 2.x speaks v3 after a version-3 bootstrap; the messages are the same. */
export type TaskApiVersion = 2 | 3;

type Codec<M> = { encode(m: M): { finish(): Uint8Array }; decode(b: Uint8Array): M; fromPartial(o: object): M };

export class TaskClient {
  private readonly service: string;

  constructor(readonly client: TtrpcClient, private readonly namespace: string, version: TaskApiVersion = 2) {
    this.service = `containerd.task.v${version}.Task`;
  }

  static async connect(address: string, namespace: string, version: TaskApiVersion = 2): Promise<TaskClient> {
    return new TaskClient(await TtrpcClient.connect(address, { timeoutMs: 5000 }), namespace, version);
  }

  private call<Q, R>(name: string, req: Codec<Q>, res: { decode(b: Uint8Array): R; encode(m: R): { finish(): Uint8Array } }, msg: object, o: CallOptions = {}): Promise<R> {
    return invoke(this.client, this.service, name, req, res, req.fromPartial(msg), {
      ...o, metadata: { 'containerd-namespace-ttrpc': this.namespace },
    });
  }

  create(r: Partial<T.CreateTaskRequest>) { return this.call('Create', T.CreateTaskRequest, T.CreateTaskResponse, r); }
  start(id: string, execId = '') { return this.call('Start', T.StartRequest, T.StartResponse, { id, execId }); }
  wait(id: string, execId = '') { return this.call('Wait', T.WaitRequest, T.WaitResponse, { id, execId }); }
  state(id: string, execId = '') { return this.call('State', T.StateRequest, T.StateResponse, { id, execId }); }
  delete(id: string, execId = '') { return this.call('Delete', T.DeleteRequest, T.DeleteResponse, { id, execId }); }
  kill(id: string, signal: number, o: { execId?: string; all?: boolean } = {}) {
    return this.call('Kill', T.KillRequest, Empty, { id, signal, execId: o.execId ?? '', all: o.all ?? false });
  }
  exec(r: Partial<T.ExecProcessRequest>) { return this.call('Exec', T.ExecProcessRequest, Empty, r); }
  pids(id: string) { return this.call('Pids', T.PidsRequest, T.PidsResponse, { id }); }
  closeIO(id: string, execId = '') { return this.call('CloseIO', T.CloseIORequest, Empty, { id, execId, stdin: true }); }
  resizePty(id: string, width: number, height: number, execId = '') {
    return this.call('ResizePty', T.ResizePtyRequest, Empty, { id, execId, width, height });
  }
  pause(id: string) { return this.call('Pause', T.PauseRequest, Empty, { id }); }
  resume(id: string) { return this.call('Resume', T.ResumeRequest, Empty, { id }); }
  update(id: string, resources: unknown) {
    return this.call('Update', T.UpdateTaskRequest, Empty, {
      id, resources: { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources', value: Buffer.from(JSON.stringify(resources)) },
    });
  }
  stats(id: string) { return this.call('Stats', T.StatsRequest, T.StatsResponse, { id }); }
  connect(id: string) { return this.call('Connect', T.ConnectRequest, T.ConnectResponse, { id }); }
  shutdown(id: string) { return this.call('Shutdown', T.ShutdownRequest, Empty, { id }); }
  close(): void { this.client.close(); }
}

/** containerd's events endpoint, recording every envelope the shim forwards. */
export class FakeEvents {
  readonly envelopes: Envelope[] = [];
  private readonly server = new TtrpcServer();
  private readonly listener = net.createServer();
  private waiters: (() => void)[] = [];

  constructor(readonly path: string) {
    this.server.register('containerd.services.events.ttrpc.v1.Events', {
      Forward: method(ForwardRequest, Empty, (r) => {
        if (r.envelope) this.envelopes.push(r.envelope);
        for (const w of this.waiters.splice(0)) w();
        return {};
      }),
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.listener.listen(this.path, resolve));
    this.server.serve(this.listener);
  }

  topics(filter?: (e: Envelope) => boolean): string[] {
    return this.envelopes.filter((e) => !filter || filter(e)).map((e) => e.topic);
  }

  /** Resolve once `pred` holds over the envelopes received so far (or reject after timeoutMs). */
  async until(pred: (envs: Envelope[]) => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.envelopes)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for events; have ${this.topics().join(', ')}`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 100).unref(); });
    }
  }

  async close(): Promise<void> {
    this.server.close();
    void this.server.shutdown(); // fire-and-forget: it ends the connections; waiting for them to close is not needed
    await new Promise<void>((r) => this.listener.close(() => r()));
  }
}
