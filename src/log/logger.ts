// SPDX-License-Identifier: Apache-2.0
// The daemon's log lines, in the format containerd's log pipelines expect of a shim: logrus text
// as the Go shim writes it (containerd's log package: TextFormatter, RFC3339 time with
// nanoseconds, FullTimestamp), e.g.
//   time="2026-12-06T03:38:11.514599793Z" level=info msg="starting signal loop" namespace=ns1 runtime=io.containerd.runc.v2
// fields after msg sorted by key, a value quoted (Go %q) when it holds anything but
// [A-Za-z0-9-._/@^+]. SHIM_LOG_FORMAT=json gives logrus's JSON lines instead.
export type Fields = Record<string, unknown>;
export type Format = 'text' | 'json';

export interface Logger {
  debug(msg: string): void;
  debug(fields: Fields, msg: string): void;
  info(msg: string): void;
  info(fields: Fields, msg: string): void;
  warn(msg: string): void;
  warn(fields: Fields, msg: string): void;
  error(msg: string): void;
  error(fields: Fields, msg: string): void;
  fatal(msg: string): void;
  fatal(fields: Fields, msg: string): void;
  /** A logger that adds `fields` to every line. */
  child(fields: Fields): Logger;
}

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, fatal: 50 } as const;
type Level = keyof typeof LEVELS;
/** logrus's names. */
const NAMES: Record<Level, string> = { debug: 'debug', info: 'info', warn: 'warning', error: 'error', fatal: 'fatal' };

export interface LoggerOptions {
  debug: boolean;
  format?: Format;
  fields?: Fields;
}

/** A logger writing one line per call to `write`. */
export function lineLogger(write: (line: string) => void, o: LoggerOptions): Logger {
  return new LineLogger(write, o.debug ? LEVELS.debug : LEVELS.info, o.format ?? 'text', o.fields ?? {});
}

class LineLogger implements Logger {
  constructor(
    private readonly write: (line: string) => void,
    private readonly min: number,
    private readonly format: Format,
    private readonly fields: Fields,
  ) {}

  debug(a: Fields | string, b?: string): void { this.log('debug', a, b); }
  info(a: Fields | string, b?: string): void { this.log('info', a, b); }
  warn(a: Fields | string, b?: string): void { this.log('warn', a, b); }
  error(a: Fields | string, b?: string): void { this.log('error', a, b); }
  fatal(a: Fields | string, b?: string): void { this.log('fatal', a, b); }

  child(fields: Fields): Logger {
    return new LineLogger(this.write, this.min, this.format, { ...this.fields, ...fields });
  }

  private log(level: Level, a: Fields | string, b?: string): void {
    if (LEVELS[level] < this.min) return;
    const msg = typeof a === 'string' ? a : b ?? '';
    const fields = typeof a === 'string' ? this.fields : { ...this.fields, ...a };
    this.write(formatLine(this.format, level, msg, fields, rfc3339Nano()));
  }
}

/** One log line (with its newline). */
export function formatLine(format: Format, level: Level, msg: string, fields: Fields, time: string): string {
  const entries = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    // Go's convention for an error field (logrus WithError) is `error`.
    .map(([k, v]): [string, string] => [k === 'err' ? 'error' : k, fieldText(v)])
    .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
  if (format === 'json') {
    const all: [string, string][] = [['level', NAMES[level]], ['msg', msg], ['time', time], ...entries];
    all.sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    return `${JSON.stringify(Object.fromEntries(all))}\n`;
  }
  let line = `time="${time}" level=${NAMES[level]} msg=${quoteIfNeeded(msg)}`;
  for (const [k, v] of entries) line += ` ${k}=${quoteIfNeeded(v)}`;
  return `${line}\n`;
}

function fieldText(v: unknown): string {
  if (v instanceof Error) return v.stack && v.stack.length > 0 ? v.stack : v.message;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** logrus's needsQuoting: anything outside [A-Za-z0-9-._/@^+] (an empty value stays bare). */
function quoteIfNeeded(s: string): string {
  return /^[A-Za-z0-9\-._/@^+]*$/.test(s) ? s : goQuote(s);
}

/** Go's %q for a string: double quotes, \" \\ \n \r \t, other control characters as \xNN. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/**
 * Now as RFC 3339 with nanoseconds (containerd's RFC3339NanoFixed), in UTC: the wall clock's
 * milliseconds, the monotonic clock's digits below them.
 */
export function rfc3339Nano(ms = Date.now(), subMs = Number(process.hrtime.bigint() % 1_000_000n)): string {
  const iso = new Date(ms).toISOString(); // 2026-12-06T03:38:11.513Z
  return `${iso.slice(0, 23)}${String(subMs).padStart(6, '0')}Z`;
}
