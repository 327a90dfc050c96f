// SPDX-License-Identifier: Apache-2.0
// Where our time goes on the critical path: the `start` action (node boot, module loading,
// spawning the daemon), the daemon's boot until it serves, and the `delete` action.
// Needs no containerd: the bench plays it (workloads/startup.ts). Writes bench/results/profile.{md,json}.
//
//   node dist/bench/experiments/profile.js          (PROFILE_ITERS=n, default 15; build.js first for variants)
//
// Three views:
//  1. differential timings of small programs (node -e 0, importing each mode's module graph, runc);
//  2. a timeline of each process from timing-preload.ts marks (node boot, user land, spawn, listen);
//  3. V8 CPU profiles (--cpu-prof) of start/daemon/delete, self time by category.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { fullPath } from '../../test/support/containerd.js';
import { REPO_ROOT } from '../../test/support/shims.js';
import { log, order } from '../lib/ctx.js';
import { timedRun } from '../lib/proc.js';
import { EXPERIMENTS_OUT, ourServeModule } from '../lib/shims.js';
import { fmt, summarize } from '../lib/stats.js';
import { startupCycle, type StartupSample } from '../workloads/startup.js';
import { programPath } from './build.js';
import type { Program } from './variants.js';

const ITERS = Number(process.env.PROFILE_ITERS || 15);
const PROF_ITERS = Number(process.env.PROFILE_CPU_ITERS || 5);
const DIST = join(REPO_ROOT, 'dist', 'src', 'shim');
const PRELOAD = pathToFileURL(join(REPO_ROOT, 'dist', 'bench', 'experiments', 'timing-preload.js')).href;
const OUT = join(EXPERIMENTS_OUT, 'profile');

type Table = Array<{ what: string; samples: number[]; note?: string }>;
interface Graph { entry: string; files: number; kib: number; ours: number; gen: number; deps: number }
interface RoleProfile { totalMs: number; cats: Array<[string, number]>; fns: Array<[string, number]> }
/** profile.json: the run's facts, then each part as it is measured. */
interface Profile {
  date: string;
  node: string;
  commit: string;
  iters: number;
  cpuProfIters: number;
  graphs?: Graph[];
  differential?: Table;
  timeline?: Record<string, Table>;
  cpu?: Record<string, Record<string, RoleProfile>>;
}
const med = (s: number[]) => summarize(s).median;
const cell = (s: number[]) => {
  const x = summarize(s);
  return x.n >= 4 ? `${fmt(x.median)} [${fmt(x.p25)}–${fmt(x.p75)}]` : fmt(x.median);
};

function wrapper(name: string, program: Program, flags: string[]): string {
  const bin = join(OUT, 'bin', name);
  mkdirSync(join(OUT, 'bin'), { recursive: true });
  writeFileSync(bin, `#!/bin/sh\nexport SHIM_ARGV0="$0"\nexec node --no-warnings ${flags.join(' ')} ${programPath(program)} "$@"\n`);
  chmodSync(bin, 0o755);
  return bin;
}

// ---------------------------------------------------------------------------------------------
// 1. Differential timings

