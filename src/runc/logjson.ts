// SPDX-License-Identifier: Apache-2.0
// runc writes JSON lines {"level","msg","time"} to <bundle>/log.json; after a failed call the
// shim reports the last error-level message (containerd v1.7.0 pkg/process/utils.go getLastRuntimeError).
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
    msg = `${context}: unable to retrieve OCI runtime error (${goFileError(readErr, 'open', logPath)}): ${fallback}`;
  }
  const out = new Error(msg);
  (out as Error & { cause?: unknown }).cause = err;
  return out;
}

/** A Node file error as Go's os.PathError prints it: `open /path: no such file or directory`. */
function goFileError(e: unknown, op: string, file: string): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  const text: Record<string, string> = {
    ENOENT: 'no such file or directory', EACCES: 'permission denied', ENOTDIR: 'not a directory', EISDIR: 'is a directory',
  };
  return code && text[code] ? `${op} ${file}: ${text[code]}` : (e as Error)?.message ?? String(e);
}

/**
 * A failed exec of the runtime as Go's os/exec words it (go-runc runs runc with exec.Command):
 * a bare name not found on PATH, or a path that is not there.
 */
export function execError(command: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT' || code === 'EACCES') {
    if (!command.includes('/')) return new Error(`exec: ${JSON.stringify(command)}: executable file not found in $PATH`);
    return new Error(`fork/exec ${command}: ${code === 'ENOENT' ? 'no such file or directory' : 'permission denied'}`);
  }
  return e instanceof Error ? e : new Error(String(e));
}
