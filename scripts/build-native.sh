#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the native addon from source against the running Node's own headers (never a download).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(node -p "require('path').resolve(process.execPath, '..', '..')")
if [ -f "$prefix/include/node/node_api.h" ]; then
  exec node_modules/.bin/node-gyp rebuild --directory native --nodedir="$prefix"
fi
exec node_modules/.bin/node-gyp rebuild --directory native
