// SPDX-License-Identifier: Apache-2.0
// Our shim's standby pool under concurrency: many `ctr run --rm` at once race for the two
// pre-booted daemons (the native launcher hands them start/delete jobs; the rest fall back to
// booting Node). Every container must run and leave nothing behind, whichever path it took.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startContainerd, waitForNoLeftovers, NOTHING_LEFT, type Containerd } from '../support/containerd.js';
import { ensureBusyboxImage } from '../support/image.js';
import { OUR_SHIM } from '../support/shims.js';

const N = 16;
const CONCURRENCY = 6;
const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;

describe('the standby pool under concurrent starts (our shim)', { skip: process.env.SHIM_UNDER_TEST === 'reference' }, () => {
  let c: Containerd;
  let image: string;
  before(async () => {
    c = await startContainerd();
    image = await ensureBusyboxImage(c);
  });
  after(async () => { await c?.stop(); });

  it(`${N} concurrent ctr run --rm (${CONCURRENCY} at a time) all print their output, exit with their code and leave nothing`, { timeout: 180_000 }, async (t) => {
    const ids = Array.from({ length: N }, (_, i) => `sb-${unique}-${i}`);
    const results: { id: string; code: number; stdout: string; stderr: string }[] = [];
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const i = next++;
        const id = ids[i];
        const r = await c.ctr(['run', '--rm', '--runtime', OUR_SHIM, image, id, 'sh', '-c', `echo out-${i}; exit ${i % 5}`], { allowFail: true, timeoutMs: 60_000 });
        results.push({ id, code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr });
      }
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    for (const r of results) {
      const i = ids.indexOf(r.id);
      assert.equal(r.stdout, `out-${i}\n`, `${r.id} output (stderr: ${r.stderr})`);
      assert.equal(r.code, i % 5, `${r.id} exit code (stderr: ${r.stderr})`);
    }
    const left = await waitForNoLeftovers(c, ids);
    assert.deepEqual(left, { ...NOTHING_LEFT }, 'nothing left behind');
    t.diagnostic(`${N} containers, ${CONCURRENCY} at a time: ${Date.now() - t0} ms`);
  });
});
