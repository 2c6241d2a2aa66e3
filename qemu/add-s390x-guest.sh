#!/usr/bin/env bash
# Add an s390x guest to an (x86_64) QEMU tree, for the cross-arch boot
# test: Debian's s390x kernel (linux-image-s390x:s390x, from the s390x
# sysroot of qemu/sysroot.sh) as kernels/s390x with an initrd of the
# s390x runq-init, busybox-static:s390x and the kernel's virtio modules;
# and the host's qemu-system-s390x (Debian qemu-system-misc) with its
# libraries and firmware.
# Usage: add-s390x-guest.sh TREE S390X_BIN_DIR
#   S390X_BIN_DIR holds the static s390x runq-init (make ARCH=s390x).
set -euo pipefail

out=$1 bins=$2
die() { echo "add-s390x-guest: $*" >&2; exit 1; }
# shellcheck source=qemu/tree-lib.sh
. "$(dirname "$0")/tree-lib.sh"
# virtio_pci: QEMU 7.2 has no vhost-user-vsock-ccw, the PCI model (zPCI) is used.
# 9p: the root of a big-endian guest on a little-endian host must be 9p
# (its protocol is little-endian on the wire); FUSE, hence virtiofs, is
# native-endian and virtiofsd does not convert.
modules=(virtio_pci vmw_vsock_virtio_transport virtiofs 9pnet_virtio 9p virtio-rng virtio_net virtio_blk)
fs_groups=(ext4 xfs btrfs)

[ -x "$bins/runq-init" ] || die "$bins/runq-init missing (make ARCH=s390x)"
command -v qemu-system-s390x >/dev/null || die "qemu-system-s390x missing (apt-get install qemu-system-misc)"
# Debian's s390x kernel and busybox: from the sysroot the s390x tree is
# assembled from (make ARCH=s390x), made here if that has not run.
# (not "sysroot": copy_with_libs below copies the host's QEMU)
root=/var/cache/runq/sysroot-s390x
# Reused only when complete (sysroot.sh's mark, written last) and holding
# a kernel and busybox; the kernel is checked below.
if [ ! -f "$root/.runq-sysroot" ] || ! ls "$root"/boot/vmlinuz-* >/dev/null 2>&1 || [ ! -x "$root/bin/busybox" ]; then
  "$(dirname "$0")/sysroot.sh" s390x "$root" qemu-system-misc iproute2 busybox-static linux-image-s390x
fi
kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -name '*-s390x' -printf '%f\n' | sort -V | tail -n 1)
[ -n "$kver" ] || die "no s390x kernel in $root"

check_kernel s390x "$kver" "$root/lib/modules/$kver" "$root/boot/vmlinuz-$kver"
BUSYBOX=$root/bin/busybox write_kernel_dir s390x "$root/boot/vmlinuz-$kver" "$kver" "$root/lib/modules/$kver" load \
  "$(has_9p_module "$root/lib/modules/$kver")" "${modules[@]}"

copy_with_libs "$(command -v qemu-system-s390x)" /usr/bin/qemu-system-s390x
m=/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-s390x.so
if [ -e "$m" ]; then copy_with_libs "$m" "$m"; fi
cp /usr/share/qemu/s390-ccw.img "$out/usr/share/qemu/" 2>/dev/null || true
echo "add-s390x-guest: $out/kernels/s390x ($kver)"
