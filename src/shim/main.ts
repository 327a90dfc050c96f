// SPDX-License-Identifier: Apache-2.0
// Entry point of the shim binary. containerd runs it as `start`, as `delete`, and `start` runs
// it again as the daemon. Each mode loads only what it needs.
import fs from 'node:fs';
import path from 'node:path';
import { parseFlags, FlagError } from './flags.js';

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
    const { VERSION, REVISION } = await import('../gen/version.js');
    const argv0 = path.basename(process.env.SHIM_ARGV0 ?? 'containerd-shim-runc-v2');
    process.stdout.write(`${argv0}:\n  Version:  ${VERSION}\n  Revision: ${REVISION}\n  Node.js version: ${process.version}\n\n`);
    return;
  }
  if (flags.info) {
    const [{ runtimeInfo }, { readCapped }] = await Promise.all([import('./info.js'), import('./stdin.js')]);
    fs.writeSync(1, runtimeInfo(readCapped(0)));
    process.exit(0);
  }
  // Daemons and standbys: forget the malloc setting their spawner added (no-op otherwise).
  const { scrubMallocEnv } = await import('../pool/spawn.js');
  scrubMallocEnv();
  if (flags.standby) {
    const [{ runStandby }, { start }, { deleteAction }, { serve }, { readCapped }, { warmUp }] = await Promise.all([
      import('../pool/standby.js'), import('./start.js'), import('./delete.js'), import('./serve.js'), import('./stdin.js'), import('./warmup.js'),
    ]);
    return runStandby(flags, {
      parseFlags, start, deleteAction, readCapped, warmUp,
      serve: (f, fd, onQuiet, shimCgroup) => serve({ ...f, standby: '', jobFd: '', action: '' }, fd, { onQuiet, shimCgroup }),
    });
  }
  if (!flags.namespace) fail('shim namespace cannot be empty');
  switch (flags.action) {
    case 'start': {
      const { start } = await import('./start.js');
      const out = await start(flags);
      fs.writeSync(1, out);
      process.exit(0);
    }
    // eslint-disable-next-line no-fallthrough
    case 'delete': {
      const { deleteAction } = await import('./delete.js');
      const out = deleteAction(flags, (m) => process.stderr.write(`${m}\n`));
      process.stdout.write(out);
      process.exit(0);
    }
    // eslint-disable-next-line no-fallthrough
    default: {
      const { serve } = await import('./serve.js');
      await serve(flags);
    }
  }
}

main().catch((e: unknown) => fail(e instanceof Error ? e.message : String(e)));
