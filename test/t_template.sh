# Issue 20: VMs restored from a saved VM template (RUNQ_TEMPLATE=1,
# runtime option --template) instead of booted.

TEMPLATES=/var/cache/runq/templates

# template_qemu CONTAINER: the command line of the container's QEMU.
template_qemu() {
  local pid
  pid=$(docker inspect -f '{{.State.Pid}}' "$1") || return 1
  for p in $(pgrep -f '^qemu-system'); do
    if [ "$(readlink "/proc/$p/ns/pid")" = "$(readlink "/proc/$pid/ns/pid")" ]; then
      tr '\0' ' ' <"/proc/$p/cmdline"
      return 0
    fi
  done
  return 1
}

# The entry the templates of the default machine use (one per machine).
template_entries() {
  ls -d "$TEMPLATES"/*/ 2>/dev/null | grep -v '\.build-' || true
}

test_template_a_clone_restores_instead_of_booting() {
  local c line out
  c=$(cname tpl)
  start_sleeper "$c" -e RUNQ_TEMPLATE=1 || return
  line=$(template_qemu "$c") || why "no QEMU found for $c" || return
  [[ "$line" == *"-incoming defer"* ]] || why "QEMU was not started to restore: $line" || return
  [[ "$line" == *"-machine pc,"* ]] || why "not the template machine: $line" || return
  [[ "$line" == *"runq.template"* ]] || why "not the template's kernel command line: $line" || return
  # The devices it was given after the restore work: the root share (an
  # image file), the vsock (exec), the NIC.
  out=$(docker exec "$c" sh -c 'cat /etc/hostname; cat /sys/class/net/eth0/operstate') ||
    why "docker exec into the clone failed" || return
  expect_eq "hostname and eth0 in the clone" "$(docker inspect -f '{{.Config.Hostname}}' "$c")
up" "$out" || return
  [ -n "$(template_entries)" ] || why "no template entry in $TEMPLATES"
}

test_template_clones_do_not_share_random_state_or_clock() {
  local ra rb a entry age now t
  # Every clone starts from the same RAM, RNG state included: two clones'
  # first random bytes (drawn by the workload's first step) must differ.
  # This does not prove runq's own reseed: with it removed (measured, a
  # negative control), the bytes still differ (the guest kernel mixes in
  # virtio-rng and interrupt timings of its own); the clock check below
  # does fail without the renewal.
  ra=$("${RUNQ[@]}" --rm -e RUNQ_TEMPLATE=1 "$IMAGE" sh -c "head -c 16 /dev/urandom | od -An -tx1") ||
    why "first template run failed" || return
  rb=$("${RUNQ[@]}" --rm -e RUNQ_TEMPLATE=1 "$IMAGE" sh -c "head -c 16 /dev/urandom | od -An -tx1") ||
    why "second template run failed" || return
  [ -n "$ra" ] && [ "$ra" != "$rb" ] || why "two clones drew the same first random bytes: $ra" || return
  # The template's clock stopped when it was saved: a clone that kept it
  # would be behind by the template's age, which is made at least 10 s
  # here (the precondition of the check, not a wait for an event).
  entry=$(ls -td "$TEMPLATES"/*/ | head -n1)
  age=$(($(date +%s) - $(stat -c %Y "$entry/state")))
  [ "$age" -ge 10 ] || sleep $((10 - age))
  a=$(cname tpla)
  start_sleeper "$a" -e RUNQ_TEMPLATE=1 || return
  now=$(date +%s)
  t=$(docker exec "$a" date +%s) || why "docker exec into $a failed" || return
  in_range "clone's clock against the host's (s)" "$t" $((now - 1)) $((now + 2))
}

