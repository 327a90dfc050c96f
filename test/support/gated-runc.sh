#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A stand-in for runc that can hold one call of a chosen sub-command at a gate, for the
# interleaving suite (test/e2e/interleave.test.ts). Like test/support/fake-runc.sh, a shim uses
# it through Create's `containerd.runc.v1.Options` `binary_name`, as a symlink <dir>/runc to this
# script (a shim's environment is not a reliable channel); it is driven by files in <dir>:
#   * <dir>/gate-<sub>: the next `runc <sub>` takes the gate (renames it to <dir>/held-<sub>, so
#     exactly one call is held even when several race for it), creates <dir>/entered-<sub>, and
#     waits until <dir>/release-<sub> exists, then goes on. A held call gives up after
#     <dir>/gate-seconds seconds (default 60), so a failed test cannot leave it behind for long.
#     If the gate file says `fail`, the held call, once released, fails as below (that call
#     alone: others of the same sub-command that run meanwhile or later pass).
#   * everything else is test/support/fake-runc.sh's, run with FAKE_RUNC_DIR=<dir>: the record
#     of every call in <dir>/calls/, <dir>/fail-<sub> making that sub-command fail the way runc
#     fails (an error line in its --log JSON file, the message on stderr, exit status 1), and
#     passing the call on to the real runc. A gated call that is released then fails, if asked.
set -u

# (Few forks: runc is run several times per RPC, on busy machines.)
dir=${0%/*}
unset FAKE_RUNC_DIR
script=$(readlink -f "$0")

# The sub-command: skip global flags, and the value of those that take one.
sub=
want_value=no
for a in "$@"; do
  if [ "$want_value" = yes ]; then want_value=no; continue; fi
  case "$a" in
    --root | --log | --log-format | --criu) want_value=yes ;;
    -*) ;;
    *) sub=$a; break ;;
  esac
done

if [ -n "$sub" ] && [ -e "$dir/gate-$sub" ] && mv "$dir/gate-$sub" "$dir/held-$sub" 2>/dev/null; then
  : > "$dir/entered-$sub"
  limit=$(cat "$dir/gate-seconds" 2>/dev/null || echo 60)
  ticks=$((limit * 50))
  while [ ! -e "$dir/release-$sub" ] && [ "$ticks" -gt 0 ]; do
    sleep 0.02
    ticks=$((ticks - 1))
  done
  if grep -q fail "$dir/held-$sub"; then
    # fake-runc.sh looks for fail-<sub> in the dir it is given: a dir of this call's own.
    FAKE_RUNC_DIR=$dir/failed-$$
    mkdir -p "$FAKE_RUNC_DIR"
    : > "$FAKE_RUNC_DIR/fail-$sub"
  fi
fi

FAKE_RUNC_DIR=${FAKE_RUNC_DIR:-$dir}
export FAKE_RUNC_DIR
exec "${script%/*}/fake-runc.sh" "$@"
