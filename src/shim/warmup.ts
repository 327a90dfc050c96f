// SPDX-License-Identifier: Apache-2.0
// Warming a standby. V8 compiles a function the first time it is called, so a freshly adopted
// standby would compile the protobuf codecs, the ttrpc server and client, the event publisher
// and flag parsing while containerd waits for its first RPCs (measured: Connect took 6 ms
// against the reference's 2.7, a `delete` job 3-5 ms before it reached runc). A standby runs
// that code once while it boots, off the critical path: every Task message and event through
// its codec, and a real ttrpc round trip and event publication over a unix socket in the
// shims' private directory (0700; a path socket, never an abstract one, and peer-checked).
// Nothing here touches a container or the process's state.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SOCKET_DIR } from './address.js';
import * as T from '../gen/containerd/task/v2/shim.js';
import * as E from '../gen/containerd/events/task.js';
import { Options } from '../gen/containerd/runc/v1/runc.js';
import { ForwardRequest } from '../gen/containerd/services/ttrpc/events/v1/events.js';
import { TtrpcClient, TtrpcServer, invoke, method, notFound } from '../ttrpc/index.js';
import { EventPublisher } from '../events/publisher.js';
import { Empty } from '../events/empty.js';
import { registerTaskService } from '../task/register.js';
import type { TaskService } from '../task/service.js';
import { parseFlags } from './flags.js';
import { deleteAction } from './delete.js';
import { fromOurUser } from './authorize.js';
import { warmupSocketPath } from '../pool/claim.js';

type Codec = { encode(m: unknown): { finish(): Uint8Array }; decode(b: Uint8Array): unknown; fromPartial(o: object): unknown };

function isCodec(v: unknown): v is Codec {
  const c = v as Partial<Codec> | undefined;
  return typeof c?.encode === 'function' && typeof c.decode === 'function' && typeof c.fromPartial === 'function';
}

/** A message with every scalar field set (so the writer and reader paths run), nested ones left out. */
function sample(c: Codec): unknown {
  const base = c.fromPartial({}) as Record<string, unknown>;
  const filled: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(base)) {
    if (typeof v === 'string') filled[k] = 'x';
    else if (typeof v === 'number') filled[k] = 1;
    else if (typeof v === 'bigint') filled[k] = 1n;
    else if (typeof v === 'boolean') filled[k] = true;
    else if (v instanceof Uint8Array) filled[k] = Buffer.from([1]);
  }
  return c.fromPartial(filled);
}

/** Every message of the Task API, the events and the runc options, once each way. */
export function warmCodecs(): number {
  let n = 0;
  for (const mod of [T, E, { Options, ForwardRequest, Empty }]) {
    for (const c of Object.values(mod)) {
      if (!isCodec(c)) continue;
      c.decode(c.encode(sample(c)).finish());
      n++;
    }
  }
  return n;
}

/** A stand-in for the Task service whose answers exercise the server's reply and error paths. */
const stubService = {
  connect: () => Promise.resolve(T.ConnectResponse.fromPartial({ shimPid: process.pid, taskPid: 1, version: 'warm-up' })),
  state: () => Promise.reject(notFound('warm-up')),
} as unknown as TaskService;

/** One ttrpc round trip per kind of reply, and one published event, over a private socket. */
export async function warmTtrpc(dir = SOCKET_DIR): Promise<void> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const address = warmupSocketPath(process.pid, dir);
  fs.rmSync(address, { force: true });
  const server = new TtrpcServer({ authorize: fromOurUser });
  registerTaskService(server, stubService);
  server.register('containerd.services.events.ttrpc.v1.Events', {
    Forward: method(ForwardRequest, Empty, () => ({})),
  });
  const listener = net.createServer();
  await new Promise<void>((resolve, reject) => listener.listen(address, resolve).once('error', reject));
  server.serve(listener);
  try {
    const client = await TtrpcClient.connect(`unix://${address}`, { timeoutMs: 2000 });
    try {
      const md = { metadata: { 'containerd-namespace-ttrpc': 'warmup' }, timeoutMs: 2000 };
      await invoke(client, 'containerd.task.v2.Task', 'Connect', T.ConnectRequest, T.ConnectResponse, { id: 'w' }, md);
      await invoke(client, 'containerd.task.v2.Task', 'State', T.StateRequest, T.StateResponse, { id: 'w', execId: '' }, md)
        .catch(() => undefined);
    } finally {
      client.close();
    }
    const publisher = new EventPublisher(`unix://${address}`, 'warmup');
    publisher.publish('/tasks/warmup', 'containerd.events.TaskStart', E.TaskStart.encode({ containerId: 'w', pid: 1 }).finish());
    await publisher.close(2000);
  } finally {
    server.close();
    void server.shutdown();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    fs.rmSync(address, { force: true });
  }
}

/**
 * The `delete` action end to end on a scratch bundle whose runtime is /bin/true: flag parsing,
 * the options files, the synchronous spawn, the mount table scan, the DeleteResponse.
 */
export function warmDelete(): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shim-warmup-'));
  try {
    const bundle = path.join(dir, 'w');
    fs.mkdirSync(bundle, { mode: 0o700 });
    fs.writeFileSync(path.join(bundle, 'runtime'), '/bin/true');
    fs.writeFileSync(path.join(bundle, 'options.json'), JSON.stringify({ root: path.join(dir, 'root') }));
    const flags = parseFlags(['-namespace', 'w', '-address', '/w', '-publish-binary', '/w', '-id', 'w', '-bundle', bundle, 'delete']);
    deleteAction(flags, () => undefined, bundle);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Everything above; failures only mean a colder standby. */
export async function warmUp(dir = SOCKET_DIR): Promise<void> {
  try {
    warmCodecs();
    warmDelete();
    await warmTtrpc(dir);
  } catch { /* best effort: a standby that fails to warm is only colder */ }
}
