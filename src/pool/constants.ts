// SPDX-License-Identifier: Apache-2.0
// The standby pool's constants, shared with the C launcher: scripts/gen-pool-header.mjs turns
// each `export const` below into a #define in native/launcher/gen/pool_constants.h at build
// time, so both sides read one definition. Keep each on one line, a number or a string literal.
// The protocol they belong to: docs/standby-protocol.md.

/**
 * The Node flag the launcher runs every shim process with (bin/containerd-shim-runc-v2 does too).
 * Node's flags key a pool (key.ts): a standby runs jobs with the flags it booted with.
 */
export const NODE_FLAG = '--no-warnings';
/** Where the posts (the standbys' control sockets) live: containerd's shim socket directory. */
export const POST_DIR = '/run/containerd/s';
/** Standbys kept per pool: `start` takes one, the `delete` that follows a short container another. */
export const POOL_SIZE = 2;
/** Standbys on one machine, all pools together: a new pool beyond it boots none. */
export const MAX_STANDBYS = 6;
/** A sender waits this long for a standby's ACCEPT (it may be busy with another job). */
export const ACCEPT_TIMEOUT_MS = 3000;
/** The same for a process the launcher booted for one job: it must boot Node first. @public (the launcher's) */
export const DIRECT_ACCEPT_TIMEOUT_MS = 20000;
/** A standby waits this long for the offer on a new connection, and for COMMIT after ACCEPT. */
export const OFFER_TIMEOUT_MS = 500;
export const COMMIT_TIMEOUT_MS = 5000;
/** Protocol bytes (one each, after the offer): standby ACCEPT or REFUSE, sender COMMIT, standby RUNNING. */
export const MSG_ACCEPT = 65;
export const MSG_REFUSE = 78;
export const MSG_COMMIT = 67;
export const MSG_RUNNING = 82;
/** Largest offer message (JSON) a sender writes; the standby reads at most 4096 bytes of it. */
export const MAX_OFFER = 4000;
/**
 * Variables that never key a pool: the shell's own (the wrapper's /bin/sh exports PWD), what the
 * launcher and the spawner add for every daemon alike, the binary's own path (sent with each
 * job), and test-only fault injection. Comma-separated names.
 */
export const KEY_ENV_IGNORED = 'PWD,OLDPWD,SHLVL,_,SHIM_ARGV0,GOMAXPROCS,SHIM_SET_MALLOC_ARENA_MAX,SHIM_FAULT_SENDER,SHIM_FAULT_STANDBY,SHIM_FAULT_SHARED';
/**
 * Variables containerd sets for each daemon address and namespace (containerd v2.3.4
 * pkg/shim/util.go Command: TTRPC_ADDRESS, GRPC_ADDRESS, NAMESPACE). They are a job's input, like
 * its `-address` and `-namespace` flags: they travel in each offer, the standby takes them on
 * for the job, and they never key a pool, so one pool serves every containerd address and
 * namespace of the same environment. Comma-separated names.
 */
export const JOB_ENV = 'TTRPC_ADDRESS,GRPC_ADDRESS,NAMESPACE';
/**
 * Opt-in shared daemons (src/pool/shared.ts): slots per key, each held by a daemon with room;
 * the launcher offers a `start` job to them in order before the standby posts.
 */
export const SHARED_SLOTS = 4;
/**
 * Bytes of argument range a booted shim process gets, so that as a daemon it can show the Go
 * shim's command line (src/shim/identity.ts; sized in src/pool/spawn.ts withTitleRoom).
 */
export const TITLE_ROOM = 1024;
