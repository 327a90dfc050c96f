// SPDX-License-Identifier: Apache-2.0
// binary-v2:// log URIs (containerd v2.3.4 cmd/containerd-shim-runc-v2/process/io.go): the logging binary is
// run as for binary://, but it is ready only once it wrote at least one byte to fd 5
// (CONTAINER_WAIT); closing fd 5 without writing fails the start with the reference's text
// "logging binary did not call ready (it may have crashed or exited prematurely)" (containerd
// v2.3.4 cmd/containerd-shim-runc-v2/process/io.go NewBinaryIO: checked before runc runs, as part
// of the process's I/O; runc/platform.go CopyConsole: in terminal mode, once runc sent the
// master, as part of the console copy).
//
// ctr 1.6 passes any --log-uri through, so the pipe-mode cases go through containerd and ctr; the
// terminal cases through the Task API (ctr refuses --log-uri with a terminal). The Go shim of
// containerd 1.6 predates binary-v2 ("unknown STDIO scheme"), so it runs these only when the
// daemon under test has a shim that knows the scheme (SHIM_DAEMON=2.3); the error text of ours is
// checked against the text in containerd v2.3.4's source either way.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import {
  BOTH, CtdEnv, DirectEnv, combined, ctrSubst, label, normalize, outcome, readIf, shims, uniqueId, withDiagnostics,
} from '../support/parity.js';
import { selectedDaemon } from '../support/daemons.js';
import { waitFor } from '../support/containerd.js';
import { waitGone } from '../support/shimproc.js';
import type { ShimUnderTest } from '../support/shims.js';

const NOT_READY = 'logging binary did not call ready (it may have crashed or exited prematurely)';
const DAEMON = selectedDaemon();
/** containerd 2.3 added binary-v2 to its shim (and its list of log URI schemes). */
const REFERENCE_KNOWS_V2 = DAEMON.major > 2 || (DAEMON.major === 2 && Number(DAEMON.name.split('.')[1]) >= 3);

const env = CtdEnv.use();
const direct = DirectEnv.use('pbv2');
let readyLogger: string;
let silentLogger: string;

/**
 * A logger recording into <dir>/<CONTAINER_ID>/: its pid, then (the ready one) one byte written
 * to fd 5 before closing it, or (the silent one) fd 5 closed without a byte; both then copy fd 3
 * and fd 4 into files. The environment has no PATH, hence the absolute paths.
 */
function writeLogger(dir: string, name: string, signalReady: boolean): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, `#!/bin/sh
out="${dir}/\${CONTAINER_ID:-no-container-id}"
/bin/mkdir -p "$out"
echo $$ > "$out/pid"
printf '%s\\n' "$0" "$@" > "$out/argv"
${signalReady ? 'printf r >&5\n' : ''}exec 5>&-
/bin/cat <&3 > "$out/stdout" &
/bin/cat <&4 > "$out/stderr" &
wait
`, { mode: 0o755 });
  return p;
}

before(() => {
  readyLogger = writeLogger(direct.tmp, 'ready-logger.sh', true);
  silentLogger = writeLogger(direct.tmp, 'silent-logger.sh', false);
});

const record = (id: string, f: string) => readIf(path.join(direct.tmp, id, f));

/** Waits until the logger of `id` has recorded `stdout`/`stderr` and exited; returns what it saw. */
async function loggerSaw(id: string, expect: { stdout: string; stderr: string }) {
  await waitFor(() => record(id, 'stdout') === expect.stdout && record(id, 'stderr') === expect.stderr, 5000);
  const pid = Number(record(id, 'pid'));
  return { argv: record(id, 'argv'), stdout: record(id, 'stdout'), stderr: record(id, 'stderr'), exited: await waitGone(pid, 15_000) };
}

/**
 * The Go shim's failure also carries the errors of its cleanup, joined on further lines (its
 * deferred closers close the ready pipe's write end a second time: "close |1: file already
 * closed", "file already closed"; containerd v2.3.4 process/io.go NewBinaryIO). They describe Go's
 * internals, not the failure; ours does not have them, so they are left out of the comparison.
 */
