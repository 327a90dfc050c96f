// SPDX-License-Identifier: Apache-2.0
// The `delete` action (containerd v2.3.4 cmd/containerd-shim-runc-v2/manager/manager_linux.go Stop): cleanup after Shutdown or after the daemon
// died: runc delete --force, unmount the rootfs, print a DeleteResponse (137, now).
import fs from 'node:fs';
import path from 'node:path';
import { runSync } from '../sys/runsync.js';
import { runcEnv } from '../runc/runc.js';
import { DeleteResponse } from '../gen/containerd/task/v2/shim.js';
import { readBundleOptions, runcCommand, runcRoot } from '../runc/options.js';
import { unmountAll } from '../sys/mount.js';
import { now } from '../events/timestamp.js';
import { isValidIdentifier } from '../task/identifiers.js';
import { isShimSocketName, socketPath } from './address.js';
import type { ShimFlags } from './flags.js';
import { isListening } from '../pool/sockfile.js';

const RUNC_TIMEOUT_MS = 4000; // containerd kills us after 5 s

export function deleteAction(flags: ShimFlags, warn: (msg: string) => void, cwd = process.cwd()): Buffer {
  // The id names the bundle next to ours and the runc container; the namespace names the runc
  // root. Neither may step elsewhere (`../other` would unmount another bundle's rootfs).
  if (!isValidIdentifier(flags.id)) throw new Error(`invalid container id ${JSON.stringify(flags.id)}: invalid argument`);
  if (!isValidIdentifier(flags.namespace)) throw new Error(`invalid namespace ${JSON.stringify(flags.namespace)}: invalid argument`);
  const bundle = path.join(path.dirname(cwd), flags.id);
  const opts = readBundleOptions(bundle);
  const args = ['--root', runcRoot(opts, flags.namespace), '--log', path.join(bundle, 'log.json'), '--log-format', 'json', 'delete', '--force', flags.id];
  const r = runSync(runcCommand(opts), args, runcEnv(), RUNC_TIMEOUT_MS);
  if (r.error || r.status !== 0) warn(`failed to remove runc container: ${r.error ?? r.output.trim()}`);
  try {
    unmountAll(path.join(bundle, 'rootfs'));
  } catch (e) {
    warn(`failed to cleanup rootfs mount: ${(e as Error).message}`);
  }
  removeStaleSocket(bundle);
  let pid = 0xffffffff; // what the reference reports when init.pid is unreadable (-1 as uint32)
  try {
    const n = Number.parseInt(fs.readFileSync(path.join(bundle, 'init.pid'), 'utf8').trim(), 10);
    if (Number.isSafeInteger(n) && n > 0) pid = n;
  } catch (e) {
    warn(`failed to read init pid file: ${(e as Error).message}`);
  }
  return Buffer.from(DeleteResponse.encode({ pid, exitStatus: 128 + 9, exitedAt: now() }).finish());
}

/**
 * A daemon that died (SIGKILL, OOM) leaves its socket file behind: remove it, but only when
 * nothing listens on it any more (a pod's shared shim may still serve its other containers).
 */
function removeStaleSocket(bundle: string): void {
  const sock = bundleSocket(bundle);
  if (!sock) return;
  // Only a shim socket (named by its sha256, in whichever socket dir containerd chose).
  if (!isShimSocketName(path.basename(sock)) || isListening(sock)) return;
  try {
    if (!fs.lstatSync(sock).isSocket()) return;
  } catch {
    return;
  }
  fs.rmSync(sock, { force: true });
}

/**
 * The shim socket a bundle names: `address` (written by our `start`), else the `bootstrap.json`
 * containerd 2.x writes (in a pod container's bundle that joined the pause container's shim).
 */
function bundleSocket(bundle: string): string | undefined {
  try {
    return socketPath(fs.readFileSync(path.join(bundle, 'address'), 'utf8'));
  } catch { /* not started by us */ }
  try {
    const b = JSON.parse(fs.readFileSync(path.join(bundle, 'bootstrap.json'), 'utf8')) as { address?: unknown };
    return typeof b.address === 'string' ? socketPath(b.address) : undefined;
  } catch {
    return undefined;
  }
}