async function differential(): Promise<Table> {
  const imp = (f: string) => ['--no-warnings', '--input-type=module', '-e', `await import(${JSON.stringify(pathToFileURL(join(DIST, f)).href)})`];
  // Bare specifiers in an -e module resolve from the cwd (the repository, see below).
  const impPkg = (pkg: string) => ['--no-warnings', '--input-type=module', '-e', `await import(${JSON.stringify(pkg)})`];
  const addon = join(REPO_ROOT, 'native', 'build', 'Release', 'shim_native.node');
  const runcRoot = mkdtempSync('/tmp/bench-runc-');
  const progs: Array<{ what: string; cmd: string; args: string[]; note?: string }> = [
    { what: '`node -e 0`', cmd: process.execPath, args: ['-e', '0'] },
    { what: '`node --input-type=module -e 0`', cmd: process.execPath, args: ['--input-type=module', '-e', '0'], note: 'ESM entry' },
    { what: '`node -e "require(shim_native.node)"`', cmd: process.execPath, args: ['-e', `require(${JSON.stringify(addon)})`], note: 'dlopen of the addon' },
    { what: '`bin/containerd-shim-runc-v2 -v`', cmd: join(REPO_ROOT, 'bin', 'containerd-shim-runc-v2'), args: ['-v'], note: 'sh wrapper + main.js + flags.js + version.js' },
    { what: '`node --no-warnings dist/…/main.js -v`', cmd: process.execPath, args: ['--no-warnings', join(DIST, 'main.js'), '-v'], note: 'same without the /bin/sh wrapper' },
    { what: 'import start.js graph', cmd: process.execPath, args: imp('start.js'), note: 'what `start` loads' },
    { what: 'import delete.js graph', cmd: process.execPath, args: imp('delete.js'), note: 'what `delete` loads' },
    { what: 'import serve.js graph', cmd: process.execPath, args: imp('serve.js'), note: 'what the daemon loads (tsc output)' },
    { what: 'import serve chunk of dist/shim', cmd: process.execPath, args: ['--no-warnings', '--input-type=module', '-e', `await import(${JSON.stringify(pathToFileURL(ourServeModule()).href)})`], note: 'what the daemon loads (project bundle)' },
    { what: 'import @bufbuild/protobuf/wire', cmd: process.execPath, args: impPkg('@bufbuild/protobuf/wire'), note: 'protobuf runtime (start, delete, daemon)' },
    { what: 'import pino', cmd: process.execPath, args: impPkg('pino'), note: 'logger (daemon only)' },
    { what: '`runc delete --force <missing>`', cmd: 'runc', args: ['--root', runcRoot, '--log', join(runcRoot, 'log.json'), '--log-format', 'json', 'delete', '--force', 'nope'], note: 'runc\'s share of `delete`' },
    { what: '`containerd-shim-runc-v2 -v` (Go)', cmd: '/usr/bin/containerd-shim-runc-v2', args: ['-v'], note: 'Go binary start-up' },
  ];
  for (const p of ['split', 'bundle', 'bundle-min', 'snapshot'] as Program[]) {
    const flags = p === 'snapshot' ? ['--snapshot-blob', join(EXPERIMENTS_OUT, 'snapshot', 'ours-snapshot.blob')] : [];
    if (existsSync(programPath(p))) progs.push({ what: `variant ${p}: \`-v\``, cmd: process.execPath, args: [...flags, '--no-warnings', programPath(p), '-v'] });
  }
  const res: Table = progs.map((p) => ({ what: p.what, samples: [] as number[], note: p.note }));
  const env = { ...process.env, PATH: fullPath() };
  try {
    for (let i = 0; i < ITERS + 1; i++) {
      for (const k of order(progs.map((_, j) => j), i)) {
        const r = await timedRun(progs[k].cmd, progs[k].args, { env, cwd: REPO_ROOT });
        if (progs[k].cmd !== 'runc' && r.code !== 0) throw new Error(`${progs[k].what}: exit ${r.code}: ${r.stderr}`);
        if (i > 0) res[k].samples.push(r.wallMs);
      }
    }
  } finally {
    rmSync(runcRoot, { recursive: true, force: true });
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// 2. Timeline from the preload's marks

interface Timing {
  pid: number;
  timeOrigin: number;
  nodeTiming: { nodeStart: number; v8Start: number; environment: number; bootstrapComplete: number };
  preloadAt: number;
  marks: Record<string, number>;
  exitAt: number;
}

async function timeline(name: string, program: Program, address: string, ttrpc: string, work: string): Promise<Table> {
  const dir = join(work, `timing-${name}`);
  mkdirSync(dir, { recursive: true });
  const bin = wrapper(`timing-${name}`, program, [`--import=${PRELOAD}`]);
  const rows: Record<string, number[]> = {};
  const add = (k: string, v: number) => { (rows[k] ??= []).push(v); };
  for (let i = 0; i < ITERS + 1; i++) {
    const s = await startupCycle({ name, path: bin }, address, ttrpc, join(work, 'bundles'), { BENCH_TIMING_DIR: dir });
    const read = (pid: number) => JSON.parse(readFileSync(join(dir, `${pid}.json`), 'utf8')) as Timing;
    let st: Timing, d: Timing, del: Timing;
    try {
      st = read(s.startPid); d = read(s.daemonPid); del = read(s.deletePid);
    } catch (e) {
      log(`timeline ${name}: ${(e as Error).message}`);
      continue;
    }
    if (i === 0) continue;
    const abs = (t: Timing, x: number) => t.timeOrigin + x;
    add('start: spawn → process time origin (fork/exec of sh → node, ld.so)', st.timeOrigin - s.t0Epoch);
    add('start: node bootstrap (time origin → bootstrapComplete)', st.nodeTiming.bootstrapComplete);
    add('start: bootstrapComplete → preload runs (ESM loader up)', st.preloadAt - st.nodeTiming.bootstrapComplete);
    add('start: preload → spawn() of the daemon (load main+start graph, config.json, socket, address file)', st.marks.spawn - st.preloadAt);
    add('start: spawn() call', st.marks.spawnDone - st.marks.spawn);
    add('start: spawn() returned → exit (stdin, oom_score_adj, stdout)', st.exitAt - st.marks.spawnDone);
    add('start: exit → parent sees exit + EOF', s.t0Epoch + s.startMs - abs(st, st.exitAt));
    add('start: total (spawn → exit seen)', s.startMs);
    add('daemon: start\'s spawn() → daemon time origin (fork/exec)', d.timeOrigin - abs(st, st.marks.spawn));
    add('daemon: node bootstrap', d.nodeTiming.bootstrapComplete);
    add('daemon: bootstrapComplete → preload', d.preloadAt - d.nodeTiming.bootstrapComplete);
    add('daemon: preload → listen(fd 3) (load serve graph, logger, reaper, service, ttrpc server)', d.marks.listen - d.preloadAt);
    add('daemon: listen → 1st RPC answered at the client', s.readyEpoch - abs(d, d.marks.listen));
    add('daemon: ready after `start` exit seen (critical path)', s.readyMs - s.startMs);
    add('start → 1st RPC answered (total)', s.readyMs);
    add('delete: spawn → time origin', del.timeOrigin - (s.deleteEndEpoch - s.deleteMs));
    add('delete: node bootstrap', del.nodeTiming.bootstrapComplete);
    add('delete: bootstrapComplete → preload', del.preloadAt - del.nodeTiming.bootstrapComplete);
    add('delete: preload → runc spawnSync (load main+delete graph, options)', del.marks.spawnSync - del.preloadAt);
    add('delete: runc delete --force (spawnSync)', del.marks.spawnSyncDone - del.marks.spawnSync);
    add('delete: after runc → exit (unmount, init.pid, DeleteResponse)', del.exitAt - del.marks.spawnSyncDone);
    add('delete: exit → parent sees exit + EOF', s.deleteEndEpoch - abs(del, del.exitAt));
    add('delete: total', s.deleteMs);
  }
  return Object.entries(rows).map(([what, samples]) => ({ what, samples }));
}

// ---------------------------------------------------------------------------------------------
// 3. CPU profiles

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

function category(url: string, fn: string): string {
  if (url === '') {
    if (fn === '(garbage collector)') return 'GC';
    if (fn === '(idle)') return 'idle';
    if (fn === '(program)') return 'V8/native (program: parse, compile, C++)';
    if (fn === '(root)') return 'other';
    return 'node: C++ bindings (fs/process syscalls, spawn, exit)';
  }
  if (url.startsWith('node:internal/modules') || url.startsWith('node:internal/process/esm_loader')) return 'node: module loader (ESM/CJS)';
  if (url.startsWith('node:')) return 'node: other internals';
  if (url.includes('/src/gen/')) return 'ours: generated protobuf code (src/gen)';
  if (url.includes('/node_modules/pino') || url.includes('/node_modules/sonic-boom') || url.includes('/node_modules/thread-stream') ||
    url.includes('/node_modules/@pinojs') || url.includes('/node_modules/quick-format') || url.includes('/node_modules/safe-stable') ||
    url.includes('/node_modules/on-exit') || url.includes('/node_modules/atomic-sleep') || url.includes('/node_modules/process-warning') ||
    url.includes('/node_modules/real-require') || url.includes('/node_modules/pino-std')) return 'deps: pino and its deps';
  if (url.includes('/node_modules/@bufbuild')) return 'deps: @bufbuild/protobuf';
  if (url.includes('/node_modules/')) return 'deps: other';
  if (url.includes('/dist/src/')) return 'ours: shim code (dist/src, non-generated)';
  if (url.includes('/experiments/out/') || url.includes('/dist/shim/')) return 'bundle (ours + deps in one file/chunks)';
  return url;
}

function analyze(p: CpuProfile): { totalMs: number; byCat: Record<string, number>; byFn: Record<string, number> } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const byCat: Record<string, number> = {};
  const byFn: Record<string, number> = {};
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i])!;
    // timeDeltas[i] is the time since the previous sample: attribute the interval to this sample.
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    const cat = category(n.callFrame.url, n.callFrame.functionName);
    byCat[cat] = (byCat[cat] ?? 0) + dt;
    const short = n.callFrame.url.replace(/^.*\/(dist|node_modules|out)\//, '$1/');
    const fk = `${n.callFrame.functionName || '(anonymous)'} ${short}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ''}`;
    byFn[fk] = (byFn[fk] ?? 0) + dt;
  }
  return { totalMs: (p.endTime - p.startTime) / 1000, byCat, byFn };
}

