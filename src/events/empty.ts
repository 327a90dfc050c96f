// SPDX-License-Identifier: Apache-2.0
// google.protobuf.Empty: no fields, encodes to zero bytes.
import { BinaryWriter } from '@bufbuild/protobuf/wire';

export type Empty = Record<string, never>;
export const Empty = {
  encode(_m: Empty, w: BinaryWriter = new BinaryWriter()): BinaryWriter { return w; },
  decode(_b: Uint8Array): Empty { return {}; },
};
