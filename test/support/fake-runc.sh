#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A scripted stand-in for runc, for the checkpoint/restore code path of the shims (CRIU does not
# work on the test machines). A shim uses it through Create's `containerd.runc.v1.Options`
# `binary_name`, best as a symlink <dir>/runc to this script: its state and records then live in
# <dir> (FAKE_RUNC_DIR, when set, overrides that; a shim's environment is not a reliable channel,
# see test/e2e/parity-checkpoint.test.ts). It
#   * records every command line: one file per call in $FAKE_RUNC_DIR/calls/, named
#     <nanoseconds>-<pid>, holding the arguments separated by NUL bytes;
#   * emulates `checkpoint`: creates the image dir with a file in it and the work dir with a
#     dump.log; without --leave-running it then stops the container (real runc kill 9), as CRIU
#     does. If $FAKE_RUNC_DIR/fail-checkpoint exists it fails instead, as CRIU does: a dump.log in
#     the work dir, an error line in runc's --log file, an error on stderr, exit status 1;
#   * emulates `restore`: starts `sh -c 'echo restored; exec sleep 1000'` in the background with
#     the stdio it was given (so the shim, as subreaper, inherits it), writes its pid to the
#     --pid-file and exits 0; later kill/delete/ps/state/pause/resume of that container id act on
#     that process;
#   * fails any other sub-command on request: see fail-<sub-command> below;
#   * passes everything else to the real runc ($FAKE_RUNC_REAL, default /usr/sbin/runc or the like).
set -u

dir=${FAKE_RUNC_DIR:-$(dirname "$0")}
real=${FAKE_RUNC_REAL:-}
if [ -z "$real" ]; then
  for r in /usr/sbin/runc /usr/bin/runc /sbin/runc /usr/local/sbin/runc /usr/local/bin/runc; do
    [ -x "$r" ] && real=$r && break
  done
  real=${real:-runc}
fi

mkdir -p "$dir/calls"
printf '%s\0' "$0" "$@" > "$dir/calls/$(date +%s%N)-$$"

# argval NAME ARGS...: the value following NAME in ARGS.
argval() {
  n=$1
  shift
  while [ $# -gt 0 ]; do
    if [ "$1" = "$n" ]; then
      printf '%s' "${2-}"
      return 0
    fi
    shift
  done
  return 1
}

# hasarg NAME ARGS...
hasarg() {
  n=$1
  shift
  for a in "$@"; do
    [ "$a" = "$n" ] && return 0
  done
  return 1
}

# The sub-command: the first argument that is neither a global flag nor a global flag's value.
sub=
skip=
for a in "$@"; do
  if [ -n "$skip" ]; then
    skip=
    continue
  fi
  case "$a" in
    --root | --log | --log-format | --criu) skip=1 ;;
    -*) ;;
    *) sub=$a; break ;;
  esac
done

root=$(argval --root "$@") || root=/run/runc
log=$(argval --log "$@") || log=/dev/null
eval "last=\${$#}"
if [ $# -ge 2 ]; then eval "second_last=\${$(($# - 1))}"; else second_last=; fi

json_error() {
  printf '{"level":"error","msg":"%s","time":"2024-01-01T00:00:00Z"}\n' "$1" >> "$log"
}

# $FAKE_RUNC_DIR/fail-<sub-command> makes that sub-command fail the way runc does: an error line
# in the --log file, the message on stderr, exit status 1.
if [ "$sub" != checkpoint ] && [ -e "$dir/fail-$sub" ]; then
  json_error "fake runc: $sub failed"
  echo "fake runc: $sub failed" >&2
  exit 1
fi

case "$sub" in
  checkpoint)
    id=$last
    image=$(argval --image-path "$@") || image=
    work=$(argval --work-path "$@") || work=
    [ -n "$work" ] && mkdir -p "$work"
    if [ -e "$dir/fail-checkpoint" ]; then
      [ -n "$work" ] && printf '(00.000100) Error (criu/cr-dump.c:1): fake criu: dump failed\n' > "$work/dump.log"
      json_error "criu failed: type NOTIFY errno 0"
      printf 'criu failed: type NOTIFY errno 0\nlog file: %s/dump.log\n' "$work" >&2
      exit 1
    fi
    [ -n "$image" ] && mkdir -p "$image" && printf 'fake checkpoint of %s\n' "$id" > "$image/inventory.img"
    [ -n "$work" ] && printf 'fake criu: dump ok\n' > "$work/dump.log"
    if ! hasarg --leave-running "$@"; then
      "$real" --root "$root" kill "$id" 9
    fi
    exit 0
    ;;
  restore)
    id=$last
    pidfile=$(argval --pid-file "$@")
    # A background job's stdin would be /dev/null: hand the given stdin over through fd 3.
    exec 3<&0
    /bin/sh -c 'echo restored; exec sleep 1000' <&3 3<&- &
    exec 3<&-
    pid=$!
    printf '%s' "$pid" > "$pidfile"
    printf '%s' "$pid" > "$dir/restored-$id"
    exit 0
    ;;
esac

# Calls on a container this script restored act on its process.
for id in "$last" "$second_last"; do
  [ -n "$id" ] && [ -f "$dir/restored-$id" ] || continue
  pid=$(cat "$dir/restored-$id")
  case "$sub" in
    kill)
      sig=$last
      if kill -"$sig" "$pid" 2>/dev/null; then exit 0; fi
      json_error "container not running"
      echo "container not running" >&2
      exit 1
      ;;
    delete)
      kill -9 "$pid" 2>/dev/null
      rm -f "$dir/restored-$id"
      exit 0
      ;;
    ps)
      printf '[%s]\n' "$pid"
      exit 0
      ;;
    state)
      printf '{"id":"%s","pid":%s,"status":"running"}\n' "$id" "$pid"
      exit 0
      ;;
    *)
      exit 0
      ;;
  esac
done

exec "$real" "$@"
