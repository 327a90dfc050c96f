// SPDX-License-Identifier: Apache-2.0
// Entry point of the V8-startup-snapshot variant (see build.ts). It imports every mode statically,
// so all modules are evaluated when the snapshot is built, and registers a deserialize-main
// function that does what src/shim/main.ts does (same dispatch, kept in sync by hand; this is an
// experiment, not a second implementation).
//
// Run as: node --snapshot-blob shim.blob <marker> <shim args...>; process.argv is then
// [node, <marker>, ...args] just like `node main.js args`, so `start` re-executes the daemon as
// `node --snapshot-blob shim.blob <marker> -namespace ...` through process.execArgv/argv[1].
import path from 'node:path';
import v8 from 'node:v8';
import { parseFlags, FlagError } from '../../src/shim/flags.js';
import { start } from '../../src/shim/start.js';
import { deleteAction } from '../../src/shim/delete.js';
import { serve } from '../../src/shim/serve.js';
import { VERSION, REVISION } from '../../src/gen/version.js';

const NAME = 'io.containerd.runc.v2';

function fail(msg: string): never {
  process.stderr.write(`${NAME}: ${msg}`);
  process.exit(1);
}

async function main(): Promise<void> {
  let flags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (e) {
    if (e instanceof FlagError) {
      process.stderr.write(`${e.message}\nUsage of ${process.env.SHIM_ARGV0 ?? 'containerd-shim-runc-v2'}:\n`);
      process.exit(2);
    }
    throw e;
  }
  if (flags.version) {
    const argv0 = path.basename(process.env.SHIM_ARGV0 ?? 'containerd-shim-runc-v2');
    process.stdout.write(`${argv0}:\n  Version:  ${VERSION}\n  Revision: ${REVISION}\n  Node.js version: ${process.version}\n\n`);
    return;
  }
  if (!flags.namespace) fail('shim namespace cannot be empty');
  switch (flags.action) {
    case 'start': {
      const address = await start(flags);
      process.stdout.write(address);
      process.exit(0);
    }
    // eslint-disable-next-line no-fallthrough
    case 'delete': {
      const out = deleteAction(flags, (m) => process.stderr.write(`${m}\n`));
      process.stdout.write(out);
      process.exit(0);
    }
    // eslint-disable-next-line no-fallthrough
    default:
      await serve(flags);
  }
}

if (v8.startupSnapshot?.isBuildingSnapshot()) {
  v8.startupSnapshot.setDeserializeMainFunction(() => {
    main().catch((e: unknown) => fail(e instanceof Error ? e.message : String(e)));
  });
} else {
  main().catch((e: unknown) => fail(e instanceof Error ? e.message : String(e)));
}
