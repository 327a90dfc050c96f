// runc writes JSON lines {"level","msg","time"} to <bundle>/log.json; after a failed call the
// shim reports the last error-level message (shared/spec/runc-and-io.md §1.4).
import { readFile } from 'node:fs/promises';

/** The last error message in a runc log, or undefined. Throws if the file can't be read. */
export function lastRuncError(text: string): string | undefined {
  let last: string | undefined;
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t[0] !== '{') continue;
    let entry: unknown;
    try { entry = JSON.parse(t); } catch { continue; }
    if (entry && typeof entry === 'object') {
      const e = entry as { level?: unknown; msg?: unknown };
      if (e.level === 'error' && typeof e.msg === 'string') last = e.msg.trim();
    }
  }
  return last;
}

/** `<context>: <last runc error or the go-runc style error>`, as the reference words it. */
export async function runtimeError(logPath: string, context: string, err: unknown): Promise<Error> {
  const fallback = err instanceof Error ? err.message : String(err);
  let msg: string;
  try {
    const last = lastRuncError(await readFile(logPath, 'utf8'));
    msg = `${context}: ${last ?? fallback}`;
  } catch (readErr) {
    msg = `${context}: unable to retrieve OCI runtime error (${(readErr as Error).message}): ${fallback}`;
  }
  const out = new Error(msg);
  (out as Error & { cause?: unknown }).cause = err;
  return out;
}
