// SPDX-License-Identifier: Apache-2.0
// Pressure stall information (src/cgroups/psi.ts): the *.pressure parser against what the kernel
// writes and against containerd/cgroups v3.1.3 getStatPSIFromFile's rules (cgroup2/utils.go),
// a seeded property test over generated and mutated files (never throws; generated files parse to
// what a table of Go's verdicts says), the wire numbers of containerd/cgroups v3's
// cgroup2/stats/metrics.proto, and which Metrics sections carry PSI (cgroup2/manager.go).
// Env: PSI_FUZZ_SEED, PSI_FUZZ_CASES.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CPUStat, IOStat, MemoryStat, Metrics, PSIData, PSIStats } from '../../src/gen/cgroups/v2/metrics.js';
import { parsePressure } from '../../src/cgroups/psi.js';
import { buildV2Metrics } from '../../src/cgroups/v2.js';
import { rng } from '../support/ttrpc-vectors.js';

const SEED = Number(process.env.PSI_FUZZ_SEED ?? 0x5eed) >>> 0;
const CASES = Number(process.env.PSI_FUZZ_CASES ?? 20_000);

const data = (avg10: number, avg60: number, avg300: number, total: bigint): PSIData => ({ avg10, avg60, avg300, total });
const zero = data(0, 0, 0, 0n);

test('psi: the kernel\'s format (cgroup cpu/memory/io.pressure, kernel ≥ 5.13 with a full line for cpu)', () => {
  assert.deepEqual(parsePressure('some avg10=1.52 avg60=0.87 avg300=0.21 total=4712203\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1530\n'), {
    some: data(1.52, 0.87, 0.21, 4712203n),
    full: data(0, 0, 0, 1530n),
  });
  // Before 5.13 cpu.pressure has no full line: full stays unset, the rest is kept.
  assert.deepEqual(parsePressure('some avg10=100.00 avg60=99.99 avg300=50.50 total=18446744073709551615\n'), {
    some: data(100, 99.99, 50.5, 18446744073709551615n),
    full: undefined,
  });
});

test('psi: absent or unreadable file → unset; readable but without some/full lines → an empty PSIStats', () => {
  assert.equal(parsePressure(undefined), undefined);
  assert.deepEqual(parsePressure(''), { some: undefined, full: undefined });
  assert.deepEqual(parsePressure('other avg10=x\n'), { some: undefined, full: undefined });
});

test('psi: Go\'s parsePSIData rules — a bad some/full field drops the whole file; unknown keys and lines are ignored', () => {
  const ok = 'some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n';
  // One malformed field anywhere in a some/full line: the whole PSIStats is dropped (Go logs, returns nil).
  for (const bad of ['avg10', 'avg10=', 'avg10=abc', 'avg60=1e400', 'avg300=1,5', 'total=-1', 'total=1.0', 'total=+5',
    'total=18446744073709551616', 'total=', 'avg10=0x1p-2', 'avg10=1_0']) {
    assert.equal(parsePressure(`${ok}full avg10=0.00 ${bad} total=2\n`), undefined, bad);
    assert.equal(parsePressure(`some ${bad}\n${ok}`), undefined, bad);
  }
  // Ignored: unknown keys (their values unchecked), lines that are not some/full, a blank line
  // (Go would index an empty slice there; the kernel never writes one).
  assert.deepEqual(parsePressure(`weird total=x\n\n  \nsome avg10=0.50 extra=?? = total=7\n`), {
    some: data(0.5, 0, 0, 7n), full: undefined,
  });
  // A later some line replaces the earlier one (fields it lacks are zero again).
  assert.deepEqual(parsePressure('some avg10=1 total=5\nsome avg60=2\n'), { some: data(0, 2, 0, 0n), full: undefined });
  // A some line with no fields: present, all zero.
  assert.deepEqual(parsePressure('some\nfull\n'), { some: zero, full: zero });
  // strconv.ParseFloat forms: exponent, leading dot, sign, inf, nan; CRLF, tabs, no final newline.
  const p = parsePressure('some\tavg10=1e1 avg60=.5  avg300=+2.\r\nfull avg10=-Inf avg60=NaN avg300=infinity total=007');
  assert.deepEqual(p?.some, data(10, 0.5, 2, 0n));
  assert.equal(p?.full?.avg10, -Infinity);
  assert.ok(Number.isNaN(p?.full?.avg60));
  assert.equal(p?.full?.avg300, Infinity);
  assert.equal(p?.full?.total, 7n);
  // The keywords are case-sensitive; a value may contain '=' only where the key is ignored.
  assert.deepEqual(parsePressure('SOME avg10=1\nsome x=a=b\n'), { some: zero, full: undefined });
  assert.equal(parsePressure('some avg10=1=2\n'), undefined);
  // A line over bufio.Scanner's 64 KiB limit: a Scanner error, nil.
  assert.equal(parsePressure(`some avg10=0.00 x=${'y'.repeat(70_000)}\n`), undefined);
});

