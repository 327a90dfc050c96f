#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what is missing and builds (scripts/setup.sh), then runs containerd's shim
# conformance suite on the shim (scripts/shimtest.sh) and all our tests (unit + end-to-end).
# Env: SHIM_UNDER_TEST=ours|reference restricts the e2e suites to one shim;
#      SHIM_TEST_DEBUG=1 runs the private containerd at debug level.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: lint (ESLint type-checked, knip dead code, dpdm cycles, native -Werror)"
npm run lint
echo "test: install from the packed tarball: npm pack, npm install -g, a container, npm uninstall -g (scripts/install-test.sh)"
bash scripts/install-test.sh
echo "test: containerd's shim conformance suite (scripts/shimtest.sh)"
bash scripts/shimtest.sh
# Focused runs on other daemons (the cross-daemon lane, daemons.test.ts, runs inside npm test):
# a terminal's and the pipes' whole output at exit, and the opt-in shared daemons, through
# containerd 1.7 and 2.3.
for d in 1.7 2.3; do
  if [ -x "${SHIM_DAEMONS_PREFIX:-/opt/shim-test}/containerd-$d/bin/containerd" ]; then
    echo "test: tty and pipe output at exit through containerd $d (io-drain, focused)"
    SHIM_DAEMON=$d IO_DRAIN_RUNS=5 node --test --test-reporter=spec --test-concurrency=1 --test-name-pattern="tty|pipes" dist/test/e2e/io-drain.test.js
    echo "test: opt-in shared daemons through containerd $d (shared.test, focused)"
    SHIM_DAEMON=$d node --test --test-reporter=spec --test-concurrency=1 dist/test/e2e/shared.test.js
  else
    echo "test: SKIPPED the io-drain and shared-daemon runs on containerd $d: not installed (scripts/daemons.sh)"
  fi
done
# The cgroup v2 lane: a pure cgroup v2 qemu guest on this host's own root (these machines are
# cgroup v1 hybrid), running every cgroup-dependent check with both shims on containerd 1.6, then
# the 2.x subset (task API v3, BootstrapParams' shim_cgroup, 2.x CRI config) on containerd 2.3.
echo "test: cgroup v2 lane on containerd 1.6 (scripts/v2-lane.sh npm run test:v2)"
bash scripts/v2-lane.sh npm run test:v2
if [ -x "${SHIM_DAEMONS_PREFIX:-/opt/shim-test}/containerd-2.3/bin/containerd" ]; then
  echo "test: cgroup v2 lane on containerd 2.3 (SHIM_DAEMON=2.3 scripts/v2-lane.sh npm run test:v2, 2.x subset)"
  SHIM_DAEMON=2.3 bash scripts/v2-lane.sh npm run test:v2
else
  echo "test: SKIPPED the cgroup v2 lane on containerd 2.3: not installed (scripts/daemons.sh)"
fi
echo "test: npm test"
npm test
