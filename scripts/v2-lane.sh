#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The pure cgroup v2 test lane: runs a command inside a qemu guest whose only cgroup hierarchy is
# cgroup v2, with this machine's own root filesystem, containerd, runc, Go shim, node and this
# checkout, and returns the command's exit status.
#
#   bash scripts/v2-lane.sh CMD [ARGS...]          e.g.  bash scripts/v2-lane.sh npm run test:v2
#   SHIM_DAEMON=2.3 bash scripts/v2-lane.sh npm run test:v2    the same on containerd 2.3 (the
#                                                  guest sees /opt/shim-test through the shared root)
#
# Why a guest: these machines boot with cgroup v1 controllers (hybrid) and have no /dev/kvm, so a
# real v2 host is a software-emulated (TCG) qemu guest booted with `cgroup_no_v1=all`.
#
# What it does (as root, on a fresh Debian 12 machine too):
#   1. apt: installs what is missing of qemu-system-x86 (--no-install-recommends), busybox-static,
#      kmod, cpio, xz-utils; nothing when all are there (`apt-get update` only if an install or
#      the kernel lookup needs it). Nothing else on the host is changed.
#   2. the kernel: the generic `linux-image-<abi>-amd64` that `linux-image-amd64` depends on, by
#      `apt-get download` + `dpkg-deb -x` into $V2_LANE_DIR/kernel/<version>/ (never /boot),
#      `depmod -b`, and the uncompressed ELF vmlinux cut out of the bzImage (the XZ payload, as
#      the kernel tree's scripts/extract-vmlinux finds it): qemu boots it through its PVH note,
#      which saves the ~8 s the bzImage's decompressor takes under TCG.
#   3. the initramfs ($V2_LANE_DIR/initramfs-<key>.gz): static busybox, the modules virtio_pci,
#      virtio-rng, 9pnet_virtio, 9p, overlay with their dependencies (uncompressed), and the two
#      init stages below. Rebuilt only when its inputs (this script, the busybox binary, the
#      kernel) change.
#   4. boots the guest (2 vCPUs, 4 GiB, no network device) with the kernel command line
#      `cgroup_no_v1=all`. Stage 1 (the initramfs' /init) mounts the host's / over virtio-9p
#      read-only as the lower dir of an overlay on a tmpfs (the guest's writes are thrown away),
#      a read-write 9p share of this run's directory at /.v2-lane/results, the unpacked kernel's
#      modules at /lib/modules/<version> (so modprobe works), fresh tmpfs on /run, /tmp and
#      /var/lib (containerd's overlayfs snapshotter refuses an overlay upper dir; a checkout under
#      one of them is bound aside first and moved back), and switches root to busybox init.
#      Stage 2 mounts cgroup2 (nsdelegate) at /sys/fs/cgroup and enables every controller in
#      the root's cgroup.subtree_control, devpts, /dev/shm, mqueue, brings up lo, then runs CMD
#      with bash in the checkout (same path as on the host), stdout and stderr on the serial
#      console, which is this script's stdout. Its exit status comes back through the results
#      share; then the guest powers off.
#
# Exit status: CMD's; 124 when the lane timed out; 125 when the lane itself failed (setup, boot,
# a guest that died without reporting a status).
#
# Cleanup: the guest is one qemu process. A watchdog inside the guest powers it off 60 s before
# the timeout (status 124); one on the host kills qemu at the timeout if it is still there
# (status 124 too); an exit or a signal of this script kills qemu by its pid. Nothing is mounted on the host and no cgroup is
# created; the per-run directory ($V2_LANE_DIR/runs/<pid>) is removed. One guest at a time: a
# second run waits on $V2_LANE_DIR/lock.
#
# Environment:
#   V2_LANE_TIMEOUT   seconds for the whole guest run (default 1500 = 25 min)
#   V2_LANE_DIR       where the kernel, initramfs and run dirs live (default /opt/shim-test/v2-guest)
#   V2_LANE_MEM       guest memory in MiB (default 4096)
#   V2_LANE_CPUS      guest vCPUs (default 2)
#   V2_LANE_PREPARE=1 install and build only, boot nothing (exit 0)
#   V2_LANE_KERNEL    kernel package to use (default: what linux-image-amd64 depends on)
# Passed into the guest: PATH, CI, TERM, NODE_OPTIONS and every SHIM_*, PARITY_*, V2_* variable.
#
# Not covered by a guest of this kind (say so where results are reported): PID 1 is busybox init,
# not systemd, so only runc's cgroupfs driver runs (no systemd cgroup driver); there is no block
# device (io.stat stays empty) and only loopback networking.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd -P)"
LANE_DIR="${V2_LANE_DIR:-/opt/shim-test/v2-guest}"
TIMEOUT="${V2_LANE_TIMEOUT:-1500}"
MEM="${V2_LANE_MEM:-4096}"
CPUS="${V2_LANE_CPUS:-2}"
PACKAGES=(qemu-system-x86 busybox-static kmod cpio xz-utils)
# Loaded in the initramfs, with their dependencies (modprobe --show-depends order).
MODULES=(virtio_pci virtio_rng 9pnet_virtio 9p overlay)

