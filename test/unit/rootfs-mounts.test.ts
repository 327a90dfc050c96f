// SPDX-License-Identifier: Apache-2.0
// Rootfs mounts beyond plain mount(2): id-mapped ones (uidmap=/gidmap= options from containerd
// 2.x snapshotters: the mapping syntax, real id-mapped bind and overlay mounts) and loop mounts
// of file-backed images (root, a kernel with idmapped mounts and loop devices).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { kernelIdMap, mountOne, unmountAll, parseMountOptions } from '../../src/sys/mount.js';
import * as native from '../../src/sys/native.js';

const root = process.geteuid?.() === 0;
const skip = root ? false : 'needs root (mount, user namespaces)';

test('uidmap/gidmap syntax: container-id:host-id:size lists become the kernel\'s map lines', () => {
  assert.equal(kernelIdMap('0:1000:65536'), '0 1000 65536\n');
  assert.equal(kernelIdMap('0:1000:1,1:100000:65535'), '0 1000 1\n1 100000 65535\n');
  assert.throws(() => kernelIdMap('0:1000'), /container-id:host-id:size/);
  assert.throws(() => kernelIdMap('0:x:1'), /invalid host id/);
  assert.throws(() => kernelIdMap('-1:0:1'), /invalid container id/);
  const p = parseMountOptions(['ro', 'uidmap=0:1:2', 'gidmap=0:3:4', 'lowerdir=/a']);
  assert.deepEqual([p.uidmap, p.gidmap, p.data], ['0:1:2', '0:3:4', ['lowerdir=/a']]);
});

function scratch(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idmap-'));
  for (const d of ['lower', 'upper', 'work', 'merged', 'bind']) fs.mkdirSync(path.join(dir, d));
  fs.writeFileSync(path.join(dir, 'lower', 'f'), 'x');
  fs.chownSync(path.join(dir, 'lower', 'f'), 0, 0);
  return dir;
}

const leftoverTemps = () => fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('ovl-idmapped')).length;

test('an id-mapped bind: files owned by 0 show the host ids the map gives', { skip }, () => {
  const dir = scratch();
  try {
    mountOne({ type: 'bind', source: path.join(dir, 'lower'), target: '', options: ['rbind', 'uidmap=0:1000:1', 'gidmap=0:2000:1'] }, path.join(dir, 'bind'));
    const st = fs.statSync(path.join(dir, 'bind', 'f'));
    assert.deepEqual([st.uid, st.gid], [1000, 2000]);
    assert.equal(fs.statSync(path.join(dir, 'lower', 'f')).uid, 0, 'the source itself is untouched');
  } finally {
    unmountAll(path.join(dir, 'bind'));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an id-mapped overlay: the lower layers are mapped, temporary mounts are gone afterwards', { skip }, () => {
  const dir = scratch();
  const before = leftoverTemps();
  try {
    mountOne({
      type: 'overlay', source: 'overlay', target: '',
      options: [`lowerdir=${path.join(dir, 'lower')}`, `upperdir=${path.join(dir, 'upper')}`, `workdir=${path.join(dir, 'work')}`, 'uidmap=0:1000:65536', 'gidmap=0:1000:65536'],
    }, path.join(dir, 'merged'));
    const st = fs.statSync(path.join(dir, 'merged', 'f'));
    assert.deepEqual([st.uid, st.gid], [1000, 1000]);
    assert.equal(leftoverTemps(), before, 'the temporary lowerdir mounts and their folder are removed');
  } finally {
    unmountAll(path.join(dir, 'merged'));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('usernsFd: a bad map fails with the syscall named, and leaves no child behind', { skip }, () => {
  assert.throws(() => native.usernsFd('0 0 4294967295\n0 0 1\n', '0 0 1\n'), (e: NodeJS.ErrnoException & { syscall?: string }) => e.syscall === 'write uid_map');
  const fd = native.usernsFd('0 1000 1\n', '0 1000 1\n');
  assert.ok(fd > 2);
  assert.ok(fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('user:['));
  fs.closeSync(fd);
});

test('a loop mount: a file-backed ext4 image is mounted through a loop device that goes with the mount', { skip: root && fs.existsSync('/dev/loop-control') && fs.existsSync('/usr/sbin/mke2fs') ? false : 'needs root, /dev/loop-control and mke2fs' }, () => {
  const dir = scratch();
  const img = path.join(dir, 'image.ext4');
  try {
    execFileSync('/usr/sbin/mke2fs', ['-q', '-t', 'ext4', '-d', path.join(dir, 'lower'), img, '8M']);
    const target = path.join(dir, 'merged');
    mountOne({ type: 'ext4', source: img, target: '', options: ['loop', 'ro'] }, target);
    const device = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === target)?.split(' - ')[1]?.split(' ')[1];
    assert.match(device ?? '', /^\/dev\/loop\d+$/);
    assert.equal(fs.readFileSync(path.join(target, 'f'), 'utf8'), 'x');
    assert.throws(() => fs.writeFileSync(path.join(target, 'g'), 'y'), /EROFS/);
    unmountAll(target);
    // Autoclear: with the mount gone the device is free again (no backing file).
    const sys = `/sys/block/${path.basename(device!)}/loop/backing_file`;
    assert.equal(fs.existsSync(sys), false, `${device} released`);
  } finally {
    unmountAll(path.join(dir, 'merged'));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
