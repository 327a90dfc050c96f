// SPDX-License-Identifier: Apache-2.0
// containerd.runc.v1.Options: decoded from the Create request (or start's stdin), stored in the
// bundle as options.json (snake_case, zero values omitted) and `runtime` for the delete action.
import fs from 'node:fs';
import path from 'node:path';
import { Options } from '../gen/containerd/runc/v1/runc.js';
import type { Any } from '../gen/google/protobuf/any.js';
import { DEFAULT_RUNC_ROOT } from './runc.js';

export const OPTIONS_TYPE = 'containerd.runc.v1.Options';

/** Match a type URL on its last path component, accepting `…/<full.name>` forms. */
export function typeName(typeUrl: string): string {
  const i = typeUrl.lastIndexOf('/');
  return i >= 0 ? typeUrl.slice(i + 1) : typeUrl;
}

export function decodeOptions(any: Any | undefined): Options {
  if (!any || any.value.length === 0) return Options.fromPartial({});
  if (typeName(any.typeUrl) !== OPTIONS_TYPE) throw new Error(`unsupported runtime options type ${any.typeUrl}`);
  return Options.decode(any.value);
}

const JSON_KEYS: [keyof Options, string][] = [
  ['noPivotRoot', 'no_pivot_root'], ['noNewKeyring', 'no_new_keyring'], ['shimCgroup', 'shim_cgroup'],
  ['ioUid', 'io_uid'], ['ioGid', 'io_gid'], ['binaryName', 'binary_name'], ['root', 'root'],
  ['criuPath', 'criu_path'], ['systemdCgroup', 'systemd_cgroup'], ['criuImagePath', 'criu_image_path'],
  ['criuWorkPath', 'criu_work_path'],
];

export function optionsToJSON(o: Options): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, j] of JSON_KEYS) if (o[k]) out[j] = o[k];
  return out;
}

export function optionsFromJSON(j: Record<string, unknown>): Options {
  const partial: Partial<Options> = {};
  for (const [k, key] of JSON_KEYS) if (j[key] !== undefined) (partial as Record<string, unknown>)[k] = j[key];
  return Options.fromPartial(partial);
}

export function writeBundleOptions(bundle: string, o: Options): void {
  fs.writeFileSync(path.join(bundle, 'options.json'), JSON.stringify(optionsToJSON(o)), { mode: 0o600 });
  fs.writeFileSync(path.join(bundle, 'runtime'), o.binaryName, { mode: 0o600 });
}

/**
 * Options as the delete action sees them. Either file may be missing (a Create that never
 * reached the shim): then runc's defaults, as the Go shim (runc.ReadRuntime tolerates ENOENT).
 */
export function readBundleOptions(bundle: string): Options {
  let binaryName = '';
  try {
    binaryName = fs.readFileSync(path.join(bundle, 'runtime'), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  let o = Options.fromPartial({});
  try {
    o = optionsFromJSON(JSON.parse(fs.readFileSync(path.join(bundle, 'options.json'), 'utf8')) as Record<string, unknown>);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  o.binaryName = binaryName;
  return o;
}

export function runcRoot(o: Options, namespace: string): string {
  return path.join(o.root || DEFAULT_RUNC_ROOT, namespace);
}

export function runcCommand(o: Options): string {
  return o.binaryName || 'runc';
}
