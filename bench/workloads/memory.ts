// SPDX-License-Identifier: Apache-2.0
// Memory per shim: USS (Private_Clean + Private_Dirty) and PSS from /proc/<pid>/smaps_rollup of each
// shim daemon with K idle containers (`sleep 100000`), one shim per container, and K containers
// grouped into one shim (io.containerd.runc.v2.group annotation, as CRI does for a pod), and P
// CRI-style pods of C containers each (one group, so one shim daemon, per pod).
// Also the Node floor: K idle `node -e 'setInterval(()=>{},1e9)'`, and K idle nodes that have
// imported the daemon's modules (dist/src/shim/serve.js and everything it imports).
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../../test/support/shims.js';
import { ourServeModule } from '../lib/shims.js';
import { addMetric, countFailure, ctrTimed, log, newId, order, perShim, removeContainers, waitQuiet, type Ctx } from '../lib/ctx.js';
import { findShimDaemons, memInfo, pool, sleep, waitGone, type MemInfo } from '../lib/proc.js';

const MiB = (kib: number) => kib / 1024;

async function startIdle(ctx: Ctx, shimPath: string, ids: string[], extra: string[]): Promise<number> {
  let failed = 0;
  // Two at a time: quick, and the shims' boot does not dominate the machine.
  await pool(ids, 2, async (id) => {
    ctx.c.track(ctx.ns, id);
    const r = await ctrTimed(ctx, ['run', '-d', '--null-io', ...extra, '--runtime', shimPath, ctx.image, id, 'sleep', '100000']);
    if (r.code !== 0) {
      failed++;
      log(`memory: ctr run -d ${id}: exit ${r.code}: ${r.stderr.slice(0, 300)}`);
    }
  });
  return failed;
}

async function settle(ctx: Ctx): Promise<void> {
  await sleep(ctx.quick ? 1000 : 3000);
}

/** K idle node processes with the given args; their memory after settling; then killed. */
async function nodeFloor(ctx: Ctx, args: string[], k: number): Promise<MemInfo[]> {
  const children = Array.from({ length: k }, () => spawn(process.execPath, args, { stdio: 'ignore' }));
  try {
    await settle(ctx);
    await sleep(500);
    return children.map((c) => (c.pid ? memInfo(c.pid) : undefined)).filter((m): m is MemInfo => m !== undefined);
  } finally {
    for (const c of children) if (c.pid) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
    for (const c of children) if (c.pid) await waitGone(c.pid, 5000);
  }
}