say() { echo "v2-lane: $*" >&2; }
die() { say "ERROR: $*"; exit 125; }

[ "$#" -gt 0 ] || [ "${V2_LANE_PREPARE:-}" = 1 ] || die "usage: bash scripts/v2-lane.sh CMD [ARGS...]"
[ "$(id -u)" -eq 0 ] || die "must run as root (apt, qemu's 9p export of /)"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -ge 120 ] || die "V2_LANE_TIMEOUT must be a number of seconds >= 120"

mkdir -p "$LANE_DIR"
exec 9>"$LANE_DIR/lock"
if ! flock -n 9; then
  say "another v2 guest is running (lock $LANE_DIR/lock); waiting for it"
  flock -w "$TIMEOUT" 9 || die "still locked after ${TIMEOUT}s"
fi

t_start=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# 1. Packages

is_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }
apt_updated=0
apt_update_once() {
  [ "$apt_updated" = 1 ] && return 0
  say "apt-get update"
  apt-get update -q >&2
  apt_updated=1
}
missing=()
for p in "${PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >&2; then
    apt_update_once
    apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
  fi
fi
QEMU="$(command -v qemu-system-x86_64)" || die "qemu-system-x86_64 not found"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found (busybox-static)"

# ---------------------------------------------------------------------------------------------
# 2. The kernel

kernel_package() {
  if [ -n "${V2_LANE_KERNEL:-}" ]; then echo "$V2_LANE_KERNEL"; return; fi
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1
}
KPKG="$(kernel_package)"
if [ -z "$KPKG" ]; then
  apt_update_once
  KPKG="$(kernel_package)"
fi
[ -n "$KPKG" ] || die "cannot tell which kernel linux-image-amd64 depends on"
KVER="${KPKG#linux-image-}"
KDIR="$LANE_DIR/kernel/$KVER"

