// SPDX-License-Identifier: Apache-2.0
// A minimal busybox root filesystem and OCI bundle for tests that drive runc or the shim
// directly, without containerd's snapshotter.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

export const BUSYBOX = '/bin/busybox';

/** Create `dir` with bin/busybox and applet symlinks. */
export function makeBusyboxRootfs(dir: string): string {
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(dir, 'bin/busybox'));
  fs.chmodSync(path.join(dir, 'bin/busybox'), 0o755);
  for (const a of ['sh', 'echo', 'sleep', 'cat', 'true', 'false', 'ls', 'id', 'yes', 'head', 'kill', 'ps', 'env', 'wc', 'readlink', 'stty', 'tty', 'dd', 'seq', 'printf']) {
    fs.symlinkSync('busybox', path.join(dir, 'bin', a));
  }
  fs.writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  fs.writeFileSync(path.join(dir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  return dir;
}

export interface BundleOptions {
  args: string[];
  terminal?: boolean;
  /** Absolute rootfs path for config.json; default <bundle>/rootfs (mounted by the shim). */
  rootPath?: string;
  hostPid?: boolean;
}

/** An OCI bundle from `runc spec`, adjusted for the test. */
export function makeBundle(bundle: string, o: BundleOptions): string {
  fs.mkdirSync(bundle, { recursive: true, mode: 0o700 });
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true, mode: 0o711 });
  execFileSync('runc', ['spec', '-b', bundle]);
  const specPath = path.join(bundle, 'config.json');
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8')) as {
    process: { args: string[]; terminal: boolean };
    root: { path: string; readonly: boolean };
    linux: { namespaces: { type: string }[] };
  };
  spec.process.args = o.args;
  spec.process.terminal = !!o.terminal;
  spec.root = { path: o.rootPath ?? 'rootfs', readonly: false };
  if (o.hostPid) spec.linux.namespaces = spec.linux.namespaces.filter((n) => n.type !== 'pid');
  fs.writeFileSync(specPath, JSON.stringify(spec, null, 2));
  return bundle;
}
