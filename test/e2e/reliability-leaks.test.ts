// SPDX-License-Identifier: Apache-2.0
// Reliability: leaks. Exec/kill cycles and container create/delete cycles through one shim; the
// daemon's open fds, children and threads must return to their starting counts, with no zombie,
// and its memory must not grow with the number of cycles. The figures are printed.
// Sizes: 200 execs / 40 containers by default; 1,000 / 200 with SHIM_STRESS=full.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  ShimLab, stressSize, figures, formatFigures, settle, within, pool, crashLines, fdTargets, uniqueId, type LabShim, type ProcFigures,
} from '../support/reliability.js';
import { mountedUnder } from '../support/shimproc.js';
import type { FifoReader } from '../support/fifo.js';

const EXECS = stressSize(200, 1000);
const CONTAINERS = stressSize(40, 200);
const RPC_MS = 30_000;

let lab: ShimLab;
let shim: LabShim;
const home = uniqueId('leakhome');

before(async () => {
  lab = await ShimLab.create('relleak');
  const bundle = lab.bundle(home, { args: ['sleep', '100000'] });
  shim = await lab.startShim(home, bundle);
  await shim.client.create({ id: home, bundle, rootfs: lab.rootfs });
  await shim.client.start(home);
});
after(async () => { await lab.cleanup(); });

/** Baseline/after figures with the comparison the test asserts on. */
function compare(label: string, base: ProcFigures, end: ProcFigures): string {
  const d = (a: number, b: number) => `${a} -> ${b}`;
  return `${label}: fds ${d(base.fds, end.fds)}, children ${d(base.children, end.children)}, zombies ${d(base.zombies, end.zombies)}, ` +
    `threads ${d(base.threads, end.threads)}, rss ${(base.rssKb / 1024).toFixed(1)} -> ${(end.rssKb / 1024).toFixed(1)} MiB, ` +
    `pss ${(base.pssKb / 1024).toFixed(1)} -> ${(end.pssKb / 1024).toFixed(1)} MiB`;
}

/** fds, children, zombies and threads settled back to the baseline (counts, not time). */
async function settledBack(base: ProcFigures): Promise<ProcFigures> {
  return settle(() => figures(shim.pid),
    (f) => f.fds === base.fds && f.children === base.children && f.zombies === 0 && f.threads === base.threads, 15_000, 100);
}

