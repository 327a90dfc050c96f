// SPDX-License-Identifier: Apache-2.0
// A stand-in for pino with just what the shim uses (pino(opts, destination), .child(), the level
// methods, stdTimeFunctions.isoTime), writing the same JSON lines. The `ours-pinolite` variant
// bundles it in place of pino (esbuild alias) to measure what pino itself costs in memory and
// load time. Experimental; not a drop-in for other pino users.

type Dest = { write(s: string): void };
type Obj = Record<string, unknown>;
const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

export interface Logger {
  level: string;
  child(bindings: Obj): Logger;
  trace(o: unknown, msg?: string): void;
  debug(o: unknown, msg?: string): void;
  info(o: unknown, msg?: string): void;
  warn(o: unknown, msg?: string): void;
  error(o: unknown, msg?: string): void;
  fatal(o: unknown, msg?: string): void;
}

function serialize(v: unknown): unknown {
  if (v instanceof Error) return { type: v.name, message: v.message, stack: v.stack };
  return v;
}

function make(level: string, min: number, prefix: string, time: () => string, dest: Dest): Logger {
  const write = (lv: number, o: unknown, msg?: string) => {
    if (lv < min) return;
    let fields = '';
    if (typeof o === 'string') msg = o;
    else if (o && typeof o === 'object') {
      for (const [k, v] of Object.entries(o as Obj)) fields += `,${JSON.stringify(k)}:${JSON.stringify(serialize(v)) ?? 'null'}`;
    }
    dest.write(`{"level":${lv}${time()}${prefix}${fields}${msg !== undefined ? `,"msg":${JSON.stringify(msg)}` : ''}}\n`);
  };
  const l: Logger = {
    level,
    child: (b: Obj) => make(level, min, prefix + Object.entries(b).map(([k, v]) => `,${JSON.stringify(k)}:${JSON.stringify(v)}`).join(''), time, dest),
    trace: (o, m) => write(10, o, m),
    debug: (o, m) => write(20, o, m),
    info: (o, m) => write(30, o, m),
    warn: (o, m) => write(40, o, m),
    error: (o, m) => write(50, o, m),
    fatal: (o, m) => write(60, o, m),
  };
  return l;
}

function pino(opts: { level?: string; base?: Obj; timestamp?: () => string } = {}, dest: Dest = { write: (s) => void process.stdout.write(s) }): Logger {
  const level = opts.level ?? 'info';
  const base = opts.base ? Object.entries(opts.base).map(([k, v]) => `,${JSON.stringify(k)}:${JSON.stringify(v)}`).join('') : '';
  return make(level, LEVELS[level] ?? 30, base, opts.timestamp ?? (() => `,"time":${Date.now()}`), dest);
}

pino.stdTimeFunctions = {
  isoTime: () => `,"time":"${new Date().toISOString()}"`,
  epochTime: () => `,"time":${Date.now()}`,
};

export default pino;