export async function memory(ctx: Ctx): Promise<void> {
  const k = ctx.sizes.memoryContainers;
  const uss = perShim(ctx);
  const pss = perShim(ctx);
  const rss = perShim(ctx);
  const threads = perShim(ctx);
  const sUss = perShim(ctx);
  const sPss = perShim(ctx);
  const gUss = perShim(ctx);
  const gPss = perShim(ctx);
  const pUss = perShim(ctx);
  const pPss = perShim(ctx);
  const floorIdle = { uss: [] as number[], pss: [] as number[] };
  const floorMods = { uss: [] as number[], pss: [] as number[] };
  const serveModule = ourServeModule();
  const serveUrl = pathToFileURL(serveModule).href;
  const serveRel = serveModule.slice(REPO_ROOT.length + 1);

  for (let round = 0; round < ctx.sizes.memoryRounds; round++) {
    for (const shim of order(ctx.shims, round)) {
      // One shim per container.
      await waitQuiet(ctx);
      const ids = Array.from({ length: k }, () => newId(shim.name, 'mem'));
      try {
        const failed = await startIdle(ctx, shim.path, ids, []);
        if (failed) countFailure(ctx, 'memory', shim.name, failed);
        await settle(ctx);
        // By pid: a shared daemon (ours-shared) serves several of the ids under one of their names.
        const daemons = new Map([...findShimDaemons(ctx.c.address, new Set(ids)).values()].map((d) => [d.pid, d]));
        if (daemons.size !== k - failed && !shim.only) log(`memory ${shim.name}: found ${daemons.size} shim daemons for ${k - failed} containers`);
        const mems: MemInfo[] = [];
        for (const p of daemons.values()) {
          const m = memInfo(p.pid);
          if (!m) continue;
          mems.push(m);
          uss[shim.name].push(MiB(m.uss));
          pss[shim.name].push(MiB(m.pss));
          rss[shim.name].push(MiB(m.rss));
          threads[shim.name].push(m.threads);
        }
        if (mems.length > 0 && k - failed > 0) {
          sUss[shim.name].push(MiB(mems.reduce((a, m) => a + m.uss, 0)) / (k - failed));
          sPss[shim.name].push(MiB(mems.reduce((a, m) => a + m.pss, 0)) / (k - failed));
        }
      } finally {
        await removeContainers(ctx, ids);
      }
      // All K containers in one shim (one group).
      const gids = Array.from({ length: k }, () => newId(shim.name, 'memg'));
      try {
        const group = `grp-${gids[0]}`;
        const failed = await startIdle(ctx, shim.path, gids, ['--annotation', `io.containerd.runc.v2.group=${group}`]);
        if (failed) countFailure(ctx, 'memory-grouped', shim.name, failed);
        await settle(ctx);
        // The group's daemon carries the -id of whichever container started it.
        const daemons = [...findShimDaemons(ctx.c.address, new Set(gids)).values()];
        if (daemons.length !== 1 && !shim.only) log(`memory grouped ${shim.name}: found ${daemons.length} daemons (want 1)`);
        for (const p of daemons) {
          const m = memInfo(p.pid);
          if (!m) continue;
          gUss[shim.name].push(MiB(m.uss) / (k - failed));
          gPss[shim.name].push(MiB(m.pss) / (k - failed));
        }
      } finally {
        await removeContainers(ctx, gids);
      }
      // P pods of C containers, one group (one shim daemon) per pod.
      await waitQuiet(ctx);
      const pods = Array.from({ length: ctx.sizes.memoryPods }, (_, p) => ({
        group: `pod-${p}-${newId(shim.name, 'pod')}`,
        ids: Array.from({ length: ctx.sizes.memoryPodContainers }, () => newId(shim.name, 'memp')),
      }));
      const pids = pods.flatMap((p) => p.ids);
      try {
        let failed = 0;
        // A pod's containers one after the other (its first one starts the daemon), two pods at a time.
        await pool(pods, 2, async (p) => {
          for (const id of p.ids) failed += await startIdle(ctx, shim.path, [id], ['--annotation', `io.containerd.runc.v2.group=${p.group}`]);
        });
        if (failed) countFailure(ctx, 'memory-pods', shim.name, failed);
        await settle(ctx);
        const daemons = new Map([...findShimDaemons(ctx.c.address, new Set(pids)).values()].map((d) => [d.pid, d]));
        if (daemons.size !== pods.length && !shim.only) log(`memory pods ${shim.name}: found ${daemons.size} daemons (want ${pods.length})`);
        const mems = [...daemons.keys()].map((pid) => memInfo(pid)).filter((m): m is MemInfo => m !== undefined);
        const running = pids.length - failed;
        if (mems.length > 0 && running > 0) {
          pUss[shim.name].push(MiB(mems.reduce((a, m) => a + m.uss, 0)) / running);
          pPss[shim.name].push(MiB(mems.reduce((a, m) => a + m.pss, 0)) / running);
        }
      } finally {
        await removeContainers(ctx, pids);
      }
    }
    // The floor, same K, same settling.
    for (const m of await nodeFloor(ctx, ['-e', 'setInterval(()=>{},1e9)'], k)) {
      floorIdle.uss.push(MiB(m.uss));
      floorIdle.pss.push(MiB(m.pss));
    }
    for (const m of await nodeFloor(ctx, ['--no-warnings', '--input-type=module', '-e',
      `await import(${JSON.stringify(serveUrl)}); setInterval(()=>{},1e9)`], k)) {
      floorMods.uss.push(MiB(m.uss));
      floorMods.pss.push(MiB(m.pss));
    }
  }
  const how = `${k} containers \`ctr run -d --null-io busybox sleep 100000\` per shim, settled ${ctx.quick ? 1 : 3} s; each shim daemon found in /proc by argv (-address <ours> -id <id>, no start/delete), read from /proc/<pid>/smaps_rollup`;
  addMetric(ctx, { workload: 'memory', metric: `USS per shim daemon (${k} idle)`, unit: 'MiB', better: 'lower', how: `${how}; USS = Private_Clean + Private_Dirty. One sample per daemon.` }, uss);
  addMetric(ctx, { workload: 'memory', metric: `PSS per shim daemon (${k} idle)`, unit: 'MiB', better: 'lower', how: `${how}; PSS (shared pages, e.g. the executable's text, divided among the processes mapping them).` }, pss);
  addMetric(ctx, {
    workload: 'memory', metric: `standalone: USS per container (${k}, no group)`, unit: 'MiB', better: 'lower',
    how: `the same ${k} containers; the sum of the USS of every daemon serving them / the containers running (one sample per round): one daemon per container, or for ours-shared a daemon per up to 8 containers.`,
  }, sUss);
  addMetric(ctx, {
    workload: 'memory', metric: `standalone: PSS per container (${k}, no group)`, unit: 'MiB', better: 'lower',
    how: `same; the sum of the daemons' PSS / the containers running.`,
  }, sPss);
  addMetric(ctx, { workload: 'memory', metric: `RSS per shim daemon (${k} idle)`, unit: 'MiB', better: 'lower', how: `${how}; RSS.` }, rss);
  addMetric(ctx, { workload: 'memory', metric: 'threads per shim daemon', unit: 'threads', better: 'lower', how: `${how}; Threads from /proc/<pid>/status.` }, threads);
  addMetric(ctx, {
    workload: 'memory', metric: `grouped: USS per container (${k} in 1 shim)`, unit: 'MiB', better: 'lower',
    how: `${k} containers started with \`--annotation io.containerd.runc.v2.group=<g>\` so one shim daemon serves them all (as CRI does per pod); that daemon's USS / ${k}.`,
  }, gUss);
  addMetric(ctx, {
    workload: 'memory', metric: `grouped: PSS per container (${k} in 1 shim)`, unit: 'MiB', better: 'lower',
    how: `same; the daemon's PSS / ${k}.`,
  }, gPss);
  const pods = `${ctx.sizes.memoryPods} pods × ${ctx.sizes.memoryPodContainers}`;
  const podsN = ctx.sizes.memoryPods * ctx.sizes.memoryPodContainers;
  addMetric(ctx, {
    workload: 'memory', metric: `pods: USS per container (${pods}, 1 shim per pod)`, unit: 'MiB', better: 'lower',
    how: `CRI's shape: ${ctx.sizes.memoryPods} pods of ${ctx.sizes.memoryPodContainers} idle containers (\`ctr run -d --null-io --annotation io.containerd.runc.v2.group=<pod> … sleep 100000\`, a pod's containers one after the other, two pods at a time), so one shim daemon per pod; settled as above; the sum of the pod daemons' USS / ${podsN} containers (one sample per round).`,
  }, pUss);
  addMetric(ctx, {
    workload: 'memory', metric: `pods: PSS per container (${pods}, 1 shim per pod)`, unit: 'MiB', better: 'lower',
    how: `same; the sum of the pod daemons' PSS / ${podsN}.`,
  }, pPss);
  const floorHow = `${k} copies at once (so shared pages split as for the shims), settled as above, smaps_rollup of each`;
  ctx.floors.push(
    { what: "idle node: USS of `node -e 'setInterval(()=>{},1e9)'`", unit: 'MiB', how: floorHow, samples: floorIdle.uss, compare: ['memory', `USS per shim daemon (${k} idle)`] },
    { what: 'idle node: PSS', unit: 'MiB', how: floorHow, samples: floorIdle.pss, compare: ['memory', `PSS per shim daemon (${k} idle)`] },
    { what: `idle node + daemon modules imported (${serveRel}): USS`, unit: 'MiB', how: `${floorHow}; \`node --no-warnings --input-type=module -e "await import('${serveRel}'); setInterval(…)"\` (the daemon code ours runs, evaluated; serve() not called, addon not loaded)`, samples: floorMods.uss, compare: ['memory', `USS per shim daemon (${k} idle)`] },
    { what: 'idle node + daemon modules imported: PSS', unit: 'MiB', how: floorHow, samples: floorMods.pss, compare: ['memory', `PSS per shim daemon (${k} idle)`] },
  );
}
