// SPDX-License-Identifier: Apache-2.0
// Parity of terminal mode (containerd v1.7.0 pkg/process/init.go, io.go): `ctr run -t` and
// `ctr task exec -t` on a real pty (test/support/pty-drive.py plays the user's terminal: it types
// and resizes the window), and ResizePty through the Task API directly.

import assert from 'node:assert/strict';
import { before } from 'node:test';
import path from 'node:path';
import { FifoReader, fifoWriter } from '../support/fifo.js';
import {
  CtdEnv, DirectEnv, combined, ctrSubst, execSpec, loggerRecord, normalize, outcome, parityTests, uniqueId, writeLogger,
  type Scenario, type PtyStep,
} from '../support/parity.js';

const env = CtdEnv.use();
const direct = DirectEnv.use('ptty');
let logger: string;
before(() => { logger = writeLogger(direct.tmp); });

// Waits (bounded) until the terminal has the given size: ctr sets the initial size right after
// starting the task, and forwards a SIGWINCH as a Resize, both asynchronously.
const WAIT_SIZE = 'W() { i=0; while [ "$(stty size 2>/dev/null)" != "$1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; }';
const SCRIPT = `${WAIT_SIZE}; W "30 100"; echo "ready $(tty)"; read line; echo "got:$line"; stty size; echo resize-me; W "40 120"; stty size; exit 3`;
const STEPS: PtyStep[] = [
  { expect: 'ready' },
  { send: 'hello\r' },
  { expect: 'resize-me' },
  { resize: [40, 120] },
];
const EXPECTED = 'ready /dev/pts/0\r\r\nhello\r\r\ngot:hello\r\r\n30 100\r\r\nresize-me\r\r\n40 120\r\r\n';

