// SPDX-License-Identifier: Apache-2.0
// What the daemon does with an error nothing caught. An uncaught exception means a state the code
// did not foresee, in a process that holds every container it serves: it logs the stack and
// exits with status 2, as a Go shim's panic does, so containerd sees the shim gone and runs
// `delete` (the containers are stopped and cleaned up, not left half-managed). A rejected
// promise nobody awaited is logged with its stack and the daemon goes on: its caller is already
// gone, so nothing is waiting on a state it could have left behind.
import type { Fields } from '../log/logger.js';

export const PANIC_STATUS = 2;

/** Where the policy writes (a daemon's logger, or all of a shared daemon's). */
export interface CrashLog {
  fatal(fields: Fields, msg: string): void;
  error(fields: Fields, msg: string): void;
}

export function installCrashPolicy(log: CrashLog, exit: (code: number) => void = (c) => process.exit(c), proc: NodeJS.Process = process): void {
  proc.on('uncaughtException', (err: Error) => {
    log.fatal({ err }, 'uncaught exception: the shim exits, containerd will clean up its containers');
    exit(PANIC_STATUS);
  });
  proc.on('unhandledRejection', (reason: unknown) => {
    log.error({ err: reason instanceof Error ? reason : String(reason) }, 'unhandled rejection');
  });
}
