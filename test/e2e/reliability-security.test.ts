// SPDX-License-Identifier: Apache-2.0
// Reliability: security. Only a path socket (no abstract socket), created with restrictive
// permissions; peer credentials checked on every accepted connection (another uid, or another
// gid, is refused); container, exec ids and namespaces validated (no path traversal into other
// bundles or the state dir, in the Task API and in the `delete` action); no file the shim creates
// is world-writable, even under umask 000; nothing from a request reaches a shell.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync, execFileSync } from 'node:child_process';
import {
  ShimLab, figures, formatFigures, settle, socketInodes, unixSocketTable, standbysOf, crashLines, sleep, uniqueId, type LabShim,
} from '../support/reliability.js';
import { runShim, mountedUnder, repoRoot } from '../support/shimproc.js';
import * as T from '../../src/gen/containerd/task/v2/shim.js';
import { Options } from '../../src/gen/containerd/runc/v1/runc.js';
import { Code, encodeRequestFrame } from '../../src/ttrpc/index.js';

const TASK = 'containerd.task.v2.Task';
let lab: ShimLab;

before(async () => { lab = await ShimLab.create('relsec'); });
after(async () => { await lab.cleanup(); });

/** Connects to `socketPath` as uid/gid, sends one Connect request, reports what happened. */
function probeAs(socketPath: string, uid: number, gid: number, namespace: string): { connected?: boolean; error?: string; bytes?: number; timeout?: boolean } {
  const frame = encodeRequestFrame(1, TASK, 'Connect', T.ConnectRequest.encode({ id: 'x' }).finish(), 0n,
    [['containerd-namespace-ttrpc', namespace]]);
  const script = `
    const net = require('net');
    const [p, hex] = process.argv.slice(1);
    const out = {}; let bytes = 0;
    const s = net.connect(p);
    s.on('connect', () => { out.connected = true; s.write(Buffer.from(hex, 'hex')); });
    s.on('data', (d) => { bytes += d.length; s.end(); });
    s.on('error', (e) => { out.error = e.code; });
    s.on('close', () => { out.bytes = bytes; console.log(JSON.stringify(out)); process.exit(0); });
    setTimeout(() => { out.timeout = true; s.destroy(); }, 3000);`;
  const r = spawnSync(process.execPath, ['-e', script, socketPath, frame.toString('hex')], { uid, gid, cwd: '/', encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`probe as ${uid}:${gid} failed: ${r.error?.message ?? r.stderr}`);
  return JSON.parse(r.stdout.trim()) as { connected?: boolean; error?: string; bytes?: number; timeout?: boolean };
}

function runcOptions(o: Partial<Options>) {
  return { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from(Options.encode(Options.fromPartial(o)).finish()) };
}

function procAlive(pid: number): boolean {
  return fs.existsSync(`/proc/${pid}`);
}

/** Files (not following symlinks, not descending into mounts or `rootfs`) under `dir`. */
function walk(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    out.push(p);
    if (e.isDirectory() && e.name !== 'rootfs' && mountedUnder(p).length === 0) walk(p, out);
  }
  return out;
}

