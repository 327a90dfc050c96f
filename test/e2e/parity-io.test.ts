// SPDX-License-Identifier: Apache-2.0
// Parity of the stdio modes (containerd v1.7.0 pkg/process/io.go): fifo stdio with and without stdin,
// file:// and binary:// log URIs, null IO, and containers that reopen /dev/stdout. Each scenario
// runs with the reference shim and ours through the same private containerd (or, for the Task API
// only case, against each shim directly); the last describe compares what a user saw.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FifoReader } from '../support/fifo.js';
import {
  CtdEnv, DirectEnv, combined, ctrSubst, normalize, outcome, parityTests, readIf, uniqueId, writeLogger, loggerRecord, type Scenario,
} from '../support/parity.js';
import { Status } from '../../src/gen/containerd/types/task.js';

const env = CtdEnv.use();
const direct = DirectEnv.use('pio');
let tmp: string;
let logger: string;

before(() => {
  tmp = fs.mkdtempSync('/tmp/pio-');
  logger = writeLogger(tmp);
});
after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Pipe inodes differ per run: `pipe:[123]` → `pipe`. */
const pipeSubst: [RegExp, string] = [/pipe:\[\d+\]/, 'pipe'];

const scenarios: Scenario[] = [
  {
    name: 'fifo stdio: stdout and stderr bytes reach ctr separately, the exit code is the task\'s, and the events are create/start/exit/delete',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'fifo');
      const r = await env.run(shim, ['--rm', env.image, id, 'sh', '-c', 'echo out; echo err >&2; printf "no newline"; exit 3']);
      assert.equal(r.stdout, 'out\nno newline', `stdout; stderr: ${r.stderr}`);
      assert.equal(r.stderr, 'err\n');
      assert.equal(r.code, 3);
      const events = await env.waitDeleted(id);
      assert.deepEqual(events.map((e) => e.topic), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
      const io = events[0].event.io as Record<string, unknown>;
      assert.ok(io.stdin && io.stdout && io.stderr, 'ctr gives the task three fifos');
      // Go prints fractional seconds without trailing zeros: more than 3 digits means the
      // envelope time is finer than a millisecond.
      const subMillisecondTimestamps = events.some((e) => (/\.(\d+) /.exec(e.timestamp)?.[1]?.length ?? 0) > 3);
      return normalize({ result: env.result(r, ctrSubst(env.c, id)), events, subMillisecondTimestamps }, ctrSubst(env.c, id));
    },
  },
  {
    name: 'fifo stdio: 1 MB of output arrives complete and in order',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'big');
      const r = await env.run(shim, ['--rm', env.image, id, 'seq', '1', '150000']);
      assert.equal(r.code, 0, r.stderr);
      const expected = Array.from({ length: 150000 }, (_, i) => `${i + 1}\n`).join('');
      assert.equal(r.stdout.length, expected.length, 'byte count');
      assert.ok(r.stdout === expected, 'content');
      return { code: r.code, bytes: r.stdout.length, sha256: createHash('sha256').update(r.stdout).digest('hex'), stderr: r.stderr };
    },
  },
  {
    name: 'fifo stdio with stdin: input piped into ctr run reaches the container and its EOF (CloseIO) ends the container\'s read',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'stdin');
      const r = await env.ctrWithInput(['run', '--rm', '--runtime', shim.path, env.image, id, 'sh', '-c', 'echo ready; cat; echo done'],
        'ready', 'line1\nline2\n');
      assert.equal(r.timedOut, false, `ctr hung: the container never saw EOF on stdin; stdout: ${JSON.stringify(r.stdout)}`);
      assert.equal(r.stdout, 'ready\nline1\nline2\ndone\n', r.stderr);
      assert.equal(r.code, 0);
      return env.result(r, ctrSubst(env.c, id));
    },
  },
  {
    name: 'fifo stdio with stdin: 256 KiB of input arrive intact',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'stdinbig');
      const input = Buffer.alloc(256 * 1024);
      for (let i = 0; i < input.length; i++) input[i] = (i * 7 + (i >> 8)) & 0xff;
      const md5 = createHash('md5').update(input).digest('hex');
      const r = await env.ctrWithInput(['run', '--rm', '--runtime', shim.path, env.image, id, 'sh', '-c', 'echo ready; md5sum; wc -c </dev/null'],
        'ready', input);
      assert.equal(r.timedOut, false, `ctr hung; stdout: ${JSON.stringify(r.stdout)}`);
      assert.equal(r.stdout, `ready\n${md5}  -\n0\n`, r.stderr);
      return env.result(r, ctrSubst(env.c, id));
    },
  },
  {
    name: 'Task API without stdin: the container\'s fd 0 is /dev/null, it reads EOF, and its output reaches the stdout and stderr fifos',
    async run(shim) {
      const id = 'c-nostdin';
      const t = await direct.start(shim, id, ['sh', '-c', 'readlink /proc/self/fd/0; cat; echo "read done"; echo err >&2; exit 2']);
      const out = new FifoReader(direct.fifo(`${t.ns}-${id}-out`));
      const err = new FifoReader(direct.fifo(`${t.ns}-${id}-err`));
      try {
        const created = await t.client.create({
          id, bundle: t.bundle, rootfs: t.rootfs,
          stdout: path.join(direct.tmp, `${t.ns}-${id}-out`), stderr: path.join(direct.tmp, `${t.ns}-${id}-err`),
        });
        await t.client.start(id);
        const waited = await t.client.wait(id);
        assert.equal(waited.exitStatus, 2);
        await out.until((s) => s.includes('read done\n'));
        await err.until((s) => s.includes('err\n'));
        const state = await t.client.state(id);
        assert.equal(state.status, Status.STOPPED);
        const del = await outcome(t.client.delete(id));
        return normalize({
          pid: created.pid, stdout: out.text, stderr: err.text, exitStatus: waited.exitStatus,
          state: { ...state, exitedAt: state.exitedAt }, delete: del,
        }, t.subst());
      } finally {
        out.close(); err.close();
        await t.close();
      }
    },
  },
  {
    name: 'file:// log URI: stdout and stderr are appended to the file (its directory created), and ctr prints nothing',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'file');
      const file = path.join(tmp, id, 'sub', 'dir', 'task.log');
      const pre = path.join(tmp, `${id}-pre.log`);
      fs.writeFileSync(pre, 'previous line\n');
      // The reference shares one file handle between its two copies and closes it when the first
      // ends, so stderr written right before the exit can be lost (`error copying stderr`, seen
      // under load): give its copy time before the exit ends the stdout copy.
      const r1 = await env.run(shim, ['--rm', '--log-uri', `file://${file}`, env.image, id, 'sh', '-c', 'echo out; sleep 0.1; echo err >&2; sleep 0.5; exit 4']);
      assert.equal(r1.code, 4, r1.stderr);
      assert.equal(r1.stdout, '');
      const r2 = await env.run(shim, ['--rm', '--log-uri', `file://${pre}`, env.image, `${id}-2`, 'sh', '-c', 'echo appended']);
      assert.equal(r2.code, 0, r2.stderr);
      const content = readIf(file);
      assert.equal(content, 'out\nerr\n');
      assert.equal(readIf(pre), 'previous line\nappended\n');
      const mode = (fs.statSync(file).mode & 0o777).toString(8);
      const dirMode = (fs.statSync(path.dirname(file)).mode & 0o777).toString(8);
      return normalize({ r1: env.result(r1, []), r2: env.result(r2, []), content, pre: readIf(pre), mode, dirMode }, [...ctrSubst(env.c, id), [tmp, '<tmp>']]);
    },
  },
  {
    name: 'binary:// logging driver: the logger gets the output on fds 3/4 and /dev/null on 0-2, closes fd 5 to signal readiness, sees only CONTAINER_ID and CONTAINER_NAMESPACE and the query as argv, and is gone after the task',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'binary');
      const r = await env.run(shim, ['--rm', '--log-uri', `binary://${logger}?k=v`, env.image, id, 'sh', '-c', 'echo out; echo err >&2; exit 3']);
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stdout, '');
      const rec = await loggerRecord(tmp, id, { stdout: 'out\n', stderr: 'err\n' });
      assert.equal(rec.files.argv, `${logger}\nk\nv\n`);
      assert.equal(rec.files.env, `CONTAINER_ID=${id}\nCONTAINER_NAMESPACE=default\n`);
      assert.equal(rec.files.fds, '0 /dev/null\n1 /dev/null\n2 /dev/null\n3 pipe\n4 pipe\n5 pipe\n');
      assert.ok(rec.exited, 'the logger exits once the task is deleted');
      return normalize({ result: env.result(r, []), ...rec }, [...ctrSubst(env.c, id), [tmp, '<tmp>']]);
    },
  },
  {
    name: 'binary:// logging for an exec (ctr task exec --log-uri): the logger runs with CONTAINER_ID set to the exec id and gets the exec\'s output',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'execlog');
      const execId = `log-${shim.name}-${process.pid}`;
      try {
        const d = await env.run(shim, ['-d', env.image, id, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const r = await env.ctr(['task', 'exec', '--exec-id', execId, '--log-uri', `binary://${logger}?mode=exec`, id, 'sh', '-c', 'echo exec-out; echo exec-err >&2; exit 5']);
        assert.equal(r.code, 5, r.stderr);
        assert.equal(r.stdout, '');
        await env.waitEvents(id, (evs) => evs.some((e) => e.topic === '/tasks/exit' && e.event.id === execId));
        await env.remove(id);
        const rec = await loggerRecord(tmp, execId, { stdout: 'exec-out\n', stderr: 'exec-err\n' });
        assert.equal(rec.files.env, `CONTAINER_ID=${execId}\nCONTAINER_NAMESPACE=default\n`);
        return normalize({ result: env.result(r, []), ...rec }, [...ctrSubst(env.c, id, execId), [tmp, '<tmp>']]);
      } finally {
        await env.remove(id);
      }
    },
  },
  {
    name: '--null-io: the task\'s stdio are /dev/null, ctr prints nothing, and the exit code is kept',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'null');
      const r = await env.run(shim, ['--rm', '--null-io', env.image, id, 'sh', '-c', 'echo out; echo err >&2; exit 5']);
      assert.equal(r.code, 5, r.stderr);
      assert.equal(r.stdout, '');
      const id2 = uniqueId('io', shim.name, 'nullfds');
      try {
        const d = await env.run(shim, ['-d', '--null-io', env.image, id2, 'sleep', '1000']);
        assert.equal(d.code, 0, d.stderr);
        const fds = await env.ctr(['task', 'exec', '--exec-id', 'fds', id2, 'sh', '-c', 'for f in 0 1 2; do readlink /proc/1/fd/$f; done']);
        assert.equal(fds.stdout, '/dev/null\n/dev/null\n/dev/null\n', fds.stderr);
        return normalize({ result: env.result(r, []), fds: env.result(fds, []) }, ctrSubst(env.c, id, id2));
      } finally {
        await env.remove(id2);
      }
    },
  },
  {
    name: 'a container that reopens /dev/stdout and /dev/stderr writes through real pipes',
    async run(shim) {
      const id = uniqueId('io', shim.name, 'devstdout');
      const r = await env.run(shim, ['--rm', env.image, id, 'sh', '-c',
        'echo x > /dev/stdout && echo y > /dev/stderr && for f in 0 1 2; do readlink /proc/self/fd/$f; done']);
      assert.equal(r.stderr, 'y\n', 'echo > /dev/stderr works');
      assert.match(r.stdout, /^x\npipe:\[\d+\]\npipe:\[\d+\]\npipe:\[\d+\]\n$/, 'stdio are pipes, not sockets');
      assert.equal(r.code, 0);
      return env.result(r, [...ctrSubst(env.c, id), pipeSubst]);
    },
  },
];

parityTests('stdio modes', scenarios, combined(env, direct));
