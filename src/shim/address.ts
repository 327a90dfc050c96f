// SPDX-License-Identifier: Apache-2.0
// Socket naming for the shim (containerd v1.7.0 runtime/v2/shim/util_unix.go, v2.3.4
// pkg/shim/util_unix.go): a path socket in /run/containerd/s, or the socket_dir containerd 2.3
// sends, named by the sha256 of <containerd address>/<namespace>/<group id>.
// Path sockets only: abstract sockets are reachable from any network namespace (CVE-2020-15257).
import { createHash } from 'node:crypto';
import path from 'node:path';

export const SOCKET_DIR = '/run/containerd/s';
const UNIX_PREFIX = 'unix://';

/** The kernel's sun_path holds 108 bytes with the NUL; Go's shim allows 106. */
export const SOCKET_PATH_LIMIT = 106;

export function socketAddress(containerdAddress: string, namespace: string, groupId: string, dir = SOCKET_DIR): string {
  const key = path.posix.join(containerdAddress, namespace, groupId);
  const digest = createHash('sha256').update(key).digest('hex');
  return `${UNIX_PREFIX}${path.posix.join(dir, digest)}`;
}

/** A shim socket's file name: the sha256 that socketAddress makes. */
export function isShimSocketName(name: string): boolean {
  return /^[0-9a-f]{64}$/.test(name);
}

export function socketPath(address: string): string {
  return address.startsWith(UNIX_PREFIX) ? address.slice(UNIX_PREFIX.length) : address;
}

/** Annotations that make several containers share one shim (containerd v2.3.4 cmd/containerd-shim-runc-v2/manager/manager_linux.go groupLabels). */
const GROUP_ANNOTATIONS = ['io.containerd.runc.v2.group', 'io.kubernetes.cri.sandbox-id'];

export function groupId(id: string, spec: { annotations?: Record<string, string> } | undefined): string {
  const ann = spec?.annotations ?? {};
  for (const key of GROUP_ANNOTATIONS) {
    const v = ann[key];
    if (v !== undefined) return v;
  }
  return id;
}
