// SPDX-License-Identifier: Apache-2.0
// Benchmark results: collection, JSON and Markdown rendering.
import { summarize, fmt, type Summary } from './stats.js';
import type { Sizes } from './sizes.js';

export interface Metric {
  workload: string;
  metric: string;
  unit: string;
  better: 'lower' | 'higher';
  /** How the number is measured (one sentence, goes into the Markdown legend). */
  how: string;
  /** shim name → samples. */
  samples: Record<string, number[]>;
}

export interface Floor {
  what: string;
  unit: string;
  how: string;
  samples: number[];
  /** The metric of `ours` it is compared with: [workload, metric]. */
  compare?: [string, string];
}

/** Facts about the run (written to latest.json as is; the header line of the Markdown). */
interface Meta {
  date: string;
  mode: 'quick' | 'full';
  durationSec: number;
  cpu: string;
  cpus: number;
  memGiB: number;
  kernel: string;
  node: string;
  containerd: string;
  runc: string;
  snapshotter: string;
  cgroups: string;
  sizes: Sizes;
  workloads: string[];
  commit: string;
  /** `git status --porcelain … | wc -l` output ('unknown' if git failed). */
  uncommittedInSrcBinNative: string;
  /** workload → "before → after" 1-minute load average. */
  loadavg1mBeforeAfter: Record<string, string>;
  quiet: { samples: number; waitedMs: number; noisySamples: number; threshold: number };
}

export interface Results {
  meta: Meta;
  shims: Array<{ name: string; path: string; description: string }>;
  metrics: Metric[];
  floors: Floor[];
  failures: Record<string, Record<string, number>>;
  notes: string[];
}

interface RenderedMetric extends Omit<Metric, 'samples'> {
  results: Record<string, Summary & { samples: number[] }>;
  /** shim → median(shim) / median(reference). */
  ratioToReference: Record<string, number>;
  /** variant → median(variant) / median(ours) (variants only). */
  ratioToOurs: Record<string, number>;
}

export function renderJson(r: Results): unknown {
  const metrics: RenderedMetric[] = r.metrics.map((m) => {
    const results: RenderedMetric['results'] = {};
    for (const [shim, s] of Object.entries(m.samples)) results[shim] = { ...summarize(s), samples: round(s) };
    const ref = results.reference?.median;
    const ours = results.ours?.median;
    const ratioToReference: Record<string, number> = {};
    const ratioToOurs: Record<string, number> = {};
    for (const [shim, s] of Object.entries(results)) {
      if (shim !== 'reference' && ref !== undefined) ratioToReference[shim] = s.median / ref;
      if (shim !== 'reference' && shim !== 'ours' && ours !== undefined) ratioToOurs[shim] = s.median / ours;
    }
    const { samples: _drop, ...rest } = m;
    return { ...rest, results, ratioToReference, ratioToOurs };
  });
  const floors = r.floors.map((f) => ({ ...f, samples: round(f.samples), summary: summarize(f.samples) }));
  return { meta: r.meta, shims: r.shims, metrics, floors, failures: r.failures, notes: r.notes };
}

function round(s: number[]): number[] {
  return s.map((x) => Math.round(x * 1000) / 1000);
}

function cell(s: number[] | undefined): string {
  if (!s || s.length === 0) return '–';
  const x = summarize(s);
  if (x.n === 0) return '–';
  if (x.n === 1) return `${fmt(x.median)}`;
  if (x.n < 4) return `${fmt(x.median)} [${fmt(x.min)}–${fmt(x.max)}]`;
  return `${fmt(x.median)} [${fmt(x.p25)}–${fmt(x.p75)}]`;
}

function ratio(a: number[] | undefined, b: number[] | undefined): string {
  if (!a || !b || a.length === 0 || b.length === 0) return '–';
  const r = summarize(a).median / summarize(b).median;
  return Number.isFinite(r) ? `${r.toFixed(2)}×` : '–';
}

