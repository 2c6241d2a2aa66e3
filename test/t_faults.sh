# Issue 10 (part): faults end the container with a status and a reason,
# and leave nothing behind.

# pid_in C COMM: the host pid of process COMM in container C.
pid_in() {
  docker top "$1" -eo pid,comm | awk -v c="$2" '$2 ~ "^"c {print $1; exit}'
}

test_qemu_killed_ends_the_container_with_a_reason() {
  local c pid; c=$(cname qemukill)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null && wait_log "$c" ready || return
  pid=$(pid_in "$c" qemu-system) && [ -n "$pid" ] || why "no QEMU in docker top" || return
  kill -KILL "$pid"
  expect_eq "exit code after QEMU was killed" 255 "$(wait_exit "$c" 30)" || return
  docker logs "$c" 2>&1 | grep -q "runq: the VM stopped before the workload ended (QEMU signal: 9" ||
    why "no reason in docker logs: $(docker logs "$c" 2>&1 | tail -n 1)" || return
  cleanup_containers
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)"
}

test_guest_kernel_panic_ends_the_container_with_a_reason() {
  local c; c=$(cname panic)
  # /proc/sysrq-trigger is read-only for a container, as under runc.
  "${RUNQ[@]}" -d --name "$c" --security-opt systempaths=unconfined "$IMAGE" sh -c 'echo c > /proc/sysrq-trigger; sleep 600' >/dev/null ||
    why "start failed" || return
  expect_eq "exit code after a guest panic" 255 "$(wait_exit "$c" 60)" || return
  docker logs "$c" 2>&1 | grep -q "guest console: .*Kernel panic" ||
    why "no panic line in docker logs: $(docker logs "$c" 2>&1 | tail -n 1)"
}

test_proxy_killed_takes_qemu_and_helpers_with_it() {
  local c pid; c=$(cname proxykill)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null && wait_log "$c" ready || return
  pid=$(pid_in "$c" runq-proxy) && [ -n "$pid" ] || why "no runq-proxy in docker top" || return
  kill -KILL "$pid"
  expect_eq "exit code after the proxy was killed" 137 "$(wait_exit "$c" 30)" || return
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)"
}