const scenarios: Scenario[] = [
  {
    name: 'ctr run -t: the container gets a terminal of the outer window size, typed input is echoed, a window resize reaches it, and the exit code is kept',
    async run(shim) {
      const id = uniqueId('tty', shim.name, 'run');
      const r = await env.ptyCtr(['run', '--rm', '-t', '--runtime', shim.path, env.image, id, 'sh', '-c', SCRIPT], [30, 100], STEPS);
      assert.equal(r.error, null, `terminal output: ${JSON.stringify(r.output)}`);
      assert.equal(r.output, EXPECTED);
      assert.equal(r.status, 3);
      const events = await env.waitDeleted(id);
      assert.equal(events[0].event.io && (events[0].event.io as { terminal?: boolean }).terminal, true, 'TaskCreate io.terminal');
      return normalize({ output: r.output, status: r.status, events }, ctrSubst(env.c, id));
    },
  },
  {
    name: 'ctr task exec -t: the exec gets its own terminal, typed input is echoed, a window resize reaches it, and the exit code is kept',
    async run(shim) {
      const id = uniqueId('tty', shim.name, 'exec');
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const r = await env.ptyCtr(['task', 'exec', '-t', '--exec-id', 'tty1', id, 'sh', '-c', SCRIPT], [30, 100], STEPS);
        assert.equal(r.error, null, `terminal output: ${JSON.stringify(r.output)}`);
        assert.equal(r.output, EXPECTED);
        assert.equal(r.status, 3);
        const events = await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit' && e.event.id === 'tty1'));
        return normalize({ output: r.output, status: r.status, events }, ctrSubst(env.c, id));
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: 'Task API ResizePty sets the window size of the init\'s and an exec\'s terminal; it is a no-op without a terminal and an error on a stopped exec',
    async run(shim) {
      const id = 'c-tty';
      const t = await direct.start(shim, id, ['sh', '-c', 'read a; stty size; read b; exit 7'], { terminal: true });
      const name = (s: string) => `${t.ns}-${s}`;
      const initOut = new FifoReader(direct.fifo(name('init-out')));
      direct.fifo(name('init-in'));
      const execOut = new FifoReader(direct.fifo(name('exec-out')));
      direct.fifo(name('exec-in'));
      const plainOut = new FifoReader(direct.fifo(name('plain-out')));
      const initIn = fifoWriter(path.join(direct.tmp, name('init-in')));
      const execIn = fifoWriter(path.join(direct.tmp, name('exec-in')));
      const res: Record<string, unknown> = {};
      try {
        await t.client.create({
          id, bundle: t.bundle, rootfs: t.rootfs, terminal: true,
          stdin: path.join(direct.tmp, name('init-in')), stdout: path.join(direct.tmp, name('init-out')),
        });
        await t.client.start(id);
        res.resizeInit = await outcome(t.client.resizePty(id, 132, 50));
        initIn.write('one\n');
        await initOut.until((s) => s.includes('50 132'));

        await t.client.exec({
          id, execId: 'tty', terminal: true, spec: execSpec(['sh', '-c', 'read a; stty size; exit 4'], { terminal: true }),
          stdin: path.join(direct.tmp, name('exec-in')), stdout: path.join(direct.tmp, name('exec-out')),
        });
        res.resizeCreatedExec = await outcome(t.client.resizePty(id, 90, 20, 'tty'));
        await t.client.start(id, 'tty');
        res.resizeExec = await outcome(t.client.resizePty(id, 100, 25, 'tty'));
        execIn.write('two\n');
        await execOut.until((s) => s.includes('25 100'));
        assert.equal((await t.client.wait(id, 'tty')).exitStatus, 4);
        res.resizeStoppedExec = await outcome(t.client.resizePty(id, 80, 24, 'tty'));

        await t.client.exec({ id, execId: 'plain', spec: execSpec(['sleep', '1']), stdout: path.join(direct.tmp, name('plain-out')), stderr: path.join(direct.tmp, name('plain-out')) });
        await t.client.start(id, 'plain');
        res.resizeNoTerminal = await outcome(t.client.resizePty(id, 80, 24, 'plain'));
        await t.client.kill(id, 9, { execId: 'plain' });
        await t.client.wait(id, 'plain');

        initIn.write('two\n');
        const w = await t.client.wait(id);
        assert.equal(w.exitStatus, 7);
        res.resizeStoppedInit = await outcome(t.client.resizePty(id, 80, 24));
        res.initOutput = initOut.text;
        res.execOutput = execOut.text;
        res.deleteExec = await outcome(t.client.delete(id, 'tty'));
        res.delete = await outcome(t.client.delete(id));
        return normalize(res, t.subst());
      } finally {
        initIn.destroy(); execIn.destroy();
        initOut.close(); execOut.close(); plainOut.close();
        await t.close();
      }
    },
  },
  {
    name: 'Task API terminal + binary:// stdout: the terminal\'s output goes to the logger\'s fd 3, fd 4 stays empty',
    knownDifferences: {
      loggerGoneAfterDelete: 'in terminal mode the reference neither stops the logger on Delete nor closes the write end of its fd 4 '
        + 'pipe (leaked until a Go GC finalizer or the shim\'s exit closes it), so whether its logger outlives the task varies; '
        + 'ours stops it on Delete, as in pipe mode',
    },
    async run(shim) {
      const id = `c-ttylog-${shim.name}`;
      const t = await direct.start(shim, id, ['sh', '-c', 'echo "hello from $(tty)"; echo to-stderr >&2; exit 2'], { terminal: true });
      try {
        await t.client.create({ id, bundle: t.bundle, rootfs: t.rootfs, terminal: true, stdout: `binary://${logger}?tty=1`, stderr: `binary://${logger}?tty=1` });
        await t.client.start(id);
        const w = await t.client.wait(id);
        assert.equal(w.exitStatus, 2);
        const del = await outcome(t.client.delete(id));
        const rec = await loggerRecord(direct.tmp, id, { stdout: 'hello from /dev/pts/0\r\nto-stderr\r\n', stderr: '' }, 5000, 2000);
        return normalize({ exitStatus: w.exitStatus, del, files: rec.files, loggerGoneAfterDelete: rec.exited }, [[logger, '<logger>'], ...t.subst()]);
      } finally {
        await t.close();
      }
    },
  },
];

parityTests('terminal mode', scenarios, combined(env, direct));
