// SPDX-License-Identifier: Apache-2.0
// Which containerd daemon the end-to-end tests start, and where its binaries are.
//
//   1.6  Debian 12's `containerd` package: /usr/bin/{containerd,ctr,containerd-shim-runc-v2}
//        (the default).
//   1.7  Debian 13's package, 2.1 Debian unstable's, 2.3 a release tarball: each unpacked by
//        scripts/daemons.sh into a private prefix, $SHIM_DAEMONS_PREFIX/containerd-<name>
//        (default /opt/shim-test), with bin/{containerd,ctr,containerd-shim-runc-v2}.
//
// Each daemon's own Go shim is the reference shim when the tests run against that daemon. Every
// daemon drives Debian 12's runc (found on PATH as before).
//
// SHIM_DAEMON=1.6|1.7|2.1|2.3 selects the daemon of the existing suites (selectedDaemon());
// test/e2e/daemons.test.ts iterates over all of them with findDaemon().

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const DAEMON_NAMES = ['1.6', '1.7', '2.1', '2.3'] as const;
export type DaemonName = typeof DAEMON_NAMES[number];

export interface Daemon {
  name: DaemonName;
  /** Directory with containerd, ctr and containerd-shim-runc-v2. */
  bin: string;
  containerd: string;
  ctr: string;
  /** The daemon's own Go shim: the reference shim on this daemon. */
  shim: string;
  /** 1 or 2: which config layout and CRI plugin names it takes. */
  major: number;
  /** How it got here (scripts/daemons.sh writes <prefix>/.stamp). */
  source: string;
}

/** Where scripts/daemons.sh unpacks the non-default daemons. */
export function daemonsPrefix(): string {
  return process.env.SHIM_DAEMONS_PREFIX || '/opt/shim-test';
}

function isDaemonName(s: string): s is DaemonName {
  return (DAEMON_NAMES as readonly string[]).includes(s);
}

/** The daemon `name`, or why it is not available here. */
export function findDaemon(name: DaemonName): { daemon: Daemon } | { missing: string } {
  const bin = name === '1.6' ? '/usr/bin' : join(daemonsPrefix(), `containerd-${name}`, 'bin');
  const d: Daemon = {
    name,
    bin,
    containerd: join(bin, 'containerd'),
    ctr: join(bin, 'ctr'),
    shim: join(bin, 'containerd-shim-runc-v2'),
    major: Number(name.split('.')[0]),
    source: name === '1.6' ? "Debian 12's containerd package" : '',
  };
  const absent = [d.containerd, d.ctr, d.shim].filter((p) => !existsSync(p));
  if (absent.length > 0) {
    const how = name === '1.6' ? 'bash scripts/setup.sh installs it'
      : name === '2.3' ? 'bash scripts/daemons.sh unpacks it from $SHIM_CONTAINERD23_TARBALL or ../shared/containerd/containerd-2.3.*-linux-amd64.tar.xz'
        : 'bash scripts/daemons.sh installs it';
    return { missing: `containerd ${name} is not installed: no ${absent.join(', ')} (${how})` };
  }
  if (name !== '1.6') {
    try {
      d.source = readFileSync(join(bin, '..', '.stamp'), 'utf8').trim();
    } catch {
      d.source = join(bin, '..');
    }
  }
  return { daemon: d };
}

/** The daemon named by SHIM_DAEMON (default 1.6); throws if the name is unknown or it is not installed. */
export function selectedDaemon(): Daemon {
  const name = (process.env.SHIM_DAEMON ?? '').trim() || '1.6';
  if (!isDaemonName(name)) throw new Error(`SHIM_DAEMON=${name}: expected one of ${DAEMON_NAMES.join(', ')}`);
  const found = findDaemon(name);
  if ('missing' in found) throw new Error(`SHIM_DAEMON=${name}: ${found.missing}`);
  return found.daemon;
}

const versionCache = new Map<string, string>();
const configVersionCache = new Map<string, number>();