const withoutGoCleanupErrors = (s: string) => s.replace(/\n(?:close \|\d+: )?file already closed(?=\n)/g, '');

interface V2Scenario {
  name: string;
  /** Why the reference shim cannot run this scenario here, if it cannot. */
  referenceSkip?: string | false;
  run(shim: ShimUnderTest): Promise<unknown>;
}

const scenarios: V2Scenario[] = [
  {
    name: 'ctr run --log-uri binary-v2://: a logger that writes to fd 5 gets the output on fds 3/4 and the query as argv, the exit code is kept, and it is gone after the task',
    async run(shim) {
      const id = uniqueId('bv2', shim.name, 'ready');
      const r = await env.run(shim, ['--rm', '--log-uri', `binary-v2://${readyLogger}?k=v`, env.image, id, 'sh', '-c', 'echo out; echo err >&2; exit 3']);
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stdout, '');
      const saw = await loggerSaw(id, { stdout: 'out\n', stderr: 'err\n' });
      assert.equal(saw.argv, `${readyLogger}\nk\nv\n`);
      assert.ok(saw.exited, 'the logger exits once the task is deleted');
      return normalize({ result: env.result(r, []), saw }, [...ctrSubst(env.c, id), [direct.tmp, '<tmp>']]);
    },
  },
  {
    name: 'ctr run --log-uri binary-v2:// with a logger that closes fd 5 without writing: the create fails with "logging binary did not call ready", the container never runs',
    async run(shim) {
      const id = uniqueId('bv2', shim.name, 'silent');
      try {
        const r = await env.run(shim, ['--rm', '--log-uri', `binary-v2://${silentLogger}`, env.image, id, 'sh', '-c', 'echo ran > /dev/stderr; exit 0']);
        assert.notEqual(r.code, 0, 'ctr run fails');
        assert.ok(r.stderr.includes(`failed to create init process I/O: ${NOT_READY}`), r.stderr);
        assert.equal(record(id, 'stderr') ?? '', '', 'the container never ran');
        assert.equal(await env.taskStatus(id), undefined, 'no task is left');
        const result = env.result(r, []);
        return normalize({ result: { ...result, stderr: withoutGoCleanupErrors(result.stderr) } }, [...ctrSubst(env.c, id), [direct.tmp, '<tmp>']]);
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'ctr task exec --log-uri binary-v2://: a ready logger gets the exec\'s output; a silent one fails the exec with "logging binary did not call ready" and the task keeps running',
    async run(shim) {
      const id = uniqueId('bv2', shim.name, 'exec');
      const ok = `okx-${shim.name}-${process.pid}`;
      const bad = `badx-${shim.name}-${process.pid}`;
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const r1 = await env.ctr(['task', 'exec', '--exec-id', ok, '--log-uri', `binary-v2://${readyLogger}?mode=exec`, id, 'sh', '-c', 'echo exec-out; echo exec-err >&2; exit 5']);
        assert.equal(r1.code, 5, r1.stderr);
        const r2 = await env.ctr(['task', 'exec', '--exec-id', bad, '--log-uri', `binary-v2://${silentLogger}`, id, 'sh', '-c', 'echo ran >&2']);
        assert.notEqual(r2.code, 0, 'ctr task exec fails');
        assert.ok(r2.stderr.includes(NOT_READY), r2.stderr);
        assert.equal(await env.taskStatus(id), 'RUNNING');
        const saw = await loggerSaw(ok, { stdout: 'exec-out\n', stderr: 'exec-err\n' });
        const res2 = env.result(r2, []);
        return normalize({ r1: env.result(r1, []), r2: { ...res2, stderr: withoutGoCleanupErrors(res2.stderr) }, saw: { ...saw, exited: undefined }, badStderr: record(bad, 'stderr') },
          [...ctrSubst(env.c, id, ok, bad), [direct.tmp, '<tmp>']]);
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'Task API terminal + binary-v2:// stdout: a ready logger gets the terminal\'s output on fd 3; a silent one fails Create with "failed to start console copy: logging binary did not call ready"',
    referenceSkip: DAEMON.major >= 2 && 'the Task API harness (DirectEnv) starts a shim the way containerd 1.6 does; a 2.x shim answers `start` with a bootstrap message it does not read',
    async run(shim) {
      const res: Record<string, unknown> = {};
      for (const ready of [true, false]) {
        const id = `c-bv2tty-${ready ? 'ready' : 'silent'}-${shim.name}`;
        const t = await direct.start(shim, id, ['sh', '-c', 'echo "hello from $(tty)"; exit 2'], { terminal: true });
        try {
          const uri = `binary-v2://${ready ? readyLogger : silentLogger}?tty=1`;
          const create = await outcome(t.client.create({ id, bundle: t.bundle, rootfs: t.rootfs, terminal: true, stdout: uri, stderr: uri }));
          if (ready) {
            assert.ok('ok' in create, JSON.stringify(create));
            await t.client.start(id);
            assert.equal((await t.client.wait(id)).exitStatus, 2);
            await t.client.delete(id);
            await waitFor(() => record(id, 'stdout') === 'hello from /dev/pts/0\r\n', 5000);
            res.ready = { stdout: record(id, 'stdout'), stderr: record(id, 'stderr') };
          } else {
            assert.ok('code' in create, 'Create fails');
            assert.ok(create.message.includes(`failed to start console copy: ${NOT_READY}`), create.message);
            res.silent = normalize(create, t.subst());
          }
        } finally {
          await t.close();
        }
      }
      return res;
    },
  },
];

const observed = new Map<string, Map<string, unknown>>();
const diag = combined(env, direct);
for (const shim of shims) {
  const skip = shim.name === 'reference' && !REFERENCE_KNOWS_V2
    ? `the Go shim of containerd ${DAEMON.name} predates binary-v2 (containerd 2.3; SHIM_DAEMON=2.3 runs it)` : false;
  describe(`binary-v2:// logging with the ${label(shim)} shim (${shim.path})`, () => {
    for (const s of scenarios) {
      it(s.name, { timeout: 60_000, skip: skip || (shim.name === 'reference' && s.referenceSkip) }, withDiagnostics(diag, async () => {
        const v = await s.run(shim);
        if (process.env.PARITY_DUMP) fs.appendFileSync(process.env.PARITY_DUMP, JSON.stringify({ scenario: s.name, shim: shim.name, observed: v }, null, 1) + '\n');
        if (!observed.has(s.name)) observed.set(s.name, new Map());
        observed.get(s.name)!.set(shim.name, v);
      }));
    }
  });
}

describe('binary-v2:// logging: the TypeScript shim behaves like the reference shim', () => {
  for (const s of scenarios) {
    it(`${s.name} — same as the reference`, {
      skip: !BOTH ? 'only one shim under test (SHIM_UNDER_TEST)'
        : !REFERENCE_KNOWS_V2 ? `the reference shim of containerd ${DAEMON.name} predates binary-v2` : s.referenceSkip,
    }, () => {
      const ref = observed.get(s.name)?.get('reference');
      const ours = observed.get(s.name)?.get('ours');
      assert.ok(ref !== undefined && ours !== undefined, 'both shims ran the scenario');
      assert.deepEqual(ours, ref);
    });
  }
});

// The reference's exact wrapping of the failure (containerd v2.3.4 process/exec.go and init.go):
// an exec's I/O error is "failed to create init process I/O: …" too, and a console copy's error
// is returned as "failed to start console copy: …" without another prefix (src/shim/container.ts).
describe('binary-v2:// logging: the failure is worded as by the reference', () => {
  it('exec: "failed to create init process I/O: …"; terminal: "failed to start console copy: …" alone', {
    skip: !shims.some((s) => s.name === 'ours') && 'our shim is not under test',
  }, () => {
    const exec = observed.get(scenarios[2].name)?.get('ours') as { r2?: { stderr: string } } | undefined;
    const term = observed.get(scenarios[3].name)?.get('ours') as { silent?: { message: string } } | undefined;
    assert.ok(exec?.r2 && term?.silent, 'both scenarios ran with our shim');
    assert.ok(exec.r2.stderr.includes(`failed to create init process I/O: ${NOT_READY}`), exec.r2.stderr);
    assert.equal(term.silent.message, `failed to start console copy: ${NOT_READY}`);
  });
});
