#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Bundles the compiled shim into a few ES modules (dist/shim/): one entry plus one chunk per
# mode (start, delete, the daemon), so each run loads only what it needs and Node resolves
# and compiles far fewer files (the load time of the daemon drops by about two thirds).
# Then writes the installable binary, dist/bin/containerd-shim-runc-v2: the wrapper with this
# checkout's absolute path built in, so that a copy of it works from any path and under any
# name (containerd's runtime_path, `ctr run --runtime /abs/path`, containerd-shim-runc-tsv2 on
# PATH). bin/containerd-shim-runc-v2 finds the checkout from its own path instead.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist/shim
node_modules/.bin/esbuild dist/src/shim/main.js --bundle --splitting --format=esm --platform=node \
  --target=node20 --outdir=dist/shim --log-level=warning --minify-whitespace --minify-syntax --legal-comments=none \
  --banner:js="import { createRequire as __shimCreateRequire } from 'node:module'; const require = __shimCreateRequire(import.meta.url);"

root=$(pwd -P)
# The root as one single-quoted shell word ('\'' for each quote in it).
quoted="'${root//\'/\'\\\'\'}'"
mkdir -p dist/bin
tmp=$(mktemp dist/bin/.containerd-shim-runc-v2.XXXXXX)
cat >"$tmp" <<WRAPPER
#!/bin/sh
# containerd-shim-runc-v2 (runtime io.containerd.runc.v2), written by scripts/bundle.sh for the
# build in the directory below. Copy or link it anywhere, under any name; rebuild if that
# directory moves. See bin/containerd-shim-runc-v2.
root=$quoted
export SHIM_ARGV0="\$0"
launcher=\$root/native/build/Release/shim-launcher
[ -x "\$launcher" ] && exec "\$launcher" "\$root/dist/shim/main.js" "\$@"
exec "\${SHIM_NODE:-node}" --no-warnings "\$root/dist/shim/main.js" "\$@"
WRAPPER
chmod 755 "$tmp"
mv -f "$tmp" dist/bin/containerd-shim-runc-v2
