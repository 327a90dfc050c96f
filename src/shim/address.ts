// Socket naming for the shim (shared/spec/shim-cli.md §6): a path socket under the hard-coded
// /run/containerd/s, named by the sha256 of <containerd address>/<namespace>/<group id>.
// Path sockets only: abstract sockets are reachable from any network namespace (CVE-2020-15257).
import { createHash } from 'node:crypto';
import path from 'node:path';

export const SOCKET_DIR = '/run/containerd/s';
export const UNIX_PREFIX = 'unix://';

export function socketAddress(containerdAddress: string, namespace: string, groupId: string): string {
  const key = path.posix.join(containerdAddress, namespace, groupId);
  const digest = createHash('sha256').update(key).digest('hex');
  return `${UNIX_PREFIX}${SOCKET_DIR}/${digest}`;
}

export function socketPath(address: string): string {
  return address.startsWith(UNIX_PREFIX) ? address.slice(UNIX_PREFIX.length) : address;
}

/** Annotations that make several containers share one shim (shim-cli.md §7 step 2). */
export const GROUP_ANNOTATIONS = ['io.containerd.runc.v2.group', 'io.kubernetes.cri.sandbox-id'];

export function groupId(id: string, spec: { annotations?: Record<string, string> } | undefined): string {
  const ann = spec?.annotations ?? {};
  for (const key of GROUP_ANNOTATIONS) {
    const v = ann[key];
    if (v !== undefined) return v;
  }
  return id;
}
