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
  local a b ra rb now t
  a=$(cname tpla) b=$(cname tplb)
  start_sleeper "$a" -e RUNQ_TEMPLATE=1 || return
  start_sleeper "$b" -e RUNQ_TEMPLATE=1 || return
  # Every clone starts from the same RAM: without a reseed their kernels
  # would hand out the same bytes.
  ra=$(docker exec "$a" sh -c 'head -c 16 /dev/urandom | od -An -tx1; cat /proc/sys/kernel/random/boot_id') || return
  rb=$(docker exec "$b" sh -c 'head -c 16 /dev/urandom | od -An -tx1; cat /proc/sys/kernel/random/boot_id') || return
  [ "$ra" != "$rb" ] || why "two clones drew the same random bytes: $ra" || return
  [ "$(sed -n 2p <<<"$ra")" != "$(sed -n 2p <<<"$rb")" ] || why "two clones have one boot_id" || return
  # The template's clock stopped when it was saved; a clone's is the host's.
  now=$(date +%s)
  t=$(docker exec "$a" date +%s) || return
  in_range "clone's clock against the host's (s)" "$t" $((now - 5)) $((now + 5))
}

test_template_a_corrupt_or_stale_entry_is_rebuilt_not_used() {
  local entry size out
  # From an empty cache, so that the one entry is this machine's (the
  # cache heals: the next template start builds what it lacks).
  rm -rf "${TEMPLATES:?}"/*
  "${RUNQ[@]}" --rm -e RUNQ_TEMPLATE=1 "$IMAGE" true || why "first template run failed" || return
  entry=$(template_entries)
  [ "$(wc -l <<<"$entry")" = 1 ] && [ -n "$entry" ] || why "not one entry after a template run: $entry" || return
  size=$(stat -c %s "$entry/state")
  # Cut short, as a full disk or a crash while writing would leave it.
  truncate -s $((size / 2)) "$entry/state"
  out=$("${RUNQ[@]}" --rm -e RUNQ_TEMPLATE=1 "$IMAGE" echo restored 2>&1) ||
    why "run after truncating the template failed: $out" || return
  expect_eq "output with a rebuilt template" restored "$out" || return
  # Rebuilt whole: the size its inputs file records, QEMU's magic.
  expect_eq "rebuilt state's size against its record" "$(sed -n 's/^state //p' "$entry/inputs")" \
    "$(stat -c %s "$entry/state")" || return
  [ "$(stat -c %s "$entry/state")" -gt $((size / 2)) ] || why "the cut-short state was used" || return
  # Not a migration stream at all, same size: refused by its magic.
  dd if=/dev/zero of="$entry/state" bs=4 count=1 conv=notrunc status=none
  out=$("${RUNQ[@]}" --rm -e RUNQ_TEMPLATE=1 "$IMAGE" echo restored 2>&1) ||
    why "run after zeroing the template's magic failed: $out" || return
  expect_eq "output with a rebuilt template" restored "$out" || return
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
  out=$(docker run --runtime runq-standin --rm -e RUNQ_TEMPLATE=1 "$IMAGE" echo ok 2>&1) ||
    why "template run after the upgrade failed: $out" || return
  expect_eq "output after the upgrade" ok "$out" || return
  after=$(template_entries)
  rm -rf "$tree"
  [ "$before" != "$after" ] || why "the same template entry after the initrd changed: $after" || return
  # The superseded entry (same machine, old files) is gone with it.
  expect_eq "entries for the tree copy's machine" "$(wc -l <<<"$before")" "$(wc -l <<<"$after")"
}

test_template_is_read_only_to_the_container_side() {
  local c pid err
  c=$(cname tplro)
  start_sleeper "$c" -e RUNQ_TEMPLATE=1 || return
  pid=$(docker inspect -f '{{.State.Pid}}' "$c")
  # The proxy's own view (through its root, so its mounts): the state
  # every other clone restores from cannot be written, even by root.
  err=$(sh -c "echo x >> /proc/$pid/root/template/state" 2>&1) &&
    why "the container side could append to the template" || true
  [[ "$err" == *"Read-only file system"* ]] || why "writing /template/state: expected EROFS, got: $err"
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
