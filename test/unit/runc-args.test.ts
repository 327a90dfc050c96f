// SPDX-License-Identifier: Apache-2.0
// runc command lines built from Task API options (no runc is run: `run` is captured).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Runc } from '../../src/runc/runc.js';
import type { Reaper } from '../../src/reaper/reaper.js';

class CapturingRunc extends Runc {
  readonly calls: string[][] = [];
  override run(args: string[]): Promise<string> {
    this.calls.push(args);
    return Promise.resolve('');
  }
}

const runc = () => new CapturingRunc({ command: 'runc', root: '/run/containerd/runc/ns', log: '/b/log.json' }, {} as Reaper);

test('checkpoint: parent_path becomes --parent-path (containerd v2.4), after the other flags', async () => {
  const r = runc();
  await r.checkpoint('c1', { imagePath: '/img', workPath: '/work', leaveRunning: true, parentPath: '../pre-dump' });
  await r.checkpoint('c1', { imagePath: '/img', workPath: '/work', leaveRunning: false });
  assert.deepEqual(r.calls, [
    ['checkpoint', '--image-path', '/img', '--work-path', '/work', '--leave-running', '--parent-path', '../pre-dump', 'c1'],
    ['checkpoint', '--image-path', '/img', '--work-path', '/work', 'c1'],
  ]);
});
