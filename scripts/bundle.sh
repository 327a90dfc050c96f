#!/usr/bin/env bash
# Bundles the compiled shim into a few ES modules (dist/shim/): one entry plus one chunk per
# mode (start, delete, the daemon), so each run loads only what it needs and Node resolves
# and compiles far fewer files (the load time of the daemon drops by about two thirds).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist/shim
node_modules/.bin/esbuild dist/src/shim/main.js --bundle --splitting --format=esm --platform=node \
  --target=node20 --outdir=dist/shim --log-level=warning --minify-whitespace --minify-syntax --legal-comments=none \
  --banner:js="import { createRequire as __shimCreateRequire } from 'node:module'; const require = __shimCreateRequire(import.meta.url);"
