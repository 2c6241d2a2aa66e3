# shellcheck shell=bash disable=SC2154
# Shared by build-tree.sh and add-s390x-guest.sh (sourced; expects $out,
# $bins, $fs_groups and die()).

# check_kernel NAME RELEASE MODDIR KERNEL: die unless RELEASE is one kernel
# release string (a sub-make's "Entering directory" lines once ended up in
# one), MODDIR holds that release's modules (depmod'ed) and KERNEL exists.
check_kernel() {
  local name=$1 rel=$2 moddir=$3 kernel=$4
  [[ $rel =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?[-+._a-zA-Z0-9]*$ ]] ||
    die "kernel $name: version [$(printf %s "$rel" | head -c 200 | tr '\n' '|')] is not one kernel release"
  [ -s "$moddir/modules.dep" ] || die "kernel $name $rel: no modules at $moddir (modules.dep missing)"
  [ -s "$kernel" ] || die "kernel $name $rel: $kernel missing"
}

# write_version KDIR RELEASE: KDIR/version, checked to read back as that one line
write_version() {
  echo "$2" >"$1/version"
  if [ "$(wc -l <"$1/version")" -ne 1 ] || [ "$(cat "$1/version")" != "$2" ]; then
    die "$1/version does not read back as the one line [$2]"
  fi
}

# write_kernel_dir NAME IMAGE RELEASE MODDIR ship|load NINEP [MODULE...]:
# the one writer of $out/kernels/NAME/{kernel,initrd,version,features}
# (the layout protocol/src/tree.rs names): IMAGE as the kernel, an initrd
# of make_initrd, the release, and the features (virtiofs, plus 9p when
# NINEP is yes, plus $FEATURES_EXTRA). $BUSYBOX passes through to
# make_initrd.
write_kernel_dir() {
  local name=$1 image=$2 release=$3 moddir=$4 mode=$5 ninep=$6 kdir features=virtiofs
  shift 6
  kdir=$out/kernels/$name
  mkdir -p "$kdir"
  cp "$image" "$kdir/kernel"
  make_initrd "$kdir/initrd" "$release" "$moddir" "$mode" "$@"
  write_version "$kdir" "$release"
  [ "$ninep" = yes ] && features="$features 9p"
  [ -z "${FEATURES_EXTRA:-}" ] || features="$features $FEATURES_EXTRA"
  echo "$features" >"$kdir/features"
}

# has_9p_module MODDIR: "yes" when MODDIR's modules include 9p.
has_9p_module() {
  if grep -qE '/9p\.ko' "$1/modules.dep"; then echo yes; else echo no; fi
}

# A binary and every library it links, at the same paths as on the host
# (or as in $sysroot, a tree of another arch's packages): the ELF
# interpreter and each DT_NEEDED, found where the loader looks, read with
# readelf, so that it works for binaries this host cannot run.
copy_with_libs() {
  local bin=$1 dest=$2 interp
  install -m 0755 "$bin" "$out$dest"
  interp=$(readelf -lW "$bin" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')
  [ -z "$interp" ] || copy_lib "$interp" "$bin"
  copy_needed "$bin"
}

# copy_needed ELF: its DT_NEEDED libraries and theirs, into $out.
copy_needed() {
  local so path
  for so in $(readelf -dW "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=$(find_lib "$so") || die "$so (needed by $1) not found in ${sysroot:-/}"
    [ -e "$out$path" ] && continue
    copy_lib "$path" "$1"
    copy_needed "${sysroot:-}$path"
  done
}

# find_lib SONAME: its path in the loader's multiarch and default dirs
find_lib() {
  local d t=${triplet:-$(uname -m)-linux-gnu}
  for d in /lib/$t /usr/lib/$t /lib /usr/lib /lib64 /usr/lib64; do
    [ -e "${sysroot:-}$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  return 1
}

# copy_lib PATH USER: PATH (resolved in the sysroot) into $out at PATH
copy_lib() {
  [ -e "${sysroot:-}$1" ] || die "$1 (needed by $2) missing"
  mkdir -p "$out$(dirname "$1")"
  cp -L "${sysroot:-}$1" "$out$1"
}

# initrd with runq-init as /init, busybox (a rootdisk's first-boot copy,
# modprobe for a workload allowed to load modules), and MODDIR's modules: those in LOAD in dependency
# order (listed in /modules.list for init), or the whole tree (for
# modprobe in the guest).
# make_initrd OUT KVER MODDIR ship|load [MODULE...]
# Uses $bins/runq-init, $BUSYBOX (default /bin/busybox), $fs_groups, die.
make_initrd() {
  local dest=$1 kver=$2 moddir=$3 mode=$4 stage rel name m
  shift 4
  stage=$(mktemp -d)
  mkdir -p "$stage"/{dev,proc,sys,rootfs,lib/modules,bin}
  install -m 0755 "$bins/runq-init" "$stage/init"
  install -m 0755 "${BUSYBOX:-/bin/busybox}" "$stage/bin/busybox"
  # The kernel's own module loader (/proc/sys/kernel/modprobe): a
  # request_module() of the guest kernel (e.g. `ip link add type dummy`)
  # loads from the shipped tree, as on a host.
  mkdir -p "$stage/sbin" && ln -s /bin/busybox "$stage/sbin/modprobe"
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
      # shellcheck disable=SC2013 # modules.dep: words after the colon
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
