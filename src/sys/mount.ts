// SPDX-License-Identifier: Apache-2.0
// Rootfs mounts (containerd v1.7.0 mount/mount_linux.go, v2.3.4 core/mount/mount_linux.go): option parsing as containerd's mount package
// does it, mount(2) through the addon, and recursive unmounting from /proc/self/mountinfo.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as native from './native.js';

export interface MountSpec { type: string; source: string; target: string; options: string[] }

const MS = {
  RDONLY: 0x1, NOSUID: 0x2, NODEV: 0x4, NOEXEC: 0x8, SYNCHRONOUS: 0x10, REMOUNT: 0x20,
  MANDLOCK: 0x40, DIRSYNC: 0x80, NOATIME: 0x400, NODIRATIME: 0x800, BIND: 0x1000, REC: 0x4000,
  RELATIME: 0x200000, STRICTATIME: 0x1000000,
} as const;

const MNT_DETACH = 2;

// option → [clear?, flag]
const FLAGS: Record<string, [boolean, number]> = {
  async: [true, MS.SYNCHRONOUS], atime: [true, MS.NOATIME], bind: [false, MS.BIND],
  defaults: [false, 0], dev: [true, MS.NODEV], diratime: [true, MS.NODIRATIME],
  dirsync: [false, MS.DIRSYNC], exec: [true, MS.NOEXEC], mand: [false, MS.MANDLOCK],
  noatime: [false, MS.NOATIME], nodev: [false, MS.NODEV], nodiratime: [false, MS.NODIRATIME],
  noexec: [false, MS.NOEXEC], nomand: [true, MS.MANDLOCK], norelatime: [true, MS.RELATIME],
  nostrictatime: [true, MS.STRICTATIME], nosuid: [false, MS.NOSUID], rbind: [false, MS.BIND | MS.REC],
  relatime: [false, MS.RELATIME], remount: [false, MS.REMOUNT], ro: [false, MS.RDONLY],
  rw: [true, MS.RDONLY], strictatime: [false, MS.STRICTATIME], suid: [true, MS.NOSUID],
  sync: [false, MS.SYNCHRONOUS],
};

export interface ParsedOptions { flags: number; data: string[]; loop: boolean; uidmap?: string; gidmap?: string }

export function parseMountOptions(options: readonly string[]): ParsedOptions {
  let flags = 0;
  const data: string[] = [];
  let loop = false;
  let uidmap: string | undefined;
  let gidmap: string | undefined;
  for (const o of options) {
    const f = FLAGS[o];
    if (f) {
      flags = f[0] ? flags & ~f[1] : flags | f[1];
    } else if (o === 'loop') {
      loop = true;
    } else if (o.startsWith('uidmap=')) {
      uidmap = o.slice('uidmap='.length);
    } else if (o.startsWith('gidmap=')) {
      gidmap = o.slice('gidmap='.length);
    } else {
      data.push(o);
    }
  }
  return { flags, data, loop, uidmap, gidmap };
}

/**
 * `container-id:host-id:size[,…]` (the snapshotters' uidmap=/gidmap= syntax, containerd v2.3.4
 * core/mount/mount_idmapped_linux.go) as the kernel's uid_map/gid_map text.
 */
export function kernelIdMap(mappings: string): string {
  return mappings.split(',').map((m) => {
    const parts = m.split(':');
    if (parts.length !== 3) throw new Error('user namespace mappings require the format `container-id:host-id:size`');
    const [c, h, n] = parts.map((p, i) => {
      if (!/^\d+$/.test(p)) throw new Error(`invalid ${['container id', 'host id', 'size'][i]} for user namespace remapping: ${JSON.stringify(p)}`);
      return Number(p);
    }) as [number, number, number];
    if (c > 0xffffffff || h > 0xffffffff || n > 0xffffffff) throw new Error(`invalid mapping ${m}: ids and size must fit 32 bits`);
    return `${c} ${h} ${n}\n`;
  }).join('');
}

/**
 * An id-mapped overlay maps its lower layers, not itself: each lowerdir gets an id-mapped bind
 * in a private temporary folder, and the overlay is mounted on those. Returns the new options
 * and what undoes the temporary mounts (the overlay keeps its own references to the layers).
 */
function idmapLowerdirs(data: string[], userns: number): { data: string[]; cleanup: () => void } {
  const idx = data.findIndex((o) => o.startsWith('lowerdir='));
  if (idx < 0) throw new Error('failed to parse overlay lowerdir\'s from given options');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ovl-idmapped'));
  const mounted: string[] = [];
  const cleanup = () => {
    for (const t of mounted) try { native.umount2(t, MNT_DETACH); } catch { /* best effort */ }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const lowers = data[idx].slice('lowerdir='.length).split(':');
    const mapped = lowers.map((lower, i) => {
      const t = path.join(dir, String(i));
      fs.mkdirSync(t, { mode: 0o700 });
      native.idmapMount(lower, t, userns);
      mounted.push(t);
      return t;
    });
    return { data: [...data.filter((_, i) => i !== idx), `lowerdir=${mapped.join(':')}`], cleanup };
  } catch (e) {
    cleanup();
    throw new Error(`failed to create idmapped mount: ${(e as Error).message}`, { cause: e });
  }
}

const PAGE_SIZE = 4096;

/**
 * Overlay mounts with many layers exceed one page of options. As containerd does, rewrite the
 * lowerdirs relative to their common parent and mount from inside it.
 */
