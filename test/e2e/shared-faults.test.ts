// SPDX-License-Identifier: Apache-2.0
// A shared daemon's hand-over (src/pool/shared.ts, docs/shared-daemon.md) under faults: the
// daemon killed or stalled at every step of the protocol while a second container's `start`
// offers it its socket. Whatever happens, containerd gets one answer for that start, a socket
// is served by exactly one process, a start that failed leaves nothing, and a container whose
// daemon died is cleaned up by containerd. Each case runs its own containerd, whose environment
// carries the fault (SHIM_FAULT_SHARED) to the shared daemon.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pidAlive, startContainerd, waitFor, waitForNoLeftovers, NOTHING_LEFT, type Containerd } from '../support/containerd.js';
import { ensureBusyboxImage } from '../support/image.js';
import { OUR_SHIM } from '../support/shims.js';
import { listenerPid, listenerPids, sharedPostOfPid } from '../support/shared.js';
import { ACCEPT_TIMEOUT_MS } from '../../src/pool/constants.js';
import { handOver } from '../../src/pool/offer.js';
import * as native from '../../src/sys/native.js';

const unique = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
const NS = 'default';
const STALL_PAST_ACCEPT = ACCEPT_TIMEOUT_MS + 1500;
const T = { timeout: 120_000 };
const skip = process.env.SHIM_UNDER_TEST === 'reference' ? 'shared daemons are ours alone' : process.getuid?.() !== 0 ? 'needs root' : false;

let seq = 0;

async function withContainerd(env: NodeJS.ProcessEnv, body: (c: Containerd, image: string) => Promise<void>): Promise<void> {
  const c = await startContainerd({ env: { SHIM_SHARED: '1', SHIM_TEST_POOL: `shared-faults-${unique}-${++seq}`, ...env } });
  try {
    await body(c, await ensureBusyboxImage(c));
  } finally {
    await c.stop();
  }
}

