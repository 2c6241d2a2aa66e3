# shellcheck shell=bash disable=SC2015 # A && B || why: why names either failure
# Issue 18: cached artifacts are validated before they are used; a bad
# entry is discarded and rebuilt, never trusted. These tests corrupt
# copies of the caches (the real ones are only read) and check detection
# cheaply (KERNEL_VALIDATE_ONLY, helpers.sh --check, build-tree's input
# checks); .ci/run's cold `make demo` starts from a corrupt kernel entry
# and a bad helper, so the real rebuild runs in CI too.

# kernel_entry: kentry= the (valid) cache entry of the current key; skips
# when the minimal kernel is not installed (make install KERNEL=debian).
kentry=
kernel_entry() {
  local rc
  [ -d /var/lib/runq/qemu/kernels/runq ] || { skip "the minimal kernel is not installed"; return; }
  kentry=$(KERNEL_VALIDATE_ONLY=1 kernel-config/build.sh 2>/dev/null)
  rc=$?
  [ $rc -eq 0 ] || why "the installed kernel's cache entry $kentry does not validate (status $rc)"
}

test_kernel_cache_corrupt_entry_is_discarded() {
  local entry key tmp c cmd rc err
  kernel_entry || return
  entry=$kentry
  key=$(basename "$entry")
  tmp=$(mktemp -d)
  # name|corruption, run in the copied entry's directory
  while IFS='|' read -r c cmd; do
    rm -rf "$tmp/cache" && mkdir -p "$tmp/cache" && cp -a "$entry" "$tmp/cache/$key" || { why "copy"; break; }
    (cd "$tmp/cache/$key" && eval "$cmd") || { why "$c: corrupting failed"; break; }
    err=$(KERNEL_VALIDATE_ONLY=1 RUNQ_KERNEL_CACHE=$tmp/cache kernel-config/build.sh 2>&1 >/dev/null)
    rc=$?
    expect_eq "$c: status (3: corrupt, discarded)" 3 "$rc" || break
    [[ $err == *"is corrupt"* ]] || { why "$c: message was: $err"; break; }
    [ ! -e "$tmp/cache/$key" ] || { why "$c: the corrupt entry was kept"; break; }
  done <<'CASES'
make's directory lines around the release (the issue's bug)|v=$(cat version); printf "make[2]: Entering directory '/usr/src'\n%s\nmake[2]: Leaving directory '/usr/src'\n" "$v" >version
empty version|: >version
version without its modules|echo 6.1.999 >version
version that is no release|echo 'make: Nothing to be done' >version
no vmlinux|rm vmlinux
vmlinux not an ELF|echo garbage >vmlinux
vmlinux of another release|v=$(cat version); sed -i "s/Linux version $v /Linux version 0.0.0 /g" vmlinux
no modules.dep|rm mods/lib/modules/*/modules.dep
another key|echo 0123456789abcdef >key
CASES
  [ -z "$_reason" ] || { rm -rf "$tmp"; return 1; }
  # The untouched copy validates and is what build.sh hands out.
  rm -rf "$tmp/cache" && mkdir -p "$tmp/cache" && cp -a "$entry" "$tmp/cache/$key"
  KERNEL_VALIDATE_ONLY=1 RUNQ_KERNEL_CACHE=$tmp/cache kernel-config/build.sh >/dev/null 2>&1
  expect_eq "status of the intact copy" 0 $? || { rm -rf "$tmp"; return 1; }
  err=$(RUNQ_KERNEL_CACHE=$tmp/cache kernel-config/build.sh "$tmp/out" 2>&1)
  rc=$?
  expect_eq "build.sh from the intact copy (output: $err)" 0 $rc || { rm -rf "$tmp"; return 1; }
  [[ $err == *"cached $key"* ]] || { why "not served from the cache: $err"; rm -rf "$tmp"; return 1; }
  expect_eq "version handed out" "$(cat "$entry/version")" "$(cat "$tmp/out/version")"
  rc=$?
  rm -rf "$tmp"
  return $rc
}

test_kernel_cache_absent_entry_is_reported() {
  local tmp out rc
  tmp=$(mktemp -d)
  out=$(KERNEL_VALIDATE_ONLY=1 RUNQ_KERNEL_CACHE=$tmp kernel-config/build.sh 2>/dev/null)
  rc=$?
  rm -rf "$tmp"
  expect_eq "status (4: absent)" 4 $rc && [[ $out == "$tmp/"* ]] || why "entry path [$out], status $rc"
}

test_tree_refuses_a_corrupt_kernel_dir() {
  local entry tmp err rc v
  kernel_entry || return
  entry=$kentry
  tmp=$(mktemp -d)
  cp -a "$entry" "$tmp/kernel"
  v=$(cat "$tmp/kernel/version")
  printf "make[1]: Entering directory '/work'\n%s\n" "$v" >"$tmp/kernel/version"
  # The inputs are checked before anything is assembled: no binaries needed.
  err=$(qemu/build-tree.sh "$tmp/tree" "$tmp/none" "$tmp/none" "$tmp/kernel" 2>&1)
  rc=$?
  [ $rc -ne 0 ] || { why "build-tree.sh accepted a two-line version"; rm -rf "$tmp"; return 1; }
  [[ $err == *"version has 2 lines"* ]] || { why "message was: $err"; rm -rf "$tmp"; return 1; }
  [ ! -e "$tmp/tree" ] || { why "a tree was assembled"; rm -rf "$tmp"; return 1; }
  rm -rf "$tmp/kernel/mods"
  echo "$v" >"$tmp/kernel/version"
  err=$(qemu/build-tree.sh "$tmp/tree" "$tmp/none" "$tmp/none" "$tmp/kernel" 2>&1)
  rc=$?
  rm -rf "$tmp"
  [ $rc -ne 0 ] && [[ $err == *"no modules at"* ]] || why "without modules: status $rc, message: $err"
}

test_helpers_cache_bad_binary_is_detected() {
  local root=${HELPERS:-/var/cache/runq/cargo} tmp err rc
  qemu/helpers.sh --check "$root" || { why "the installed helpers in $root do not validate"; return; }
  tmp=$(mktemp -d)
  cp -a "$root/." "$tmp/"
  printf '#!/bin/sh\necho virtiofsd 0.0.1\n' >"$tmp/bin/virtiofsd.new" && chmod +x "$tmp/bin/virtiofsd.new"
  mv -f "$tmp/bin/virtiofsd.new" "$tmp/bin/virtiofsd"
  err=$(qemu/helpers.sh --check "$tmp" 2>&1)
  rc=$?
  rm -rf "$tmp"
  expect_eq "status" 1 $rc && [[ $err == *"virtiofsd --version: [virtiofsd 0.0.1]"* ]] || why "status $rc, message: $err"
}
