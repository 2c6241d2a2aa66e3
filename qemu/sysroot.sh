#!/usr/bin/env bash
# Debian's ARCH packages PKG... and their Depends closure (the ARCH
# packages of it: libraries, and a few tools never copied further),
# extracted into DIR: the
# sysroot a QEMU tree for another architecture is assembled from.
# Downloads are cached in /var/cache/runq/debs-ARCH.
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
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances $wanted | grep -E "^[a-z0-9].*:$arch\$" | sort -u)
pkgs=$( (echo "$wanted"; echo "$closure") | sort -u)
[ -n "$pkgs" ] || die "no packages for $*"
mkdir -p "$cache"
cd "$cache"
missing=()
for p in $pkgs; do
  ls "${p%%:*}"_*_"$arch".deb >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get download -qq "${missing[@]}" 2>&1 | grep -v 'unsandboxed' >&2 || true
fi
rm -rf "$dir"
mkdir -p "$dir"
for p in $pkgs; do
  deb=$(ls "${p%%:*}"_*_"$arch".deb 2>/dev/null | sort -V | tail -n 1)
  [ -n "$deb" ] || die "download of $p failed"
  dpkg-deb -x "$deb" "$dir"
done
# Kernel modules come without modules.dep (depmod runs at install time).
for m in "$dir"/lib/modules/*; do
  [ -d "$m" ] && depmod -b "$dir" "$(basename "$m")"
done
echo "sysroot: $dir ($(echo "$pkgs" | wc -l) packages for $arch)"