const bundleOf = (c: Containerd, id: string) => path.join(c.state, 'io.containerd.runtime.v2.task', NS, id);
const servingPid = (c: Containerd, id: string) => {
  try { return listenerPid(fs.readFileSync(path.join(bundleOf(c, id), 'address'), 'utf8').replace(/^unix:\/\//, '')); } catch { return undefined; }
};

async function runDetached(c: Containerd, image: string, id: string): Promise<number> {
  await c.ctr(['run', '-d', '--null-io', '--runtime', OUR_SHIM, image, id, 'sleep', '100000']);
  return (await waitFor(() => servingPid(c, id), 5000))!;
}

async function removeAll(c: Containerd, ids: string[]): Promise<void> {
  for (const id of ids) {
    await c.ctr(['task', 'kill', '-s', 'KILL', id], { allowFail: true });
    await waitFor(async () => (await c.ctr(['task', 'rm', id], { allowFail: true })).stderr.includes('not found') || !(await c.ctr(['task', 'ls', '-q'])).stdout.split('\n').includes(id) || undefined, 10_000);
    await c.ctr(['container', 'rm', id], { allowFail: true });
  }
  assert.deepEqual(await waitForNoLeftovers(c, ids), { ...NOTHING_LEFT }, 'nothing left');
}

/**
 * A case: a containerd whose environment carries `fault`, container `a` served by a shared
 * daemon `d` that holds its post; `b` names the next container, the one whose start meets the fault.
 */
async function faultCase(fault: string, tag: string, body: (x: { c: Containerd; image: string; a: string; b: string; d: number }) => Promise<void>): Promise<void> {
  await withContainerd({ SHIM_FAULT_SHARED: fault }, async (c, image) => {
    const a = `sf-${unique}-${tag}-a`;
    const d = await runDetached(c, image, a);
    await waitFor(() => sharedPostOfPid(d), 5000);
    await body({ c, image, a, b: `sf-${unique}-${tag}-b`, d });
  });
}

/** `ctr run --rm` of `id`: its output and exit status arrive. */
async function runShort(c: Containerd, image: string, id: string): Promise<void> {
  const r = await c.ctr(['run', '--rm', '--runtime', OUR_SHIM, image, id, 'sh', '-c', 'echo ok; exit 3'], { allowFail: true });
  assert.equal(r.code, 3, r.stderr);
  assert.equal(r.stdout, 'ok\n');
}

describe('shared daemon hand-over under faults (our shim)', { skip }, () => {
  // The daemon dies before RUNNING: nothing ran there, the start gets a daemon of its own.
  for (const step of ['offer', 'accept', 'commit']) {
    it(`shared daemon killed after ${step}: the start gets its own daemon; the dead daemon's container is cleaned up`, T, async () => {
      await faultCase(`${step}:kill`, step, async ({ c, image, a, b, d }) => {
        await runShort(c, image, b);
        assert.ok(!pidAlive(d), 'the shared daemon died at the fault');
        // containerd cleaned up the container whose daemon died (exit 137).
        await waitFor(async () => /STOPPED/.test((await c.ctr(['task', 'ls'])).stdout) || !(await c.ctr(['task', 'ls', '-q'])).stdout.includes(a) || undefined, 15_000);
        await removeAll(c, [a, b]);
      });
    });
  }

  // The daemon dies after RUNNING: the start ran there and is never offered again: it fails.
  for (const step of ['running', 'status']) {
    it(`shared daemon killed after ${step}: that start fails once, and nothing of it is left`, T, async () => {
      await faultCase(`${step}:kill`, step, async ({ c, image, a, b, d }) => {
        const r = await c.ctr(['run', '--rm', '--runtime', OUR_SHIM, image, b, 'true'], { allowFail: true });
        assert.notEqual(r.code, 0, 'the start failed');
        assert.match(r.stderr, /died during start|shim/);
        assert.ok(!pidAlive(d));
        await removeAll(c, [a, b]);
      });
    });
  }

  // The daemon stalls before ACCEPT, past the sender's limit: the start goes elsewhere, and the
  // daemon, back, must not serve that socket too.
  for (const step of ['offer']) {
    it(`shared daemon stalled after ${step}: the start gets its own daemon, the stalled one serves on without that socket`, T, async () => {
      await faultCase(`${step}:stall:${STALL_PAST_ACCEPT}`, `${step}-s`, async ({ c, image, a, b, d }) => {
        await runDetached(c, image, b);
        // Once its stalls are over, the stalled daemon has closed the copy of b's socket an offer
        // brought it (it holds one while stalled): one process, not d, serves b.
        const sock = fs.readFileSync(path.join(bundleOf(c, b), 'address'), 'utf8').replace(/^unix:\/\//, '');
        await waitFor(() => !listenerPids(sock).includes(d) || undefined, 4 * STALL_PAST_ACCEPT);
        assert.ok(pidAlive(d));
        assert.equal(listenerPids(sock).length, 1, 'one process serves b');
        const ex = await c.ctr(['task', 'exec', '--exec-id', 'e', a, 'sh', '-c', 'exit 4'], { allowFail: true });
        assert.equal(ex.code, 4, 'the stalled daemon serves a again');
        await removeAll(c, [a, b]);
      });
    });
  }

  // The daemon stalls after ACCEPT: the sender has committed and waits for RUNNING (a slow
  // daemon is not a dead one), so the start joins once the stall is over, served by d alone.
  for (const step of ['accept', 'commit']) {
    it(`shared daemon stalled after ${step}: the start waits and joins it`, T, async () => {
      await faultCase(`${step}:stall:${STALL_PAST_ACCEPT}`, `${step}-j`, async ({ c, image, a, b, d }) => {
        await runShort(c, image, b);
        await c.ctr(['run', '-d', '--null-io', '--runtime', OUR_SHIM, image, `${b}2`, 'sleep', '100000']);
        assert.deepEqual(listenerPids(fs.readFileSync(path.join(bundleOf(c, `${b}2`), 'address'), 'utf8').replace(/^unix:\/\//, '')), [d], 'd alone serves the next one');
        await removeAll(c, [a, b, `${b}2`]);
      });
    });
  }

  it('a socket handed over by a start that then vanished is dropped when containerd never dials it', T, async () => {
    await withContainerd({ SHIM_SHARED_CONNECT_MS: '1500' }, async (c, image) => {
      const a = `sf-${unique}-orphan-a`;
      const d = await runDetached(c, image, a);
      const post = (await waitFor(() => sharedPostOfPid(d), 5000))!;
      // Play a `start` that handed its socket over and died before answering containerd.
      const dir = fs.mkdtempSync('/tmp/shared-orphan-');
      try {
        const sock = path.join(dir, 's.sock');
        const fd = native.listenUnix(sock, 16);
        const env: Record<string, string> = {};
        for (const kv of fs.readFileSync(`/proc/${d}/environ`, 'utf8').split('\0')) {
          const k = kv.slice(0, kv.indexOf('='));
          if (['TTRPC_ADDRESS', 'GRPC_ADDRESS', 'NAMESPACE'].includes(k)) env[k] = kv.slice(k.length + 1);
        }
        const pid = await handOver(post, { argv: ['-namespace', NS, '-id', 'orphan', '-address', c.address], bundle: dir, env }, fd);
        fs.closeSync(fd);
        assert.equal(pid, d, 'the shared daemon took the socket');
        assert.equal(listenerPid(sock), d);
        await waitFor(() => listenerPid(sock) === undefined || undefined, 10_000);
        assert.ok(pidAlive(d), 'the daemon serves on');
        const ex = await c.ctr(['task', 'exec', '--exec-id', 'e', a, 'true'], { allowFail: true });
        assert.equal(ex.code, 0);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      await removeAll(c, [a]);
    });
  });
});
