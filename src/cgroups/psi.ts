// SPDX-License-Identifier: Apache-2.0
/**
 * Pressure stall information: a cgroup v2 `cpu.pressure` / `memory.pressure` / `io.pressure`
 * file → `io.containerd.cgroups.v2.PSIStats`, as containerd 2.x's Go shim reads it
 * (containerd/cgroups v3.1.3 cgroup2/utils.go getStatPSIFromFile and parsePSIData; the same
 * since v3.0.3). The kernel writes (Documentation/accounting/psi.rst):
 *
 *     some avg10=0.00 avg60=0.00 avg300=0.00 total=1234
 *     full avg10=0.00 avg60=0.00 avg300=0.00 total=567
 *
 * avg* are percentages over 10/60/300 s, total is the stall time in µs. What the Go code does,
 * mirrored here:
 *   - a file that cannot be opened or read (kernel without CONFIG_PSI, booted with `psi=0`,
 *     EOPNOTSUPP after `cgroup.pressure` 0, the cgroup gone) → no PSIStats (field unset);
 *   - a readable file → a PSIStats, even if it has no `some`/`full` line (both then unset);
 *   - a line whose first field is not `some` or `full` is ignored; a second `some` replaces the
 *     first;
 *   - on a `some`/`full` line every further field must be `key=value`: one without `=`, or an
 *     avg10/avg60/avg300 that Go's strconv.ParseFloat refuses, or a total that
 *     strconv.ParseUint(…, 10, 64) refuses, drops the whole file's PSIStats (Go logs and returns
 *     nil); unknown keys are ignored;
 *   - a line over bufio.Scanner's 64 KiB token limit drops it too (Scanner error → nil).
 * Where we differ, deliberately: a blank line is skipped (Go indexes `parts[0]` of an empty
 * slice and panics; the kernel never writes one), and hexadecimal floats (`0x1p-2`, which
 * ParseFloat accepts; the kernel writes `%lu.%02lu`) count as malformed.
 */

import { PSIData, PSIStats } from '../gen/cgroups/v2/metrics.js';
import { MAX_UINT64 } from './files.js';

/** bufio.MaxScanTokenSize: a longer line is a Scanner error. */
const MAX_LINE = 64 * 1024 - 1;
/** Go's unicode.IsSpace (strings.Fields), not JavaScript's \s (which has U+FEFF, lacks U+0085). */
const FIELD_SEP = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
const DECIMAL_FLOAT = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
const SPECIAL_FLOAT = /^(?:[+-]?inf(?:inity)?|nan)$/i;
const DECIMAL_UINT = /^[0-9]+$/;

/** strconv.ParseFloat(s, 64) for decimal input; `undefined` where it returns an error. */
function parseFloat64(s: string): number | undefined {
  if (SPECIAL_FLOAT.test(s)) {
    const l = s.toLowerCase();
    return l === 'nan' ? Number.NaN : l.startsWith('-') ? -Infinity : Infinity;
  }
  if (!DECIMAL_FLOAT.test(s)) return undefined;
  const v = Number(s);
  return Number.isFinite(v) ? v : undefined; // overflow: ErrRange
}

/** strconv.ParseUint(s, 10, 64); `undefined` where it returns an error. */
function parseUint64(s: string): bigint | undefined {
  if (!DECIMAL_UINT.test(s)) return undefined;
  const v = BigInt(s);
  return v > MAX_UINT64 ? undefined : v;
}

/** Fills `data` from `key=value` fields; false where parsePSIData returns an error. */
function parseFields(fields: readonly string[], data: PSIData): boolean {
  for (const f of fields) {
    const eq = f.indexOf('=');
    if (eq < 0) return false;
    const key = f.slice(0, eq);
    const value = f.slice(eq + 1);
    if (key === 'total') {
      const v = parseUint64(value);
      if (v === undefined) return false;
      data.total = v;
    } else if (key === 'avg10' || key === 'avg60' || key === 'avg300') {
      const v = parseFloat64(value);
      if (v === undefined) return false;
      data[key] = v;
    }
  }
  return true;
}

/**
 * Parses a *.pressure file's text; `undefined` (the field stays unset) when the file was absent
 * or unreadable (`text` undefined) or malformed as described in the module comment. Never throws.
 */
export function parsePressure(text: string | undefined): PSIStats | undefined {
  if (text === undefined) return undefined;
  const stats = PSIStats.fromPartial({});
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop(); // the newline ends the last line
  for (const raw of lines) {
    if (raw.length > MAX_LINE) return undefined;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw; // bufio.ScanLines drops a \r
    const fields = line.split(FIELD_SEP).filter((s) => s !== '');
    if (fields.length === 0) continue;
    if (fields[0] !== 'some' && fields[0] !== 'full') continue;
    const data = PSIData.fromPartial({});
    if (!parseFields(fields.slice(1), data)) return undefined;
    stats[fields[0]] = data;
  }
  return stats;
}
