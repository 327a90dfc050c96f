// SPDX-License-Identifier: Apache-2.0
// `scripts/demo.sh`: shows the TypeScript shim running real containers under a private containerd.
//
//   1. starts a private containerd (everything under a /tmp/ctd-XXXXXX dir),
//   2. builds a busybox OCI image from Debian's busybox-static and imports it,
//   3. `ctr run --rm --runtime <repo>/bin/containerd-shim-runc-v2 <image> demo-<n> echo "hello ..."`,
//   4. a second container printing `uname -a` and `id`, and its exit code,
//   5. tears everything down. Exit code 0 when both containers ran and exited 0.
//
// SHIM_UNDER_TEST=reference runs the same demo with containerd's own Go shim, for comparison.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { CTR, startContainerd, type Containerd } from './containerd.js';
import { buildBusyboxImage, importImage, DEFAULT_IMAGE_REF } from './image.js';
import { OUR_SHIM, REFERENCE_SHIM } from './shims.js';

const shim = process.env.SHIM_UNDER_TEST === 'reference' ? REFERENCE_SHIM : OUR_SHIM;
const shimName = shim === OUR_SHIM ? 'the TypeScript shim' : "containerd's reference shim";

function step(msg: string): void {
  process.stdout.write(`\n==> ${msg}\n`);
}

/** Runs ctr with its stdout/stderr on the terminal; resolves with its exit code (killed by pid after a timeout). */
function ctrShown(c: Containerd, args: string[], timeoutMs = 60_000): Promise<number> {
  process.stdout.write(`$ ctr ${args.map((a) => (/[\s"'$]/.test(a) ? JSON.stringify(a) : a)).join(' ')}\n`);
  return new Promise((resolve) => {
    const child = spawn(CTR, ['--address', c.address, ...args], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, CONTAINERD_SNAPSHOTTER: c.snapshotter },
    });
    const timer = setTimeout(() => {
      process.stderr.write(`ctr did not finish within ${timeoutMs / 1000} s; killing it\n`);
      if (child.pid !== undefined) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
    }, timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); process.stderr.write(`${e.message}\n`); resolve(127); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve(code ?? (signal ? 128 : 1)); });
  });
}

async function main(): Promise<number> {
  if (!existsSync(shim)) {
    process.stderr.write(`shim not found: ${shim}\n`);
    return 1;
  }
  const n = `${process.pid}`;
  step('starting a private containerd');
  const c = await startContainerd();
  let ok: boolean;
  try {
    process.stdout.write(`containerd pid ${c.pid}, socket ${c.address}, snapshotter ${c.snapshotter}\n`);

    step('building a busybox OCI image from /bin/busybox and importing it');
    const tar = await buildBusyboxImage();
    await importImage(c, tar, DEFAULT_IMAGE_REF);
    process.stdout.write(`imported ${DEFAULT_IMAGE_REF}\n`);

    step(`running a container with ${shimName} (${shim})`);
    const first = await ctrShown(c, ['run', '--rm', '--runtime', shim, DEFAULT_IMAGE_REF, `demo-${n}-1`,
      'echo', 'hello from a container run by the TypeScript shim']);
    process.stdout.write(`exit code: ${first}\n`);

    step('a second container: uname -a; id');
    const second = await ctrShown(c, ['run', '--rm', '--runtime', shim, DEFAULT_IMAGE_REF, `demo-${n}-2`,
      'sh', '-c', 'uname -a; id']);
    process.stdout.write(`exit code: ${second}\n`);
    ok = first === 0 && second === 0;
  } finally {
    step('tearing down (stopping containerd, removing its temp dir)');
    await c.stop();
    process.stdout.write(`removed ${c.dir}: ${existsSync(c.dir) ? 'NO' : 'yes'}\n`);
  }
  step(ok ? 'demo succeeded' : 'demo FAILED');
  return ok ? 0 : 1;
}

main().then((code) => { process.exitCode = code; }, (e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
});
