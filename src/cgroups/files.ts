// SPDX-License-Identifier: Apache-2.0
/**
 * Shared helpers for reading cgroupfs files: tolerant readers (a file that
 * cannot be read is simply "absent"), number/key-value parsers, and a tiny
 * driver that runs one synchronous "build" function either with synchronous
 * reads or with parallel asynchronous reads.
 *
 * The build functions in v1.ts / v2.ts are written against a {@link FileGetter}
 * (`path → text | undefined`). The async driver runs the build repeatedly: each
 * pass records the paths it asked for that are not loaded yet, those are read
 * in parallel (fs/promises, thread pool), and the build runs again until it asks
 * for nothing new. Builds are pure and cheap, so the 2–3 passes cost nothing
 * next to the file reads, and the parsing logic exists only once.
 */

import { readFileSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** Returns a file's text, or `undefined` when it is absent/unreadable. */
export type FileGetter = (path: string) => string | undefined;

/** 2^64 − 1: what a cgroup value of `max` means in the v2 payloads. */
export const MAX_UINT64 = 0xffff_ffff_ffff_ffffn;
/** 2^32 − 1: an rdma `max` (hca_handle / hca_object are uint32). */
export const MAX_UINT32 = 0xffff_ffff;

/**
 * Reads a file synchronously; any error (ENOENT because a subsystem or file
 * is absent, ENODEV because the cgroup was removed meanwhile, EOPNOTSUPP,
 * EACCES, …) yields `undefined`.
 */
function readOptSync(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Async variant of {@link readOptSync}. */
async function readOpt(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Runs `build` with synchronous reads. */
export function runSync<T>(build: (get: FileGetter) => T): T {
  const cache = new Map<string, string | undefined>();
  return build((p) => {
    if (cache.has(p)) return cache.get(p);
    const v = readOptSync(p);
    cache.set(p, v);
    return v;
  });
}

/** Runs `build` with parallel asynchronous reads (see the module comment). */
export async function runAsync<T>(build: (get: FileGetter) => T): Promise<T> {
  const cache = new Map<string, string | undefined>();
  for (let pass = 0; ; pass++) {
    const wanted = new Set<string>();
    const result = build((p) => {
      if (cache.has(p)) return cache.get(p);
      wanted.add(p);
      return undefined;
    });
    if (wanted.size === 0) return result;
    // A build can only ask for finitely many distinct paths; this is a guard
    // against a (buggy) build whose requests never settle.
    if (pass > 8) throw new Error('cgroups: file reads did not settle');
    const paths = [...wanted];
    const texts = await Promise.all(paths.map(readOpt));
    paths.forEach((p, i) => cache.set(p, texts[i]));
  }
}

const DIGITS = /^[0-9]+$/;
const NEGATIVE = /^-[0-9]+$/;

/**
 * Parses an unsigned decimal integer (surrounding whitespace ignored).
 * Negative numbers give 0 (as containerd does, e.g. for `-1` "unlimited");
 * values above 2^64−1 are clamped; anything else (including `max`) gives
 * `undefined`.
 */
export function parseUint(text: string): bigint | undefined {
  const s = text.trim();
  if (DIGITS.test(s)) {
    const v = BigInt(s);
    return v > MAX_UINT64 ? MAX_UINT64 : v;
  }
  if (NEGATIVE.test(s)) return 0n;
  return undefined;
}

/**
 * Parses a single-value file. `max` yields `maxValue` (2^64−1 for v2 files,
 * 0 where containerd's v1 code leaves the field unset). Absent or malformed
 * files yield 0.
 */
export function singleValue(text: string | undefined, maxValue: bigint = MAX_UINT64): bigint {
  if (text === undefined) return 0n;
  const s = text.trim();
  if (s === 'max') return maxValue;
  return parseUint(s) ?? 0n;
}

/**
 * Parses `key value` lines (memory.stat, cpu.stat, memory.events,
 * memory.oom_control, cpuacct.stat, cgroup.events, …). Lines that are not
 * exactly two fields with a numeric value are skipped.
 */
export function parseKeyValues(text: string | undefined): Map<string, bigint> {
  const out = new Map<string, bigint>();
  if (text === undefined) return out;
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length !== 2) continue;
    const v = parseUint(f[1]);
    if (v !== undefined) out.set(f[0], v);
  }
  return out;
}

/**
 * Hugepage sizes as the cgroup files name them (`2MB`, `1GB`, `64KB`),
 * derived from the `hugepages-<N>kB` entries of /sys/kernel/mm/hugepages.
 */
export function hugePageSizesFromNames(names: readonly string[]): string[] {
  const sizes: { kb: number; name: string }[] = [];
  for (const n of names) {
    const m = /^hugepages-([0-9]+)kB$/.exec(n);
    if (!m) continue;
    const kb = Number(m[1]);
    let name: string;
    if (kb >= 1 << 20) name = `${kb / (1 << 20)}GB`;
    else if (kb >= 1 << 10) name = `${kb / (1 << 10)}MB`;
    else name = `${kb}KB`;
    // Non-power-of-two sizes do not exist in practice; keep integer names.
    if (!/^[0-9]+[KMG]B$/.test(name)) continue;
    sizes.push({ kb, name });
  }
  sizes.sort((a, b) => a.kb - b.kb);
  return sizes.map((s) => s.name);
}

let hostSizes: string[] | undefined;

/** Hugepage sizes supported by this host (cached). */
export function hostHugePageSizes(): string[] {
  if (hostSizes === undefined) {
    try {
      hostSizes = hugePageSizesFromNames(readdirSync('/sys/kernel/mm/hugepages'));
    } catch {
      hostSizes = [];
    }
  }
  return hostSizes;
}