export function compactLowerdirs(data: string[]): { data: string[]; cwd?: string } {
  const idx = data.findIndex((o) => o.startsWith('lowerdir='));
  if (idx < 0) return { data };
  const lowers = data[idx].slice('lowerdir='.length).split(':');
  let prefix = lowers[0] ?? '';
  for (const l of lowers) while (!l.startsWith(prefix)) prefix = prefix.slice(0, -1);
  const dir = path.dirname(prefix.endsWith('/') ? prefix + 'x' : prefix);
  if (!dir || dir === '/' || dir === '.') return { data };
  const rel = lowers.map((l) => path.relative(dir, l));
  const rest = data.filter((_, i) => i !== idx);
  return { data: [...rest, `lowerdir=${rel.join(':')}`], cwd: dir };
}

export function mountOne(m: MountSpec, target: string): void {
  const { flags, data: dataList, loop, uidmap, gidmap } = parseMountOptions(m.options);
  if (m.type.startsWith('fuse.') || m.type.startsWith('fuse3.')) {
    throw new Error(`fuse mounts are not supported: ${m.type}`);
  }
  // Options for containerd's own mount manager (2.2+) must never reach a mount(2)
  // (containerd v2.3.4 core/mount/mount_linux.go refuses them too).
  const internal = m.options.find((o) => o.startsWith('X-containerd.'));
  if (internal) throw new Error(`mount option ${JSON.stringify(internal)} is for containerd's mount manager, not for the shim: invalid argument`);
  let data = dataList;
  let source = m.source;
  // A file-backed image: mount a loop device bound to it (autoclear: it goes with the mount).
  let loopFd = -1;
  if (loop) {
    const direct = data.includes('direct-io');
    data = data.filter((o) => o !== 'direct-io');
    const lo = native.loopAttach(m.source, (flags & MS.RDONLY) !== 0, direct);
    loopFd = lo.fd;
    source = lo.device;
  }
  // Both maps or none, as containerd (one alone is dropped).
  let userns = -1;
  let cleanup = () => { /* nothing mapped */ };
  try {
    if (uidmap && gidmap) userns = native.usernsFd(kernelIdMap(uidmap), kernelIdMap(gidmap));
    if (userns >= 0 && m.type === 'overlay') ({ data, cleanup } = idmapLowerdirs(data, userns));
    let cwd: string | undefined;
    if (m.type === 'overlay' && data.join(',').length >= PAGE_SIZE - 512) ({ data, cwd } = compactLowerdirs(data));
    const dataStr = data.join(',');
    if (dataStr.length > PAGE_SIZE) throw new Error('mount options is too long');
    if (!((flags & MS.REMOUNT) && !dataStr)) {
      const d = dataStr || null;
      if (cwd) native.mountInDir(cwd, source, target, m.type, flags, d);
      else native.mount(source, target, m.type, flags, d);
    }
    if ((flags & MS.BIND) && (flags & MS.RDONLY)) {
      native.mount(null, target, null, (flags & ~MS.REC) | MS.REMOUNT | MS.BIND, null);
    }
    // Any other mount is id-mapped in place.
    if (userns >= 0 && m.type !== 'overlay') native.idmapMount(target, target, userns);
  } finally {
    cleanup();
    if (userns >= 0) fs.closeSync(userns);
    if (loopFd >= 0) fs.closeSync(loopFd);
  }
}

/** Mount each component onto rootfs; on failure undo what was mounted and rethrow. */
export function mountAll(mounts: readonly MountSpec[], rootfs: string): void {
  const done: string[] = [];
  try {
    for (const m of mounts) {
      const target = m.target ? path.join(rootfs, m.target) : rootfs;
      mountOne(m, target);
      done.push(target);
    }
  } catch (e) {
    // Best effort, and no waiting in the daemon: a busy mount is retried at once, not later.
    for (const t of done.reverse()) try { for (const _ of unmountSteps(t)) { /* retry now */ } } catch { /* best effort */ }
    throw new Error(`failed to mount rootfs component: ${(e as Error).message}`, { cause: e });
  }
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string, mountinfo = readMountinfo()): string[] {
  const clean = path.resolve(dir);
  const out = mountinfo.filter((p) => p === clean || p.startsWith(clean + '/'));
  return out.sort((a, b) => b.length - a.length);
}

function readMountinfo(): string[] {
  let text: string;
  try { text = fs.readFileSync('/proc/self/mountinfo', 'utf8'); } catch { return []; }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length > 4) out.push(unescapeMountPath(f[4]));
  }
  return out;
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

const EBUSY_RETRIES = 50;
const EBUSY_WAIT_MS = 50;

/**
 * Unmount everything at or below dir (containerd's mount.UnmountAll: each mount point, deepest
 * first, repeatedly until nothing is mounted there, retrying a busy one). A missing dir is fine.
 * Blocks between retries: for the `delete` action and tests, never the daemon (unmountAllAsync).
 */
export function unmountAll(dir: string): void {
  for (const wait of unmountSteps(dir)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
}

/** unmountAll for the daemon: the event loop keeps running while a busy mount is retried. */
export async function unmountAllAsync(dir: string): Promise<void> {
  for (const wait of unmountSteps(dir)) await new Promise((resolve) => setTimeout(resolve, wait));
}

/** The unmounts, yielding how long to wait before retrying a busy mount point. */
function* unmountSteps(dir: string): Generator<number, void> {
  const points = mountsUnder(dir);
  let lastErr: Error | undefined;
  for (const [i, p] of points.entries()) {
    try {
      for (let busy = 0; ;) {
        try {
          native.umount2(p, 0);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'EINVAL' || code === 'ENOENT') break; // nothing mounted there any more
          if (code === 'EBUSY' && busy++ < EBUSY_RETRIES) { yield EBUSY_WAIT_MS; continue; }
          throw e;
        }
      }
    } catch (e) {
      if (i === points.length - 1) lastErr = e instanceof Error ? e : new Error(String(e));
    }
  }
  if (lastErr) throw lastErr;
}
