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

# The proxy is its container's PID 1: its death ends the PID namespace,
# which kills every helper whatever else holds. This proves the container's
# end (status 137, nothing left), not PDEATHSIG; the next test does that.
test_proxy_killed_takes_qemu_and_helpers_with_it() {
  local c pid; c=$(cname proxykill)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null && wait_log "$c" ready || return
  pid=$(pid_in "$c" runq-proxy) && [ -n "$pid" ] || why "no runq-proxy in docker top" || return
  kill -KILL "$pid"
  expect_eq "exit code after the proxy was killed" 137 "$(wait_exit "$c" 30)" || return
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)"
}

# ended_by PID...: per process, "SIGKILL" when it is a zombie that
# SIGKILL ended (the exit code, field 52 of /proc/PID/stat), else its
# state and exit code.
ended_by() {
  local p s
  for p in "$@"; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || { echo -n "reaped "; continue; }
    # shellcheck disable=SC2086
    set -- ${s##*) }
    if [ "$1" = Z ] && [ $((${50} & 0x7f)) -eq 9 ]; then echo -n "SIGKILL "; else echo -n "$1:${50} "; fi
  done
}

# QEMU, virtiofsd and the vsock backend die with the proxy by
# PR_SET_PDEATHSIG (SIGKILL; proxy/src/helpers.rs). With --pid host the
# proxy is no namespace's init, so its death ends no namespace; with the
# shim stopped, the shim's kill of the container's processes (it does one
# when a container without a PID namespace of its own ends) cannot come
# either, and the orphans wait, unreaped, under it. Only PDEATHSIG is left
# to kill them: each must be a zombie that SIGKILL ended.
test_helpers_die_with_the_proxy_by_pdeathsig() {
  local c proxy shim helpers got end
  c=$(cname pdeathsig)
  "${RUNQ[@]}" -d --pid host --name "$c" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null && wait_log "$c" ready || return
  proxy=$(pid_in "$c" runq-proxy) && [ -n "$proxy" ] || why "no runq-proxy in docker top" || return
  expect_eq "PID namespaces the proxy is in (NSpid: the host's only)" 1 \
    "$(awk '/^NSpid:/ {print NF - 1}' "/proc/$proxy/status")" || return
  helpers=$(pgrep -d ' ' -P "$proxy" -f '^(/usr/bin/)?(qemu-system|virtiofsd|vhost-device-vsock)')
  expect_eq "helpers under the proxy" 3 "$(wc -w <<<"$helpers")" || return
  shim=$(ps -o ppid= -p "$proxy" | tr -d ' ')
  [[ "$(cat "/proc/$shim/comm" 2>/dev/null)" == containerd-shim* ]] || why "the proxy's parent $shim is no shim" || return
  kill -STOP "$shim" || why "cannot stop the shim $shim" || return
  kill -KILL "$proxy"
  end=$((SECONDS + 10))
  # shellcheck disable=SC2086 # one pid a word
  until got=$(ended_by $helpers); [ "$got" = "SIGKILL SIGKILL SIGKILL " ] || [ $SECONDS -ge $end ]; do sleep 0.1; done
  kill -CONT "$shim"
  expect_eq "how the helpers ($helpers) ended within 10s of the proxy, shim stopped" "SIGKILL SIGKILL SIGKILL " "$got" || return
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
