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
#   kernel-config/build.sh's output.
set -euo pipefail

out=$1 bins=$2 helpers=$3 runq_kernel=${4:-}
arch=$(uname -m)
case "$arch" in
  x86_64) qemu_bin=qemu-system-x86_64 kflavour=cloud-amd64
          firmware=(bios-microvm.bin) ;;
  s390x)  qemu_bin=qemu-system-s390x kflavour=s390x
          firmware=(s390-ccw.img) ;;
  *) echo "build-tree: unsupported architecture $arch" >&2; exit 1 ;;
esac
# Guest modules wanted on the common path (dependencies are added from
# modules.dep; built-in ones are skipped).
modules=(virtio_mmio vmw_vsock_virtio_transport virtiofs virtio-rng virtio_net virtio_blk)
# Filesystems for runq disks: loaded by init only when a disk needs one
# (/modules.<fs>.list), so a container without disks pays nothing.
fs_groups=(ext4 xfs btrfs)

die() { echo "build-tree: $*" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"/{usr/bin,usr/share/qemu,proc,sys,dev,rootfs,run,runq,tmp}

# A binary and every library it links, at the same paths as on the host.
copy_with_libs() {
  local bin=$1 dest=$2
  install -m 0755 "$bin" "$out$dest"
  ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
    [ -e "$out$lib" ] && continue
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
}

copy_with_libs "$(command -v $qemu_bin)" /usr/bin/$qemu_bin
copy_with_libs "$helpers/virtiofsd" /usr/bin/virtiofsd
copy_with_libs "$helpers/vhost-device-vsock" /usr/bin/vhost-device-vsock
install -m 0755 "$bins/runq-proxy" "$out/usr/bin/runq-proxy"
# iproute2: the proxy reads and changes the container's links with it.
copy_with_libs "$(command -v ip)" /usr/bin/ip
copy_with_libs "$(command -v tc)" /usr/bin/tc
# Debian builds the TCG accelerator as a QEMU module (dlopen'ed by path).
qemu_mods=/usr/lib/$arch-linux-gnu/qemu
mkdir -p "$out$qemu_mods"
for m in "$qemu_mods"/accel-tcg-*.so; do
  [ -e "$m" ] || die "QEMU module accel-tcg missing in $qemu_mods"
  copy_with_libs "$m" "${m}"
done
for f in "${firmware[@]}"; do
  cp "/usr/share/qemu/$f" "$out/usr/share/qemu/$f" || die "QEMU firmware $f missing"
done

# initrd with runq-init as /init, busybox (its ip applet configures the
# guest's network), and MODDIR's modules: those in LOAD in dependency
# order (listed in /modules.list for init), or the whole tree (for
# modprobe in the guest).
# make_initrd OUT KVER MODDIR ship|load [MODULE...]
make_initrd() {
  local dest=$1 kver=$2 moddir=$3 mode=$4 stage rel name m
  shift 4
  stage=$(mktemp -d)
  mkdir -p "$stage"/{dev,proc,sys,rootfs,lib/modules,bin}
  install -m 0755 "$bins/runq-init" "$stage/init"
  install -m 0755 /bin/busybox "$stage/bin/busybox"
  mknod -m 600 "$stage/dev/console" c 5 1
  : > "$stage/modules.list"
  if [ "$mode" = ship ]; then
    cp -a "$moddir" "$stage/lib/modules/$kver"
    rm -f "$stage/lib/modules/$kver"/{build,source}
  else
    declare -A seen=()
    local order=()
    add_module() { # depth-first: dependencies first
      local rel=$1 dep
      [ -n "${seen[$rel]:-}" ] && return
      seen[$rel]=1
      for dep in $(grep -E "^$rel:" "$moddir/modules.dep" | cut -d: -f2); do
        add_module "$dep"
      done
      order+=("$rel")
    }
    # write_list LIST MODULE...: LIST loads MODULE... and what they need
    # beyond the common list.
    write_list() {
      local list=$1 rel name m
      shift
      order=()
      for m in "$@"; do
        rel=$(grep -E "/$m\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | cut -d: -f1 || true)
        if [ -z "$rel" ]; then
          grep -qE "/$m\.ko" "$moddir/modules.builtin" || die "module $m neither built in nor shipped by $kver"
          continue
        fi
        add_module "$rel"
      done
      : > "$stage/$list"
      for rel in "${order[@]}"; do
        name=$(basename "$rel")
        case "$name" in
          *.ko.xz) xz -dc "$moddir/$rel" > "$stage/lib/modules/${name%.xz}"; name=${name%.xz} ;;
          *.ko.zst) zstd -qdc "$moddir/$rel" > "$stage/lib/modules/${name%.zst}"; name=${name%.zst} ;;
          *) cp "$moddir/$rel" "$stage/lib/modules/$name" ;;
        esac
        echo "/lib/modules/$name" >> "$stage/$list"
      done
    }
    write_list modules.list "$@"
    local common g k
    common=$(printf '%s\n' "${!seen[@]}")
    for g in "${fs_groups[@]}"; do
      seen=()
      for k in $common; do seen[$k]=1; done
      write_list "modules.$g.list" "$g"
    done
  fi
  # Uncompressed: under TCG decompression costs more than reading.
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$dest"
  rm -rf "$stage"
}

# Debian's kernel: the newest of our flavour on this machine.
kver=$(ls /lib/modules | grep -- "-$kflavour\$" | sort -V | tail -n 1)
[ -n "$kver" ] || die "no linux-image-$kflavour installed"
kdir=$out/kernels/debian
mkdir -p "$kdir"
cp "/boot/vmlinuz-$kver" "$kdir/kernel"
make_initrd "$kdir/initrd" "$kver" "/lib/modules/$kver" load "${modules[@]}"
echo "$kver" > "$kdir/version"
# What the kernel can mount as the container root (the cloud kernel has no 9p).
features=virtiofs
grep -qE '/9p\.ko' "/lib/modules/$kver/modules.dep" && features="$features 9p"
echo "$features" > "$kdir/features"
default=debian

if [ -n "$runq_kernel" ]; then
  kdir=$out/kernels/runq
  mkdir -p "$kdir"
  rver=$(cat "$runq_kernel/version")
  # The uncompressed vmlinux: QEMU boots it through its PVH entry, with
  # no decompression (seconds under TCG).
  cp "$runq_kernel/vmlinux" "$kdir/kernel"
  make_initrd "$kdir/initrd" "$rver" "$runq_kernel/mods/lib/modules/$rver" ship
  echo "$rver" > "$kdir/version"
  features=virtiofs
  grep -q '^CONFIG_9P_FS=y' "$runq_kernel/config" && features="$features 9p"
  echo "$features" > "$kdir/features"
  default=runq
fi
ln -sfn "$default" "$out/kernels/default"
echo "build-tree: $out (kernels: $(ls "$out/kernels" | grep -v default | tr '\n' ' ')default -> $default; $(du -sh "$out" | cut -f1))"