# Cuts the uncompressed ELF out of a bzImage: the first XZ stream that decompresses to an ELF.
extract_vmlinux() {
  local off
  for off in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$1" | cut -d: -f1); do
    tail -c +"$((off + 1))" "$1" | xz -dc --single-stream >"$2.tmp" 2>/dev/null || true
    if [ "$(head -c 4 "$2.tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
      mv "$2.tmp" "$2"
      return 0
    fi
  done
  rm -f "$2.tmp"
  return 1
}

if [ ! -e "$KDIR/.complete" ]; then
  say "fetching $KPKG into $KDIR"
  rm -rf "$KDIR"
  mkdir -p "$KDIR"
  dl="$(mktemp -d "$LANE_DIR/download.XXXXXX")"
  chmod 755 "$dl"
  chown _apt "$dl" 2>/dev/null || true   # apt-get download drops to _apt when it can write here
  if ! (cd "$dl" && apt-get download -q "$KPKG" >&2); then
    apt_update_once
    (cd "$dl" && apt-get download -q "$KPKG" >&2) || { rm -rf "$dl"; die "apt-get download $KPKG failed"; }
  fi
  dpkg-deb -x "$dl"/*.deb "$KDIR/root"
  rm -rf "$dl"
  [ -d "$KDIR/root/lib/modules/$KVER" ] || die "$KPKG has no lib/modules/$KVER"
  depmod -b "$KDIR/root" "$KVER"
  extract_vmlinux "$KDIR/root/boot/vmlinuz-$KVER" "$KDIR/vmlinux" || die "no ELF kernel in vmlinuz-$KVER"
  touch "$KDIR/.complete"
fi

# ---------------------------------------------------------------------------------------------
# 3. The initramfs

# Stage 1: the initramfs' /init (busybox sh, PID 1). The run's settings come from the results
# share (config), so the image does not depend on the checkout or the run.
read -r -d '' STAGE1 <<'EOF' || true
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "v2-lane (guest stage 1): $*"; poweroff -f; }
mkdir -p /proc /sys /dev /lower /rw /newroot /results
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/modules/$m" || fail "insmod $m"; done </modules/order
# The 9p mount can fail for a moment after insmod, until the virtio device is bound.
mount9p() {
  i=0
  until mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,$3" "$1" "$2" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 100 ] || return 1; sleep 0.1
  done
}
mount9p results /results cache=none || fail "cannot mount the results share"
. /results/config
mount9p hostroot /lower cache=loose,ro || fail "cannot mount the host's root"
mount -t tmpfs -o mode=755 overlay-rw /rw
mkdir /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work,index=off,xino=off,redirect_dir=off,metacopy=off /newroot || fail "overlay mount"
N=/newroot
mkdir -p "$N/.v2-lane/results" "$N/.v2-lane/keep" "$N/usr/lib/modules/$KVER"
cp /bin/busybox /stage2 "$N/.v2-lane/"
mount --move /results "$N/.v2-lane/results"
mount --bind "$N$LANE_DIR/kernel/$KVER/root/lib/modules/$KVER" "$N/usr/lib/modules/$KVER"
# A checkout under a directory that gets a fresh tmpfs is bound aside and moved back after.
hidden=""
for d in /run /tmp /var/lib; do case "$REPO/" in "$d"/*) hidden=1 ;; esac; done
[ -z "$hidden" ] || mount --bind "$N$REPO" "$N/.v2-lane/keep"
for d in /run /tmp /var/lib; do mount -t tmpfs -o mode=755 tmpfs "$N$d"; done
chmod 1777 "$N/tmp"
if [ -n "$hidden" ]; then mkdir -p "$N$REPO"; mount --move "$N/.v2-lane/keep" "$N$REPO"; fi
printf '::sysinit:/.v2-lane/busybox sh /.v2-lane/stage2\n' >"$N/etc/inittab"
mount --move /dev "$N/dev"
mount --move /proc "$N/proc"
mount --move /sys "$N/sys"
exec switch_root "$N" /.v2-lane/busybox init
EOF

# Stage 2: run by busybox init (PID 1, which reaps orphans) in the new root.
read -r -d '' STAGE2 <<'EOF' || true
B=/.v2-lane/busybox
R=/.v2-lane/results
. $R/config
$B stty -F /dev/console -onlcr 2>/dev/null
$B mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || echo "v2-lane (guest): cannot mount cgroup2"
for c in $($B cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || echo "v2-lane (guest): cannot enable $c"
done
$B mkdir -p /dev/pts /dev/shm /dev/mqueue
$B mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
$B mount -t tmpfs -o mode=1777 shm /dev/shm
$B mount -t mqueue mqueue /dev/mqueue
$B ip link set lo up
$B hostname v2-lane
echo "v2-lane (guest): up after $($B cut -d' ' -f1 /proc/uptime) s; cgroup controllers: $($B cat /sys/fs/cgroup/cgroup.subtree_control)"
( $B sleep "$GUEST_TIMEOUT"
  echo "v2-lane (guest): timed out after $GUEST_TIMEOUT s; powering off"
  echo 124 >$R/status; $B sync; $B poweroff -f ) &
# Through a pipe, as in CI: the command sees no terminal (no colours, node's TAP reporter).
/bin/bash -c '/bin/bash "$1" </dev/null 2>&1 | /bin/cat; exit "${PIPESTATUS[0]}"' v2-lane $R/cmd >/dev/console 2>&1
echo $? >$R/status
$B sync
$B poweroff -f
EOF

key="$(
  {
    printf '%s\n' "$KVER" "${MODULES[@]}"
    # This script (the init stages and how the image is built), busybox, the kernel.
    sha256sum "${BASH_SOURCE[0]}" "$BUSYBOX" "$KDIR/vmlinux"
  } | sha256sum | cut -c1-16
)"
INITRD="$LANE_DIR/initramfs-$key.gz"
if [ ! -s "$INITRD" ]; then
  say "building $INITRD"
  build="$(mktemp -d "$LANE_DIR/initramfs.XXXXXX")"
  mkdir -p "$build/bin" "$build/modules" "$build/dev"
  mknod -m 600 "$build/dev/console" c 5 1   # the kernel opens it for /init's stdio
  cp "$BUSYBOX" "$build/bin/busybox"
  printf '%s\n' "$STAGE1" >"$build/init"
  printf '%s\n' "$STAGE2" >"$build/stage2"
  chmod 755 "$build/init"
  : >"$build/modules/order"
  # `insmod <path>` lines in load order; `builtin <name>` lines need nothing.
  for m in "${MODULES[@]}"; do
    modprobe -d "$KDIR/root" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
  done | awk '!seen[$0]++' | while read -r path; do
    name="$(basename "$path")"
    case "$name" in
      *.ko.xz) xz -dc "$path" >"$build/modules/${name%.xz}"; name="${name%.xz}" ;;
      *.ko.zst) zstd -qdc "$path" >"$build/modules/${name%.zst}"; name="${name%.zst}" ;;
      *.ko.gz) gzip -dc "$path" >"$build/modules/${name%.gz}"; name="${name%.gz}" ;;
      *) cp "$path" "$build/modules/$name" ;;
    esac
    echo "$name" >>"$build/modules/order"
  done
  [ -s "$build/modules/order" ] || die "no modules resolved for the initramfs"
  (cd "$build" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$build"
  # Older images of this lane.
  find "$LANE_DIR" -maxdepth 1 -name 'initramfs-*.gz' ! -name "$(basename "$INITRD")" -delete
fi
say "prepared in $(elapsed "$t_start") s (kernel $KVER, $(basename "$INITRD"))"
if [ "${V2_LANE_PREPARE:-}" = 1 ]; then exit 0; fi

# ---------------------------------------------------------------------------------------------
# 4. The run

RUN="$LANE_DIR/runs/$$"
rm -rf "$RUN"
mkdir -p "$RUN"
qemu_pid=""
watchdog_pid=""
cleanup() {
  [ -z "$watchdog_pid" ] || kill "$watchdog_pid" 2>/dev/null || true
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    say "powering the guest off (killing qemu, pid $qemu_pid)"
    kill -TERM "$qemu_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

GUEST_TIMEOUT=$((TIMEOUT - 60))
{
  printf 'KVER=%q\nREPO=%q\nLANE_DIR=%q\nGUEST_TIMEOUT=%q\n' "$KVER" "$REPO" "$LANE_DIR" "$GUEST_TIMEOUT"
} >"$RUN/config"
{
  echo "export HOME=/root USER=root LOGNAME=root"
  printf 'export PATH=%q\n' "${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"
  while IFS= read -r name; do
    printf 'export %s=%q\n' "$name" "${!name}"
  done < <(compgen -e | grep -E '^(CI|TERM|NODE_OPTIONS|SHIM_[A-Za-z0-9_]*|PARITY_[A-Za-z0-9_]*|V2_[A-Za-z0-9_]*)$' || true)
  printf 'cd %q || exit 125\n' "$REPO"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$RUN/cmd"

CMDLINE="console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init cgroup_no_v1=all mitigations=off random.trust_cpu=on tsc=reliable"
say "booting the guest (${CPUS} vCPUs, ${MEM} MiB, timeout ${TIMEOUT} s): $*"
t_boot=$(date +%s.%N)
"$QEMU" -nodefaults -machine q35 -accel tcg,thread=multi -cpu max -smp "$CPUS" -m "$MEM" \
  -display none -no-reboot -chardev stdio,id=console,signal=off -serial chardev:console \
  -kernel "$KDIR/vmlinux" -initrd "$INITRD" -append "$CMDLINE" \
  -device virtio-rng-pci \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap" \
  -virtfs "local,path=$RUN,mount_tag=results,security_model=passthrough" \
  </dev/null &
qemu_pid=$!
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$TIMEOUT" & s=$!
  wait "$s"
  echo "v2-lane: host timeout after ${TIMEOUT} s" >&2
  : >"$RUN/host-timeout"
  kill -TERM "$qemu_pid" 2>/dev/null
) &
watchdog_pid=$!
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
qemu_pid=""
kill "$watchdog_pid" 2>/dev/null || true
watchdog_pid=""

if [ -s "$RUN/status" ]; then
  status="$(cat "$RUN/status")"
  say "command exited $status; guest ran $(elapsed "$t_boot") s, lane $(elapsed "$t_start") s"
  exit "$status"
fi
if [ -e "$RUN/host-timeout" ]; then exit 124; fi
say "the guest stopped without reporting a status (qemu exit $qemu_status) after $(elapsed "$t_boot") s"
exit 125
