// SPDX-License-Identifier: Apache-2.0
// What `start` reads on stdin and prints on stdout for containerd 1.6 through 2.3 (bootstrap.ts),
// `-info`'s option handling and PATH look-up (info.ts), and the 2.x flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseStartInput, startOutput, MAX_STDIN } from '../../src/shim/bootstrap.js';
import { lookPath, runtimeInfo, FEATURES_TYPE } from '../../src/shim/info.js';
import { parseFlags } from '../../src/shim/flags.js';
import { socketAddress, isShimSocketName } from '../../src/shim/address.js';
import { BootstrapParams, BootstrapResult } from '../../src/gen/containerd/runtime/bootstrap/v1/bootstrap.js';
import { RuntimeInfo } from '../../src/gen/containerd/types/introspection.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import { Any } from '../../src/gen/google/protobuf/any.js';
import { rng } from '../support/ttrpc-vectors.js';

const OPTIONS_URL = 'containerd.runc.v1.Options';
const optionsAny = (o: Partial<Options>) => Any.encode({ typeUrl: OPTIONS_URL, value: Options.encode(Options.fromPartial(o)).finish() }).finish();

function params(p: Partial<BootstrapParams>): Uint8Array {
  return BootstrapParams.encode(BootstrapParams.fromPartial({ instanceId: 'c1', namespace: 'default', ...p })).finish();
}

test('start stdin: empty (containerd 1.6 without options) means no options, legacy output', () => {
  const input = parseStartInput(new Uint8Array(), 'c1', 'default');
  assert.deepEqual(input, {});
  assert.equal(Buffer.from(startOutput('unix:///run/containerd/s/abc', input)).toString(), 'unix:///run/containerd/s/abc');
});

test('start stdin: a legacy runc Options Any (containerd 1.6–2.2) gives its options and a plain address', () => {
  const input = parseStartInput(optionsAny({ shimCgroup: '/pod1', binaryName: 'crun' }), 'c1', 'default');
  assert.equal(input.bootstrap, undefined);
  assert.equal(input.options?.shimCgroup, '/pod1');
  assert.equal(input.options?.binaryName, 'crun');
  assert.equal(Buffer.from(startOutput('unix:///x', input)).toString(), 'unix:///x');
});

test('start stdin: BootstrapParams (containerd 2.3) for this shim: options from the extension, socket dir, log level, BootstrapResult v3', () => {
  const ext = { value: { typeUrl: OPTIONS_URL, value: Options.encode(Options.fromPartial({ shimCgroup: '/kubepods/pod1' })).finish() } };
  const input = parseStartInput(params({
    logLevel: -4, socketDir: '/run/user/1000/containerd/s', containerdTtrpcAddress: '/run/c/c.sock.ttrpc',
    containerdGrpcAddress: '/run/c/c.sock', extensions: [{ value: { typeUrl: 'example.com/Other', value: new Uint8Array([1]) } }, ext],
  }), 'c1', 'default');
  assert.equal(input.options?.shimCgroup, '/kubepods/pod1');
  assert.deepEqual(input.bootstrap, {
    socketDir: '/run/user/1000/containerd/s', debug: true, ttrpcAddress: '/run/c/c.sock.ttrpc', grpcAddress: '/run/c/c.sock',
  });
  const out = startOutput('unix:///run/user/1000/containerd/s/abc', input);
  const r = BootstrapResult.decode(out);
  assert.deepEqual({ version: r.version, address: r.address, protocol: r.protocol }, { version: 3, address: 'unix:///run/user/1000/containerd/s/abc', protocol: 'ttrpc' });
  // Fields 1–3 only, ending in the protocol: nothing a TrimSpace (containerd 2.3.0–2.3.3) can cut.
  assert.equal(Buffer.from(out).subarray(-5).toString(), 'ttrpc');
  assert.equal(Buffer.from(out)[0], 0x08);
});

test('start stdin: BootstrapParams without socket_dir or with info level: the default dir, no debug', () => {
  const input = parseStartInput(params({ logLevel: 0 }), 'c1', 'default');
  assert.deepEqual(input.bootstrap?.socketDir, '/run/containerd/s');
  assert.equal(input.bootstrap?.debug, false);
  assert.equal(parseStartInput(params({ logLevel: -8 }), 'c1', 'default').bootstrap?.debug, true);
  assert.equal(parseStartInput(params({ logLevel: 4 }), 'c1', 'default').bootstrap?.debug, false);
});

test('start stdin: BootstrapParams for another id or namespace are not ours: treated as legacy (no options)', () => {
  assert.deepEqual(parseStartInput(params({ instanceId: 'other' }), 'c1', 'default'), {});
  assert.deepEqual(parseStartInput(params({ namespace: 'k8s.io' }), 'c1', 'default'), {});
  // A legacy Any decodes as BootstrapParams with instance_id = its type URL: never taken as params.
  const legacy = parseStartInput(optionsAny({ root: '/r' }), OPTIONS_URL, 'default');
  assert.equal(legacy.bootstrap, undefined);
});

test('start stdin: oversized, truncated and garbage input never throws and means no options', () => {
  assert.deepEqual(parseStartInput(new Uint8Array(MAX_STDIN + 1), 'c1', 'default'), {});
  const good = optionsAny({ shimCgroup: '/x' });
  assert.deepEqual(parseStartInput(good.subarray(0, good.length - 3), 'c1', 'default'), {});
  assert.deepEqual(parseStartInput(Buffer.from('garbage\xff\xff', 'latin1'), 'c1', 'default'), {});
});

