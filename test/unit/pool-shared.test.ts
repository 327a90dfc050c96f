// SPDX-License-Identifier: Apache-2.0
// Which shared daemon a tenant may join (src/pool/shared.ts, src/pool/key.ts): off unless
// SHIM_SHARED=1 and never with SCHED_CORE, bounded, and one post per pool, containerd address
// and namespace (a daemon compares shim_cgroup itself), so a tenant never joins a daemon that runs
// differently from its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sharedBound, sharedEnabled } from '../../src/pool/shared.js';
import { sharedPostOf } from '../../src/pool/key.js';

test('shared daemons are opt-in, and never with core scheduling', () => {
  assert.equal(sharedEnabled({}), false);
  assert.equal(sharedEnabled({ SHIM_SHARED: '0' }), false);
  assert.equal(sharedEnabled({ SHIM_SHARED: 'true' }), false, 'only 1 turns it on');
  assert.equal(sharedEnabled({ SHIM_SHARED: '1' }), true);
  assert.equal(sharedEnabled({ SHIM_SHARED: '1', SCHED_CORE: '1' }), false, 'a core-scheduling cookie is per pod');
});

test('the tenant bound: 8 by default, SHIM_SHARED_TENANTS within 1..32', () => {
  assert.equal(sharedBound({}), 8);
  assert.equal(sharedBound({ SHIM_SHARED_TENANTS: '3' }), 3);
  assert.equal(sharedBound({ SHIM_SHARED_TENANTS: '1000' }), 32);
  for (const bad of ['0', '-2', '2.5', 'x', '']) assert.equal(sharedBound({ SHIM_SHARED_TENANTS: bad }), 8, JSON.stringify(bad));
});

test('one post per pool, containerd address and namespace', () => {
  const base = '/run/containerd/s/standby-0123456789abcdef';
  const vars = { TTRPC_ADDRESS: '/run/containerd/containerd.sock.ttrpc', GRPC_ADDRESS: '/run/containerd/containerd.sock', NAMESPACE: 'k8s.io' };
  const post = sharedPostOf(base, vars);
  assert.match(post, /^\/run\/containerd\/s\/shared-[0-9a-f]{16}$/);
  assert.equal(sharedPostOf(base, { ...vars }), post, 'the same inputs, the same post');
  const others = [
    sharedPostOf('/run/containerd/s/standby-fedcba9876543210', vars),
    sharedPostOf(base, { ...vars, TTRPC_ADDRESS: '/other.ttrpc' }),
    sharedPostOf(base, { ...vars, GRPC_ADDRESS: '/other' }),
    sharedPostOf(base, { ...vars, NAMESPACE: 'default' }),
    sharedPostOf(base, { TTRPC_ADDRESS: vars.TTRPC_ADDRESS, GRPC_ADDRESS: vars.GRPC_ADDRESS }),
  ];
  assert.equal(new Set([post, ...others]).size, others.length + 1, 'each difference, another post');
});
