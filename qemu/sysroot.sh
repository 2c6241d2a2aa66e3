#!/usr/bin/env bash
# Debian's ARCH packages PKG... and their Depends closure (the ARCH
# packages of it: libraries, and a few tools never copied further),
# extracted into DIR: the
# sysroot a QEMU tree for another architecture is assembled from.
# Downloads are cached in /var/cache/runq/debs-ARCH, each checked against
# the SHA256 in apt's index before it is used.
# DIR/.runq-sysroot (PKG..., written last) marks a complete sysroot.
# Usage: sysroot.sh ARCH DIR PKG...
set -euo pipefail
arch=$1 dir=$2
shift 2
die() { echo "sysroot: $*" >&2; exit 1; }
cache=/var/cache/runq/debs-$arch
if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
  dpkg --add-architecture "$arch"
  apt-get update -qq
fi
wanted=$(printf "%s:$arch\n" "$@")
# shellcheck disable=SC2086 # $wanted: one package per word
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances $wanted | grep -E "^[a-z0-9].*:$arch\$" | sort -u)
pkgs=$( (echo "$wanted"; echo "$closure") | sort -u)
[ -n "$pkgs" ] || die "no packages for $*"
# Each package's candidate from apt's index: its .deb name and SHA256. A
# cached .deb is used only when its SHA256 is that one; any other file of
# the package (truncated, corrupt, an older version) is removed, and what
# is missing is downloaded and checked the same way.
# shellcheck disable=SC2086 # $pkgs: one package per word
index=$(apt-cache show --no-all-versions $pkgs | awk -F': ' '
  /^Package: /{p=$2} /^Architecture: /{a=$2} /^Version: /{v=$2} /^SHA256: /{h=$2}
  /^$/{ if (p != "") print p, a, v, h; p=a=v=h="" }
  END{ if (p != "") print p, a, v, h }') || die "apt-cache show failed for: ${pkgs//$'\n'/ }"
[ "$(echo "$index" | wc -l)" -eq "$(echo "$pkgs" | wc -l)" ] ||
  die "apt-cache show gave $(echo "$index" | wc -l) records for $(echo "$pkgs" | wc -l) packages"
mkdir -p "$cache"
cd "$cache"
debs=()
# cached NAME ARCH SHA256: the cached .deb of NAME with that SHA256 (others removed)
cached() {
  local f found=
  for f in "$1"_*_"$2".deb; do
    [ -f "$f" ] || continue
    if [ -z "$found" ] && [ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$3" ]; then
      found=$f
    else
      echo "sysroot: $f is not $1's .deb in apt's index (SHA256): removed" >&2
      rm -f "$f"
    fi
  done
  [ -n "$found" ] && echo "$found"
}
check_all() {
  local name a v h deb
  missing=() debs=()
  while read -r name a v h; do
    [ -n "$h" ] || die "no SHA256 for $name $v in apt's index"
    if deb=$(cached "$name" "$a" "$h"); then debs+=("$deb"); else missing+=("$name:$arch=$v"); fi
  done <<<"$index"
}
check_all
if [ ${#missing[@]} -gt 0 ]; then
  apt-get download -qq "${missing[@]}" 2>&1 | grep -v 'unsandboxed' >&2 || true
  check_all
  [ ${#missing[@]} -eq 0 ] || die "download of ${missing[*]} failed or does not match apt's SHA256"
fi
rm -rf "$dir"
mkdir -p "$dir"
for deb in "${debs[@]}"; do
  dpkg-deb -x "$deb" "$dir"
done
# Kernel modules come without modules.dep (depmod runs at install time).
for m in "$dir"/lib/modules/*; do
  [ -d "$m" ] && depmod -b "$dir" "$(basename "$m")"
done
# Written last: a sysroot without it is incomplete (an interrupted run).
echo "$*" >"$dir/.runq-sysroot"
echo "sysroot: $dir ($(echo "$pkgs" | wc -l) packages for $arch)"
