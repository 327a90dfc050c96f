#!/usr/bin/env bash
# Generates TypeScript codecs from proto/ (our own .proto files) into src/gen/ at build time.
set -euo pipefail
cd "$(dirname "$0")/../proto"
rm -rf ../src/gen
../node_modules/.bin/buf generate --template buf.gen.yaml .
