// SPDX-License-Identifier: Apache-2.0
// Keeps the benchmark (bench/) from rotting: runs its quick mode for three workloads (the shim's
// own start/delete path, also with a new containerd address per cycle; the cold `ctr run --rm`
// lifecycle; churn at each concurrency level, whose leftover checks must find nothing) with both
// shims against a private containerd, and checks the results it writes. Takes ~20 s.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../support/shims.js';

const RUN_JS = join(REPO_ROOT, 'dist', 'bench', 'run.js');

interface Rendered {
  meta: { sizes: { churnConcurrencies: number[]; memoryContainers: number; memoryPods: number; memoryPodContainers: number } };
  metrics: Array<{ workload: string; metric: string; results: Record<string, { n: number; median: number }> }>;
  floors: Array<{ what: string; samples: number[] }>;
  failures: Record<string, Record<string, number>>;
}

test('bench quick mode: startup, lifecycle, interference, memory and churn with both shims (and ours-shared)', { timeout: 180_000 }, () => {
  assert.ok(existsSync(RUN_JS), `${RUN_JS} missing: build with tsc first`);
  const out = mkdtempSync('/tmp/bench-smoke-');
  try {
    const r = spawnSync(process.execPath, [RUN_JS], {
      env: {
        ...process.env,
        BENCH_QUICK: '1',
        BENCH_WORKLOADS: 'startup,lifecycle,interference,memory,churn',
        BENCH_SHIMS: 'reference,ours,ours-shared',
        BENCH_OUT_DIR: out,
        BENCH_OUT: 'smoke',
        BENCH_WAIT_QUIET: '0', // no waiting for a quiet machine: this checks the code, not the numbers
      },
      encoding: 'utf8',
      timeout: 170_000,
    });
    assert.equal(r.status, 0, `bench exited ${r.status ?? r.signal}\n${r.stderr}`);
    const json = JSON.parse(readFileSync(join(out, 'smoke.json'), 'utf8')) as Rendered;
    const md = readFileSync(join(out, 'smoke.md'), 'utf8');
    assert.match(md, /\| workload \| metric \| unit \| reference \| ours \| ours-shared \| ours\/ref \| ours-shared\/ref \|/);
    for (const [workload, metric] of [
      ['startup', '`start` action'], ['startup', '`delete` action'], ['lifecycle', 'ctr run --rm echo hi'], ['lifecycle', 'first byte of output'],
      ['startup', '`start` action, new -address each'], ['startup', '`start` → daemon answers 1st RPC, new -address each'],
      ...json.meta.sizes.churnConcurrencies.map((c) => ['churn', `cycle latency under ${c}× concurrency`]),
      ['interference', 'exec into B, nothing else running'],
      ['memory', `standalone: USS per container (${json.meta.sizes.memoryContainers}, no group)`],
      ['memory', `pods: USS per container (${json.meta.sizes.memoryPods} pods × ${json.meta.sizes.memoryPodContainers}, 1 shim per pod)`],
    ]) {
      const m = json.metrics.find((x) => x.workload === workload && x.metric === metric);
      assert.ok(m, `metric ${workload}/${metric} missing`);
      // ours-shared runs only where sharing matters (interference, memory, churn).
      for (const shim of ['reference', 'ours', ...(['interference', 'memory', 'churn'].includes(workload) ? ['ours-shared'] : [])]) {
        const s = m.results[shim];
        assert.ok(s && s.n > 0 && Number.isFinite(s.median) && s.median > 0, `${workload}/${metric}/${shim}: ${JSON.stringify(s)}`);
      }
    }
    assert.ok(json.floors.some((f) => f.what.includes('node -e 0') && f.samples.length > 0), 'node -e 0 floor measured');
    const failed = Object.entries(json.failures).flatMap(([w, per]) => Object.entries(per).filter(([, n]) => n > 0).map(([s, n]) => `${w}/${s}: ${n}`));
    assert.deepEqual(failed, []);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
