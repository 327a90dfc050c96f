// SPDX-License-Identifier: Apache-2.0
// containerd's identifier rules. Ids name files and directories (pid files, runc state), so a
// request must never be able to step outside its bundle with `..` or `/`.
import { TtrpcError, Code } from '../ttrpc/status.js';

const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const MAX_LENGTH = 76;

export function isValidIdentifier(s: string): boolean {
  return s.length > 0 && s.length <= MAX_LENGTH && IDENTIFIER.test(s);
}

export function validateId(kind: string, s: string): void {
  if (!isValidIdentifier(s)) {
    throw new TtrpcError(Code.InvalidArgument, `${kind} ${JSON.stringify(s)} is not a valid identifier: invalid argument`);
  }
}
