#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Generates TypeScript codecs from proto/ (our own .proto files) into src/gen/ at build time.
set -euo pipefail
cd "$(dirname "$0")/../proto"
rm -rf ../src/gen
# The shim's protos (everything but cri/).
../node_modules/.bin/buf generate --template buf.gen.yaml --exclude-path cri .
# The CRI test client (runtime.v1 with grpc-js clients) into src/gen/cri/; tests only.
../node_modules/.bin/buf generate --template buf.gen.cri.yaml --path cri .
# Version facts for `-v`.
rev=$(git -C .. rev-parse HEAD 2>/dev/null || echo unknown)
ver=$(node -p "require('../package.json').version")
printf 'export const VERSION = %s;\nexport const REVISION = %s;\n' "'$ver'" "'$rev'" > ../src/gen/version.ts
# The launcher's copy of the standby pool's constants (src/pool/constants.ts).
node ../scripts/gen-pool-header.mjs
