#!/usr/bin/env bash
# Installs what is missing and builds (scripts/setup.sh), then runs containerd's shim
# conformance suite on the shim (scripts/shimtest.sh) and all our tests (unit + end-to-end).
# Env: SHIM_UNDER_TEST=ours|reference restricts the e2e suites to one shim;
#      SHIM_TEST_DEBUG=1 runs the private containerd at debug level.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: containerd's shim conformance suite (scripts/shimtest.sh)"
bash scripts/shimtest.sh
echo "test: npm test"
npm test
