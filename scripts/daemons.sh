#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Idempotent install of the extra containerd daemons the cross-daemon end-to-end lane
# (test/e2e/daemons.test.ts, and any suite run with SHIM_DAEMON=1.7|2.1|2.3) starts side by side
# with Debian 12's containerd 1.6.20. Run as root. Each daemon goes into a private prefix and is
# never installed system-wide; it brings its own Go shim (<prefix>/bin/containerd-shim-runc-v2),
# the "reference" shim for that daemon. Every daemon keeps using Debian 12's runc (1.1.5):
# Debian unstable's runc needs a newer glibc than Debian 12 has.
#
#   1.7  Debian 13 ("trixie") `containerd` package   -> $PREFIX/containerd-1.7
#   2.1  Debian unstable ("sid") `containerd` package -> $PREFIX/containerd-2.1
#   2.3  a containerd 2.3 release tarball              -> $PREFIX/containerd-2.3
#        ($SHIM_CONTAINERD23_TARBALL, else ../shared/containerd/containerd-2.3.*-linux-amd64.tar.xz
#        beside the checkout; its sha256 is checked against SHA256SUMS beside it)
#
# The Debian packages come through apt: the suites trixie and sid are added (one .sources file,
# the Debian mirror URI read from this machine's own apt sources) with pin priority 1, so nothing
# on the system is ever upgraded from them; `apt-get update` refreshes only those two suites, and
# `apt-get download` + `dpkg-deb -x` unpack the package without installing it. The only
# system-wide changes are apt's lists and these two files:
#   /etc/apt/sources.list.d/shim-test-daemons.sources
#   /etc/apt/preferences.d/shim-test-daemons
#
# Env: SHIM_DAEMONS_PREFIX (default /opt/shim-test; test/support/daemons.ts reads the same),
#      SHIM_DAEMONS="1.7 2.1 2.3" (which ones), SHIM_DAEMONS_REFRESH=1 (re-download even if present).
# A daemon that cannot be had is reported and skipped (exit status 0); the test lane then skips
# that daemon with the reason.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
PREFIX="${SHIM_DAEMONS_PREFIX:-/opt/shim-test}"
WANT="${SHIM_DAEMONS:-1.7 2.1 2.3}"
SOURCES_FILE=/etc/apt/sources.list.d/shim-test-daemons.sources
PIN_FILE=/etc/apt/preferences.d/shim-test-daemons

say() { echo "daemons: $*"; }
warn() { echo "daemons: WARNING: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "daemons: must run as root (apt lists, /opt)" >&2
  exit 1
fi

mkdir -p "$PREFIX"
failed=()

# ---------------------------------------------------------------------------------------------
# The Debian mirror this machine already uses: the URI of the apt source that serves this
# release's main suite (not -security, not third-party), from one-line or deb822 sources.
debian_mirror() {
  local codename
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  local f
  # One-line format: deb [opts] URI SUITE COMPONENTS...
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v cn="$codename" '
      /^[[:space:]]*deb[[:space:]]/ {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == cn) { print $i; exit }
      }' "$f"
  done | head -n1 | grep . && return 0
  # deb822 format: a stanza with Types: deb, Suites: <codename> ..., URIs: <uri>
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    [ "$f" = "$SOURCES_FILE" ] && continue
    awk -v cn="$codename" '
      function flush() { if (deb && hit && uri != "") { print uri; found = 1; exit } deb = 0; hit = 0; uri = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "types:"  { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == cn) hit = 1 }
      tolower($1) == "uris:"   { uri = $2 }
      END { if (!found) flush() }' "$f"
  done | head -n1 | grep . && return 0
  return 1
}

apt_ready=0
apt_prepare() {
  [ "$apt_ready" = 1 ] && return 0
  local mirror
  if ! mirror="$(debian_mirror)"; then
    warn "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/"
    return 1
  fi
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  local want
  want="$(printf '%s\n' \
    '# Added by scripts/daemons.sh (containerd-shim-runc-v2-ts test lane): containerd 1.7 and 2.x' \
    '# packages are downloaded from these suites and unpacked into a private prefix, never installed.' \
    'Types: deb' "URIs: $mirror" 'Suites: trixie sid' 'Components: main' "Signed-By: $keyring")"
  if [ ! -f "$SOURCES_FILE" ] || [ "$(cat "$SOURCES_FILE")" != "$want" ]; then
    say "adding trixie and sid ($mirror) to apt: $SOURCES_FILE"
    printf '%s\n' "$want" > "$SOURCES_FILE"
  fi
  # Pin priority 1: never chosen over an installed or bookworm version (apt_preferences(5)).
  want="$(printf '%s\n' \
    '# Added by scripts/daemons.sh: nothing is installed or upgraded from these suites.' \
    'Package: *' 'Pin: release n=trixie' 'Pin-Priority: 1' '' \
    'Package: *' 'Pin: release n=sid' 'Pin-Priority: 1')"
  if [ ! -f "$PIN_FILE" ] || [ "$(cat "$PIN_FILE")" != "$want" ]; then
    say "pinning trixie and sid to priority 1: $PIN_FILE"
    printf '%s\n' "$want" > "$PIN_FILE"
  fi
  # Refresh only these two suites; keep every other list as it is.
  say "apt-get update (trixie, sid only)"
  if ! apt-get update -q -o Dir::Etc::sourcelist="$SOURCES_FILE" -o Dir::Etc::sourceparts=- \
      -o APT::Get::List-Cleanup=0; then
    warn "apt-get update for trixie/sid failed"
    return 1
  fi
  apt_ready=1
}

