// SPDX-License-Identifier: Apache-2.0
// Summary statistics for benchmark samples.

export interface Summary {
  n: number;
  median: number;
  p25: number;
  p75: number;
  min: number;
  max: number;
  mean: number;
}

/** Linear-interpolation quantile (q in [0, 1]) of an ascending array. */
function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function summarize(samples: number[]): Summary {
  const s = samples.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const n = s.length;
  return {
    n,
    median: quantile(s, 0.5),
    p25: quantile(s, 0.25),
    p75: quantile(s, 0.75),
    min: n ? s[0] : NaN,
    max: n ? s[n - 1] : NaN,
    mean: n ? s.reduce((a, b) => a + b, 0) / n : NaN,
  };
}

/** Rounds for display: 3 significant digits, at most 2 decimals below 10. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}
