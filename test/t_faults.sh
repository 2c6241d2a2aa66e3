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

test_host_without_dev_net_tun_is_refused_with_one_line() {
  # /dev/net/tun is set aside for this test only (runq create probes the
  # host's devices; a macvlan interface needs a tap device).
  [ -c /dev/net/tun ] || skip "this host has no /dev/net/tun to set aside" || return
  local net c out rc veth="rqtt$$"; net=$(nname notun); c=$(cname notun)
  test_veth "$veth" || why "cannot create a veth pair" || return
  docker network create -d macvlan --subnet 10.96.0.0/24 -o parent="$veth" "$net" >/dev/null || why "macvlan network create failed" || return
  mv /dev/net/tun /dev/net/tun.runq-test
  out=$("${RUNQ[@]}" --name "$c" --network "$net" "$IMAGE" true 2>&1)
  rc=$?
  mv /dev/net/tun.runq-test /dev/net/tun
  [ $rc -ne 0 ] || why "docker run succeeded without /dev/net/tun" || return
  [[ "$out" == *"opening /dev/net/tun"*"TUN driver"* ]] || why "unclear error: $out" || return
  expect_eq "output lines" 1 "$(echo "$out" | grep -c .)" || return
  cleanup_containers
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)" || return
  expect_eq "macvtap/tap links left" 0 "$(ip -o link show | grep -cE 'macvtap|tap' || true)"
}
