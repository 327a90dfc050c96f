// SPDX-License-Identifier: Apache-2.0
// One shim socket's worth of a daemon: its Task service (containers, processes, locks, OOM
// watches), its ttrpc server, its events publisher and its logger (the bundle's log fifo). A
// daemon serves one tenant, as the Go shim's does, or with SHIM_SHARED=1 several
// (docs/shared-daemon.md); tenants share only the process: its reaper, which tells every
// tenant of every exit (each matches only its own pids, src/task/exits.ts), and its identity.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { TtrpcServer } from '../ttrpc/index.js';
import type { Reaper } from '../reaper/reaper.js';
import { EventPublisher } from '../events/publisher.js';
import type { Logger } from '../log/logger.js';
import { openLogger } from './logger.js';
import { TaskService } from '../task/service.js';
import { registerTaskService } from '../task/register.js';
import { socketPath } from './address.js';
import { fromOurUser } from './authorize.js';
import type { ShimFlags } from './flags.js';

const PUBLISHER_DRAIN_MS = 5000;
/**
 * As Go's listeners (somaxconn): Node's default of 511 refuses bursts of connections (EAGAIN).
 * For an fd, Node only takes the backlog as a positional argument.
 */
const BACKLOG = 4096;

export interface TenantSpec {
  flags: ShimFlags;
  /** The listening shim socket `start` made (ignored with `-socket`). */
  listenFd: number;
  /** The bundle of the container `start` ran for: the log fifo and ./address are there. */
  bundle: string;
}

export class Tenant {
  readonly log: Logger;
  readonly server: TtrpcServer;
  private readonly publisher: EventPublisher;
  private readonly service: TaskService;
  private readonly listener = net.createServer();
  /** The socket file to remove when done (from ./address, or `-socket`). */
  private ownSocket?: string;
  private closing?: Promise<boolean>;
  private readonly connected: Promise<void>;

  /** `onShutdown`: containerd asked this tenant to shut down (Shutdown with no container left). */
  constructor(readonly spec: TenantSpec, reaper: Reaper, onShutdown: (t: Tenant) => void) {
    const { flags, bundle } = spec;
    this.log = openLogger(flags.debug, path.join(bundle, 'log')).child({ namespace: flags.namespace, id: flags.id });
    this.publisher = new EventPublisher(socketPath(process.env.TTRPC_ADDRESS ?? ''), flags.namespace, this.log);
    this.service = new TaskService(flags.namespace, reaper, this.publisher, this.log, () => onShutdown(this));
    this.server = new TtrpcServer({ authorize: fromOurUser });
    registerTaskService(this.server, this.service);
    this.connected = new Promise((resolve) => this.listener.once('connection', () => resolve()));
    try {
      this.ownSocket = socketPath(fs.readFileSync(path.join(bundle, 'address'), 'utf8'));
    } catch { /* started by hand with -socket */ }
  }

  /** Listen (on the handed socket, or on `-socket`) and serve. */
  async listen(): Promise<void> {
    const { flags, listenFd } = this.spec;
    if (flags.socket) {
      if (flags.socket.length > 106) throw new Error('unix socket path too long (> 106)');
      fs.rmSync(flags.socket, { force: true });
      await new Promise<void>((resolve, reject) => this.listener.listen({ path: flags.socket, backlog: BACKLOG }, resolve).once('error', reject));
      fs.chmodSync(flags.socket, 0o600);
      this.ownSocket = flags.socket;
    } else {
      await new Promise<void>((resolve, reject) => this.listener.listen({ fd: listenFd }, BACKLOG, resolve).once('error', reject));
    }
    this.server.serve(this.listener);
  }

  /** The first connection to the socket (containerd's, once `start` has answered). */
  whenConnected(): Promise<void> {
    return this.connected;
  }

  /**
   * Stop serving: no new connection, the socket file removed, pending events delivered (within
   * PUBLISHER_DRAIN_MS), connections closed. Resolves with whether every event went out.
   */
  close(): Promise<boolean> {
    this.closing ??= (async () => {
      this.server.close();
      if (this.ownSocket) fs.rmSync(this.ownSocket, { force: true });
      this.service.dispose();
      const drained = await this.publisher.close(PUBLISHER_DRAIN_MS);
      void this.server.shutdown();
      if (!drained) this.log.error('publisher not closed');
      return drained;
    })();
    return this.closing;
  }
}
