# Issue 10: no byte lost on the streams, a dockerd restart under
# live-restore, and a guest that never answers.

MIB100=$((100 * 1024 * 1024))

# The workload writes 100 MiB of random data to stream FD, prints the
# guest's own checksum on the other stream, and exits at once.
hundred_mib_through() {
  local fd=$1 other=$(( 3 - $1 )) out guest host
  out=$(mktemp -d)
  "${RUNQ[@]}" --rm "$IMAGE" sh -c \
    "head -c $MIB100 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&$other && cat /tmp/blob >&$fd" \
    >"$out/1" 2>"$out/2" || { why "docker run failed: $(tail -c 300 "$out/2")"; rm -rf "$out"; return 1; }
  guest=$(cut -d' ' -f1 "$out/$other")
  host=$(sha256sum <"$out/$fd" | cut -d' ' -f1)
  local size; size=$(stat -c %s "$out/$fd")
  rm -rf "$out"
  expect_eq "bytes on fd $fd" "$MIB100" "$size" || return
  expect_eq "sha256 of fd $fd (guest vs host)" "$guest" "$host"
}

test_hundred_mib_stdout_arrive_intact() { hundred_mib_through 1; }
test_hundred_mib_stderr_arrive_intact() { hundred_mib_through 2; }

test_hundred_mib_stdin_arrive_intact() {
  local blob want got
  blob=$(mktemp)
  head -c "$MIB100" /dev/urandom >"$blob"
  want=$(sha256sum <"$blob" | cut -d' ' -f1)
  got=$("${RUNQ[@]}" --rm -i "$IMAGE" sh -c 'sha256sum' <"$blob" | cut -d' ' -f1)
  rm -f "$blob"
  expect_eq "sha256 of 100 MiB stdin seen in the guest" "$want" "$got"
}

test_guest_has_entropy_without_waiting() {
  # getrandom(2) blocks until the pool is initialised; virtio-rng feeds it.
  # Bounded: the read gives up after 10 s (0 bytes), and the run as a whole
  # after 120 s, so a guest that waits for entropy fails, and hangs nothing.
  local c out start
  c=$(cname entropy)
  start=$SECONDS
  out=$(timeout -k 10 120 "${RUNQ[@]}" --rm --name "$c" "$IMAGE" sh -c \
    'cat /sys/class/misc/hw_random/rng_current; timeout 10 head -c 16 /dev/random | wc -c')
  # By the clock, not by timeout's status (124 may be a workload's too).
  [ $((SECONDS - start)) -lt 120 ] || why "docker run did not end within 120s (output: $out)" || return
  expect_eq "hw rng and 16 bytes from /dev/random within 10s" "$(printf 'virtio_rng.0\n16')" "$out"
}

# A copy of the installed QEMU tree (hard links: cheap, and the original
# is untouched when a file is replaced) registered as runtime NAME.
_trees_file=$(mktemp)
tree_copy() {
  local name=$1 dir
  dir=$(mktemp -d /var/lib/runq/test-tree.XXXXXX)
  echo "$dir" >>"$_trees_file"
  cp -al /var/lib/runq/qemu/. "$dir/"
  contrib/daemon-json.py register /var/lib/runq/runq "$name" --qemu-tree "$dir" "${ACCEL_ARGS[@]}" >/dev/null
  contrib/dockerd.sh ensure
  wait_runtime "$name" 2>/dev/null || why "dockerd did not pick up runtime $name within 30s" || return
  echo "$dir"
}
drop_tree_copies() {
  local d
  for d in $(cat "$_trees_file"); do rm -rf "$d"; done
  : >"$_trees_file"
  # Unregister the runtimes that pointed at them.
  contrib/daemon-json.py drop-runtimes /var/lib/runq/test-tree.
  contrib/dockerd.sh ensure
}

