#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The operator's install, tested from the packed tarball rather than the checkout (scripts/test.sh
# runs it after setup's build): `npm pack`, then `npm install -g` of the tarball into a clean
# prefix, which builds the native addon and the launcher from source against the local Node's
# headers; then containers run through a private containerd that finds the shim on its PATH by
# the runtime name io.containerd.runc.v2, as a system containerd does (test/support/demo.ts with
# SHIM_BIN_DIR), which checks that the shim daemon serving a container is the installed one;
# then `npm uninstall -g`, after which the prefix must hold nothing of the package.
# Needs a build first (`npm run build`, or scripts/setup.sh) and root, as the demo does.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$(node -p "require('./package.json').name")
tmp=$(mktemp -d /tmp/shim-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "install-test: FAILED: $*" >&2; exit 1; }

echo "install-test: npm pack"
tarball=$tmp/$(npm pack --silent --pack-destination "$tmp" | tail -n 1)
[ -f "$tarball" ] || fail "npm pack wrote no tarball"
echo "install-test: $(basename "$tarball"): $(du -k "$tarball" | cut -f1) KiB, $(tar -tzf "$tarball" | wc -l) files"
tar -tzf "$tarball" | grep -q '^package/native/build/' && fail "the tarball ships a native build"

# npm 11 runs a dependency's install script only when allowed (today a warning, an error with
# --strict-allow-scripts, the default to come); a tarball is allowed by its absolute path. Its
# strict preflight needs <prefix>/lib/node_modules to exist. node-gyp's cache dir is redirected
# to show that no Node headers are downloaded.
mkdir -p "$prefix/lib/node_modules"
echo "install-test: npm install -g --prefix $prefix $(basename "$tarball")"
t0=$(date +%s%N)
XDG_CACHE_HOME=$tmp/cache npm install -g --prefix "$prefix" --allow-scripts="$tarball" --strict-allow-scripts \
  --no-audit --no-fund "$tarball"
echo "install-test: installed in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
pkg=$prefix/lib/node_modules/$name
bin=$prefix/bin/containerd-shim-runc-v2
[ -e "$tmp/cache/node-gyp" ] && fail "node-gyp downloaded Node headers into $tmp/cache/node-gyp"
[ -L "$bin" ] || fail "no $bin"
[ -x "$pkg/native/build/Release/shim-launcher" ] || fail "the launcher was not built in $pkg"
[ -f "$pkg/native/build/Release/shim_native.node" ] || fail "the addon was not built in $pkg"
[ "$(PATH="$prefix/bin:$PATH" command -v containerd-shim-runc-v2)" = "$bin" ] || fail "containerd-shim-runc-v2 on PATH is not $bin"
"$bin" -v | grep -q "Version:  $(node -p "require('./package.json').version")" || fail "$bin -v: $("$bin" -v 2>&1)"

echo "install-test: containers through a private containerd with $prefix/bin first on its PATH"
SHIM_BIN_DIR=$prefix/bin node dist/test/support/demo.js || fail "the demo with the installed shim"
# (the prefix goes in the environment, so that this scan's own command line does not match)
left=$(SCAN="$prefix/" node -e '
  const fs = require("fs");
  for (const p of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try { const a = fs.readFileSync(`/proc/${p}/cmdline`, "utf8"); if (a.includes(process.env.SCAN)) console.log(p, a.split("\0").join(" ")); } catch {}
  }')
[ -z "$left" ] || fail "processes still run from $prefix: $left"

echo "install-test: npm uninstall -g --prefix $prefix $name"
npm uninstall -g --prefix "$prefix" --no-audit --no-fund "$name"
rest=$(find "$prefix" -mindepth 1 ! -type d)
[ -z "$rest" ] || fail "left behind after uninstall: $rest"
[ ! -e "$pkg" ] || fail "left behind after uninstall: $pkg"
echo "install-test: ok (nothing of $name left in $prefix)"
