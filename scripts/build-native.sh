#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the native addon and the launcher (native/binding.gyp) from source against the running
# Node's own headers (never a download). In a checkout `npm run build:native` runs it with the
# node-gyp of devDependencies. In an installed package (`npm install -g <tarball>`) the package's
# `install` script runs it with `--install`, and npm's own node-gyp builds (npm puts it on a
# lifecycle script's PATH); in a checkout `--install` (the `npm ci` of a developer) does nothing,
# since `npm run build` builds the native parts there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --install ] && [ -d src ]; then
  echo "build-native: a checkout (src/ present); \`npm run build\` builds the native parts"
  exit 0
fi
if [ -x node_modules/.bin/node-gyp ]; then gyp=(node_modules/.bin/node-gyp)
elif command -v node-gyp >/dev/null 2>&1; then gyp=(node-gyp)
elif [ -n "${npm_config_node_gyp:-}" ]; then gyp=(node "$npm_config_node_gyp")
else
  echo "build-native: no node-gyp (run it through npm, or \`npm ci\` in a checkout)" >&2
  exit 1
fi
args=(rebuild --directory native --jobs max)
prefix=$(node -p "require('path').resolve(process.execPath, '..', '..')")
[ -f "$prefix/include/node/node_api.h" ] && args+=(--nodedir="$prefix")
exec "${gyp[@]}" "${args[@]}"