/** `containerd --version`, e.g. "containerd github.com/containerd/containerd/v2 v2.3.4 db88095…". */
export function daemonVersion(d: Daemon): string {
  let v = versionCache.get(d.containerd);
  if (v === undefined) {
    const r = spawnSync(d.containerd, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    v = (r.stdout ?? '').trim() || `unknown (${r.error?.message ?? r.stderr})`;
    versionCache.set(d.containerd, v);
  }
  return v;
}

/**
 * The config `version` this daemon writes in `containerd config default`: 2 for 1.x, 3 for
 * 2.0–2.2, 4 for 2.3 (which moved [grpc], [ttrpc] and the debug socket into the
 * io.containerd.server.v1.* plugins; containerd v2.3.4:cmd/containerd/server/config/config.go).
 */
export function configVersion(d: Daemon): number {
  let v = configVersionCache.get(d.containerd);
  if (v === undefined) {
    const r = spawnSync(d.containerd, ['config', 'default'], { encoding: 'utf8', timeout: 10_000 });
    const m = /^version\s*=\s*(\d+)/m.exec(r.stdout ?? '');
    v = m ? Number(m[1]) : (d.major >= 2 ? 3 : 2);
    configVersionCache.set(d.containerd, v);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// CRI config across versions
//
// containerd 1.x has one CRI plugin, io.containerd.grpc.v1.cri, holding everything; 2.x splits it
// (containerd v2.1.0:internal/cri/config/config.go; `containerd config default` of 2.1.9 and
// 2.3.4): io.containerd.cri.v1.runtime (runtimes, cni, restrict_oom_score_adj, ...),
// io.containerd.cri.v1.images (snapshotter, pinned_images.sandbox = the old sandbox_image, ...),
// and io.containerd.grpc.v1.cri keeps only the streaming server keys. The suites write CRI
// settings in the 1.x names (StartOptions.criSettings / extraConfig); for a 2.x daemon
// containerd.ts translates them with these helpers.

const CRI_V1 = 'io.containerd.grpc.v1.cri';
const CRI_RUNTIME = 'io.containerd.cri.v1.runtime';
const CRI_IMAGES = 'io.containerd.cri.v1.images';

/** Keys of the 1.x [plugins."io.containerd.grpc.v1.cri"] table that 2.x keeps in grpc.v1.cri. */
const GRPC_CRI_KEYS = new Set([
  'disable_tcp_service', 'stream_server_address', 'stream_server_port', 'stream_idle_timeout', 'enable_tls_streaming',
]);
/** Keys that moved to io.containerd.cri.v1.images (everything else went to cri.v1.runtime). */
const IMAGES_KEYS = new Set([
  'snapshotter', 'disable_snapshot_annotations', 'discard_unpacked_layers', 'max_concurrent_downloads',
  'image_pull_progress_timeout', 'image_pull_with_sync_fs', 'stats_collect_period',
]);

export interface CriTables {
  /** key = value lines per plugin table. */
  grpc: string[];
  runtime: string[];
  images: string[];
  sandboxImage?: string;
}

/** Sorts 1.x `[plugins."io.containerd.grpc.v1.cri"]` key lines into the 2.x plugin tables. */
export function splitCriSettings(lines: string[]): CriTables {
  const res: CriTables = { grpc: [], runtime: [], images: [] };
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z0-9_]+)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new Error(`criSettings: not a key = value line: ${line}`);
    const [, key, value] = m;
    if (key === 'sandbox_image') res.sandboxImage = value;
    else if (GRPC_CRI_KEYS.has(key)) res.grpc.push(line);
    else if (IMAGES_KEYS.has(key)) res.images.push(line);
    else res.runtime.push(line);
  }
  return res;
}

/**
 * Rewrites 1.x CRI table headers in raw TOML to their 2.x plugins:
 * [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.X…] → [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.X…],
 * [plugins."io.containerd.grpc.v1.cri".cni] → [plugins."io.containerd.cri.v1.runtime".cni] (its `bin_dir = P`
 * becomes `bin_dirs = [P]`, the 2.x key), [plugins."io.containerd.grpc.v1.cri".registry…] → images.
 * Other text is kept.
 */
export function translateCriToml(toml: string): string {
  const header = /^(\s*)\[plugins\.(?:"io\.containerd\.grpc\.v1\.cri"|'io\.containerd\.grpc\.v1\.cri')\.([^\]]+)\]\s*$/;
  let inCni = false;
  return toml.split('\n').map((line) => {
    const h = header.exec(line);
    if (h) {
      const [, indent, rest] = h;
      inCni = rest === 'cni';
      if (rest.startsWith('containerd.') || rest === 'cni' || rest.startsWith('cni.')) return `${indent}[plugins."${CRI_RUNTIME}".${rest}]`;
      if (rest.startsWith('registry') || rest.startsWith('image_decryption')) return `${indent}[plugins."${CRI_IMAGES}".${rest}]`;
      return line;
    }
    if (/^\s*\[/.test(line)) inCni = false;
    if (inCni) {
      const b = /^(\s*)bin_dir\s*=\s*(.+)$/.exec(line);
      if (b) return `${b[1]}bin_dirs = [${b[2].trim()}]`;
    }
    return line;
  }).join('\n');
}

export const CRI_PLUGINS = { v1: CRI_V1, runtime: CRI_RUNTIME, images: CRI_IMAGES } as const;
