#!/usr/bin/env bash
# Assemble the self-contained, read-only tree that becomes the root of every
# runq container (installed at /var/lib/runq/qemu):
#   /usr/bin/{qemu-system-*,virtiofsd,vhost-device-vsock,runq-proxy}
#   their shared libraries and the dynamic loader, QEMU's firmware,
#   /kernel (Debian's cloud kernel), /initrd (runq-init + the modules the
#   guest needs), and empty mount points.
# Usage: build-tree.sh OUT_DIR BIN_DIR HELPER_BIN_DIR
#   BIN_DIR holds runq-proxy and runq-init (static), HELPER_BIN_DIR holds
#   virtiofsd and vhost-device-vsock (from crates.io).
set -euo pipefail

out=$1 bins=$2 helpers=$3
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
modules=(virtio_mmio vmw_vsock_virtio_transport virtiofs virtio-rng virtio_net)

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

# Guest kernel: the newest Debian kernel of our flavour on this machine.
kver=$(ls /lib/modules | grep -- "-$kflavour\$" | sort -V | tail -n 1)
[ -n "$kver" ] || die "no linux-image-$kflavour installed"
cp "/boot/vmlinuz-$kver" "$out/kernel"

# initrd: runq-init as /init, the modules in dependency order.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{dev,proc,sys,rootfs,lib/modules}
install -m 0755 "$bins/runq-init" "$stage/init"
# busybox-static's ip applet configures the guest's network.
mkdir -p "$stage/bin" && install -m 0755 /bin/busybox "$stage/bin/busybox"
mknod -m 600 "$stage/dev/console" c 5 1
moddir=/lib/modules/$kver
declare -A seen=()
order=()
add_module() { # depth-first: dependencies first
  local rel=$1 dep
  [ -n "${seen[$rel]:-}" ] && return
  seen[$rel]=1
  for dep in $(grep -E "^$rel:" "$moddir/modules.dep" | cut -d: -f2); do
    add_module "$dep"
  done
  order+=("$rel")
}
for m in "${modules[@]}"; do
  rel=$(grep -E "/$m\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | cut -d: -f1 || true)
  if [ -z "$rel" ]; then
    grep -qE "/$m\.ko" "$moddir/modules.builtin" || die "module $m neither built in nor shipped by $kver"
    continue
  fi
  add_module "$rel"
done
: > "$stage/modules.list"
for rel in "${order[@]}"; do
  name=$(basename "$rel")
  case "$name" in
    *.ko.xz) xz -dc "$moddir/$rel" > "$stage/lib/modules/${name%.xz}"; name=${name%.xz} ;;
    *.ko.zst) zstd -qdc "$moddir/$rel" > "$stage/lib/modules/${name%.zst}"; name=${name%.zst} ;;
    *) cp "$moddir/$rel" "$stage/lib/modules/$name" ;;
  esac
  echo "/lib/modules/$name" >> "$stage/modules.list"
done
# Uncompressed: under TCG decompression costs more than reading.
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$out/initrd"
echo "$kver" > "$out/kernel.version"
echo "build-tree: $out ($kver, ${#order[@]} modules, $(du -sh "$out" | cut -f1))"
