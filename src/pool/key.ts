// SPDX-License-Identifier: Apache-2.0
// Which pool a `start` or `delete` may be served from. A standby boots with the environment of
// the shim that spawned it and runs jobs with it, so a pool is keyed by everything a fresh shim
// process would take from outside besides its job: the user and group it runs as, the build of
// the shim (path, mtime and size of the bundle), Node's flags, and the whole environment
// containerd gave it (SCHED_CORE, MAX_SHIM_VERSION, PATH, proxies, NODE_OPTIONS, …) but the few
// names in KEY_ENV_IGNORED. The job itself travels with each offer: argv (with `-address` and
// `-namespace`), cwd, stdin (containerd 2.3's BootstrapParams) and the JOB_ENV variables
// containerd sets per address and namespace, so one pool serves every containerd address.
// native/launcher/launcher.c computes the same key; test/e2e/pool.test.ts holds them equal.
import fs from 'node:fs';
import { JOB_ENV, KEY_ENV_IGNORED, NODE_FLAG, POOL_SIZE, POST_DIR } from './constants.js';

/** The JOB_ENV names: a job's own, never a pool's key. */
const JOB_VARS = JOB_ENV.split(',');
const IGNORED = new Set([...KEY_ENV_IGNORED.split(','), ...JOB_VARS]);

/** What keys a pool. */
export interface PoolKeyInput {
  uid: number;
  gid: number;
  /** The shim's entry script (dist/shim/main.js). */
  entry: string;
  /** Node's flags (process.execArgv); the launcher's NODE_FLAG when not given. */
  execArgv?: readonly string[];
  env: NodeJS.ProcessEnv;
}

/** FNV-1a, 64 bit, over bytes: a short stable name (not a security boundary: 0600 posts, peer checks). */
function fnv1a64(bytes: Uint8Array): string {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, '0');
}

/** `NAME=value` for every keying variable, sorted by bytes (as the launcher's strcmp). */
function keyedEnv(env: NodeJS.ProcessEnv): Buffer[] {
  return Object.entries(env)
    .filter((e): e is [string, string] => e[1] !== undefined && !IGNORED.has(e[0]))
    .map(([k, v]) => Buffer.from(`${k}=${v}`, 'utf8'))
    .sort((a, b) => Buffer.compare(a, b));
}

/** The build's identity: the resolved entry's path, mtime (ms) and size; '' when unreadable. */
function buildIdentity(entry: string): string {
  try {
    const real = fs.realpathSync(entry);
    const st = fs.statSync(real, { bigint: true });
    return `${real}\0${st.mtimeNs / 1_000_000n}\0${st.size}`;
  } catch {
    return '';
  }
}

/** The bytes the key is the hash of; each part NUL-terminated. */
function keyMaterial(k: PoolKeyInput): Buffer {
  const head = `shim-pool-v3\0${k.uid}\0${k.gid}\0${buildIdentity(k.entry)}\0`;
  const parts: Uint8Array[] = [Buffer.from(head, 'utf8')];
  // Node's flags, then an empty part: a flag changes how the daemon runs (heap sizes, JIT).
  for (const f of k.execArgv ?? [NODE_FLAG]) parts.push(Buffer.from(f, 'utf8'), Buffer.alloc(1));
  parts.push(Buffer.alloc(1));
  for (const e of keyedEnv(k.env)) parts.push(e, Buffer.alloc(1));
  return Buffer.concat(parts);
}

/** The base name of a pool's posts: `<POST_DIR>/standby-<key>`; post i is `<base>-<i>`. */
export function poolBase(k: PoolKeyInput, dir = POST_DIR): string {
  return `${dir}/standby-${fnv1a64(keyMaterial(k))}`;
}

/** The pool key of this process (of its environment as it is now). */
export function ownPoolBase(env = process.env): string {
  return poolBase({ uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0, entry: process.argv[1] ?? '', execArgv: process.execArgv, env });
}

/** The JOB_ENV variables of `env` that are set: what an offer carries. */
export function jobEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of JOB_VARS) if (env[k] !== undefined) out[k] = env[k];
  return out;
}

/** Take on a job's JOB_ENV variables: those it carries, and none left from an earlier job. */
export function applyJobEnv(vars: Readonly<Record<string, string>>, env: NodeJS.ProcessEnv = process.env): void {
  for (const k of JOB_VARS) {
    if (vars[k] !== undefined) env[k] = vars[k];
    else delete env[k];
  }
}

/** Whether `name` is one of the JOB_ENV variables. */
export function isJobEnv(name: string): boolean {
  return JOB_VARS.includes(name);
}

/**
 * The post of the shared daemons (docs/shared-daemon.md) that serve sockets for the pool `base`
 * and containerd's JOB_ENV `vars` (its addresses and namespace): the hash of `base` and each
 * `NAME=value`, each part NUL-terminated (native/launcher/launcher.c computes the same). The
 * runc option `shim_cgroup` is not in it (only a `start` that read its stdin knows it): a daemon
 * compares it before it takes a socket.
 */
export function sharedPostOf(base: string, vars: Readonly<Record<string, string>>): string {
  const parts = [base, ...JOB_VARS.map((k) => `${k}=${vars[k] ?? ''}`)].map((p) => `${p}\0`).join('');
  const dir = base.replace(/\/[^/]*$/, '');
  return `${dir}/shared-${fnv1a64(Buffer.from(parts, 'utf8'))}`;
}

/** The posts of the pool whose base is `base`, in the order senders try them. */
export function postsOf(base: string): string[] {
  return Array.from({ length: POOL_SIZE }, (_, i) => `${base}-${i}`);
}

/** The base of the pool `post` belongs to. */
export function baseOf(post: string): string {
  return post.replace(/-\d+$/, '');
}
