#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Idempotent setup for a fresh Debian 12 machine (run as root): installs the system packages the
# shim and its end-to-end tests need (only those missing; `apt-get update` at most once), then
# the npm dependencies, then builds (protobuf codegen, native addon, TypeScript -> dist/).
# Starts nothing: no containerd, no services.
set -euo pipefail

cd "$(dirname "$0")/.."

# ---------------------------------------------------------------------------------------------
# System packages (Debian). Add to this list when a test needs more.
APT_PACKAGES=(
  containerd        # containerd 1.6.20, ctr, and the reference shim /usr/bin/containerd-shim-runc-v2
  runc              # the OCI runtime both shims drive
  busybox-static    # /bin/busybox: the test images' only binary
  criu              # checkpoint/restore (criu 3.17.1 fails `criu check` on this kernel: tests skip)
  containernetworking-plugins # CNI plugins for the CRI bridge-network pod test
  util-linux        # script(1) gives ctr a terminal in the tty tests
  slirp4netns       # needed by containerd's shim conformance suite
)
# Toolchain for the native addon (node-gyp); normally present on this kind of machine.
BUILD_PACKAGES=(python3 make g++)

is_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for entry in "${APT_PACKAGES[@]}" "${BUILD_PACKAGES[@]}"; do
  is_installed "$entry" || missing+=("$entry")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages (${missing[*]}) and not root; install them first" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep package scripts from starting services (e.g. the system containerd) while installing.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  cleanup_policy() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
  trap cleanup_policy EXIT
  apt-get update -q
  apt-get install -y -q -o Dpkg::Use-Pty=0 "${missing[@]}"
  cleanup_policy
  trap - EXIT
else
  echo "setup: system packages present (${APT_PACKAGES[*]})"
fi

for cmd in node npm containerd ctr runc /usr/bin/containerd-shim-runc-v2 /bin/busybox tar; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "setup: $cmd not found after install" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# npm dependencies: `npm ci` (or `npm install` without a lockfile), skipped when node_modules
# was already installed from the same package.json + lockfile.
stamp=node_modules/.setup-stamp
want="$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1) node-$(node --version)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: node_modules up to date"
else
  if [ -f package-lock.json ]; then
    echo "setup: npm ci"
    npm ci --no-audit --no-fund
  else
    echo "setup: npm install (no package-lock.json)"
    npm install --no-audit --no-fund
  fi
  echo "$want" > "$stamp"
fi

# ---------------------------------------------------------------------------------------------
# The other containerd daemons the cross-daemon lane runs (1.7, 2.1, 2.3) into /opt/shim-test;
# idempotent, and a daemon that cannot be had is reported and its lane skips.
if [ "$(id -u)" -eq 0 ] && [ "${SHIM_SKIP_DAEMONS:-0}" != 1 ]; then
  bash scripts/daemons.sh
fi

# ---------------------------------------------------------------------------------------------
echo "setup: npm run build"
npm run build