test('start stdin (property): random and mutated inputs never throw, and only matching params yield bootstrap', () => {
  const rand = rng(0x5eed);
  const seeds = [params({ socketDir: '/run/s', logLevel: -4 }), optionsAny({ shimCgroup: '/x', binaryName: 'runc' }), new Uint8Array()];
  for (let i = 0; i < 20_000; i++) {
    let data: Uint8Array;
    if (i % 2 === 0) {
      data = new Uint8Array(Math.floor(rand() * 64));
      for (let k = 0; k < data.length; k++) data[k] = Math.floor(rand() * 256);
    } else {
      data = Uint8Array.from(seeds[i % seeds.length]);
      for (let k = 0; k < 1 + Math.floor(rand() * 4) && data.length; k++) data[Math.floor(rand() * data.length)] = Math.floor(rand() * 256);
      if (rand() < 0.3) data = data.subarray(0, Math.floor(rand() * data.length));
    }
    const input = parseStartInput(data, 'c1', 'default');
    if (input.bootstrap) {
      const p = BootstrapParams.decode(data);
      assert.equal(p.instanceId, 'c1');
      assert.equal(p.namespace, 'default');
      assert.ok(input.bootstrap.socketDir.length > 0);
    }
    startOutput('unix:///run/s/x', input);
  }
});

test('socket address: a chosen socket dir, and shim socket names', () => {
  const a = socketAddress('/run/containerd/containerd.sock', 'default', 'test', '/run/user/1/containerd/s');
  assert.match(a, /^unix:\/\/\/run\/user\/1\/containerd\/s\/[0-9a-f]{64}$/);
  assert.equal(a.slice(-64), socketAddress('/run/containerd/containerd.sock', 'default', 'test').slice(-64));
  assert.ok(isShimSocketName(a.slice(-64)));
  assert.ok(!isShimSocketName('standby-0123456789abcdef-0'));
});

test('flags: -info and --version (containerd 2.x)', () => {
  assert.equal(parseFlags(['-info']).info, true);
  assert.equal(parseFlags(['--version']).version, true);
  assert.equal(parseFlags(['-version']).version, true);
  assert.equal(parseFlags(['-namespace', 'x', '-id', 'y', 'start']).info, false);
});

test('-info: lookPath finds executables on PATH and fails with Go\'s text', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lookpath-'));
  try {
    fs.writeFileSync(path.join(dir, 'myrunc'), '#!/bin/sh\n', { mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'notexec'), '', { mode: 0o644 });
    assert.equal(lookPath('myrunc', `/nonexistent:${dir}`), path.join(dir, 'myrunc'));
    assert.equal(lookPath(path.join(dir, 'myrunc'), ''), path.join(dir, 'myrunc'));
    assert.throws(() => lookPath('notexec', dir), { message: 'failed to look up the path of "notexec": exec: "notexec": executable file not found in $PATH' });
    assert.throws(() => lookPath('no-runc', dir), { message: 'failed to look up the path of "no-runc": exec: "no-runc": executable file not found in $PATH' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('-info: RuntimeInfo with name, version, echoed options and the runtime\'s features JSON', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'info-'));
  try {
    // A stand-in runtime whose `features` prints indented JSON: -info re-encodes it compactly.
    fs.writeFileSync(path.join(dir, 'fakerunc'), '#!/bin/sh\n[ "$1" = features ] && printf \'{\\n  "ociVersionMin": "1.0.0",\\n  "linux": {"namespaces": ["user"]}\\n}\\n\'\n', { mode: 0o755 });
    const opts = optionsAny({ binaryName: 'fakerunc' });
    const info = RuntimeInfo.decode(runtimeInfo(opts, { PATH: dir }));
    assert.equal(info.name, 'io.containerd.runc.v2');
    assert.ok(info.version?.version);
    assert.equal(info.options?.typeUrl, OPTIONS_URL);
    assert.deepEqual(Buffer.from(info.options.value), Buffer.from(Any.decode(opts).value));
    assert.equal(info.features?.typeUrl, FEATURES_TYPE);
    assert.equal(Buffer.from(info.features.value).toString(), '{"ociVersionMin":"1.0.0","linux":{"namespaces":["user"]}}');
    // No options: none echoed. A runtime without `features`: no features, still a success.
    fs.writeFileSync(path.join(dir, 'runc'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
    const bare = RuntimeInfo.decode(runtimeInfo(new Uint8Array(), { PATH: dir }));
    assert.equal(bare.options, undefined);
    assert.equal(bare.features, undefined);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('-info: options of another type, or garbage, fail with the Go shim\'s texts', () => {
  const other = Any.encode({ typeUrl: 'foo', value: new Uint8Array() }).finish();
  assert.throws(() => runtimeInfo(other, { PATH: '/usr/sbin:/usr/bin' }), { message: 'failed to read runtime options (*options.Options): type with url foo: not found' });
  assert.throws(() => runtimeInfo(Buffer.from([0x0a, 0xff]), { PATH: '' }), { message: 'failed to read runtime options (*options.Options): proto: cannot parse invalid wire-format data' });
  assert.throws(() => runtimeInfo(optionsAny({ binaryName: 'no-runc' }), { PATH: '/nonexistent' }), /executable file not found in \$PATH/);
});
