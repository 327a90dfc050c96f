// SPDX-License-Identifier: Apache-2.0
// Local OCI images for the end-to-end tests (no network): Debian's static busybox in an OCI
// image-layout tarball, imported with `ctr images import`.
//
// Layout of the tarball (oci-layout 1.0.0):
//   oci-layout, index.json, blobs/sha256/<layer tar>, <config json>, <manifest json>
// The layer is an uncompressed tar built with GNU tar (--sort=name --owner=0 --group=0
// --numeric-owner --mtime=@0), so the same busybox binary always gives the same digests.

import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, type Containerd } from './containerd.js';

export const BUSYBOX = '/bin/busybox';
export const DEFAULT_IMAGE_REF = 'docker.io/library/busybox:test';
export const PAUSE_IMAGE_REF = 'docker.io/library/pause:test';

/** Applets the tests rely on; the build fails if busybox lacks one of them. */
export const REQUIRED_APPLETS = [
  'sh', 'echo', 'sleep', 'cat', 'true', 'false', 'ls', 'id', 'uname', 'yes', 'head', 'dd', 'kill', 'ps',
  'env', 'seq', 'wc', 'printf', 'test', 'grep', 'stty', 'tty', 'hostname',
];

const PAUSE_SCRIPT = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done';

export interface ImageSpec {
  /** Reference recorded in index.json (`io.containerd.image.name`; its tag goes in `org.opencontainers.image.ref.name`). */
  ref: string;
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function goArch(): string {
  switch (process.arch) {
    case 'x64': return 'amd64';
    case 'arm64': return 'arm64';
    case 'arm': return 'arm';
    case 'ia32': return '386';
    case 'ppc64': return 'ppc64le';
    case 's390x': return 's390x';
    default: return process.arch;
  }
}

/** Splits "docker.io/library/busybox:test" into its repository and tag ("latest" when none). */
export function splitRef(ref: string): { name: string; tag: string } {
  const at = ref.indexOf('@');
  const base = at >= 0 ? ref.slice(0, at) : ref;
  const colon = base.lastIndexOf(':');
  if (colon > base.lastIndexOf('/')) return { name: base.slice(0, colon), tag: base.slice(colon + 1) };
  return { name: base, tag: 'latest' };
}

const cache = new Map<string, Promise<string>>();

async function buildRootfsLayer(work: string): Promise<{ tar: string; digest: string; size: number }> {
  const rootfs = join(work, 'rootfs');
  rmSync(rootfs, { recursive: true, force: true });
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'root', 'var', 'run']) mkdirSync(join(rootfs, d), { recursive: true });
  writeFileSync(join(rootfs, 'bin', 'busybox'), readFileSync(BUSYBOX));
  chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);

  const list = (await run(BUSYBOX, ['--list'])).stdout.split('\n').map((s) => s.trim()).filter((s) => /^[\w.[\]-]+$/.test(s));
  const missing = REQUIRED_APPLETS.filter((a) => !list.includes(a));
  if (missing.length > 0) throw new Error(`${BUSYBOX} lacks applets: ${missing.join(', ')}`);
  for (const applet of list) {
    if (applet === 'busybox') continue;
    symlinkSync('busybox', join(rootfs, 'bin', applet));
  }
  writeFileSync(join(rootfs, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  writeFileSync(join(rootfs, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeFileSync(join(rootfs, 'etc', 'hostname'), 'busybox\n');
  for (const f of ['etc/passwd', 'etc/group', 'etc/hostname']) chmodSync(join(rootfs, f), 0o644);
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'var', 'run']) chmodSync(join(rootfs, d), 0o755);
  chmodSync(join(rootfs, 'root'), 0o700);
  chmodSync(join(rootfs, 'tmp'), 0o1777);
  chmodSync(rootfs, 0o755);

  const tar = join(work, 'layer.tar');
  await run('tar', [
    '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '--format=gnu',
    '-C', rootfs, '-cf', tar, 'bin', 'dev', 'etc', 'proc', 'root', 'run', 'sys', 'tmp', 'var',
  ], { timeoutMs: 60_000 });
  const data = readFileSync(tar);
  return { tar, digest: sha256(data), size: data.length };
}

async function buildImage(dir: string, spec: ImageSpec): Promise<string> {
  const work = join(dir, `img-${sha256(JSON.stringify(spec)).slice(0, 12)}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const layout = join(work, 'layout');
  const blobs = join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });

  const layer = await buildRootfsLayer(work);
  writeFileSync(join(blobs, layer.digest), readFileSync(layer.tar));
  rmSync(layer.tar);
  rmSync(join(work, 'rootfs'), { recursive: true, force: true });

  const arch = goArch();
  const config = {
    created: '1970-01-01T00:00:00Z',
    architecture: arch,
    os: 'linux',
    config: {
      Env: spec.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
      Cmd: spec.cmd ?? ['sh'],
      WorkingDir: '/',
    },
    rootfs: { type: 'layers', diff_ids: [`sha256:${layer.digest}`] },
    history: [{ created: '1970-01-01T00:00:00Z', created_by: 'test/support/image.ts (busybox-static)' }],
  };
  const configJson = Buffer.from(JSON.stringify(config));
  const configDigest = sha256(configJson);
  writeFileSync(join(blobs, configDigest), configJson);

  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configDigest}`, size: configJson.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layer.digest}`, size: layer.size }],
  };
  const manifestJson = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = sha256(manifestJson);
  writeFileSync(join(blobs, manifestDigest), manifestJson);

  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${manifestDigest}`,
      size: manifestJson.length,
      platform: { architecture: arch, os: 'linux' },
      annotations: {
        'io.containerd.image.name': spec.ref,
        'org.opencontainers.image.ref.name': splitRef(spec.ref).tag,
      },
    }],
  };
  writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  const out = join(dir, `${splitRef(spec.ref).name.split('/').pop()}-${splitRef(spec.ref).tag}.oci.tar`);
  await run('tar', [
    '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '--format=gnu',
    '-C', layout, '-cf', out, 'blobs', 'index.json', 'oci-layout',
  ], { timeoutMs: 60_000 });
  rmSync(work, { recursive: true, force: true });
  return out;
}

