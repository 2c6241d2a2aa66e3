#!/bin/bash
# Build runq's minimal guest kernel from Debian's linux-source-6.1 and the
# fragment beside this script, cached by content: the cache key covers the
# fragment, this script, the source package version and the compiler, so a
# rebuild happens only when one of them changes.
#
#   kernel-config/build.sh OUTDIR     -> OUTDIR/{vmlinux,mods/,version,config,key}
#
# Every cache entry is validated before it is used and before it is
# stored (valid_entry); a bad one is discarded and rebuilt, never trusted.
# KERNEL_VALIDATE_ONLY=1 stops after that check, prints the entry's path
# and exits 0 (valid: would be used), 3 (was corrupt: discarded, would be
# rebuilt) or 4 (absent: would be built); OUTDIR is not needed then.
# RUNQ_KERNEL_CACHE: the cache (default /var/cache/runq/kernel).
#
# Needs: linux-source-6.1 bc bison flex libelf-dev libssl-dev kmod (make deps).
# Takes ~6-10 min on 2 cores; prints the cache hit otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
validate_only=${KERNEL_VALIDATE_ONLY:-}
out=${1:-}
[ -n "$out" ] || [ -n "$validate_only" ] || { echo "usage: build.sh OUTDIR" >&2; exit 2; }
frag=$here/runq-guest.config
tarball=/usr/src/linux-source-6.1.tar.xz
cache=${RUNQ_KERNEL_CACHE:-/var/cache/runq/kernel}

[ -r "$tarball" ] || { echo "build.sh: $tarball missing (apt-get install linux-source-6.1)" >&2; exit 1; }
srcver=$(dpkg-query -W -f '${Version}' linux-source-6.1)
key=$( { cat "$frag" "$0"; echo "$srcver"; gcc --version | head -n1; } | sha256sum | cut -c1-16)
dest=$cache/$key

# A cache entry is used only when it is whole: the key it was built for, a
# release string that looks like one and is a single line (a sub-make's
# "Entering directory" lines once ended up in it), a vmlinux (ELF) of that
# release, its config and the modules of that release (depmod'ed).
# valid_entry DIR: 0 if so, else 1 with the reason in $bad.
bad=
valid_entry() {
  local d=$1 ver
  bad=
  for f in key version config vmlinux; do
    [ -s "$d/$f" ] || { bad="$f missing or empty"; return 1; }
  done
  [ "$(cat "$d/key")" = "$key" ] || { bad="built for key $(head -c 64 "$d/key")"; return 1; }
  [ "$(wc -l <"$d/version")" -eq 1 ] ||
    { bad="version has $(wc -l <"$d/version") lines: $(head -c 120 "$d/version" | tr '\n' '|')"; return 1; }
  ver=$(cat "$d/version")
  [[ $ver =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?[-+._a-zA-Z0-9]*$ ]] || { bad="version [$ver] is not a kernel release"; return 1; }
  [ "$(head -c 4 "$d/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || { bad="vmlinux is not an ELF file"; return 1; }
  grep -aqF "Linux version $ver " "$d/vmlinux" || { bad="vmlinux is not release $ver"; return 1; }
  [ -s "$d/mods/lib/modules/$ver/modules.dep" ] || { bad="no modules of $ver (mods/lib/modules/$ver/modules.dep)"; return 1; }
}

if [ -d "$dest" ] && ! valid_entry "$dest"; then
  rm -rf "$dest"
  if [ -n "$validate_only" ]; then
    echo "kernel: cache entry $dest is corrupt ($bad): discarded" >&2
    echo "$dest"
    exit 3
  fi
  echo "kernel: cache entry $dest is corrupt ($bad): discarded, rebuilding" >&2
fi
if [ -n "$validate_only" ]; then
  echo "$dest"
  if [ -d "$dest" ]; then exit 0; else exit 4; fi
fi

# The kernel's make runs on its own: an outer make's MAKEFLAGS (make demo
# -> make install -> build.sh) would add "Entering directory" lines to
# kernelrelease's output, and pass its command-line variables (ARCH=...,
# V=...) into kbuild.
kmake() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES make "$@"; }

if [ ! -d "$dest" ]; then
  work=$cache/build-$key
  rm -rf "$work" && mkdir -p "$work"
  echo "==> kernel: building the minimal guest kernel $key (linux-source $srcver; 6-10 min on 2 cores, cached afterwards in $cache)" >&2
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
  kmake -C "$src" O="$obj" -j"$(nproc)" vmlinux modules >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; exit 1; }
  stage=$work/stage
  mkdir -p "$stage"
  kmake -C "$src" O="$obj" INSTALL_MOD_PATH="$stage/mods" INSTALL_MOD_STRIP=1 modules_install >>"$work/build.log" 2>&1
  strip -o "$stage/vmlinux" "$obj/vmlinux"
  # -s and no directory lines: only the release string.
  kmake -s --no-print-directory -C "$src" O="$obj" kernelrelease >"$stage/version"
  cp "$obj/.config" "$stage/config"
  echo "$key" >"$stage/key"
  valid_entry "$stage" || { echo "build.sh: the built kernel does not validate ($bad); not cached (build in $work)" >&2; exit 1; }
  rm -rf "$dest" && mv "$stage" "$dest"
  rm -rf "$work"
else
  echo "==> kernel: cached $key ($(cat "$dest/version")) in $cache" >&2
fi

rm -rf "$out" && mkdir -p "$out"
cp -a "$dest/." "$out/"
valid_entry "$out" || { echo "build.sh: the copy in $out does not validate ($bad)" >&2; exit 1; }
