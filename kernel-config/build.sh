#!/bin/bash
# Build runq's minimal guest kernel from Debian's linux-source-6.1 and the
# fragment beside this script, cached by content: the cache key covers the
# fragment, this script, the source package version and the compiler, so a
# rebuild happens only when one of them changes.
#
#   kernel-config/build.sh OUTDIR     -> OUTDIR/{vmlinux,modules/,version,key}
#
# Needs: linux-source-6.1 bc bison flex libelf-dev libssl-dev kmod (make deps).
# Takes ~6-9 min on 2 cores; prints the cache hit otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
frag=$here/runq-guest.config
tarball=/usr/src/linux-source-6.1.tar.xz
cache=${RUNQ_KERNEL_CACHE:-/var/cache/runq/kernel}

[ -r "$tarball" ] || { echo "build.sh: $tarball missing (apt-get install linux-source-6.1)" >&2; exit 1; }
srcver=$(dpkg-query -W -f '${Version}' linux-source-6.1)
key=$( { cat "$frag" "$0"; echo "$srcver"; gcc --version | head -n1; } | sha256sum | cut -c1-16)
dest=$cache/$key

# A cache entry is used only when it is whole: a vmlinux, a release string
# that looks like one (a sub-make's "Entering directory" lines once ended up
# in it), the modules of that release and the key it was built for.
valid_entry() {
  local d=$1 ver
  [ -s "$d/vmlinux" ] && [ -s "$d/config" ] && [ -f "$d/key" ] || return 1
  [ "$(cat "$d/key")" = "$key" ] || return 1
  [ "$(wc -l <"$d/version")" -eq 1 ] || return 1
  ver=$(cat "$d/version")
  [[ $ver =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?[-+._a-zA-Z0-9]*$ ]] || return 1
  [ -d "$d/mods/lib/modules/$ver" ]
}

if [ -d "$dest" ] && ! valid_entry "$dest"; then
  echo "kernel: cache entry $dest is incomplete or corrupt: rebuilding" >&2
  rm -rf "$dest"
fi

if [ ! -d "$dest" ]; then
  work=$cache/build-$key
  rm -rf "$work" && mkdir -p "$work"
  echo "kernel: building $key (linux-source $srcver) in $work" >&2
  tar -C "$work" -xJf "$tarball"
  src=$work/linux-source-6.1
  obj=$work/obj
  mkdir -p "$obj"
  (cd "$src" && scripts/kconfig/merge_config.sh -n -O "$obj" "$frag" >"$work/merge.log")
  # merge_config only warns when a symbol did not take (a missing
  # dependency): refuse that, a silently absent driver is a boot-time mystery.
  missing=$(grep -E '^CONFIG_[A-Z0-9_]+=[ym]$' "$frag" | while read -r line; do
    grep -qx "$line" "$obj/.config" || echo "$line"; done)
  if [ -n "$missing" ]; then
    echo "build.sh: these fragment lines did not take (dependency missing?):" >&2
    echo "$missing" >&2
    exit 1
  fi
  make -C "$src" O="$obj" -j"$(nproc)" vmlinux modules >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; exit 1; }
  stage=$work/stage
  mkdir -p "$stage"
  make -C "$src" O="$obj" INSTALL_MOD_PATH="$stage/mods" INSTALL_MOD_STRIP=1 modules_install >>"$work/build.log" 2>&1
  strip -o "$stage/vmlinux" "$obj/vmlinux"
  # MAKEFLAGS from an outer make (make demo -> make install) would add
  # "Entering directory" lines to the output: this make runs on its own.
  MAKEFLAGS= MAKELEVEL= make -s --no-print-directory -C "$src" O="$obj" kernelrelease >"$stage/version"
  cp "$obj/.config" "$stage/config"
  echo "$key" >"$stage/key"
  valid_entry "$stage" || { echo "build.sh: the built kernel does not validate (version: $(head -c 200 "$stage/version"))" >&2; exit 1; }
  rm -rf "$dest" && mv "$stage" "$dest"
  rm -rf "$work"
else
  echo "kernel: cached $key ($(cat "$dest/version"))" >&2
fi

rm -rf "$out" && mkdir -p "$out"
cp -a "$dest/." "$out/"