export function renderMarkdown(r: Results): string {
  const names = r.shims.map((s) => s.name);
  const others = names.filter((n) => n !== 'reference');
  const variants = names.filter((n) => n !== 'reference' && n !== 'ours');
  const hasRef = names.includes('reference');
  const hasOurs = names.includes('ours');
  const out: string[] = [];
  const m = r.meta;
  out.push(`# Shim benchmark: ${names.join(' vs ')}`, '');
  out.push(`${m.date} · ${m.mode} mode · ${m.cpu} × ${m.cpus} · ${m.memGiB} GiB · kernel ${m.kernel} · node ${m.node} · ` +
    `${m.containerd} · runc ${m.runc} · snapshotter ${m.snapshotter} · ${m.cgroups} · commit ${m.commit}` +
    `${m.uncommittedInSrcBinNative && m.uncommittedInSrcBinNative !== '0' ? ` + ${m.uncommittedInSrcBinNative} uncommitted files in src/bin/native/scripts` : ''}`, '');
  out.push(`Interleaved: every iteration (or round, for memory and churn) runs each shim once, in rotating order. ` +
    `Cells are median [p25–p75] (or [min–max] when n < 4); n per cell is in latest.json. ` +
    `Ratios are median/median${hasRef ? ' against the reference Go shim' : ''}.`, '');
  const head = ['workload', 'metric', 'unit', ...names];
  if (hasRef) head.push(...others.map((n) => `${n}/ref`));
  if (hasOurs) head.push(...variants.map((n) => `${n}/ours`));
  out.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const x of r.metrics) {
    const row = [x.workload, x.metric, `${x.unit} (${x.better === 'lower' ? '↓' : '↑'})`, ...names.map((n) => cell(x.samples[n]))];
    if (hasRef) row.push(...others.map((n) => ratio(x.samples[n], x.samples.reference)));
    if (hasOurs) row.push(...variants.map((n) => ratio(x.samples[n], x.samples.ours)));
    out.push(`| ${row.join(' | ')} |`);
  }
  out.push('', '↓ lower is better, ↑ higher is better.', '');

  if (r.floors.length > 0) {
    out.push('## Node.js floor on this machine', '');
    out.push('| floor | unit | floor median [p25–p75] | ours (same metric) | ours − floor |', '|---|---|---|---|---|');
    for (const f of r.floors) {
      const ours = f.compare ? r.metrics.find((x) => x.workload === f.compare![0] && x.metric === f.compare![1])?.samples.ours : undefined;
      const diff = ours && ours.length && f.samples.length ? fmt(summarize(ours).median - summarize(f.samples).median) : '–';
      out.push(`| ${f.what} | ${f.unit} | ${cell(f.samples)} | ${f.compare ? `${cell(ours)} (${f.compare[1]})` : '–'} | ${diff} |`);
    }
    out.push('');
  }

  out.push('## Failures', '');
  const fail = Object.entries(r.failures).flatMap(([w, per]) => Object.entries(per).filter(([, n]) => n > 0).map(([s, n]) => `${w}/${s}: ${n}`));
  out.push(fail.length ? fail.map((f) => `- ${f}`).join('\n') : 'None.', '');

  out.push('## Shims', '');
  for (const s of r.shims) out.push(`- **${s.name}**: \`${s.path}\` — ${s.description}`);
  out.push('');

  out.push('## How each number is measured', '');
  const seen = new Set<string>();
  for (const x of r.metrics) {
    const key = `${x.workload} / ${x.metric}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(`- **${key}**: ${x.how}`);
  }
  for (const f of r.floors) out.push(`- **floor: ${f.what}**: ${f.how}`);
  out.push('');
  if (r.notes.length) out.push('## Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  out.push(`Sizes: ${JSON.stringify(m.sizes)}`, '');
  const q = m.quiet as { samples: number; waitedMs: number; noisySamples: number; threshold: number } | undefined;
  if (q) out.push(`Quiet-machine gate: before each sample the bench waited until the machine was < ${q.threshold * 100}% busy over 200 ms ` +
    `(${q.samples} samples, ${(q.waitedMs / 1000).toFixed(0)} s waited in total, ${q.noisySamples} taken after giving up).`, '');
  out.push(`Machine load (1-min loadavg before → after each workload; 2 CPUs, so > 2 means other work competed): ${JSON.stringify(m.loadavg1mBeforeAfter)}`, '');
  return out.join('\n');
}