describe('reliability: leaks', () => {
  test(`${EXECS} exec/kill cycles through one shim leave fds, children and memory at their starting level`, { timeout: 300_000 }, async (t) => {
    const { client } = shim;
    const LANES = 4;
    // Each lane reuses one stdout fifo (opened by the shim at Start, closed at Delete).
    const readers: FifoReader[] = [];
    for (let l = 0; l < LANES; l++) readers.push(lab.reader(lab.fifo(`lane${l}.out`)));
    let n = 0;
    const cycle = async (i: number, lane: number) => {
      const execId = `x${i}`;
      const withIo = i % 2 === 0;
      const script = withIo ? `echo out-${i}; exec sleep 100000` : 'exec sleep 100000';
      await within(client.exec({
        id: home, execId, spec: ShimLab.execSpec(['sh', '-c', script]),
        stdout: withIo ? path.join(lab.tmp, `lane${lane}.out`) : '',
      }), RPC_MS, `Exec ${execId}`);
      await within(client.start(home, execId), RPC_MS, `Start ${execId}`);
      if (withIo) await readers[lane].until((s) => s.includes(`out-${i}\n`));
      await within(client.kill(home, 9, { execId }), RPC_MS, `Kill ${execId}`);
      const w = await within(client.wait(home, execId), RPC_MS, `Wait ${execId}`);
      assert.equal(w.exitStatus, 137);
      await within(client.delete(home, execId), RPC_MS, `Delete ${execId}`);
      n++;
    };
    const runCycles = async (from: number, count: number) => {
      const idx = Array.from({ length: count }, (_, k) => from + k);
      const lanes = Array.from({ length: LANES }, (_, l) => idx.filter((_, k) => k % LANES === l));
      await Promise.all(lanes.map(async (list, l) => { for (const i of list) await cycle(i, l); }));
    };

    await runCycles(0, 8); // warm-up: lazily created handles belong to the baseline
    const base = await settle(() => figures(shim.pid), (f) => f.children === 1 && f.zombies === 0);
    const half = Math.floor(EXECS / 2);
    await runCycles(1000, half);
    const mid = await settledBack(base);
    await runCycles(1000 + half, EXECS - half);
    const end = await settledBack(base);
    t.diagnostic(`exec/kill cycles run: ${n - 8} (+8 warm-up), 4 in parallel, half with a stdout fifo`);
    t.diagnostic(`shim before: ${formatFigures(base)}`);
    t.diagnostic(`shim at ${half}: ${formatFigures(mid)}`);
    t.diagnostic(`shim after:  ${formatFigures(end)}`);
    t.diagnostic(compare('exec/kill', base, end));
    assert.equal(n - 8, EXECS);
    assert.equal(end.fds, base.fds, `open fds back to the start:\n${fdTargets(shim.pid).join('\n')}`);
    assert.equal(end.children, base.children, 'children back to the start (the container init)');
    assert.equal(end.zombies, 0);
    assert.equal(end.threads, base.threads, 'no thread left behind');
    assert.deepEqual(end.fdKinds, base.fdKinds);
    // Memory: no growth with the number of cycles. The second half may not add more than a
    // fixed allowance over the first half (GC noise), and the total stays within bounds.
    assert.ok(end.rssKb - mid.rssKb < 24 * 1024, `RSS grew by ${end.rssKb - mid.rssKb} KiB over the second ${EXECS - half} cycles`);
    assert.ok(end.rssKb < base.rssKb + 48 * 1024, `RSS ${end.rssKb} KiB vs ${base.rssKb} KiB at the start`);
    // Every exec was reported once, in order: exec-added, exec-started, exit.
    await lab.events.until((envs) => envs.filter((e) => e.topic === '/tasks/exit' && e.namespace === lab.namespace).length >= n);
    assert.equal(lab.exits().filter((e) => e.containerId === home && e.id.startsWith('x')).length, n, 'one exit event per exec');
    assert.deepEqual(crashLines(shim.log.text), []);
  });

  test(`${CONTAINERS} container create/delete cycles through one shim leave fds, children, mounts and memory at their starting level`, { timeout: 300_000 }, async (t) => {
    const { client } = shim;
    // One config.json for all (copied into each bundle), made by `runc spec` once.
    const template = fs.readFileSync(path.join(lab.tmp, lab.namespace, home, 'config.json'));
    const out = lab.reader(lab.fifo('ctr.out'));
    let n = 0;
    const cycle = async (i: number) => {
      const id = uniqueId(`leak${i}`);
      lab.track(id);
      const bundle = path.join(lab.tmp, lab.namespace, id);
      fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true, mode: 0o711 });
      const cfg = JSON.parse(template.toString('utf8')) as { process: { args: string[] } };
      const withIo = i % 2 === 0;
      cfg.process.args = withIo ? ['sh', '-c', `echo ctr-${i}; exec sleep 100000`] : ['sleep', '100000'];
      fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(cfg));
      await within(client.create({ id, bundle, rootfs: lab.rootfs, stdout: withIo ? path.join(lab.tmp, 'ctr.out') : '' }), RPC_MS, `Create ${id}`);
      await within(client.start(id), RPC_MS, `Start ${id}`);
      if (withIo) await out.until((s) => s.includes(`ctr-${i}\n`));
      await within(client.kill(id, 9), RPC_MS, `Kill ${id}`);
      assert.equal((await within(client.wait(id), RPC_MS, `Wait ${id}`)).exitStatus, 137);
      await within(client.delete(id), RPC_MS, `Delete ${id}`);
      assert.deepEqual(mountedUnder(bundle), [], `${id}: rootfs unmounted`);
      assert.equal(fs.existsSync(path.join(lab.runcRoot(), id)), false, `${id}: runc state removed`);
      fs.rmSync(bundle, { recursive: true, force: true }); // what containerd does next
      n++;
    };
    const runCycles = async (from: number, count: number) => {
      await pool(Array.from({ length: count }, (_, k) => from + k), 3, cycle);
    };

    await runCycles(0, 4);
    const base = await settle(() => figures(shim.pid), (f) => f.children === 1 && f.zombies === 0);
    const half = Math.floor(CONTAINERS / 2);
    await runCycles(1000, half);
    const mid = await settledBack(base);
    await runCycles(1000 + half, CONTAINERS - half);
    const end = await settledBack(base);
    t.diagnostic(`container create/start/kill/delete cycles run: ${n - 4} (+4 warm-up), 3 in parallel, half with a stdout fifo`);
    t.diagnostic(`shim before: ${formatFigures(base)}`);
    t.diagnostic(`shim at ${half}: ${formatFigures(mid)}`);
    t.diagnostic(`shim after:  ${formatFigures(end)}`);
    t.diagnostic(compare('containers', base, end));
    assert.equal(n - 4, CONTAINERS);
    assert.equal(end.fds, base.fds, `open fds back to the start:\n${fdTargets(shim.pid).join('\n')}`);
    assert.equal(end.children, base.children);
    assert.equal(end.zombies, 0);
    assert.equal(end.threads, base.threads);
    assert.deepEqual(end.fdKinds, base.fdKinds);
    assert.ok(end.rssKb - mid.rssKb < 24 * 1024, `RSS grew by ${end.rssKb - mid.rssKb} KiB over the second ${CONTAINERS - half} cycles`);
    assert.ok(end.rssKb < base.rssKb + 48 * 1024, `RSS ${end.rssKb} KiB vs ${base.rssKb} KiB at the start`);
    const left = mountedUnder(path.join(lab.tmp, lab.namespace)).filter((m) => !m.startsWith(path.join(lab.tmp, lab.namespace, home)));
    assert.deepEqual(left, [], 'no rootfs mount left');
    const runcLeft = fs.readdirSync(lab.runcRoot()).filter((d) => d !== home);
    assert.deepEqual(runcLeft, [], 'no runc state left');
    assert.equal(shim.client.client.closed, false, 'the same connection served every cycle');
    assert.deepEqual(crashLines(shim.log.text), []);
  });
});
