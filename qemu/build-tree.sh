#!/usr/bin/env bash
# Assemble the self-contained, read-only tree that becomes the root of every
# runq container (installed at /var/lib/runq/qemu):
#   /usr/bin/{qemu-system-*,virtiofsd,vhost-device-vsock,runq-proxy}
#   their shared libraries and the dynamic loader, QEMU's firmware,
#   /kernels/<name>/{kernel,initrd,version,features} for each guest kernel:
#     debian  Debian's cloud kernel; its initrd carries runq-init and the
#             modules the guest needs on the common path
#     runq    the minimal kernel from kernel-config/ (when built): all of
#             the common path built in; its modules ship in the initrd for
#             workloads allowed to load them
#   /kernels/default -> the one used unless --kernel/RUNQ_KERNEL says
#   otherwise (runq when present), and empty mount points.
# Usage: build-tree.sh OUT_DIR BIN_DIR HELPER_BIN_DIR [RUNQ_KERNEL_DIR]
#   BIN_DIR holds runq-proxy and runq-init (static), HELPER_BIN_DIR holds
#   virtiofsd and vhost-device-vsock (from crates.io), RUNQ_KERNEL_DIR is
#   kernel-config/build.sh's output. TREE_ARCH=s390x (or any arch other
#   than the host's) assembles the tree for that arch from Debian's
#   packages of it (qemu/sysroot.sh): QEMU, its libraries, iproute2, the
#   kernel and busybox; the binaries in BIN_DIR/HELPER_BIN_DIR must be of
#   that arch too (make ARCH=s390x tree).
set -euo pipefail

out=$1 bins=$2 helpers=$3 runq_kernel=${4:-}
arch=${TREE_ARCH:-$(uname -m)}
case "$arch" in
  x86_64) qemu_bin=qemu-system-x86_64 kflavour=cloud-amd64 kpkg=linux-image-cloud-amd64
          # -M microvm's firmware, also the template machine's (-M pc); pc
          # loads the linuxboot or PVH and (KVM) vapic option ROMs.
          firmware=(bios-microvm.bin linuxboot_dma.bin pvh.bin kvmvapic.bin)
          # Guest modules wanted on the common path (dependencies are
          # added from modules.dep; built-in ones are skipped).
          modules=(virtio_mmio vmw_vsock_virtio_transport virtiofs virtio-rng virtio_net virtio_blk) ;;
  s390x)  qemu_bin=qemu-system-s390x kflavour=s390x kpkg=linux-image-s390x
          firmware=(s390-ccw.img)
          # vsock is vhost-user-vsock-pci (zPCI): QEMU 7.2 has no -ccw model.
          modules=(virtio_pci vmw_vsock_virtio_transport virtiofs 9pnet_virtio 9p virtio-rng virtio_net virtio_blk) ;;
  *) echo "build-tree: unsupported architecture $arch" >&2; exit 1 ;;
esac
# Filesystems for runq disks: loaded by init only when a disk needs one
# (/modules.<fs>.list), so a container without disks pays nothing.
fs_groups=(ext4 xfs btrfs)
triplet=$arch-linux-gnu
# Where the host side comes from: this machine, or Debian's packages of
# another arch extracted into a sysroot.
sysroot=
if [ "$arch" != "$(uname -m)" ]; then
  sysroot=/var/cache/runq/sysroot-$arch
  "$(dirname "$0")/sysroot.sh" "$arch" "$sysroot" qemu-system-misc iproute2 busybox-static "$kpkg"
  export BUSYBOX=$sysroot/bin/busybox
fi
# find_bin NAME: the path of a program in the sysroot (or on this host)
find_bin() {
  local d
  if [ -z "$sysroot" ]; then command -v "$1"; return; fi
  for d in /usr/bin /usr/sbin /bin /sbin; do
    [ -x "$sysroot$d/$1" ] && { echo "$sysroot$d/$1"; return; }
  done
  die "$1 not in the $arch sysroot"
}

die() { echo "build-tree: $*" >&2; exit 1; }
# shellcheck source=qemu/tree-lib.sh
. "$(dirname "$0")/tree-lib.sh"