// ---------------------------------------------------------------------------------------------
// Property test: generated files against a table of Go's verdicts; mutated and random input.

/** [field text, what Go does with it]: a value for a key, 'ignored', or 'error'. */
type Verdict = { key: 'avg10' | 'avg60' | 'avg300'; v: number } | { key: 'total'; v: bigint } | 'ignored' | 'error';
const FIELDS: ReadonlyArray<readonly [string, Verdict]> = [
  ['avg10=1.52', { key: 'avg10', v: 1.52 }],
  ['avg10=0.00', { key: 'avg10', v: 0 }],
  ['avg60=99.99', { key: 'avg60', v: 99.99 }],
  ['avg60=.25', { key: 'avg60', v: 0.25 }],
  ['avg300=100.00', { key: 'avg300', v: 100 }],
  ['avg300=2e-1', { key: 'avg300', v: 0.2 }],
  ['avg10=-3', { key: 'avg10', v: -3 }],
  ['total=0', { key: 'total', v: 0n }],
  ['total=4712203', { key: 'total', v: 4712203n }],
  ['total=18446744073709551615', { key: 'total', v: 18446744073709551615n }],
  ['unknown=zz', 'ignored'],
  ['avg=1', 'ignored'],
  ['x=', 'ignored'],
  ['=', 'ignored'],
  ['avg10', 'error'],
  ['total', 'error'],
  ['avg10=', 'error'],
  ['avg60=abc', 'error'],
  ['avg300=1e999', 'error'],
  ['total=-1', 'error'],
  ['total=1e3', 'error'],
  ['total=18446744073709551616', 'error'],
  ['garbage', 'error'],
];
const HEADS = ['some', 'full', 'other', 'Some', ''] as const;
const SEPS = [' ', '  ', '\t', ' \t '];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)];
}

/** A generated file and the PSIStats Go's getStatPSIFromFile returns for it (undefined: nil). */
function generate(r: () => number): { text: string; expected: PSIStats | undefined } {
  const lines: string[] = [];
  const expected: PSIStats = { some: undefined, full: undefined };
  let failed = false;
  const n = Math.floor(r() * 4);
  for (let i = 0; i < n; i++) {
    const head = pick(r, HEADS);
    const fields = Array.from({ length: Math.floor(r() * 6) }, () => pick(r, FIELDS));
    const sep = pick(r, SEPS);
    const lead = r() < 0.1 ? ' ' : '';
    lines.push(lead + [head, ...fields.map(([f]) => f)].filter((x) => x !== '').join(sep));
    if (head !== 'some' && head !== 'full') continue; // blank, or not some/full (fields unchecked)
    const d = data(0, 0, 0, 0n);
    for (const [, verdict] of fields) {
      if (verdict === 'error') failed = true;
      else if (verdict !== 'ignored') (d as unknown as Record<string, unknown>)[verdict.key] = verdict.v;
    }
    expected[head] = d;
  }
  const eol = r() < 0.2 ? '\r\n' : '\n';
  const text = lines.join(eol) + (r() < 0.8 && lines.length > 0 ? eol : '');
  return { text, expected: failed ? undefined : expected };
}

const CHARS = 'somefulavg10630=.totaleE+-xinfNaN 0123456789\t\r\n\n\0é\u00a0';
function mutate(r: () => number, text: string): string {
  let s = text;
  for (let k = 1 + Math.floor(r() * 4); k > 0; k--) {
    const at = Math.floor(r() * (s.length + 1));
    const c = pick(r, [...CHARS]);
    const op = Math.floor(r() * 3);
    s = op === 0 ? s.slice(0, at) + c + s.slice(at) : op === 1 ? s.slice(0, at) + s.slice(at + 1) : s.slice(0, at) + c + s.slice(at + 1);
  }
  return s;
}

/** Whatever comes back is a well-typed PSIStats that encodes and decodes. */
function wellFormed(p: PSIStats | undefined, input: string): void {
  if (p === undefined) return;
  for (const d of [p.some, p.full]) {
    if (d === undefined) continue;
    for (const a of [d.avg10, d.avg60, d.avg300]) assert.equal(typeof a, 'number', JSON.stringify(input));
    assert.ok(typeof d.total === 'bigint' && d.total >= 0n && d.total <= 18446744073709551615n, JSON.stringify(input));
  }
  const back = PSIStats.decode(PSIStats.encode(p).finish());
  assert.equal(back.some === undefined, p.some === undefined);
  assert.equal(back.full?.total, p.full?.total);
}

