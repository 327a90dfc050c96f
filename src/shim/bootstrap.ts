// SPDX-License-Identifier: Apache-2.0
// What `start` reads on stdin and prints on stdout, for every containerd in use
// (docs/containerd-2.md):
// - containerd 1.6–2.2 write the runtime options as a protobuf Any (or nothing) and read a plain
//   address back (1.7 refuses JSON with version > 2; 2.0–2.2 take a plain address as version 2).
// - containerd 2.3+ write a protobuf BootstrapParams (pkg/shim/util.go, v2.3.4) and read a
//   protobuf BootstrapResult first (core/runtime/v2/shim.go, v2.3.4): we answer version 3, and
//   containerd then speaks containerd.task.v3.Task and sends a pod's containers to its pause
//   container's shim.
// A legacy Any also decodes as BootstrapParams (its type URL lands in instance_id), so params are
// taken only when their instance id and namespace are this shim's. Nothing here ever throws on
// what containerd sends: an unreadable stdin means no options, as with the Go shim.
import { BootstrapParams, BootstrapResult } from '../gen/containerd/runtime/bootstrap/v1/bootstrap.js';
import { Options } from '../gen/containerd/runc/v1/runc.js';
import { Any } from '../gen/google/protobuf/any.js';
import { OPTIONS_TYPE, typeName } from '../runc/options.js';
import { SOCKET_DIR } from './address.js';

/** containerd 2.3 caps what it reads of the shim's stdin at 10 MiB; so do we, on our side. */
export const MAX_STDIN = 10 << 20;
/** BootstrapParams.log_level at or below this is debug or trace. */
const LOG_LEVEL_DEBUG = -4;

export interface StartInput {
  /** The runc options, if containerd sent any (legacy Any, or the bootstrap extension). */
  options?: Options;
  /** Set when containerd 2.3+ sent BootstrapParams for this shim. */
  bootstrap?: {
    socketDir: string;
    debug: boolean;
    ttrpcAddress: string;
    grpcAddress: string;
  };
}

/** Decode `start`'s stdin for the shim `id` in `namespace`. Never throws. */
export function parseStartInput(data: Uint8Array, id: string, namespace: string): StartInput {
  if (data.length === 0 || data.length > MAX_STDIN) return {};
  const params = tryDecode(() => BootstrapParams.decode(data));
  if (params && id !== '' && params.instanceId === id && params.namespace === namespace) {
    let options: Options | undefined;
    for (const ext of params.extensions) {
      if (ext.value && typeName(ext.value.typeUrl) === OPTIONS_TYPE) {
        options = tryDecode(() => Options.decode(ext.value!.value));
        break;
      }
    }
    return {
      options,
      bootstrap: {
        socketDir: params.socketDir || SOCKET_DIR,
        debug: params.logLevel <= LOG_LEVEL_DEBUG,
        ttrpcAddress: params.containerdTtrpcAddress,
        grpcAddress: params.containerdGrpcAddress,
      },
    };
  }
  const any = tryDecode(() => Any.decode(data));
  if (!any || typeName(any.typeUrl) !== OPTIONS_TYPE) return {};
  return { options: tryDecode(() => Options.decode(any.value)) };
}

/**
 * `start`'s answer: a BootstrapResult (fields 1–3 only: containerd 2.3.0–2.3.3 trim the output
 * before decoding it, so it must not end in whitespace-like bytes) to the daemon that sent
 * BootstrapParams, the plain address to every other.
 */
export function startOutput(address: string, input: StartInput): Uint8Array {
  if (!input.bootstrap) return Buffer.from(address, 'utf8');
  return BootstrapResult.encode({ version: 3, address, protocol: 'ttrpc', capabilities: [], metadata: {} }).finish();
}

function tryDecode<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}
