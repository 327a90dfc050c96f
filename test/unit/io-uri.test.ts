// Stdio URIs as containerd clients send them (shared/spec/runc-and-io.md §4.1, §4.5).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseStdioUri } from '../../src/io/processio.js';
import { loggerArgs } from '../../src/io/binary.js';

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
