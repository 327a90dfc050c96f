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
//
// SHIM_BIN_DIR=<dir> (scripts/install-test.sh) runs it as a system containerd runs an installed
// shim: <dir> first on containerd's PATH and the runtime given by name, io.containerd.runc.v2,
// which containerd resolves to the first containerd-shim-runc-v2 on its PATH. A third container,
// detached, then shows that the shim daemon serving it is that binary (its argv[0], links
// resolved) running that install's build (the native addon it has mapped is the one beside it).

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { argValue, CTR, listProcesses, startContainerd, waitFor, type Containerd } from './containerd.js';
import { buildBusyboxImage, importImage, DEFAULT_IMAGE_REF } from './image.js';
import { OUR_SHIM, REFERENCE_SHIM } from './shims.js';

const RUNTIME = 'io.containerd.runc.v2';
const binDir = process.env.SHIM_BIN_DIR;
const installed = binDir ? join(binDir, 'containerd-shim-runc-v2') : undefined;
const shim = installed ?? (process.env.SHIM_UNDER_TEST === 'reference' ? REFERENCE_SHIM : OUR_SHIM);
const shimName = installed ? 'the installed shim' : shim === OUR_SHIM ? 'the TypeScript shim' : "containerd's reference shim";
/** What `ctr run --runtime` gets: the runtime name when the shim is on containerd's PATH. */
const runtime = installed ? RUNTIME : shim;

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
  const c = await startContainerd({ pathPrepend: binDir ? [binDir] : [] });
  let ok: boolean;
  try {
    process.stdout.write(`containerd pid ${c.pid}, socket ${c.address}, snapshotter ${c.snapshotter}\n`);

    step('building a busybox OCI image from /bin/busybox and importing it');
    const tar = await buildBusyboxImage();
    await importImage(c, tar, DEFAULT_IMAGE_REF);
    process.stdout.write(`imported ${DEFAULT_IMAGE_REF}\n`);

    step(`running a container with ${shimName} (${shim})`);
    const first = await ctrShown(c, ['run', '--rm', '--runtime', runtime, DEFAULT_IMAGE_REF, `demo-${n}-1`,
      'echo', 'hello from a container run by the TypeScript shim']);
    process.stdout.write(`exit code: ${first}\n`);

    step('a second container: uname -a; id');
    const second = await ctrShown(c, ['run', '--rm', '--runtime', runtime, DEFAULT_IMAGE_REF, `demo-${n}-2`,
      'sh', '-c', 'uname -a; id']);
    process.stdout.write(`exit code: ${second}\n`);
    ok = first === 0 && second === 0;
    if (installed) ok = await checkInstalledShim(c, installed, `demo-${n}-3`) && ok;
  } finally {
    step('tearing down (stopping containerd, removing its temp dir)');
    await c.stop();
    process.stdout.write(`removed ${c.dir}: ${existsSync(c.dir) ? 'NO' : 'yes'}\n`);
  }
  step(ok ? 'demo succeeded' : 'demo FAILED');
  return ok ? 0 : 1;
}

/**
 * Runs a detached container and checks the shim daemon serving it: its argv[0] is `binary` (the
 * path containerd found on its PATH and executed) with links resolved, and it has mapped the
 * addon of the install that `binary` links to, not the checkout's.
 */
async function checkInstalledShim(c: Containerd, binary: string, id: string): Promise<boolean> {
  step(`which shim serves a running container (${RUNTIME} resolved on containerd's PATH)`);
  const root = dirname(dirname(realpathSync(binary)));
  const addon = join(root, 'native', 'build', 'Release', 'shim_native.node');
  const run = await ctrShown(c, ['run', '-d', '--runtime', RUNTIME, DEFAULT_IMAGE_REF, id, 'sleep', '100000']);
  const daemon = run === 0
    ? await waitFor(() => listProcesses().find((p) => argValue(p.argv, 'id') === id && argValue(p.argv, 'address') === c.address), 10_000)
    : undefined;
  let maps = '';
  if (daemon) try { maps = readFileSync(`/proc/${daemon.pid}/maps`, 'utf8'); } catch { /* gone */ }
  const checks: Array<[string, boolean]> = [
    [`the container runs (ctr run -d exit code ${run})`, run === 0],
    [`a shim daemon serves it${daemon ? ` (pid ${daemon.pid})` : ''}`, daemon !== undefined],
    // As the Go shim's daemon, ours shows the binary containerd ran with its links resolved.
    [`its argv[0] is ${binary} resolved, ${realpathSync(binary)}`, daemon?.argv[0] === realpathSync(binary)],
    [`it runs the install in ${root}, not the checkout`, !existsSync(join(root, 'src')) && maps.includes(`${addon}\n`)],
  ];
  for (const [what, good] of checks) process.stdout.write(`${good ? 'ok' : 'NOT OK'}: ${what}\n`);
  await ctrShown(c, ['task', 'delete', '--force', id]);
  await ctrShown(c, ['container', 'delete', id]);
  return checks.every(([, good]) => good);
}

main().then((code) => { process.exitCode = code; }, (e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
});