async function cpuProfiles(name: string, program: Program, address: string, ttrpc: string, work: string) {
  const dir = join(work, `cpuprof-${name}`);
  mkdirSync(dir, { recursive: true });
  const bin = wrapper(`cpuprof-${name}`, program, ['--cpu-prof', '--cpu-prof-interval=100', `--cpu-prof-dir=${dir}`]);
  const roles: Record<string, Array<ReturnType<typeof analyze>>> = { start: [], daemon: [], delete: [] };
  for (let i = 0; i < PROF_ITERS; i++) {
    const s: StartupSample = await startupCycle({ name, path: bin }, address, ttrpc, join(work, 'bundles'));
    await new Promise((r) => setTimeout(r, 200));
    const files = readdirSync(dir);
    for (const [role, pid] of [['start', s.startPid], ['daemon', s.daemonPid], ['delete', s.deletePid]] as const) {
      const f = files.find((x) => x.split('.')[3] === String(pid));
      if (!f) { log(`cpuprof ${name}: no profile for ${role} pid ${pid}`); continue; }
      roles[role].push(analyze(JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile));
    }
  }
  const out: Record<string, RoleProfile> = {};
  for (const [role, list] of Object.entries(roles)) {
    const cats = [...new Set(list.flatMap((a) => Object.keys(a.byCat)))];
    const fns = new Map<string, number>();
    for (const a of list) for (const [k, v] of Object.entries(a.byFn)) fns.set(k, (fns.get(k) ?? 0) + v / list.length);
    out[role] = {
      totalMs: med(list.map((a) => a.totalMs)),
      cats: cats.map((c) => [c, med(list.map((a) => a.byCat[c] ?? 0))] as [string, number]).sort((a, b) => b[1] - a[1]),
      fns: [...fns.entries()].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, 12),
    };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Module graph sizes (esbuild metafile)

async function graphs(): Promise<Graph[]> {
  const res: Graph[] = [];
  for (const f of ['main.js', 'start.js', 'delete.js', 'serve.js']) {
    const r = await build({ entryPoints: [join(DIST, f)], bundle: true, platform: 'node', format: 'esm', write: false, metafile: true, logLevel: 'silent', outdir: '/tmp/unused' });
    const inputs = Object.entries(r.metafile.inputs);
    // Dynamic imports in main.js are followed by esbuild too: count the static graph only for main.js.
    const kib = inputs.reduce((a, [, v]) => a + v.bytes, 0) / 1024;
    res.push({
      entry: f, files: inputs.length, kib,
      ours: inputs.filter(([k]) => k.includes('dist/src/') && !k.includes('/gen/')).length,
      gen: inputs.filter(([k]) => k.includes('/gen/')).length,
      deps: inputs.filter(([k]) => k.includes('node_modules')).length,
    });
  }
  return res;
}

async function main(): Promise<void> {
  if (!existsSync(programPath('bundle'))) execFileSync(process.execPath, [join(REPO_ROOT, 'dist', 'bench', 'experiments', 'build.js')], { stdio: 'inherit' });
  const work = mkdtempSync('/tmp/bench-prof-');
  // No containerd needed: the address only names the socket, and nothing is published without a container.
  const address = join(work, 'containerd.sock');
  const ttrpc = join(work, 'containerd.sock.ttrpc');
  const commit = execFileSync('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  const result: Profile = { date: new Date().toISOString(), node: process.version, commit, iters: ITERS, cpuProfIters: PROF_ITERS };
  try {
    log('module graphs');
    result.graphs = await graphs();
    log('differential timings');
    result.differential = await differential();
    const tl: Record<string, Table> = {};
    const cpu: Record<string, Awaited<ReturnType<typeof cpuProfiles>>> = {};
    for (const [name, program] of [['ours', 'split'], ['ours-unbundled', 'dist']] as Array<[string, Program]>) {
      log(`timeline ${name}`);
      tl[name] = await timeline(name, program, address, ttrpc, work);
      log(`cpu profiles ${name}`);
      cpu[name] = await cpuProfiles(name, program, address, ttrpc, work);
    }
    result.timeline = tl;
    result.cpu = cpu;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const dir = process.env.BENCH_OUT_DIR || join(REPO_ROOT, 'bench', 'out');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'profile.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(dir, 'profile.md'), render(result));
  log(`wrote ${join(dir, 'profile.md')}`);
}

function render(r: Profile): string {
  const out: string[] = [`# Critical-path profile of our shim (${r.date}, node ${r.node}, commit ${r.commit}, ${r.iters} iterations, ${r.cpuProfIters} CPU profiles)`, '',
    '`ours` = the project bundle dist/shim/main.js (what bin/ runs); `ours-unbundled` = the tsc output dist/src/shim/main.js.', ''];
  out.push('## Module graphs (esbuild metafile of each entry)', '', '| entry | files | KiB of JS | ours | generated | node_modules |', '|---|---|---|---|---|---|');
  for (const g of r.graphs ?? []) {
    out.push(`| ${g.entry} | ${g.files} | ${g.kib.toFixed(0)} | ${g.ours} | ${g.gen} | ${g.deps} |`);
  }
  out.push('', '(main.js counts everything its dynamic imports reach, i.e. all three modes.)', '');
  out.push('## Differential timings (wall ms, median [p25–p75])', '', '| program | ms | note |', '|---|---|---|');
  for (const x of r.differential ?? []) out.push(`| ${x.what} | ${cell(x.samples)} | ${x.note ?? ''} |`);
  out.push('');
  for (const [name, rows] of Object.entries(r.timeline ?? {})) {
    out.push(`## Timeline: ${name} (marks from timing-preload.ts; ms, median [p25–p75])`, '', '| step | ms |', '|---|---|');
    for (const x of rows) out.push(`| ${x.what} | ${cell(x.samples)} |`);
    out.push('');
  }
  for (const [name, roles] of Object.entries(r.cpu ?? {})) {
    out.push(`## CPU profile: ${name} (--cpu-prof, 100 µs sampling; self time, median over runs, ms)`, '');
    for (const [role, a] of Object.entries(roles)) {
      out.push(`### ${role} (profile span ${fmt(a.totalMs)} ms)`, '', '| category | ms |', '|---|---|');
      for (const [c, v] of a.cats) out.push(`| ${c} | ${fmt(v)} |`);
      out.push('', '<details><summary>top functions (self ms, mean)</summary>', '', '| function | ms |', '|---|---|');
      for (const [f, v] of a.fns) out.push(`| \`${f.replace(/\|/g, '\\|')}\` | ${fmt(v)} |`);
      out.push('', '</details>', '');
    }
  }
  return out.join('\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`profile: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
