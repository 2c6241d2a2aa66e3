#!/usr/bin/env bash
# The newcomer's path (issue 18): `make demo` as on a fresh machine, timed
# ("cold make demo: N s"). Its caches are fresh directories: the kernel
# cache (RUNQ_KERNEL_CACHE) holds only a corrupt entry for the current key
# (the two-line version file a sub-make once wrote) and the helper cache
# (HELPERS) only a virtiofsd of the wrong version, so the cold builds and
# the rejection and rebuild of bad cache entries run on every CI run, and a
# broken first install fails CI. PREFIX is the real one: its runq and the
# demo image are removed so that make demo installs and builds them.
# (Debian packages and cargo's target/ stay as they are: what the machine
# already has.) Afterwards the real caches get what was built where they
# lack it, so that the later make test does not build it again.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/var/lib/runq}
real_kcache=${RUNQ_KERNEL_CACHE:-/var/cache/runq/kernel}
real_helpers=${HELPERS:-/var/cache/runq/cargo}
cold=$(mktemp -d /var/tmp/runq-cold.XXXXXX)
trap 'rm -rf "$cold"' EXIT
kcache=$cold/kernel helpers=$cold/cargo
fail() { echo "cold make demo: FAILED: $*"; exit 1; }

# The corrupt kernel entry: the real cache's entry for the current key with
# the version file of the issue (make's directory lines around the
# release), else a stub of that key; the key needs linux-source, so on a
# machine that has never installed it the kernel cache is simply empty.
seeded=
if dpkg-query -W -f '${Status}' linux-source-6.1 2>/dev/null | grep -q 'ok installed'; then
  rc=0; entry=$(KERNEL_VALIDATE_ONLY=1 RUNQ_KERNEL_CACHE=$kcache kernel-config/build.sh 2>/dev/null) || rc=$?
  [ $rc -eq 4 ] || fail "the fresh kernel cache is not empty (status $rc)"
  rc=0; real_entry=$(KERNEL_VALIDATE_ONLY=1 RUNQ_KERNEL_CACHE=$real_kcache kernel-config/build.sh 2>/dev/null) || rc=$?
  mkdir -p "$kcache"
  if [ $rc -eq 0 ]; then
    cp -a "$real_entry" "$entry"
    ver=$(cat "$entry/version")
  else
    mkdir -p "$entry" && basename "$entry" >"$entry/key"
    ver=6.1.0
  fi
  printf "make[2]: Entering directory '/usr/src/linux-source-6.1'\n%s\nmake[2]: Leaving directory '/usr/src/linux-source-6.1'\n" \
    "$ver" >"$entry/version"
  seeded=1
fi
mkdir -p "$helpers/bin"
printf '#!/bin/sh\necho virtiofsd 0.0.1\n' >"$helpers/bin/virtiofsd"
chmod +x "$helpers/bin/virtiofsd"
rm -f "$prefix/runq"
if docker info >/dev/null 2>&1; then docker image rm -f runq-test/busybox:latest >/dev/null 2>&1 || true; fi

echo "cold make demo: kernel cache $kcache${seeded:+ (a corrupt entry)}, helpers $helpers (a bad virtiofsd)"
start=$SECONDS
RUNQ_KERNEL_CACHE=$kcache HELPERS=$helpers make demo 2>&1 | tee "$cold/demo.log" ||
  fail "make demo failed after $((SECONDS - start)) s"
echo "cold make demo: $((SECONDS - start)) s"

# What the run must have done: discarded both bad entries, stored valid ones.
if [ -n "$seeded" ]; then
  grep -q "cache entry $entry is corrupt" "$cold/demo.log" || fail "the corrupt kernel entry was not reported"
fi
grep -q "helpers: $helpers/bin/virtiofsd --version: \[virtiofsd 0.0.1\]" "$cold/demo.log" ||
  fail "the bad virtiofsd was not reported"
rc=0; entry=$(KERNEL_VALIDATE_ONLY=1 RUNQ_KERNEL_CACHE=$kcache kernel-config/build.sh 2>/dev/null) || rc=$?
[ $rc -eq 0 ] || fail "no valid kernel entry in $kcache after the build (status $rc)"
qemu/helpers.sh --check "$helpers" || fail "the helpers in $helpers do not validate"
[ "$(cat "$prefix/qemu/kernels/runq/version")" = "$(cat "$entry/version")" ] ||
  fail "the installed kernel is not the one built"

# Seed the real caches with what was built, where they lack it.
rc=0; KERNEL_VALIDATE_ONLY=1 kernel-config/build.sh >/dev/null 2>&1 || rc=$?
if [ $rc -ne 0 ]; then
  mkdir -p "$real_kcache"
  rm -rf "$real_kcache/.seed" && cp -a "$entry" "$real_kcache/.seed"
  mv -T "$real_kcache/.seed" "$real_kcache/$(basename "$entry")"
fi
if ! qemu/helpers.sh --check "$real_helpers" 2>/dev/null; then
  mkdir -p "$real_helpers/bin"
  for b in virtiofsd vhost-device-vsock; do
    cp "$helpers/bin/$b" "$real_helpers/bin/.$b.new" && mv -f "$real_helpers/bin/.$b.new" "$real_helpers/bin/$b"
  done
fi