# Marks a prefix complete: a stamp with what was unpacked (checked for idempotency).
stamp_ok() { [ -f "$1/.stamp" ] && [ -x "$1/bin/containerd" ] && [ -x "$1/bin/ctr" ] && [ -x "$1/bin/containerd-shim-runc-v2" ]; }

install_deb() { # <lane> <suite>
  local lane=$1 suite=$2 dest="$PREFIX/containerd-$1"
  if stamp_ok "$dest" && [ "${SHIM_DAEMONS_REFRESH:-0}" != 1 ]; then
    say "$lane: present ($(cat "$dest/.stamp"))"
    return 0
  fi
  apt_prepare || return 1
  local work
  work="$(mktemp -d /tmp/shim-daemons-XXXXXX)"
  # apt downloads as the _apt user when it can write there.
  if id _apt >/dev/null 2>&1; then chown _apt "$work"; else chmod 755 "$work"; fi
  if ! (cd "$work" && apt-get download -q "containerd/$suite"); then
    warn "$lane: apt-get download containerd/$suite failed"
    rm -rf "$work"
    return 1
  fi
  local deb
  deb="$(ls "$work"/containerd_*.deb | head -n1)"
  local version
  version="$(dpkg-deb -f "$deb" Version)"
  dpkg-deb -x "$deb" "$work/root"
  rm -rf "$dest.new"
  mkdir -p "$dest.new/bin"
  for b in containerd ctr containerd-shim-runc-v2; do
    if [ ! -x "$work/root/usr/bin/$b" ]; then
      warn "$lane: $deb has no usr/bin/$b"
      rm -rf "$work" "$dest.new"
      return 1
    fi
    cp -a "$work/root/usr/bin/$b" "$dest.new/bin/"
  done
  echo "debian containerd $version ($suite)" > "$dest.new/.stamp"
  rm -rf "$dest"
  mv "$dest.new" "$dest"
  rm -rf "$work"
  local got
  got="$("$dest/bin/containerd" --version 2>&1 || true)"
  say "$lane: unpacked containerd $version from $suite into $dest: $got"
  case "$got" in
    *" $lane."* | *" v$lane."*) ;;
    *) warn "$lane: $suite's containerd is not $lane.x ($got); the lane is named $lane regardless" ;;
  esac
}

install_tarball() {
  local lane=2.3 dest="$PREFIX/containerd-2.3" tarball sums
  if [ -n "${SHIM_CONTAINERD23_TARBALL:-}" ]; then
    tarball="$SHIM_CONTAINERD23_TARBALL"
  else
    tarball="$(ls -1 "$REPO"/../shared/containerd/containerd-2.3.*-linux-amd64.tar.xz 2>/dev/null | sort -V | tail -n1 || true)"
  fi
  if [ -z "$tarball" ] || [ ! -f "$tarball" ]; then
    warn "2.3: SKIPPED: no containerd 2.3 tarball (set SHIM_CONTAINERD23_TARBALL, or put one in ../shared/containerd/)"
    return 1
  fi
  local sum
  sum="$(sha256sum "$tarball" | cut -d' ' -f1)"
  if stamp_ok "$dest" && grep -q "$sum" "$dest/.stamp" && [ "${SHIM_DAEMONS_REFRESH:-0}" != 1 ]; then
    say "2.3: present ($(cat "$dest/.stamp"))"
    return 0
  fi
  sums="$(dirname "$tarball")/SHA256SUMS"
  if [ -f "$sums" ]; then
    local expected
    expected="$(awk -v f="$(basename "$tarball")" '$2 == f || $2 == "*" f { print $1 }' "$sums")"
    if [ -z "$expected" ]; then
      warn "2.3: $(basename "$tarball") is not listed in $sums"
      return 1
    fi
    if [ "$expected" != "$sum" ]; then
      warn "2.3: sha256 mismatch for $tarball: $sum, SHA256SUMS says $expected"
      return 1
    fi
    say "2.3: sha256 verified ($sum)"
  elif [ -n "${SHIM_CONTAINERD23_TARBALL:-}" ]; then
    warn "2.3: no SHA256SUMS beside $tarball: using it unverified (given by SHIM_CONTAINERD23_TARBALL)"
  else
    warn "2.3: no SHA256SUMS beside $tarball"
    return 1
  fi
  rm -rf "$dest.new"
  mkdir -p "$dest.new"
  tar -C "$dest.new" -xJf "$tarball"
  echo "tarball $(basename "$tarball") sha256 $sum" > "$dest.new/.stamp"
  if ! stamp_ok "$dest.new"; then
    warn "2.3: $tarball lacks bin/containerd, bin/ctr or bin/containerd-shim-runc-v2"
    rm -rf "$dest.new"
    return 1
  fi
  rm -rf "$dest"
  mv "$dest.new" "$dest"
  say "2.3: unpacked $(basename "$tarball") into $dest: $("$dest/bin/containerd" --version 2>&1 || true)"
}

for lane in $WANT; do
  case "$lane" in
    1.7) install_deb 1.7 trixie || failed+=(1.7) ;;
    2.1) install_deb 2.1 sid || failed+=(2.1) ;;
    2.3) install_tarball || failed+=(2.3) ;;
    1.6) say "1.6: Debian 12's containerd at /usr/bin (scripts/setup.sh installs it)" ;;
    *) warn "unknown daemon $lane (expected 1.7, 2.1 or 2.3)"; failed+=("$lane") ;;
  esac
done

if [ "${#failed[@]}" -gt 0 ]; then
  warn "not available: ${failed[*]} (their lanes will skip)"
fi
exit 0
