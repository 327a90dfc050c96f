// SPDX-License-Identifier: Apache-2.0
// The standby's offer parser (src/pool/protocol.ts) reads bytes from any local peer that got
// past the socket's mode and SO_PEERCRED: random and mutated offers must never throw, and only a
// well-formed offer with the right number of fds is taken. Env: POOL_FUZZ_SEED, POOL_FUZZ_CASES.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseOffer } from '../../src/pool/protocol.js';

const seed = Number(process.env.POOL_FUZZ_SEED) || 0x5eed;
const cases = Number(process.env.POOL_FUZZ_CASES) || 5000;

/** xorshift32: reproducible from the seed. */
function rng(s: number): () => number {
  let x = s >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

const job = { kind: 'job', argv: ['-namespace', 'k8s.io', '-address', '/run/containerd/containerd.sock', '-id', 'c1', 'delete'], cwd: '/b/c1', ppid: 42 };
const adopt = {
  kind: 'adopt', argv: ['-namespace', 'k8s.io', '-id', 'c1', '-address', '/a'], bundle: '/b/c1', argv0: '/usr/bin/containerd-shim-runc-v2',
  env: { TTRPC_ADDRESS: '/a.ttrpc', GRPC_ADDRESS: '/a', NAMESPACE: 'k8s.io' },
};

test('well-formed offers are taken, with exactly their fds', () => {
  assert.deepEqual(parseOffer(JSON.stringify(job), [4, 5, 6]), { ...job, argv0: undefined, env: {}, fds: [4, 5, 6] }, 'no env: none');
  assert.deepEqual(parseOffer(JSON.stringify(adopt), [7]), { ...adopt, fds: [7] });
  // A shared daemon takes only a tenant of its own shim_cgroup: the field travels with an adoption.
  assert.deepEqual(parseOffer(JSON.stringify({ ...adopt, shimCgroup: '/pods/shim' }), [7]), { ...adopt, shimCgroup: '/pods/shim', fds: [7] });
  for (const fds of [[], [4], [4, 5], [4, 5, 6, 7]]) assert.equal(parseOffer(JSON.stringify(job), fds), undefined, `a job with ${fds.length} fds`);
  for (const fds of [[], [4, 5], [4, 5, 6]]) assert.equal(parseOffer(JSON.stringify(adopt), fds), undefined, `an adoption with ${fds.length} fds`);
});

test('offers with a wrong field are refused', () => {
  const bad: unknown[] = [
    null, [], 'job', 42,
    { ...job, kind: 'other' }, { ...job, argv: 'delete' }, { ...job, argv: [1] }, { ...job, cwd: 1 }, { ...job, ppid: 'x' }, { ...job, ppid: 1.5 },
    { ...adopt, bundle: 'relative' }, { ...adopt, bundle: 7 }, { ...adopt, argv: undefined },
    { ...adopt, shimCgroup: 7 }, { ...adopt, shimCgroup: ['/a'] }, { ...adopt, shimCgroup: '/a\0b' },
    // env: only containerd's per-daemon variables (JOB_ENV), as strings without NUL.
    { ...job, env: 'TTRPC_ADDRESS=/a' }, { ...job, env: [] }, { ...job, env: null }, { ...job, env: { PATH: '/bin' } },
    { ...job, env: { LD_PRELOAD: '/x.so' } }, { ...job, env: { NODE_OPTIONS: '--require=/x.js' } },
    { ...job, env: { TTRPC_ADDRESS: 1 } }, { ...job, env: { TTRPC_ADDRESS: 'a\0b' } },
  ];
  for (const b of bad) {
    const fds = (b as { kind?: string } | null)?.kind === 'adopt' ? [3] : [3, 4, 5];
    assert.equal(parseOffer(JSON.stringify(b), fds), undefined, JSON.stringify(b));
  }
});

test(`fuzz: ${cases} random and mutated offers never throw, and what is taken is well-formed (seed ${seed})`, () => {
  const r = rng(seed);
  const bases = [JSON.stringify(job), JSON.stringify(adopt)];
  for (let i = 0; i < cases; i++) {
    let text: string;
    if (r() < 0.3) {
      text = Buffer.from(Array.from({ length: Math.floor(r() * 64) }, () => Math.floor(r() * 256))).toString('latin1');
    } else {
      const chars = [...bases[Math.floor(r() * bases.length)]];
      for (let m = Math.floor(r() * 4) + 1; m > 0; m--) {
        const at = Math.floor(r() * chars.length);
        const op = r();
        if (op < 0.4) chars.splice(at, 1);
        else if (op < 0.8) chars[at] = String.fromCharCode(Math.floor(r() * 128));
        else chars.splice(at, 0, '"{}[],:0'[Math.floor(r() * 8)]);
      }
      text = chars.join('');
    }
    const fds = Array.from({ length: Math.floor(r() * 5) }, (_, k) => 10 + k);
    const o = parseOffer(text, fds);
    if (!o) continue;
    assert.ok(Array.isArray(o.argv) && o.argv.every((a) => typeof a === 'string'));
    assert.ok(Object.entries(o.env).every(([k, v]) => ['TTRPC_ADDRESS', 'GRPC_ADDRESS', 'NAMESPACE'].includes(k) && typeof v === 'string' && !v.includes('\0')));
    if (o.kind === 'job') assert.ok(fds.length === 3 && typeof o.cwd === 'string' && Number.isSafeInteger(o.ppid));
    else assert.ok(fds.length === 1 && o.bundle.startsWith('/'));
  }
});
