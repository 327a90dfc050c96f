// SPDX-License-Identifier: Apache-2.0
// Pure logic of the shim's command line: flag parsing, socket address, bundle options.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseFlags, FlagError } from '../../src/shim/flags.js';
import { socketAddress, groupId } from '../../src/shim/address.js';
import { optionsToJSON, optionsFromJSON, decodeOptions, typeName } from '../../src/runc/options.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import { DeleteResponse } from '../../src/gen/containerd/task/v2/shim.js';
import { deleteAction } from '../../src/shim/delete.js';

test('flags: the argv containerd builds for start, with the action last', () => {
  const f = parseFlags(['-namespace', 'default', '-address', '/run/containerd/containerd.sock', '-publish-binary', '/usr/bin/containerd', '-id', 'c1', '-debug', 'start']);
  assert.equal(f.namespace, 'default');
  assert.equal(f.address, '/run/containerd/containerd.sock');
  assert.equal(f.publishBinary, '/usr/bin/containerd');
  assert.equal(f.id, 'c1');
  assert.equal(f.debug, true);
  assert.equal(f.action, 'start');
});

test('flags: Go syntax variants (=, double dash, bool values) and no action means serve', () => {
  const f = parseFlags(['--namespace=k8s.io', '-id=x', '--debug=false', '-bundle', '/b']);
  assert.equal(f.namespace, 'k8s.io');
  assert.equal(f.id, 'x');
  assert.equal(f.debug, false);
  assert.equal(f.bundle, '/b');
  assert.equal(f.action, '');
  assert.equal(parseFlags(['-v']).version, true);
});

test('flags: parsing stops at the first non-flag argument', () => {
  const f = parseFlags(['-namespace', 'n', 'delete', '-id', 'ignored']);
  assert.equal(f.action, 'delete');
  assert.equal(f.id, '');
});

test('flags: unknown flags and missing values are errors', () => {
  assert.throws(() => parseFlags(['-nope']), FlagError);
  assert.throws(() => parseFlags(['-namespace']), FlagError);
  assert.throws(() => parseFlags(['-debug=maybe']), FlagError);
});

test('address: the spec test vectors', () => {
  assert.equal(socketAddress('/run/containerd/containerd.sock', 'default', 'test'),
    'unix:///run/containerd/s/cfa94b04d543b3f64f78eff8125c7a7cd0903173f673d87367be72ff09fc92c2');
  assert.equal(socketAddress('/run/containerd/containerd.sock', 'k8s.io', 'abc'),
    'unix:///run/containerd/s/a99a1752d3a0fadfb1f869026f16760475df03a572e20f4ccea9e6c1e5470b72');
});

test('address: the path is cleaned like Go filepath.Join', () => {
  assert.equal(socketAddress('/run/containerd//containerd.sock/', 'default', 'test'),
    socketAddress('/run/containerd/containerd.sock', 'default', 'test'));
});

test('grouping: the runc group annotation wins over the CRI sandbox id, else the task id', () => {
  assert.equal(groupId('c', { annotations: { 'io.kubernetes.cri.sandbox-id': 'pod', 'io.containerd.runc.v2.group': 'g' } }), 'g');
  assert.equal(groupId('c', { annotations: { 'io.kubernetes.cri.sandbox-id': 'pod' } }), 'pod');
  assert.equal(groupId('c', {}), 'c');
  assert.equal(groupId('c', undefined), 'c');
});

test('options: JSON uses snake_case keys and omits zero values', () => {
  const o = Options.fromPartial({ binaryName: 'crun', root: '/r', systemdCgroup: true, ioUid: 0 });
  assert.deepEqual(optionsToJSON(o), { binary_name: 'crun', root: '/r', systemd_cgroup: true });
  assert.deepEqual(optionsFromJSON({ binary_name: 'crun', root: '/r', systemd_cgroup: true }), o);
  assert.deepEqual(optionsToJSON(Options.fromPartial({})), {});
});

test('options: decoded from an Any by its type name, with or without a URL prefix', () => {
  const value = Options.encode(Options.fromPartial({ noPivotRoot: true })).finish();
  assert.equal(decodeOptions({ typeUrl: 'containerd.runc.v1.Options', value }).noPivotRoot, true);
  assert.equal(decodeOptions({ typeUrl: 'type.googleapis.com/containerd.runc.v1.Options', value }).noPivotRoot, true);
  assert.equal(decodeOptions(undefined).noPivotRoot, false);
  assert.throws(() => decodeOptions({ typeUrl: 'something.Else', value }));
  assert.equal(typeName('a/b/c.D'), 'c.D');
});

test('delete action output: the spec DeleteResponse vector', () => {
  const bytes = Buffer.from(DeleteResponse.encode({ pid: 4242, exitStatus: 137, exitedAt: { seconds: 1700000000n, nanos: 123 } }).finish());
  assert.equal(bytes.toString('hex'), '0892211089011a080880e2cfaa06107b');
});

test('delete action: the bundle\'s init pid, 128+SIGKILL and now, in a DeleteResponse, with the runtime the bundle names', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'delete-'));
  try {
    const bundle = path.join(dir, 'c1');
    fs.mkdirSync(bundle);
    // The runtime recorded at Create: a stand-in that notes how it was called.
    const calls = path.join(dir, 'calls');
    fs.writeFileSync(path.join(dir, 'fake-runc'), `#!/bin/sh\necho "$@" >> ${calls}\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(bundle, 'runtime'), path.join(dir, 'fake-runc'));
    fs.writeFileSync(path.join(bundle, 'init.pid'), '4242');
    const before = Date.now() / 1000;
    const warnings: string[] = [];
    const out = deleteAction(parseFlags(['-namespace', 'ns1', '-id', 'c1', '-bundle', bundle, 'delete']), (m) => warnings.push(m), bundle);
    const r = DeleteResponse.decode(out);
    assert.equal(r.pid, 4242);
    assert.equal(r.exitStatus, 137);
    assert.ok(Number(r.exitedAt!.seconds) >= Math.floor(before) && Number(r.exitedAt!.seconds) <= Date.now() / 1000 + 1, 'exited now');
    assert.match(fs.readFileSync(calls, 'utf8'), /--root \/run\/containerd\/runc\/ns1 .*delete --force c1/);
    assert.deepEqual(warnings, []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
