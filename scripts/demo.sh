#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds everything, then runs two busybox containers through a private containerd with the
# TypeScript shim (bin/containerd-shim-runc-v2), printing their output, and tears it all down.
# SHIM_UNDER_TEST=reference runs the same demo with containerd's own shim.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/test/support/demo.js