# The inputs are checked before anything is assembled: each kernel's
# release (one line), its modules and its image.
# Debian's kernel: the newest of our flavour on this machine.
kver=$(find "$sysroot/lib/modules" -mindepth 1 -maxdepth 1 -name "*-$kflavour" -printf '%f\n' | sort -V | tail -n 1)
[ -n "$kver" ] || die "no $kpkg installed"
check_kernel debian "$kver" "$sysroot/lib/modules/$kver" "$sysroot/boot/vmlinuz-$kver"
if [ -n "$runq_kernel" ]; then
  [ -f "$runq_kernel/version" ] || die "kernel runq: $runq_kernel/version missing (make kernel)"
  [ "$(wc -l <"$runq_kernel/version")" -eq 1 ] ||
    die "kernel runq: $runq_kernel/version has $(wc -l <"$runq_kernel/version") lines, not one release: $(head -c 200 "$runq_kernel/version" | tr '\n' '|')"
  rver=$(cat "$runq_kernel/version")
  check_kernel runq "$rver" "$runq_kernel/mods/lib/modules/$rver" "$runq_kernel/vmlinux"
fi

echo "==> tree: assembling the QEMU tree in $out (QEMU, helpers, kernels, initrds; seconds)"
rm -rf "$out"
mkdir -p "$out"/{usr/bin,usr/share/qemu,proc,sys,dev,rootfs,run,runq,tmp}


copy_with_libs "$(find_bin $qemu_bin)" /usr/bin/$qemu_bin
copy_with_libs "$helpers/virtiofsd" /usr/bin/virtiofsd
copy_with_libs "$helpers/vhost-device-vsock" /usr/bin/vhost-device-vsock
install -m 0755 "$bins/runq-proxy" "$out/usr/bin/runq-proxy"
# iproute2: the proxy reads and changes the container's links with it.
copy_with_libs "$(find_bin ip)" /usr/bin/ip
copy_with_libs "$(find_bin tc)" /usr/bin/tc
# Debian builds the TCG accelerator of some targets as a QEMU module
# (dlopen'ed by path): x86_64's on x86_64; s390x's TCG is built in.
qemu_mods=/usr/lib/$triplet/qemu
mkdir -p "$out$qemu_mods"
m=accel-tcg-$arch.so
if [ -e "$sysroot$qemu_mods/$m" ]; then copy_with_libs "$sysroot$qemu_mods/$m" "$qemu_mods/$m"
elif [ "$arch" = x86_64 ]; then die "QEMU module $m missing in $qemu_mods"; fi
# Firmware is architecture-independent (qemu-system-data): the host's.
for f in "${firmware[@]}"; do
  cp "/usr/share/qemu/$f" "$out/usr/share/qemu/$f" || die "QEMU firmware $f missing (qemu-system-data)"
done


# Debian's kernel (kver: checked above)
write_kernel_dir debian "$sysroot/boot/vmlinuz-$kver" "$kver" "$sysroot/lib/modules/$kver" load \
  "$(has_9p_module "$sysroot/lib/modules/$kver")" "${modules[@]}"
default=debian

if [ -n "$runq_kernel" ]; then
  # The uncompressed vmlinux: QEMU boots it through its PVH entry, with
  # no decompression (seconds under TCG).
  ninep=no
  grep -q '^CONFIG_9P_FS=y' "$runq_kernel/config" && ninep=yes
  # VM templates need PCI hot-plug through ACPI, and virtio-pci at boot.
  template=
  grep -q '^CONFIG_HOTPLUG_PCI_ACPI=y' "$runq_kernel/config" &&
    grep -q '^CONFIG_VIRTIO_PCI=y' "$runq_kernel/config" && template=template
  FEATURES_EXTRA=$template \
    write_kernel_dir runq "$runq_kernel/vmlinux" "$rver" "$runq_kernel/mods/lib/modules/$rver" ship "$ninep"
fi
# The default guest kernel: DEFAULT_KERNEL (see the Makefile for why it is
# Debian's for now), if installed.
if [ -n "${DEFAULT_KERNEL:-}" ] && [ -d "$out/kernels/$DEFAULT_KERNEL" ]; then
  default=$DEFAULT_KERNEL
fi
ln -sfn "$default" "$out/kernels/default"
echo "build-tree: $out (kernels: $(cd "$out/kernels" && for k in *; do [ "$k" = default ] || printf '%s ' "$k"; done)default -> $default; $(du -sh "$out" | cut -f1))"
