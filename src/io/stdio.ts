// SPDX-License-Identifier: Apache-2.0
// What every stdio mode shares: the request's stdio settings, the interface a mode implements,
// and how a stdio URI names its mode (fifo path, file://, binary://, binary-v2://).
import type { Stdio } from '../runc/runc.js';

export interface IOConfig {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  uid: number;
  gid: number;
}

export interface ProcessIO {
  /** The fds runc gets as 0,1,2, or undefined when runc's own output should be captured. */
  readonly stdio: Stdio | undefined;
  /** Work that must finish before runc runs (a logging binary's readiness). */
  prepare?(): Promise<void>;
  /** Called once runc create/exec returned: close child ends, open targets, start copies. */
  start(): Promise<void>;
  /** CloseIO. */
  closeStdin(): void;
  /** Resolves when all output copies ended, or after `timeoutMs`. */
  drain(timeoutMs: number): Promise<void>;
  /** Release everything (Delete, or a failed create/exec). */
  close(): void;
}

export function parseStdioUri(uri: string): { scheme: string; path: string; url?: URL } {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(uri);
  if (!m) return { scheme: 'fifo', path: uri };
  const url = new URL(uri);
  return { scheme: m[1].toLowerCase(), path: decodeURIComponent(url.pathname), url };
}
