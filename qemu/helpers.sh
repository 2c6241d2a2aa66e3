#!/usr/bin/env bash
# The vhost-user helpers from crates.io, virtiofsd and vhost-device-vsock,
# cargo-installed into ROOT/bin (a cache: /var/cache/runq/cargo, or
# /var/cache/runq/cargo-ARCH for another arch). Each one is validated
# before it is used: a binary of this host must run and report the pinned
# version (`--version`); one of another arch (TARGET given) must be an ELF
# of that machine that cargo recorded at the pinned version. A missing or
# bad one is reinstalled (--force), never trusted, and validated again.
# Usage: helpers.sh [--check] ROOT [TARGET]
#   --check: only validate; exit 1 naming the first bad helper.
#   TARGET: a Rust target triple (cross build: the linker and library
#   variables come from the caller, make's CROSS_ENV).
set -euo pipefail
check_only=
if [ "${1:-}" = --check ]; then check_only=1; shift; fi
root=${1:?usage: helpers.sh [--check] ROOT [TARGET]} target=${2:-}
helpers=(vhost-device-vsock@0.3.0 virtiofsd@1.14.0)

# The ELF machine readelf names for a target's arch.
elf_machine() {
  case ${1%%-*} in
    x86_64) echo "Advanced Micro Devices X86-64" ;;
    s390x) echo "IBM S/390" ;;
    aarch64) echo "AArch64" ;;
    *) echo "unknown arch of target $1" >&2; return 1 ;;
  esac
}

# valid NAME VERSION: 0 if ROOT/bin/NAME is that helper at that version,
# else 1 with the reason in $bad.
bad=
valid() {
  local name=$1 ver=$2 bin=$root/bin/$1 got machine
  bad=
  [ -x "$bin" ] || { bad="$bin missing"; return 1; }
  if [ -z "$target" ]; then
    got=$(timeout 10 "$bin" --version 2>&1 | head -n 1) || true
    [ "$got" = "$name $ver" ] || { bad="$bin --version: [$got], not [$name $ver]"; return 1; }
  else
    machine=$(elf_machine "$target")
    readelf -h "$bin" 2>/dev/null | grep -q "Machine: *$machine\$" ||
      { bad="$bin is not an ELF for $machine"; return 1; }
    cargo install --list --root "$root" 2>/dev/null | grep -qxF "$name v$ver:" ||
      { bad="cargo has no record of $name $ver in $root"; return 1; }
  fi
}

todo=()
for h in "${helpers[@]}"; do
  if ! valid "${h%@*}" "${h#*@}"; then
    [ -z "$check_only" ] || { echo "helpers: $bad" >&2; exit 1; }
    [ ! -e "$root/bin/${h%@*}" ] || echo "helpers: $bad: reinstalling" >&2
    todo+=("$h")
  fi
done
[ -z "$check_only" ] || exit 0
[ ${#todo[@]} -gt 0 ] || exit 0

echo "==> helpers: building ${todo[*]} from crates.io${target:+ for $target} (2-5 min on 2 cores, cached afterwards in $root)" >&2
for h in "${todo[@]}"; do
  cargo install -q --locked --force --root "$root" ${target:+--target "$target"} "$h"
  valid "${h%@*}" "${h#*@}" || { echo "helpers: $h installed but does not validate: $bad" >&2; exit 1; }
done
