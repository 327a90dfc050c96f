// SPDX-License-Identifier: Apache-2.0
// Serve mode: the long-lived daemon. It is a child subreaper, serves the Task service over ttrpc
// on the socket `start` handed it as fd 3, publishes events to containerd, and exits when asked
// with no container left (or on SIGTERM/SIGINT).
import fs from 'node:fs';
import net from 'node:net';
import * as native from '../sys/native.js';
import { TtrpcServer } from '../ttrpc/index.js';
import { Reaper } from '../reaper/reaper.js';
import { EventPublisher } from '../events/publisher.js';
import { openLogger } from './logger.js';
import { installCrashPolicy } from './crash.js';
import { TaskService } from '../task/service.js';
import { registerTaskService } from '../task/register.js';
import { socketPath } from './address.js';
import { isValidIdentifier } from '../task/identifiers.js';
import type { ShimFlags } from './flags.js';

const LISTEN_FD = 3;
const PUBLISHER_DRAIN_MS = 5000;
/**
 * As Go's listeners (somaxconn): Node's default of 511 refuses bursts of connections (EAGAIN).
 * For an fd, Node only takes the backlog as a positional argument.
 */
const BACKLOG = 4096;

export interface ServeOptions {
  /**
   * Called once when containerd is done with us for now: no RPC for QUIET_MS after the first
   * one, or QUIET_MAX_MS after serving began, whichever comes first. Not at shutdown: the
   * `delete` action follows at once (the standby that runs it refills the pool after it).
   */
  onQuiet?: () => void;
}
const QUIET_MS = 50;
const QUIET_MAX_MS = 2000;

/** Serve on `listenFd` (fd 3 from `start`, or the socket a standby daemon was handed). */
export async function serve(flags: ShimFlags, listenFd = LISTEN_FD, o: ServeOptions = {}): Promise<void> {
  // The namespace names runc's root (<root>/<namespace>): it must not step elsewhere.
  if (!isValidIdentifier(flags.namespace)) throw new Error(`invalid namespace ${JSON.stringify(flags.namespace)}: invalid argument`);
  (await import('./identity.js')).takeShimIdentity(flags); // ps/pgrep see what they see of the Go shim's daemon
  // Nothing the daemon or its runc children create (pid files, logs) may be world-writable,
  // whatever umask containerd (or the process that spawned a standby) had.
  process.umask(process.umask(0o022) | 0o022);
  const log = openLogger(flags.debug).child({ namespace: flags.namespace, id: flags.id });
  stderrToLogFifo();
  installCrashPolicy(log);

  const reaper = new Reaper();
  reaper.start();
  reaper.on('error', (err: Error) => log.error({ err: err.message }, 'reaper pipe error'));

  const ttrpcAddress = socketPath(process.env.TTRPC_ADDRESS ?? '');
  const publisher = new EventPublisher(ttrpcAddress, flags.namespace, log);

  let ownSocket: string | undefined;
  try {
    ownSocket = socketPath(fs.readFileSync('address', 'utf8'));
  } catch { /* started by hand with -socket */ }

  let shuttingDown = false;
  const shutdown = async (why: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ why }, 'shutting down');
    server.close();
    if (ownSocket) fs.rmSync(ownSocket, { force: true });
    const drained = await publisher.close(PUBLISHER_DRAIN_MS);
    void server.shutdown();
    if (!drained) log.error('publisher not closed');
    process.exit(drained ? 0 : 1);
  };

  const service = new TaskService(flags.namespace, reaper, publisher, log, () => void shutdown('shutdown requested'));
  const server = new TtrpcServer({ authorize: fromOurUser });
  registerTaskService(server, service);

  const listener = net.createServer();
  if (flags.socket) {
    if (flags.socket.length > 106) throw new Error('unix socket path too long (> 106)');
    fs.rmSync(flags.socket, { force: true });
    await new Promise<void>((resolve, reject) => listener.listen({ path: flags.socket, backlog: BACKLOG }, resolve).once('error', reject));
    fs.chmodSync(flags.socket, 0o600);
    ownSocket = flags.socket;
  } else {
    await new Promise<void>((resolve, reject) => listener.listen({ fd: listenFd }, BACKLOG, resolve).once('error', reject));
  }
  server.serve(listener);
  if (o.onQuiet) {
    const hook = o.onQuiet;
    let fired = false;
    const quiet = () => {
      if (fired || shuttingDown) return;
      fired = true;
      clearTimeout(timer);
      hook();
    };
    const timer = setTimeout(quiet, QUIET_MAX_MS).unref();
    void server.whenQuiet(QUIET_MS).then(quiet);
  }

  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGPIPE', () => { /* ignored */ });
  log.info('shim started');
}

/** Only containerd's user may talk to us (the reference checks SO_PEERCRED the same way). */
export function fromOurUser(sock: net.Socket): boolean {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return false;
  const cred = native.peerCred(fd);
  return cred.uid === (process.geteuid?.() ?? 0) && cred.gid === (process.getegid?.() ?? 0);
}

/**
 * Point fd 2 at the log fifo, as the reference does, so that what Node itself prints on a fatal
 * error (out of memory, an abort) reaches containerd's log. The shim never writes to fd 2 itself.
 */
function stderrToLogFifo(): void {
  let fd: number;
  try {
    fd = fs.openSync('log', fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    return; // nobody reads the fifo (tests, manual runs): keep /dev/null
  }
  try {
    if (fs.fstatSync(fd).isFIFO()) native.dup2(fd, 2);
  } catch { /* keep /dev/null */ } finally {
    fs.closeSync(fd);
  }
}