test(`psi property test: ${CASES} generated, mutated and random files (seed ${SEED}) — never throws, matches Go's verdicts`, () => {
  const r = rng(SEED);
  for (let i = 0; i < CASES; i++) {
    const { text, expected } = generate(r);
    let got: PSIStats | undefined;
    assert.doesNotThrow(() => { got = parsePressure(text); }, JSON.stringify(text));
    assert.deepEqual(got, expected, `case ${i}: ${JSON.stringify(text)}`);
    const mutated = mutate(r, text);
    assert.doesNotThrow(() => wellFormed(parsePressure(mutated), mutated), JSON.stringify(mutated));
    const random = Array.from({ length: Math.floor(r() * 80) }, () => pick(r, [...CHARS])).join('');
    assert.doesNotThrow(() => wellFormed(parsePressure(random), random), JSON.stringify(random));
  }
});

// ---------------------------------------------------------------------------------------------
// Wire numbers and Metrics sections

test('psi wire numbers: containerd/cgroups v3 cgroup2/stats/metrics.proto (CPUStat 7, MemoryStat 38, IOStat 2; PSIData 1–4)', () => {
  const psi: PSIStats = { some: data(1.5, 0, 0, 3n), full: undefined };
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  // field 7, wire type 2 → 0x3a; field 38 → varint 306 → b2 02; field 2 → 0x12.
  assert.match(hex(CPUStat.encode(CPUStat.fromPartial({ psi })).finish()), /^3a/);
  assert.match(hex(MemoryStat.encode(MemoryStat.fromPartial({ psi })).finish()), /^b202/);
  assert.match(hex(IOStat.encode(IOStat.fromPartial({ psi })).finish()), /^12/);
  // PSIStats.some = 1 (0a); PSIData avg10 = 1 as a double (09 …), total = 4 as a varint (20 03).
  assert.equal(hex(PSIStats.encode(psi).finish()), '0a0b' + '09000000000000f83f' + '2003');
  // An older reader (no psi fields) skips them: CPUStat's other fields survive around them.
  const both = CPUStat.encode(CPUStat.fromPartial({ usageUsec: 5n, psi })).finish();
  assert.equal(CPUStat.decode(both).usageUsec, 5n);
});

test('psi sections: cpu.psi with cpu.stat, memory.psi with memory.stat, io.psi always (containerd/cgroups v3.1.3 manager.go)', () => {
  const pressure = 'some avg10=0.10 avg60=0.20 avg300=0.30 total=40\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=4\n';
  const expected = { some: data(0.1, 0.2, 0.3, 40n), full: data(0, 0, 0, 4n) };
  const build = (files: Record<string, string>): Metrics =>
    buildV2Metrics('/cg', (p) => files[p.slice('/cg/'.length)], { hugePageSizes: [] });
  const all = build({
    'cgroup.controllers': 'cpu memory io pids\n', 'cpu.stat': 'usage_usec 1\n', 'memory.stat': 'anon 1\n',
    'cpu.pressure': pressure, 'memory.pressure': pressure, 'io.pressure': pressure,
  });
  assert.deepEqual([all.cpu?.psi, all.memory?.psi, all.io?.psi], [expected, expected, expected]);
  // memory and io controllers off (their files gone), the core *.pressure files still there:
  // readMemoryStats returns an empty MemoryStat without memory.stat; io.pressure is read anyway.
  const noMemory = build({ 'cgroup.controllers': 'pids\n', 'cpu.stat': 'usage_usec 1\n', 'cpu.pressure': pressure, 'memory.pressure': pressure, 'io.pressure': pressure });
  assert.deepEqual([noMemory.cpu?.psi, noMemory.memory?.psi, noMemory.io?.psi], [expected, undefined, expected]);
  // A kernel without PSI (or psi=0): no *.pressure files, every psi unset, nothing else changes.
  const noPsi = build({ 'cgroup.controllers': 'cpu memory io pids\n', 'cpu.stat': 'usage_usec 1\n', 'memory.stat': 'anon 1\n' });
  assert.deepEqual([noPsi.cpu?.psi, noPsi.memory?.psi, noPsi.io?.psi], [undefined, undefined, undefined]);
  assert.equal(noPsi.cpu?.usageUsec, 1n);
});