describe('reliability: security', () => {
  let shim: LabShim;
  const id = uniqueId('sec');

  before(async () => {
    const bundle = lab.bundle(id, { args: ['sleep', '100000'] });
    shim = await lab.startShim(id, bundle);
    await shim.client.create({ id, bundle, rootfs: lab.rootfs });
    await shim.client.start(id);
  });

  test('only a path socket, mode 0600 under a private directory; no abstract socket anywhere in the shim', { timeout: 30_000 }, async (t) => {
    const st = fs.statSync(shim.socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600, `socket mode ${(st.mode & 0o777).toString(8)}`);
    assert.equal(st.uid, process.geteuid!());
    assert.equal(path.dirname(shim.socket), '/run/containerd/s');
    const dirMode = fs.statSync('/run/containerd/s').mode & 0o777;
    assert.equal(dirMode & 0o077, 0, `/run/containerd/s is private (${dirMode.toString(8)})`);
    // Standby daemons (pre-booted for the next start) listen on their own posts once booted.
    await settle(() => standbysOf(lab.events.path), (l) => l.every((s) => fs.existsSync(s.post)), 15_000, 100);
    const table = unixSocketTable();
    const pids = [shim.pid, ...standbysOf(lab.events.path).map((s) => s.pid)];
    const named: string[] = [];
    for (const pid of pids) {
      for (const ino of socketInodes(pid)) {
        const p = table.get(ino) ?? '';
        assert.ok(!p.startsWith('@'), `process ${pid} holds an abstract socket ${p}`);
        if (p) named.push(p);
      }
    }
    assert.ok(named.includes(shim.socket), 'the daemon listens on its path socket');
    for (const s of standbysOf(lab.events.path).filter((x) => fs.existsSync(x.post))) {
      const m = fs.statSync(s.post).mode & 0o777;
      assert.equal(m & 0o077, 0, `standby post ${s.post} mode ${m.toString(8)}`);
    }
    t.diagnostic(`sockets: daemon + ${pids.length - 1} standby(s), ${named.length} named unix sockets, none abstract; ${shim.socket} mode ${(st.mode & 0o777).toString(8)}`);
  });

  test('peer credentials: another uid or gid is refused on accept, even when the socket file is reachable', { timeout: 60_000 }, async (t) => {
    // Reach the daemon's socket from a world-traversable place (a bind mount of the socket file).
    const pub = fs.mkdtempSync('/tmp/relsec-pub-');
    fs.chmodSync(pub, 0o755);
    const link = path.join(pub, 'sock');
    fs.writeFileSync(link, '');
    execFileSync('mount', ['--bind', shim.socket, link]);
    try {
      const closed = figures(shim.pid).fds;
      const asRoot = probeAs(link, 0, 0, lab.namespace);
      assert.equal(asRoot.connected, true);
      assert.ok((asRoot.bytes ?? 0) > 0, `root (the shim's uid) is answered: ${JSON.stringify(asRoot)}`);
      const byMode = probeAs(link, 65534, 65534, lab.namespace);
      assert.equal(byMode.error, 'EACCES', `the 0600 socket refuses another uid at connect: ${JSON.stringify(byMode)}`);
      fs.chmodSync(shim.socket, 0o666); // now only SO_PEERCRED stands in the way
      const otherUid = probeAs(link, 65534, 65534, lab.namespace);
      const otherGid = probeAs(link, 0, 65534, lab.namespace);
      fs.chmodSync(shim.socket, 0o600);
      for (const [who, r] of [['uid 65534', otherUid], ['uid 0 gid 65534', otherGid]] as const) {
        assert.equal(r.connected, true, `${who} reaches the socket`);
        assert.equal(r.bytes, 0, `${who} gets no answer: ${JSON.stringify(r)}`);
        assert.notEqual(r.timeout, true, `${who} is disconnected by the shim: ${JSON.stringify(r)}`);
      }
      // The same for a standby daemon's post (it runs start/delete jobs for the launcher).
      // The pool refills after the start this suite ran: wait for a standby on its post, and say
      // so (rather than pass without checking) when none comes.
      await settle(() => standbysOf(lab.events.path), (l) => l.some((s) => fs.existsSync(s.post)), 15_000, 100);
      const standby = standbysOf(lab.events.path).find((x) => fs.existsSync(x.post));
      assert.ok(standby || process.env.SHIM_STANDBY === '0', 'a standby daemon is up to be probed');
      let standbyNote = 'standby pool off (SHIM_STANDBY=0): not probed';
      if (standby) {
        const slink = path.join(pub, 'post');
        fs.writeFileSync(slink, '');
        execFileSync('mount', ['--bind', standby.post, slink]);
        try {
          fs.chmodSync(standby.post, 0o666);
          const r = probeAs(slink, 65534, 65534, lab.namespace);
          fs.chmodSync(standby.post, 0o600);
          assert.equal(r.connected, true);
          assert.equal(r.bytes, 0, `the standby answers no other uid: ${JSON.stringify(r)}`);
          assert.notEqual(r.timeout, true, `the standby disconnects another uid: ${JSON.stringify(r)}`);
          assert.ok(fs.existsSync(standby.post) && procAlive(standby.pid), 'the standby is still there');
          standbyNote = 'uid 65534 on a standby post: closed unanswered';
        } finally {
          try { fs.chmodSync(standby.post, 0o600); } catch { /* gone */ }
          spawnSync('umount', [slink]);
        }
      }
      const after = await settle(() => figures(shim.pid).fds, (n) => n === closed);
      assert.equal(after, closed, 'refused connections leave no fd behind');
      assert.equal((await shim.client.connect(id)).shimPid, shim.pid, 'the shim serves on');
      t.diagnostic(`peer credentials: root answered (${asRoot.bytes} bytes); uid 65534 -> ${byMode.error} on the 0600 socket; with the file opened to all: uid 65534 and gid 65534 connected and were closed unanswered; ${standbyNote}`);
    } finally {
      try { fs.chmodSync(shim.socket, 0o600); } catch { /* gone */ }
      spawnSync('umount', [link]);
      fs.rmSync(pub, { recursive: true, force: true });
    }
  });

  test('container and exec ids are validated: no traversal into other bundles or the state dir', { timeout: 60_000 }, async (t) => {
    // A victim bundle next to ours, and state one level up: nothing may touch them.
    const victim = uniqueId('victim');
    const vb = lab.bundle(victim, { args: ['sleep', '100000'] });
    await shim.client.create({ id: victim, bundle: vb, rootfs: lab.rootfs });
    const before = new Map(walk(path.join(lab.tmp, lab.namespace)).map((p) => [p, fs.lstatSync(p).mtimeMs]));
    const runcBefore = fs.readdirSync(lab.runcRoot()).sort();
    const bad = [`../${victim}`, `../${lab.namespace}/${victim}`, '..', '.', '', 'a/b', '/abs', 'x'.repeat(77), 'a b', 'a\nb', '-x', 'x-', 'a..b', 'é', '../../../../etc/passwd'];
    let refused = 0;
    for (const b of bad) {
      await assert.rejects(shim.client.create({ id: b, bundle: vb, rootfs: lab.rootfs }),
        (e: { code: Code }) => e.code === Code.InvalidArgument, `Create ${JSON.stringify(b)}`);
      await assert.rejects(shim.client.exec({ id, execId: b, spec: ShimLab.execSpec(['true']) }),
        (e: { code: Code }) => e.code === Code.InvalidArgument, `Exec ${JSON.stringify(b)}`);
      const calls = [() => shim.client.state(b), () => shim.client.kill(b, 9), () => shim.client.delete(b)];
      // (An empty exec id names the init process: not a bad id there.)
      if (b) calls.push(() => shim.client.state(id, b), () => shim.client.delete(id, b), () => shim.client.kill(id, 9, { execId: b }));
      for (const call of calls) {
        await assert.rejects(call(), (e: { code: Code }) => e.code === Code.NotFound || e.code === Code.InvalidArgument);
      }
      refused += 2 + calls.length;
    }
    const afterFiles = walk(path.join(lab.tmp, lab.namespace));
    const changed = afterFiles.filter((p) => !before.has(p) || before.get(p) !== fs.lstatSync(p).mtimeMs)
      .filter((p) => !p.endsWith('/log') && !p.endsWith('log.json'));
    assert.deepEqual(changed, [], 'no file created or changed in any bundle');
    assert.deepEqual(fs.readdirSync(lab.runcRoot()).sort(), runcBefore, 'runc state untouched');

    // The `delete` action takes -id and -namespace from its command line: it must not be steered
    // into the victim's bundle (whose rootfs is mounted) or another namespace's runc state.
    const probes: [string, string][] = [['-id', `../${victim}`], ['-id', `../${lab.namespace}/${victim}`], ['-namespace', '../runc']];
    const outcomes: string[] = [];
    for (const [flag, value] of probes) {
      const args = ['-namespace', lab.namespace, '-address', lab.grpcAddress, '-publish-binary', '/usr/bin/containerd', '-id', id, '-bundle', shim.bundle, 'delete'];
      args[args.indexOf(flag) + 1] = value;
      const d = await runShim(args, { cwd: shim.bundle, env: lab.env });
      outcomes.push(`${flag} ${value} -> exit ${d.code}: ${d.stderr.trim()}`);
      assert.equal(d.code, 1, `delete ${flag} ${value} is refused: ${d.stderr}`);
      assert.match(d.stderr, /invalid|not a valid/i);
    }
    assert.deepEqual(mountedUnder(path.join(vb, 'rootfs')), [path.join(vb, 'rootfs')], "the victim's rootfs is still mounted");
    assert.ok(fs.existsSync(path.join(lab.runcRoot(), victim)), "the victim's runc state is intact");
    assert.ok(fs.existsSync(path.join(lab.runcRoot(), id)), 'ours too');
    await shim.client.kill(victim, 9);
    await shim.client.wait(victim);
    await shim.client.delete(victim);
    t.diagnostic(`ids: ${bad.length} bad ids, ${refused} calls refused (InvalidArgument/NotFound), no file touched; delete action: ${outcomes.join('; ')}`);
  });

  test('no file the shim creates is world-writable, even when started under umask 000', { timeout: 60_000 }, async (t) => {
    const uid = uniqueId('umask0');
    const bundle = lab.bundle(uid, { args: ['sh', '-c', 'echo hi; exec sleep 100000'] });
    fs.chmodSync(bundle, 0o700);
    // Without a standby daemon, `start` and the daemon it spawns both run under umask 000.
    const s2 = await lab.startShim(uid, bundle, { umask: 0, env: { SHIM_STANDBY: '0' } });
    const logs = path.join(lab.tmp, 'logs-umask0');
    await s2.client.create({ id: uid, bundle, rootfs: lab.rootfs, stdout: `file://${logs}/out.log` });
    await s2.client.start(uid);
    await s2.client.exec({ id: uid, execId: 'e1', spec: ShimLab.execSpec(['sleep', '100000']), stdout: `file://${logs}/e1.log` });
    await s2.client.start(uid, 'e1');
    // Every file is there once the init's output has reached its log and the exec's log exists.
    const hasHi = () => { try { return fs.readFileSync(path.join(logs, 'out.log'), 'utf8').includes('hi'); } catch { return false; } };
    await settle(() => hasHi() && fs.existsSync(path.join(logs, 'e1.log')), (ok) => ok, 10_000);
    const files = [...walk(bundle), ...walk(logs), s2.socket];
    const report = files.map((f) => {
      const st = fs.lstatSync(f);
      return { f, mode: st.mode & 0o7777, link: st.isSymbolicLink(), fifo: st.isFIFO() };
    });
    // The log fifo and config.json are containerd's (made by the test here), not the shim's.
    const mine = report.filter((r) => !r.link && !r.f.endsWith('/log') && !r.f.endsWith('/config.json'));
    const writable = mine.filter((r) => r.mode & 0o002);
    t.diagnostic(`files under umask 000: ${mine.map((r) => `${path.basename(r.f)}=${r.mode.toString(8)}`).join(' ')}`);
    assert.deepEqual(writable.map((r) => `${r.f} ${r.mode.toString(8)}`), [], 'nothing world-writable');
    await s2.client.kill(uid, 9);
    await s2.client.wait(uid);
    await s2.client.delete(uid, 'e1');
    await s2.client.delete(uid);
    await s2.client.shutdown(uid).catch(() => undefined);
  });

  test('nothing from a request reaches a shell', { timeout: 60_000 }, async (t) => {
    const marks = fs.mkdtempSync(path.join(lab.tmp, 'marks-'));
    const m = (n: number) => path.join(marks, `m${n}`);
    const sub = (n: number) => `$(touch ${m(n)})`;
    const semi = (n: number) => `;touch ${m(n)};`;
    const bt = (n: number) => `\`touch ${m(n)}\``;
    const hostileId = uniqueId('shellx');
    const hb = lab.bundle(hostileId, { args: ['sleep', '100000'] });
    const b = (n: string) => lab.bundle(n, { args: ['sleep', '100000'] });
    const attempts: (() => Promise<unknown>)[] = [
      () => shim.client.create({ id: uniqueId('shell1'), bundle: `${b(uniqueId('shell1'))}${sub(1)}`, rootfs: lab.rootfs }),
      () => shim.client.create({ id: uniqueId('shell2'), bundle: b(uniqueId('shell2')), rootfs: lab.rootfs, stdout: `/tmp/x${semi(2)}` }),
      () => shim.client.create({ id: uniqueId('shell3'), bundle: b(uniqueId('shell3')), rootfs: lab.rootfs, options: runcOptions({ binaryName: `runc${semi(3)}` }) }),
      () => shim.client.create({ id: uniqueId('shell4'), bundle: b(uniqueId('shell4')), rootfs: lab.rootfs, options: runcOptions({ root: `/tmp/${sub(4)}`, binaryName: `/bin/true ${bt(5)}` }) }),
      () => shim.client.create({ id: uniqueId('shell6'), bundle: b(uniqueId('shell6')), rootfs: [{ type: `bind${semi(6)}`, source: `${lab.rootfsSrc}${sub(7)}`, target: '', options: [`ro${semi(8)}`] }] }),
    ];
    let failed = 0;
    for (const a of attempts) await a().catch(() => { failed++; });
    assert.equal(failed, attempts.length, 'each hostile Create fails');
    // A live container, then hostile strings in the calls that reach runc.
    await shim.client.create({ id: hostileId, bundle: hb, rootfs: lab.rootfs, options: runcOptions({ criuPath: `/bin/criu${semi(9)}` }) });
    await shim.client.start(hostileId).catch(() => undefined);
    await shim.client.update(hostileId, { cpu: { shares: 512 }, note: `${semi(10)}${sub(11)}` }).catch(() => undefined);
    await shim.client.client.call(TASK, 'Checkpoint', T.CheckpointTaskRequest.encode(T.CheckpointTaskRequest.fromPartial({ id: hostileId, path: `${lab.tmp}/ck${semi(12)}` })).finish(),
      { metadata: { 'containerd-namespace-ttrpc': lab.namespace } }).catch(() => undefined);
    await shim.client.exec({ id: hostileId, execId: 'e', spec: ShimLab.execSpec(['/bin/true', sub(13)]), stdout: `${lab.tmp}/o${sub(14)}` }).catch(() => undefined);
    await shim.client.start(hostileId, 'e').catch(() => undefined);
    await shim.client.kill(hostileId, 9).catch(() => undefined);
    await shim.client.wait(hostileId).catch(() => undefined);
    await shim.client.delete(hostileId).catch(() => undefined);
    await sleep(300);
    assert.deepEqual(fs.readdirSync(marks), [], 'no marker file was created');
    // And the source: no shell anywhere in the shim's process spawning.
    const src = path.join(repoRoot(), 'src');
    const offenders: string[] = [];
    const scan = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) { if (e.name !== 'gen') scan(p); continue; }
        if (!p.endsWith('.ts')) continue;
        const text = fs.readFileSync(p, 'utf8');
        for (const re of [/shell\s*:\s*true/, /\bexecSync\s*\(/, /\bexec\s*\(\s*['"`]/, /['"`]\/bin\/(ba)?sh['"`]/, /['"`]sh['"`]\s*,\s*\[\s*['"`]-c/]) {
          if (re.test(text)) offenders.push(`${path.relative(src, p)}: ${re}`);
        }
      }
    };
    scan(src);
    assert.deepEqual(offenders, [], 'no shell in src/');
    assert.deepEqual(crashLines(shim.log.text), []);
    t.diagnostic(`shell: 14 hostile strings ($(...), ;, backticks) in bundle, stdout, binary_name, root, criu_path, mounts, resources, checkpoint path, exec args: 0 markers; src/ has no shell:true/execSync/sh -c`);
  });

  after(async () => {
    await shim.client.kill(id, 9).catch(() => undefined);
    await shim.client.wait(id).catch(() => undefined);
    await shim.client.delete(id).catch(() => undefined);
    void formatFigures;
  });
});
