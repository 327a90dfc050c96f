// SPDX-License-Identifier: Apache-2.0
// The daemon's log lines as the Go shim writes them (logrus text through containerd's log
// package), the JSON opt-in, and what the daemon does with an error nothing caught.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { formatLine, goQuote, lineLogger, rfc3339Nano } from '../../src/log/logger.js';
import { installCrashPolicy, PANIC_STATUS } from '../../src/shim/crash.js';

const T = '2026-12-06T03:38:11.514599793Z';

test('text lines: time, level, msg, then the fields sorted by key, quoted only when needed (as the Go shim\'s)', () => {
  assert.equal(
    formatLine('text', 'info', 'starting signal loop', { runtime: 'io.containerd.runc.v2', pid: 27769, path: '/tmp/gl-Q4Cq21/ns1/c1', namespace: 'ns1' }, T),
    `time="${T}" level=info msg="starting signal loop" namespace=ns1 path=/tmp/gl-Q4Cq21/ns1/c1 pid=27769 runtime=io.containerd.runc.v2\n`,
  );
  assert.equal(formatLine('text', 'debug', 'serving api on socket', { socket: '[inherited from parent]' }, T),
    `time="${T}" level=debug msg="serving api on socket" socket="[inherited from parent]"\n`);
  // logrus names warn "warning"; a bare word stays unquoted; `err` is Go's `error`; undefined fields are left out.
  assert.equal(formatLine('text', 'warn', 'shutdown', { err: 'exit status 1: "x"', gone: undefined }, T),
    `time="${T}" level=warning msg=shutdown error="exit status 1: \\"x\\""\n`);
});

test('Go %q quoting: quotes, backslashes, newlines and control characters escaped; other text kept', () => {
  assert.equal(goQuote('a "b" \\ c\nd\te\x01é'), '"a \\"b\\" \\\\ c\\nd\\te\\x01é"');
});

test('JSON lines (SHIM_LOG_FORMAT=json): logrus\'s keys, sorted', () => {
  assert.equal(formatLine('json', 'error', 'oops', { id: 'c1', err: new Error('bad').message }, T),
    `{"error":"bad","id":"c1","level":"error","msg":"oops","time":"${T}"}\n`);
});

test('time: RFC 3339 with nine fractional digits, UTC (containerd\'s RFC3339NanoFixed)', () => {
  assert.equal(rfc3339Nano(Date.UTC(2026, 11, 6, 3, 38, 11, 514), 599793), T);
  assert.match(rfc3339Nano(), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
});

test('levels: debug lines only with -debug; child fields on every line', () => {
  const lines: string[] = [];
  const quiet = lineLogger((l) => lines.push(l), { debug: false, fields: { runtime: 'io.containerd.runc.v2' } }).child({ namespace: 'n' });
  quiet.debug('hidden');
  quiet.info({ id: 'c1' }, 'shown');
  assert.equal(lines.length, 1);
  assert.match(lines[0], / level=info msg=shown id=c1 namespace=n runtime=io.containerd.runc.v2\n$/);
  const loud = lineLogger((l) => lines.push(l), { debug: true });
  loud.debug('now shown');
  assert.match(lines[1], / level=debug msg="now shown"\n$/);
});

test('crash policy: an uncaught exception is logged with its stack and exits 2, as a Go panic; an unhandled rejection is logged', () => {
  const lines: string[] = [];
  const exits: number[] = [];
  const proc = new EventEmitter() as unknown as NodeJS.Process;
  installCrashPolicy(lineLogger((l) => lines.push(l), { debug: false }), (c) => exits.push(c), proc);
  (proc as unknown as EventEmitter).emit('unhandledRejection', new Error('late'));
  assert.deepEqual(exits, []);
  assert.match(lines[0], /level=error msg="unhandled rejection" error="Error: late\\n {4}at /);
  (proc as unknown as EventEmitter).emit('uncaughtException', new Error('boom'));
  assert.deepEqual(exits, [PANIC_STATUS]);
  assert.match(lines[1], /level=fatal msg="uncaught exception: the shim exits, containerd will clean up its containers" error="Error: boom\\n {4}at /);
});
