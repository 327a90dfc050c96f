#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The native sources compiled with every warning an error (-Wall -Wextra -Werror), as a check:
# the install build (binding.gyp) warns but does not fail, so a newer compiler's new warning can
# never break an operator's install. Uses the Node headers node-gyp builds against.
set -euo pipefail
cd "$(dirname "$0")/.."
nodedir=$(npm config get nodedir 2>/dev/null || true)
[ -n "$nodedir" ] && [ "$nodedir" != undefined ] || nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
napi=$(node -p "require('node-addon-api').include_dir")
defs=(-DNAPI_VERSION=8 -DNODE_ADDON_API_CPP_EXCEPTIONS -DNODE_ADDON_API_CPP_EXCEPTIONS_ALL -D_GNU_SOURCE)
for f in native/src/*.cc; do
  g++ -std=c++17 -fexceptions -fsyntax-only -Wall -Wextra -Werror -Wno-unused-parameter "${defs[@]}" \
    -I"$nodedir/include/node" -I"$napi" "$f"
done
gcc -std=gnu11 -fsyntax-only -Wall -Wextra -Werror native/launcher/launcher.c
echo "native: no warnings ($(ls native/src/*.cc | wc -l) C++ files, the launcher)"
