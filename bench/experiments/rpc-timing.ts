// SPDX-License-Identifier: Apache-2.0
// Per-RPC timings of a container's life, the reference shim against ours, without containerd:
// the script plays containerd (as test/e2e/shim-direct does) and times each step separately,
// so a gap in `ctr run --rm` can be pinned to one RPC. Interleaved, both shims every iteration.
//
//   node dist/bench/experiments/rpc-timing.js [iterations=15] [execs=5]
//
// Prints a Markdown table of medians; writes bench/results/rpc-timing.json.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { TaskClient, FakeEvents } from '../../test/support/taskclient.js';
import { makeBusyboxRootfs, makeBundle } from '../../test/support/rootfs.js';
import { mkfifo, FifoReader } from '../../test/support/fifo.js';
import { runShim, mountedUnder } from '../../test/support/shimproc.js';
import { OUR_SHIM, REFERENCE_SHIM, REPO_ROOT } from '../../test/support/shims.js';
import { summarize } from '../lib/stats.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';

const ITERS = Number(process.argv[2] ?? 15);
const EXECS = Number(process.argv[3] ?? 5);
const NS = `rpctiming${process.pid}`;
// RPC_OURS=<path>: run another build (or a wrapper, e.g. one adding --cpu-prof) as ours.
const SHIMS = { reference: REFERENCE_SHIM, ours: process.env.RPC_OURS || OUR_SHIM } as const;
type Name = keyof typeof SHIMS;

const samples: Record<Name, Record<string, number[]>> = { reference: {}, ours: {} };
const now = () => performance.now();

async function timed<T>(name: Name, step: string, fn: () => Promise<T>): Promise<T> {
  const t = now();
  const r = await fn();
  (samples[name][step] ??= []).push(now() - t);
  return r;
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync('/tmp/rpct-');
  const rootfsSrc = makeBusyboxRootfs(path.join(tmp, 'rootfs-src'));
  const events = new FakeEvents(path.join(tmp, 'ttrpc.sock'));
  await events.listen();
  const env = { ...process.env, TTRPC_ADDRESS: events.path };
  const grpc = path.join(tmp, 'containerd.sock');
  const rootfs = [{ type: 'bind', source: rootfsSrc, target: '', options: ['rbind', 'ro'] }];
  let n = 0;
  // RPC_RUNC=<path>: run that binary as runc (for example a wrapper that logs and times runc).
  const options = process.env.RPC_RUNC
    ? { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from(Options.encode(Options.fromPartial({ binaryName: process.env.RPC_RUNC })).finish()) }
    : undefined;

  // RPC_GAP_MS (default 300): a pause before each life, so background work (our standby
  // refill, ~100 ms of CPU) settles as it does before every sample of `npm run bench`.
  const gapMs = Number(process.env.RPC_GAP_MS ?? 300);
  const life = async (name: Name, args: string[], body: (c: TaskClient, id: string, stdout: string, stderr: string) => Promise<void>) => {
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    const id = `${name}-${n++}`;
    const bundle = makeBundle(path.join(tmp, NS, id), { args });
    const log = new FifoReader(mkfifo(path.join(bundle, 'log')));
    const stdout = mkfifo(path.join(tmp, `${id}-stdout`));
    const out = new FifoReader(stdout);
    const stderr = mkfifo(path.join(tmp, `${id}-stderr`));
    const err = new FifoReader(stderr);
    const base = ['-namespace', NS, '-address', grpc, '-publish-binary', '/usr/bin/containerd', '-id', id];
    const r = await timed(name, '`start` action', () => runShim([...base, 'start'], { cwd: bundle, env, bin: SHIMS[name] }));
    if (r.code !== 0) throw new Error(`${name} start: ${r.stderr}`);
    const c = await TaskClient.connect(r.stdout.toString(), NS);
    try {
      await timed(name, 'Connect (1st RPC)', () => c.connect(id));
      // RPC_SETTLE_MS: let background work (a standby booting, V8's tasks) finish first.
      if (process.env.RPC_SETTLE_MS) await new Promise((r) => setTimeout(r, Number(process.env.RPC_SETTLE_MS)));
      await timed(name, 'Create', () => c.create({ id, bundle, rootfs, stdout, stderr, options }));
      await body(c, id, stdout, stderr);
      await timed(name, 'Delete', () => c.delete(id));
      await timed(name, 'Shutdown', () => c.shutdown(id).catch(() => undefined));
    } finally {
      c.close();
    }
    await timed(name, '`delete` action', () => runShim([...base, '-bundle', bundle, 'delete'], { cwd: bundle, env, bin: SHIMS[name] }));
    out.close(); err.close(); log.close();
  };

  const order: Name[] = ['reference', 'ours'];
  for (let i = 0; i < ITERS; i++) {
    for (const name of i % 2 ? [...order].reverse() : order) {
      await life(name, ['echo', 'hi'], async (c, id) => {
        await timed(name, 'Start', () => c.start(id));
        await timed(name, 'Wait (echo exits)', () => c.wait(id));
      });
      await life(name, ['sleep', '1000'], async (c, id, stdout, stderr) => {
        await c.start(id);
        const spec = { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify({ args: ['true'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } })) };
        for (let e = 0; e < EXECS; e++) {
          const execId = `e${e}`;
          await timed(name, 'Exec', () => c.exec({ id, execId, stdout, stderr, spec }));
          await timed(name, 'Start exec', () => c.start(id, execId));
          await timed(name, 'Wait exec', () => c.wait(id, execId));
          await timed(name, 'Delete exec', () => c.delete(id, execId));
        }
        await timed(name, 'Kill', () => c.kill(id, 9));
        await c.wait(id);
      });
    }
  }

  await events.close();
  for (const m of mountedUnder(tmp).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.rmSync(`/run/containerd/runc/${NS}`, { recursive: true, force: true });

  const rows = Object.keys(samples.reference).map((step) => {
    const a = summarize(samples.reference[step]);
    const b = summarize(samples.ours[step] ?? []);
    return { step, reference: a, ours: b, ratio: b.median / a.median };
  });
  const f = (x: number) => x.toFixed(2);
  console.log('| step | reference ms | ours ms | ours − ref | ours/ref |\n|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.step} | ${f(r.reference.median)} | ${f(r.ours.median)} | ${f(r.ours.median - r.reference.median)} | ${r.ratio.toFixed(2)}× |`);
  fs.writeFileSync(path.join(REPO_ROOT, 'bench', 'out', 'rpc-timing.json'), JSON.stringify({ iterations: ITERS, execs: EXECS, rows, samples }, null, 1));
}

main().catch((e) => { console.error(e); process.exit(1); });
