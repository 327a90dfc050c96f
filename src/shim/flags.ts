// SPDX-License-Identifier: Apache-2.0
// Command-line parsing with Go `flag` package semantics (containerd v2.3.4 pkg/shim/shim.go parses with Go's flag package):
// `-name value`, `-name=value`, `--name value`, bare booleans, parsing stops at the first
// non-flag argument, which is the action.

export interface ShimFlags {
  namespace: string;
  id: string;
  address: string;
  publishBinary: string;
  bundle: string;
  socket: string;
  debug: boolean;
  /** `-v`, or `--version` (containerd 2.3's shims have both). */
  version: boolean;
  /** `-info` (containerd 2.x): print the RuntimeInfo protobuf and exit. */
  info: boolean;
  /** Internal: run as a pre-booted standby daemon listening on this control socket. */
  standby: string;
  /** Internal, with -standby: the launcher's job arrives on this fd first. */
  jobFd: string;
  action: string;
}

const STRING_FLAGS: Record<string, keyof ShimFlags> = {
  namespace: 'namespace',
  id: 'id',
  address: 'address',
  'publish-binary': 'publishBinary',
  bundle: 'bundle',
  socket: 'socket',
  standby: 'standby',
  'job-fd': 'jobFd',
};
const BOOL_FLAGS: Record<string, keyof ShimFlags> = { debug: 'debug', v: 'version', version: 'version', info: 'info' };

export class FlagError extends Error {}

function parseBool(name: string, v: string): boolean {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(v)) return false;
  throw new FlagError(`invalid boolean value "${v}" for -${name}`);
}

export function parseFlags(argv: readonly string[]): ShimFlags {
  const f: ShimFlags = {
    namespace: '', id: '', address: '', publishBinary: '', bundle: '', socket: '', standby: '', jobFd: '',
    debug: false, version: false, info: false, action: '',
  };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg.length < 2 || arg[0] !== '-') break;
    if (arg === '--') { i++; break; }
    let body = arg.slice(arg[1] === '-' ? 2 : 1);
    if (body === '' || body[0] === '-' || body[0] === '=') throw new FlagError(`bad flag syntax: ${arg}`);
    let value: string | undefined;
    const eq = body.indexOf('=');
    if (eq >= 0) { value = body.slice(eq + 1); body = body.slice(0, eq); }
    const b = BOOL_FLAGS[body];
    if (b) {
      (f as unknown as Record<string, unknown>)[b] = value === undefined ? true : parseBool(body, value);
      continue;
    }
    const s = STRING_FLAGS[body];
    if (!s) throw new FlagError(`flag provided but not defined: -${body}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: -${body}`);
      value = argv[++i]!;
    }
    (f as unknown as Record<string, unknown>)[s] = value;
  }
  f.action = argv[i] ?? '';
  return f;
}
