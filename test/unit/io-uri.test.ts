// SPDX-License-Identifier: Apache-2.0
// Stdio URIs as containerd clients send them (containerd v1.7.0 pkg/process/io.go).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProcessIO, parseStdioUri } from '../../src/io/processio.js';
import { BinaryIO, loggerArgs, strictReady } from '../../src/io/binary.js';

test('a bare path is a fifo; file:// and binary:// are recognised', () => {
  assert.deepEqual(parseStdioUri('/run/containerd/fifo/1/c-stdout'), { scheme: 'fifo', path: '/run/containerd/fifo/1/c-stdout' });
  assert.equal(parseStdioUri('file:///var/log/c.log').scheme, 'file');
  assert.equal(parseStdioUri('file:///var/log/c.log').path, '/var/log/c.log');
  assert.equal(parseStdioUri('binary:///usr/bin/logger?a=b').scheme, 'binary');
  assert.equal(parseStdioUri('file:///var/log/with%20space.log').path, '/var/log/with space.log');
});

test('logging binary argv: each query key, then its first value; a bare flag gets an empty value', () => {
  const { file, args } = loggerArgs(new URL('binary:///usr/local/bin/log-driver?id=abc&flag&id=ignored&dir=%2Fvar%2Flog'));
  assert.equal(file, '/usr/local/bin/log-driver');
  assert.deepEqual(args, ['/usr/local/bin/log-driver', 'id', 'abc', 'flag', '', 'dir', '/var/log']);
});

test('binary-v2:// (containerd 2.3) parses like binary://, and only it requires the logger to write to its ready fd', () => {
  const uri = 'binary-v2:///usr/local/bin/log-driver?id=abc&flag&dir=%2Fvar%2Flog';
  const parsed = parseStdioUri(uri);
  assert.equal(parsed.scheme, 'binary-v2');
  assert.equal(parsed.path, '/usr/local/bin/log-driver');
  assert.deepEqual(loggerArgs(parsed.url!), { file: '/usr/local/bin/log-driver', args: ['/usr/local/bin/log-driver', 'id', 'abc', 'flag', '', 'dir', '/var/log'] });
  assert.equal(strictReady(parsed.url!), true);
  assert.equal(strictReady(parseStdioUri('BINARY-V2:///x').url!), true);
  assert.equal(parseStdioUri('BINARY-V2:///x').scheme, 'binary-v2');
  assert.equal(strictReady(parseStdioUri('binary:///usr/local/bin/log-driver').url!), false);
  assert.equal(parseStdioUri('binary-v2:///opt/with%20space/logger').path, '/opt/with space/logger');
});

test('createProcessIO: binary-v2:// gets a logging-binary IO; an unknown scheme is refused with the reference\'s text', () => {
  const cfg = { stdin: '', stdout: 'binary-v2:///bin/true', stderr: 'binary-v2:///bin/true', terminal: false, uid: 0, gid: 0 };
  const ctx = { processId: 'p', namespace: 'ns', reaper: undefined as never };
  const io = createProcessIO(cfg, ctx);
  try {
    assert.ok(io instanceof BinaryIO);
    assert.equal(io.stdio?.fds[0], -1, 'no stdin, as with binary://');
  } finally {
    io.close();
  }
  assert.throws(() => createProcessIO({ ...cfg, stdout: 'binary-v3:///bin/true' }, ctx), { message: 'unknown STDIO scheme binary-v3' });
});
