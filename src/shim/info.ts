// SPDX-License-Identifier: Apache-2.0
// `SHIM -info` (containerd 2.x, docs/containerd-2.md §-info): stdin an optional runc Options Any,
// stdout a protobuf containerd.types.RuntimeInfo: our name and version, the options echoed, and
// the OCI runtime's `features` JSON. containerd asks before every container with idmapped mounts
// (and refuses it unless features say idmap is enabled), at CRI start-up, and for
// `ctr plugins inspect-runtime`. Behaviour follows containerd v2.3.4
// cmd/containerd-shim-runc-v2/manager/manager_linux.go (Info): an options type it cannot read
// or a runtime binary it cannot find fails; a runtime without `features` only loses that field.
import fs from 'node:fs';
import path from 'node:path';
import { RuntimeInfo } from '../gen/containerd/types/introspection.js';
import { Any } from '../gen/google/protobuf/any.js';
import { Options } from '../gen/containerd/runc/v1/runc.js';
import { VERSION, REVISION } from '../gen/version.js';
import { runSync } from '../sys/runsync.js';
import { runcEnv } from '../runc/runc.js';
import { OPTIONS_TYPE, typeName } from '../runc/options.js';

const RUNTIME_NAME = 'io.containerd.runc.v2';
export const FEATURES_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/features/Features';
const FEATURES_TIMEOUT_MS = 10_000;

/** The RuntimeInfo bytes for `stdin`; throws with the text containerd shows on failure. */
export function runtimeInfo(stdin: Uint8Array, env: NodeJS.ProcessEnv = process.env): Uint8Array {
  const options = readOptions(stdin);
  const binary = options?.decoded.binaryName || 'runc';
  const abs = lookPath(binary, env.PATH ?? '');
  return RuntimeInfo.encode({
    name: RUNTIME_NAME,
    version: { version: VERSION, revision: REVISION },
    // Echoed as sent: a re-encode would drop fields this build does not know.
    options: options ? { typeUrl: OPTIONS_TYPE, value: options.raw } : undefined,
    features: features(abs),
    annotations: {},
  }).finish();
}

function readOptions(stdin: Uint8Array): { raw: Uint8Array; decoded: Options } | undefined {
  if (stdin.length === 0) return undefined;
  const fail = (why: string) => new Error(`failed to read runtime options (*options.Options): ${why}`);
  let any: Any;
  try {
    any = Any.decode(stdin);
  } catch {
    throw fail('proto: cannot parse invalid wire-format data');
  }
  if (typeName(any.typeUrl) !== OPTIONS_TYPE) throw fail(`type with url ${any.typeUrl}: not found`);
  try {
    return { raw: any.value, decoded: Options.decode(any.value) };
  } catch {
    throw fail('proto: cannot parse invalid wire-format data');
  }
}

/** Go's exec.LookPath, with its error text (a name with a slash is taken as a path). */
export function lookPath(name: string, pathEnv: string): string {
  const executable = (p: string) => {
    try {
      const st = fs.statSync(p);
      if (!st.isFile()) return false;
      fs.accessSync(p, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  const notFound = (why: string) => new Error(`failed to look up the path of ${JSON.stringify(name)}: exec: ${JSON.stringify(name)}: ${why}`);
  if (name.includes('/')) {
    if (executable(name)) return path.resolve(name);
    throw notFound(fs.existsSync(name) ? 'permission denied' : 'no such file or directory');
  }
  for (const dir of pathEnv.split(':')) {
    const p = path.join(dir === '' ? '.' : dir, name);
    if (executable(p)) return path.resolve(p);
  }
  throw notFound('executable file not found in $PATH');
}

/**
 * `<runtime> features`, re-encoded as compact JSON (what Go's json.Marshal of the parsed struct
 * gives for runc's output); undefined when the runtime has no such command.
 */
function features(binary: string): Any | undefined {
  const r = runSync(binary, ['features'], runcEnv(), FEATURES_TIMEOUT_MS, { stderr: 'discard' });
  if (r.error || r.status !== 0) return undefined;
  try {
    return { typeUrl: FEATURES_TYPE, value: Buffer.from(JSON.stringify(JSON.parse(r.output)), 'utf8') };
  } catch {
    return undefined;
  }
}