test_template_a_corrupt_or_stale_entry_is_rebuilt_not_used() {
  local entry size out c line
  # From an empty cache, so that the one entry is this machine's (the
  # cache heals: the next template start builds what it lacks).
  rm -rf "${TEMPLATES:?}"/*
  "${RUNQ[@]}" --rm -e RUNQ_TEMPLATE=1 "$IMAGE" true || why "first template run failed" || return
  entry=$(template_entries)
  [ "$(wc -l <<<"$entry")" = 1 ] && [ -n "$entry" ] || why "not one entry after a template run: $entry" || return
  size=$(stat -c %s "$entry/state") || why "no state in $entry" || return
  # Cut short, as a full disk or a crash while writing would leave it.
  truncate -s $((size / 2)) "$entry/state" || why "truncating the state failed" || return
  expect_eq "cut-short state" $((size / 2)) "$(stat -c %s "$entry/state")" || return
  out=$("${RUNQ[@]}" --rm -e RUNQ_TEMPLATE=1 "$IMAGE" echo restored 2>&1) ||
    why "run after truncating the template failed: $out" || return
  expect_eq "output with a rebuilt template" restored "$out" || return
  # Rebuilt whole: the size its inputs file records, QEMU's magic.
  expect_eq "rebuilt state's size against its record" "$(sed -n 's/^state //p' "$entry/inputs")" \
    "$(stat -c %s "$entry/state")" || return
  [ "$(stat -c %s "$entry/state")" -gt $((size / 2)) ] || why "the cut-short state was used" || return
  # Not a migration stream at all, same size: refused by its magic.
  dd if=/dev/zero of="$entry/state" bs=4 count=1 conv=notrunc status=none || why "zeroing the magic failed" || return
  [ "$(head -c 4 "$entry/state" | od -An -tx1 | tr -d ' ')" = 00000000 ] || why "the magic is not zeroed" || return
  # The next clone restores from the rebuilt entry (not a fallback boot).
  c=$(cname tplheal)
  start_sleeper "$c" -e RUNQ_TEMPLATE=1 || return
  line=$(template_qemu "$c") || why "no QEMU found for $c" || return
  [[ "$line" == *"-incoming defer"* ]] || why "after the rebuild the VM booted instead: $line" || return
  [ "$(head -c 4 "$entry/state")" = QEVM ] || why "the zeroed entry was used, not rebuilt"
}

test_template_a_new_kernel_or_qemu_gets_a_new_template() {
  local tree before after out
  tree=$(standin_tree) || why "no copy of the tree" || return
  docker run --runtime runq-standin --rm -e RUNQ_TEMPLATE=1 "$IMAGE" true || why "template run on the tree copy failed" || return
  before=$(template_entries)
  # A kernel upgrade: another initrd file (a copy, so the real tree's
  # stays as it is), the same bytes.
  cp "$tree/kernels/default/initrd" "$tree/kernels/default/initrd.new" &&
    mv "$tree/kernels/default/initrd.new" "$(readlink -f "$tree/kernels/default")/initrd" ||
    why "replacing the copy's initrd failed" || return
  out=$(docker run --runtime runq-standin --rm -e RUNQ_TEMPLATE=1 "$IMAGE" echo ok 2>&1)
  local rc=$?
  after=$(template_entries)
  rm -rf "$tree"
  # The tree copy's entries go with it (they name its paths).
  grep -l "$STANDIN_TREE" "$TEMPLATES"/*/inputs 2>/dev/null | xargs -r dirname | xargs -r rm -rf
  [ $rc -eq 0 ] || why "template run after the upgrade failed: $out" || return
  expect_eq "output after the upgrade" ok "$out" || return
  [ "$before" != "$after" ] || why "the same template entry after the initrd changed: $after" || return
  # The superseded entry (same machine, old files) is gone with it.
  expect_eq "entries for the tree copy's machine" "$(wc -l <<<"$before")" "$(wc -l <<<"$after")"
}

test_template_is_read_only_to_the_container_side() {
  local c pid err f
  c=$(cname tplro)
  start_sleeper "$c" -e RUNQ_TEMPLATE=1 || return
  pid=$(docker inspect -f '{{.State.Pid}}' "$c")
  # The proxy's own view (through its root, so its mounts): what every
  # other clone restores from cannot be written, even by root.
  for f in state ram; do
    if err=$(sh -c ": >> /proc/$pid/root/template/$f" 2>&1); then
      why "/template/$f is writable from the container side"
      return 1
    fi
    [[ "$err" == *"Read-only file system"* ]] || why "writing /template/$f: expected EROFS, got: $err" || return
  done
}

test_template_a_shape_the_container_chose_never_builds_one() {
  local before after line c
  before=$(template_entries)
  # An image's ENV can say RUNQ_MEM as easily as a user: a shape of the
  # container's own choosing uses a template that exists, and builds none.
  c=$(cname tplmem)
  start_sleeper "$c" -e RUNQ_TEMPLATE=1 -e RUNQ_MEM=333 || return
  line=$(template_qemu "$c") || why "no QEMU found for $c" || return
  [[ "$line" != *"-incoming"* ]] || why "a VM of the container's own shape was restored: $line" || return
  [[ "$line" == *"-m 333M"* ]] || why "not the container's 333 MiB: $line" || return
  after=$(template_entries)
  expect_eq "template entries after a container chose its shape" "$before" "$after" || return
  # Nothing of a container's description is in the cache.
  ! ls "$TEMPLATES"/*/vm.json >/dev/null 2>&1 || why "a container's vm.json is in the template cache" || return
  expect_eq "the cache's mode" 700 "$(stat -c %a "$TEMPLATES")"
}