let defaultDir: string | undefined;
/** A per-process cache dir under /tmp, removed when the process exits. */
function imageCacheDir(): string {
  if (defaultDir === undefined) {
    defaultDir = mkdtempSync('/tmp/img-');
    const d = defaultDir;
    process.on('exit', () => rmSync(d, { recursive: true, force: true }));
  }
  return defaultDir;
}

function cached(dir: string | undefined, spec: ImageSpec): Promise<string> {
  const where = dir ?? imageCacheDir();
  const key = `${where}\0${JSON.stringify(spec)}`;
  const hit = cache.get(key);
  if (hit) {
    return hit.then((p) => {
      if (existsSync(p)) return p;
      cache.delete(key);
      return cached(dir, spec);
    });
  }
  const p = buildImage(where, spec);
  cache.set(key, p);
  p.catch(() => cache.delete(key));
  return p;
}

/**
 * Builds (once per process and dir) an OCI image-layout tarball of Debian's static busybox:
 * /bin/busybox plus a symlink per applet, /etc/passwd (root, nobody), /etc/group, empty
 * /tmp /proc /sys /dev /root /var /run. Default command `sh`. Returns the tar's path.
 * Without `dir` the tar goes to a per-process dir under /tmp that is removed at exit.
 */
export function buildBusyboxImage(dir?: string, ref = DEFAULT_IMAGE_REF): Promise<string> {
  return cached(dir, { ref });
}

/**
 * A pause-style image on the same busybox base: its default process (pid 1 in the container)
 * sleeps forever and exits 0 on SIGTERM or SIGINT (a shell trap, since pid 1 ignores signals it
 * has no handler for).
 */
export function buildPauseImage(dir?: string, ref = PAUSE_IMAGE_REF): Promise<string> {
  return cached(dir, { ref, cmd: ['/bin/sh', '-c', PAUSE_SCRIPT] });
}

export interface ImportOptions {
  /** containerd namespace to import into (default "default"; CRI uses "k8s.io"). */
  namespace?: string;
}

/**
 * Imports an OCI tarball made by buildBusyboxImage/buildPauseImage under `ref` and checks that
 * `ctr images ls -q` lists it. The tarball's own annotation names the image; when `ref` differs
 * from it the image is tagged as `ref` too.
 */
export async function importImage(
  c: Containerd, tarPath: string, ref = DEFAULT_IMAGE_REF, opts: ImportOptions = {},
): Promise<string> {
  const ns = opts.namespace ?? 'default';
  const r = await c.ctr(['-n', ns, 'images', 'import', tarPath], { timeoutMs: 120_000 });
  // ctr 1.x prints `unpacking <ref> (sha256:…)`; ctr 2.x imports through the transfer service
  // (which unpacks too) and prints `<ref>   saved`.
  const imported = [...r.stdout.matchAll(/^(?:unpacking (\S+) \(sha256:[0-9a-f]+\)|(\S+)\s+saved\s*$)/gm)]
    .map((m) => m[1] ?? m[2]);
  if (!imported.includes(ref)) {
    if (imported.length === 0) throw new Error(`ctr images import ${tarPath} imported nothing:\n${r.stdout}${r.stderr}`);
    // Tag under the wanted name (`ctr run` unpacks a not-yet-unpacked image itself).
    await c.ctr(['-n', ns, 'images', 'tag', '--force', imported[0], ref]);
  }
  const ls = await c.ctr(['-n', ns, 'images', 'ls', '-q']);
  if (!ls.stdout.split('\n').includes(ref)) {
    throw new Error(`image ${ref} not listed after import into namespace ${ns}:\n${ls.stdout}`);
  }
  return ref;
}

/** Convenience: build the busybox image and import it into each of the given namespaces. */
export async function ensureBusyboxImage(
  c: Containerd, namespaces: string[] = ['default'], ref = DEFAULT_IMAGE_REF,
): Promise<string> {
  const tar = await buildBusyboxImage(undefined, ref);
  for (const ns of namespaces) await importImage(c, tar, ref, { namespace: ns });
  return ref;
}

/** Convenience: build the pause image and import it into each of the given namespaces (default k8s.io). */
export async function ensurePauseImage(
  c: Containerd, namespaces: string[] = ['k8s.io'], ref = PAUSE_IMAGE_REF,
): Promise<string> {
  const tar = await buildPauseImage(undefined, ref);
  for (const ns of namespaces) await importImage(c, tar, ref, { namespace: ns });
  return ref;
}
