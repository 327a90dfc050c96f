// SPDX-License-Identifier: Apache-2.0
// cgroup v2 degradation, without a v2 host (the same cases run for real, side by side with the Go
// shim, in test/e2e/cgroups-v2.test.ts inside scripts/v2-lane.sh's guest):
//   * hugetlb entries only for the sizes whose files the cgroup has (none when the controller is
//     not enabled in the parent), as containerd/cgroups v1.1.0 v2/utils.go readHugeTlbStats;
//   * an OOM watch whose memory.events cannot be read ends with onError (the shim logs it, as the
//     Go shim logs "error from *cgroupsv2.Manager.EventChan", containerd v1.6.20 pkg/oom/v2/v2.go),
//     without throwing; one whose memory.events is gone ends with onStop("cgroup removed");
//   * flush(): an OOM counted in memory.events is emitted at once, before its inotify notification;
//   * an OOM kill whose victim leaves the cgroup between the handler's read of memory.events and
//     its look at cgroup.events is still reported (memory.events is read again once empty).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildV2Metrics } from '../../src/cgroups/v2.js';
import { OomWatcher } from '../../src/cgroups/oom.js';
import { CgroupHandle } from '../../src/cgroups/stats.js';

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('v2 metrics: hugetlb entries only for sizes whose files exist', () => {
  const files: Record<string, string> = {
    '/cg/cgroup.controllers': 'cpu memory pids hugetlb\n',
    '/cg/hugetlb.2MB.current': '4194304\n',
    '/cg/hugetlb.2MB.max': 'max\n',
  };
  const m = buildV2Metrics('/cg', (p) => files[p], { hugePageSizes: ['2MB', '1GB'] });
  assert.deepEqual(m.hugetlb, [{ pagesize: '2MB', current: 4194304n, max: 18446744073709551615n }]);
  const none = buildV2Metrics('/cg', (p) => (p === '/cg/cgroup.controllers' ? 'pids\n' : undefined), { hugePageSizes: ['2MB', '1GB'] });
  assert.deepEqual(none.hugetlb, []);
});

/** A fake cgroup dir whose memory.events is a symlink, so what it names can change under a watch. */
function fakeCgroup(): { dir: string; events: string; repoint(to: string): void } {
  const dir = mkdtempSync('/tmp/v2deg-');
  const events = join(dir, 'events-file');
  writeFileSync(events, 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n');
  writeFileSync(join(dir, 'cgroup.events'), 'populated 1\nfrozen 0\n');
  symlinkSync(events, join(dir, 'memory.events'));
  return {
    dir, events,
    repoint(to: string) {
      const tmp = join(dir, 'memory.events.new');
      symlinkSync(to, tmp);
      renameSync(tmp, join(dir, 'memory.events'));
    },
  };
}

test('OomWatcher v2: memory.events that cannot be read ends the watch through onError, no throw, no oom', async () => {
  const cg = fakeCgroup();
  const errors: string[] = [];
  const stops: string[] = [];
  const ooms: string[] = [];
  const watcher = new OomWatcher({
    onError: (id, err) => errors.push(`${id}:${(err as NodeJS.ErrnoException).code}`),
    onStop: (id, why) => stops.push(`${id}:${why}`),
  });
  watcher.on('oom', (id) => ooms.push(id));
  try {
    watcher.add('c', CgroupHandle.fromV2Dir(cg.dir));
    // The watch is on the file the symlink named; the path now names a directory (EISDIR).
    mkdirSync(join(cg.dir, 'a-dir'));
    cg.repoint(join(cg.dir, 'a-dir'));
    writeFileSync(cg.events, 'low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n');
    await until(() => watcher.size === 0);
    assert.deepEqual(errors, ['c:EISDIR']);
    assert.deepEqual(stops, []);
    assert.deepEqual(ooms, []);
  } finally {
    watcher.close();
    rmSync(cg.dir, { recursive: true, force: true });
  }
});

test('OomWatcher v2: memory.events gone (cgroup removed) ends the watch through onStop', async () => {
  const cg = fakeCgroup();
  const errors: string[] = [];
  const stops: string[] = [];
  const watcher = new OomWatcher({
    onError: (id, err) => errors.push(`${id}:${(err as NodeJS.ErrnoException).code}`),
    onStop: (id, why) => stops.push(`${id}:${why}`),
  });
  try {
    watcher.add('c', CgroupHandle.fromV2Dir(cg.dir));
    cg.repoint(join(cg.dir, 'nothing-here'));
    writeFileSync(cg.events, 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n');
    await until(() => watcher.size === 0);
    assert.deepEqual(stops, ['c:cgroup removed']);
    assert.deepEqual(errors, []);
  } finally {
    watcher.close();
    rmSync(cg.dir, { recursive: true, force: true });
  }
});

test('OomWatcher v2: flush() emits a counted OOM synchronously, and the later notification does not repeat it', async () => {
  const cg = fakeCgroup();
  const ooms: string[] = [];
  const watcher = new OomWatcher();
  watcher.on('oom', (id) => ooms.push(id));
  try {
    watcher.add('c', CgroupHandle.fromV2Dir(cg.dir));
    watcher.flush('c');
    assert.deepEqual(ooms, [], 'nothing counted yet');
    writeFileSync(cg.events, 'low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n');
    watcher.flush('c');
    assert.deepEqual(ooms, ['c'], 'emitted within flush()');
    // The inotify notification of that write arrives later: same count, no second event.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(ooms, ['c']);
    watcher.flush('unknown');
  } finally {
    watcher.close();
    rmSync(cg.dir, { recursive: true, force: true });
  }
});

test('OomWatcher v2: a kill and exit between the memory.events read and the emptiness check is still reported', async () => {
  const cg = fakeCgroup();
  const ooms: string[] = [];
  const stops: string[] = [];
  // What the kernel shows, in the order the handler reads it: memory.events before the kill,
  // then cgroup.events after the victim left, then memory.events with the kill counted.
  const script = [
    ['memory.events', 'low 0\nhigh 0\nmax 9\noom 0\noom_kill 0\n'],
    ['cgroup.events', 'populated 0\nfrozen 0\n'],
    ['memory.events', 'low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n'],
  ];
  const reads: string[] = [];
  const watcher = new OomWatcher({
    onStop: (id, why) => stops.push(`${id}:${why}`),
    readFile: (p) => {
      const name = p.slice(p.lastIndexOf('/') + 1);
      reads.push(name);
      const next = script[0];
      if (next && next[0] === name) return script.shift()![1];
      throw Object.assign(new Error(`unexpected read of ${name}`), { code: 'EINVAL' });
    },
  });
  watcher.on('oom', (id) => ooms.push(id));
  try {
    watcher.add('c', CgroupHandle.fromV2Dir(cg.dir));
    writeFileSync(cg.events, 'max 9\n'); // any notification
    await until(() => watcher.size === 0);
    assert.deepEqual(reads, ['memory.events', 'cgroup.events', 'memory.events']);
    assert.deepEqual(ooms, ['c'], 'the kill is reported');
    assert.deepEqual(stops, ['c:cgroup empty']);
  } finally {
    watcher.close();
    rmSync(cg.dir, { recursive: true, force: true });
  }
});
