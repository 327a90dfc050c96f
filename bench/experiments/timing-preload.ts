// SPDX-License-Identifier: Apache-2.0
// Preloaded with `node --import <this file>` by profile.ts: records where a shim process spends
// its time and writes it to $BENCH_TIMING_DIR/<pid>.json at exit. The flag is in process.execArgv,
// so `start` passes it on to the daemon it spawns.
//   timeOrigin                       epoch ms when the process (Node's clock) started
//   nodeTiming.*                     Node's own boot milestones (ms since timeOrigin)
//   preloadAt                        this file runs (user land begins; ESM loader is up)
//   marks.spawn / spawnDone          `start` calls child_process.spawn for the daemon / it returned
//   marks.spawnSync / spawnSyncDone  `delete` runs runc
//   marks.listen                     the daemon calls net.Server#listen (fd 3): serve() is ready
//   exitAt                           process 'exit'
import childProcess from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';
import { performance } from 'node:perf_hooks';

const dir = process.env.BENCH_TIMING_DIR;
const preloadAt = performance.now();
const marks: Record<string, number> = {};
const mark = (k: string) => { marks[k] ??= performance.now(); };

if (dir) {
  const spawn = childProcess.spawn;
  (childProcess as { spawn: unknown }).spawn = function (this: unknown, ...args: unknown[]) {
    mark('spawn');
    const r = (spawn as (...a: unknown[]) => unknown).apply(this, args);
    mark('spawnDone');
    return r;
  };
  const spawnSync = childProcess.spawnSync;
  (childProcess as { spawnSync: unknown }).spawnSync = function (this: unknown, ...args: unknown[]) {
    mark('spawnSync');
    const r = (spawnSync as (...a: unknown[]) => unknown).apply(this, args);
    mark('spawnSyncDone');
    return r;
  };
  syncBuiltinESMExports();
  // eslint-disable-next-line @typescript-eslint/unbound-method -- the original, kept to be re-applied with the server's `this` below
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
    mark('listen');
    return (listen as (...a: unknown[]) => net.Server).apply(this, args);
  } as typeof listen;
  process.on('exit', () => {
    const t = performance.nodeTiming;
    writeFileSync(`${dir}/${process.pid}.json`, JSON.stringify({
      pid: process.pid,
      argv: process.argv.slice(2),
      timeOrigin: performance.timeOrigin,
      nodeTiming: { nodeStart: t.nodeStart, v8Start: t.v8Start, environment: t.environment, bootstrapComplete: t.bootstrapComplete },
      preloadAt,
      marks,
      exitAt: performance.now(),
    }));
  });
}
