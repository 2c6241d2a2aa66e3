# Issue 3: lifecycle and sizing as Docker users know them.

LOOP='trap "echo got-usr1" USR1; echo ready; while true; do sleep 0.1; done'

test_docker_stop_kills_a_workload_ignoring_sigterm_at_the_timeout() {
  local c; c=$(cname stopkill)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'trap "" TERM; echo ready; while true; do sleep 0.1; done' >/dev/null ||
    why "start failed" || return
  wait_log "$c" ready || return
  local t0=$SECONDS
  docker stop -t 2 "$c" >/dev/null
  local took=$((SECONDS - t0))
  expect_eq "exit code after the stop timeout" 137 "$(docker inspect -f '{{.State.ExitCode}}' "$c")" || return
  [ $took -ge 2 ] && [ $took -le 10 ] || why "docker stop -t 2 took ${took}s" || return
  cleanup_containers
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)"
}

test_docker_rm_f_of_a_running_vm() {
  local c; c=$(cname rmf)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c "$LOOP" >/dev/null || why "start failed" || return
  wait_log "$c" ready || return
  docker rm -f "$c" >/dev/null || why "rm -f failed" || return
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)"
}

test_pause_and_unpause() {
  local c; c=$(cname pause)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c "$LOOP" >/dev/null || why "start failed" || return
  wait_log "$c" ready || return
  docker pause "$c" >/dev/null || why "pause failed" || return
  expect_eq "state while paused" paused "$(docker inspect -f '{{.State.Status}}' "$c")" || return
  docker unpause "$c" >/dev/null || why "unpause failed" || return
  docker kill -s USR1 "$c" >/dev/null
  wait_log "$c" got-usr1 30
}

test_docker_restart() {
  local c; c=$(cname restart)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'echo "boot $(cat /proc/sys/kernel/random/boot_id)"; exec sleep 600' >/dev/null ||
    why "start failed" || return
  wait_log "$c" boot || return
  docker restart -t 1 "$c" >/dev/null || why "restart failed" || return
  timeout 60 sh -c "until [ \$(docker logs $c 2>&1 | grep -c boot) -ge 2 ]; do sleep 0.2; done" ||
    why "no second boot line after restart" || return
  local ids; ids=$(docker logs "$c" 2>&1 | grep boot | sort -u | wc -l)
  expect_eq "distinct guest boot ids (a new VM after restart)" 2 "$ids"
}

test_restart_on_failure() {
  local c; c=$(cname onfail)
  "${RUNQ[@]}" -d --name "$c" --restart on-failure:2 "$IMAGE" sh -c 'echo run; exit 3' >/dev/null || why "start failed" || return
  timeout 120 sh -c "until [ \"\$(docker inspect -f '{{.RestartCount}} {{.State.Status}}' $c)\" = '2 exited' ]; do sleep 0.5; done" ||
    why "expected 2 restarts then exited, have: $(docker inspect -f '{{.RestartCount}} {{.State.Status}}' "$c")" || return
  expect_eq "runs seen in the logs" 3 "$(docker logs "$c" | grep -c run)" || return
  expect_eq "final exit code" 3 "$(docker inspect -f '{{.State.ExitCode}}' "$c")"
}

test_docker_logs_keep_streams_apart() {
  local c; c=$(cname logs)
  "${RUNQ[@]}" --name "$c" "$IMAGE" sh -c 'echo to-out; echo to-err >&2' >/dev/null 2>&1
  expect_eq "docker logs stdout" to-out "$(docker logs "$c" 2>/dev/null)" || return
  expect_eq "docker logs stderr" to-err "$(docker logs "$c" 2>&1 >/dev/null)"
}

memtotal_kb() { "${RUNQ[@]}" --rm "$@" "$IMAGE" awk '/MemTotal/ {print $2}' /proc/meminfo; }

test_vm_sizing() {
  in_range "MemTotal kB, default 256 MiB" "$(memtotal_kb)" 200000 262144 || return
  in_range "MemTotal kB, RUNQ_MEM=512" "$(memtotal_kb -e RUNQ_MEM=512)" 450000 524288 || return
  in_range "MemTotal kB, --memory 300m" "$(memtotal_kb --memory 300m)" 240000 307200 || return
  in_range "MemTotal kB, RUNQ_MEM=200 beats --memory 300m" "$(memtotal_kb --memory 300m -e RUNQ_MEM=200)" 150000 204800 || return
  expect_eq "nproc with RUNQ_CPU=2" 2 "$("${RUNQ[@]}" --rm -e RUNQ_CPU=2 "$IMAGE" nproc)" || return
  expect_eq "nproc with --cpus 1.5" 2 "$("${RUNQ[@]}" --rm --cpus 1.5 "$IMAGE" nproc)" || return
  expect_eq "nproc by default" 1 "$("${RUNQ[@]}" --rm "$IMAGE" nproc)"
}

test_invalid_sizes_are_refused_by_name() {
  local err created
  created=$(docker ps -aq --filter status=created | grep -c . || true)
  err=$("${RUNQ[@]}" --rm -e RUNQ_CPU=0 "$IMAGE" true 2>&1) && { why "RUNQ_CPU=0 accepted"; return 1; }
  [[ "$err" == *'RUNQ_CPU="0": not a number of vCPUs'* ]] || why "message was: $err" || return
  err=$("${RUNQ[@]}" --rm -e RUNQ_MEM=32 "$IMAGE" true 2>&1) && { why "RUNQ_MEM=32 accepted"; return 1; }
  [[ "$err" == *'RUNQ_MEM="32": not a number of MiB between 64'* ]] || why "message was: $err" || return
  expect_eq "QEMU/helper processes after refusals" 0 "$(vm_processes)" || return
  expect_eq "containers left by --rm refusals" "$created" "$(docker ps -aq --filter status=created | grep -c . || true)"
}

test_vm_not_oom_killed_when_guest_uses_its_memory() {
  local out
  # The guest fills a tmpfs with most of its RAM; QEMU's own overhead
  # must fit in the cgroup on top of --memory.
  out=$("${RUNQ[@]}" --rm --memory 256m -e RUNQ_TMPFS=/big "$IMAGE" sh -c \
    'dd if=/dev/zero of=/big/f bs=1M count=100 2>/dev/null && echo filled')
  expect_eq "guest filled 100 MiB of its 256 MiB (tmpfs holds half the RAM)" filled "$out"
}
