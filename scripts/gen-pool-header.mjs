// SPDX-License-Identifier: Apache-2.0
// Writes native/launcher/gen/pool_constants.h from src/pool/constants.ts: one definition of
// each constant the C launcher shares with the TypeScript side (run by `npm run gen`).
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const src = fs.readFileSync(path.join(root, 'src/pool/constants.ts'), 'utf8');
const lines = [];
for (const m of src.matchAll(/^export const ([A-Z][A-Z0-9_]*) = (.*);$/gm)) {
  const [, name, value] = m;
  if (/^\d+$/.test(value)) lines.push(`#define POOL_${name} ${value}`);
  else if (/^'[^'\\"]*'$/.test(value)) lines.push(`#define POOL_${name} "${value.slice(1, -1)}"`);
  else throw new Error(`src/pool/constants.ts: ${name} must be a number or a plain string literal`);
}
const declared = [...src.matchAll(/^export /gm)].length;
if (lines.length === 0 || lines.length !== declared) throw new Error(`src/pool/constants.ts: ${declared} exports, ${lines.length} constants understood`);
const out = path.join(root, 'native/launcher/gen/pool_constants.h');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, `/* Generated from src/pool/constants.ts by scripts/gen-pool-header.mjs: do not edit. */\n#ifndef POOL_CONSTANTS_H\n#define POOL_CONSTANTS_H\n${lines.join('\n')}\n#endif\n`);