test_guest_init_that_never_answers_fails_naming_the_stage() {
  local dir c start took out stage
  dir=$(tree_copy runq-broken-initrd) || return
  # An initrd whose /init boots fine and then never calls the proxy.
  stage=$(mktemp -d)
  mkdir -p "$stage/bin" && cp /bin/busybox "$stage/bin/busybox"
  printf '#!/bin/busybox sh\nexec /bin/busybox sleep 100000\n' >"$stage/init" && chmod 755 "$stage/init"
  local kdir; kdir=$dir/kernels/$(readlink "$dir/kernels/default")
  rm -f "$kdir/initrd"
  (cd "$stage" && find . | cpio --quiet -o -H newc -R 0:0) >"$kdir/initrd"
  rm -rf "$stage"
  c=$(cname noinit)
  start=$SECONDS
  out=$(timeout 120 docker run --name "$c" --runtime runq-broken-initrd "$IMAGE" true 2>&1)
  local rc=$?
  took=$((SECONDS - start))
  drop_tree_copies
  if [ "${RUNQ_TEST_TEMPLATE:-}" = 1 ]; then
    # With --template the guest boots in runq create, as the template:
    # a create failure, as docker run reports one (125).
    expect_eq "exit code when init never answers (template)" 125 "$rc" || return
    echo "$out" | grep -q "the template guest was not ready within 60s (stage: kernel boot to runq-init" ||
      why "no stage named in: $(echo "$out" | tail -n 2)" || return
    ! ls -d /var/cache/runq/templates/*.build-* >/dev/null 2>&1 ||
      why "the failed template build left its directory behind" || return
  else
    expect_eq "exit code when init never answers" 255 "$rc" || return
    echo "$out" | grep -q "the guest did not call back within 60s (stage: kernel boot to runq-init)" ||
      why "no stage named in: $(echo "$out" | tail -n 2)" || return
  fi
  in_range "seconds until docker run gave up" "$took" 60 90 || return
  cleanup_containers
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)"
}

test_missing_kernel_is_refused_with_nothing_left_behind() {
  local dir c out rc bundles_before
  dir=$(tree_copy runq-nokernel) || return
  rm -f "$dir"/kernels/*/kernel
  c=$(cname nokernel)
  out=$(docker run --name "$c" --runtime runq-nokernel "$IMAGE" true 2>&1)
  rc=$?
  drop_tree_copies
  [ $rc -ne 0 ] || why "docker run succeeded without a kernel" || return
  echo "$out" | grep -q "kernel is missing: the QEMU tree is incomplete" ||
    why "unclear error: $out" || return
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)"
}

test_live_restore_dockerd_restart_keeps_vms_running() {
  local c qemu_before qemu_after
  set_live_restore true || return
  c=$(cname liverestore)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'trap "exit 3" TERM; echo ready; while :; do sleep 1; done' >/dev/null &&
    wait_log "$c" ready || { set_live_restore false; return 1; }
  qemu_before=$(pgrep -f '^qemu-system' | sort | tr '\n' ' ')
  contrib/dockerd.sh restart || { set_live_restore false; why "dockerd restart failed"; return 1; }
  qemu_after=$(pgrep -f '^qemu-system' | sort | tr '\n' ' ')
  expect_eq "QEMU processes across the dockerd restart" "$qemu_before" "$qemu_after" || { set_live_restore false; return 1; }
  expect_eq "running after the restart" true "$(docker inspect -f '{{.State.Running}}' "$c")" || { set_live_restore false; return 1; }
  expect_eq "exec after the restart" hi "$(docker exec "$c" echo hi)" || { set_live_restore false; return 1; }
  docker stop -t 20 "$c" >/dev/null
  set_live_restore false || return
  expect_eq "exit code of docker stop after the restart" 3 "$(wait_exit "$c" 30)"
}

# set_live_restore true|false: in daemon.json, reloaded by SIGHUP.
set_live_restore() {
  # dockerd reloads only keys present in the file: "false" is written, and
  # the key removed once dockerd reports it off (absent means off).
  contrib/daemon-json.py set live-restore "$1" || { why "could not edit daemon.json"; return 1; }
  contrib/dockerd.sh ensure
  timeout 30 sh -c "until [ \"\$(docker info --format '{{.LiveRestoreEnabled}}')\" = $1 ]; do sleep 0.1; done" ||
    why "dockerd did not report LiveRestoreEnabled=$1 within 30s" || return
  [ "$1" = true ] || contrib/daemon-json.py del live-restore
}
