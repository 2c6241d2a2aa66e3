# Issue 6: the guest enforces what runc would.

CAPS='grep -E "^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):" /proc/self/status | xargs'

test_capabilities_and_no_new_privs_match_runc() {
  local flags a b
  while IFS= read -r flags; do
    # shellcheck disable=SC2086
    a=$("${RUNQ[@]}" --rm $flags "$IMAGE" sh -c "$CAPS" 2>&1)
    # shellcheck disable=SC2086
    b=$("${RUNC[@]}" --rm $flags "$IMAGE" sh -c "$CAPS" 2>&1)
    expect_eq "capability sets, runq vs runc, with '$flags'" "$b" "$a" || return
  done <<'FLAGS'

--cap-drop mknod
--cap-add sys_time
--cap-drop all
-u nobody --cap-add net_admin
--security-opt no-new-privileges
FLAGS
}

test_exec_gets_the_containers_capabilities() {
  local c a b; c=$(cname capexec)
  "${RUNQ[@]}" -d --name "$c" --cap-drop chown "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null && wait_log "$c" ready || return
  a=$(docker exec "$c" sh -c "$CAPS")
  b=$("${RUNC[@]}" --rm --cap-drop chown "$IMAGE" sh -c "$CAPS")
  expect_eq "capability sets of an exec'd process vs runc's container" "$b" "$a"
}

test_dropped_capability_is_enforced() {
  local out
  out=$("${RUNQ[@]}" --rm --cap-drop chown "$IMAGE" sh -c 'touch /tmp/f && chown nobody /tmp/f 2>/dev/null && echo allowed || echo denied')
  expect_eq "chown without CAP_CHOWN" denied "$out" || return
  out=$("${RUNQ[@]}" --rm "$IMAGE" sh -c 'touch /tmp/f && chown nobody /tmp/f 2>/dev/null && echo allowed || echo denied')
  expect_eq "chown with Docker's default capabilities" allowed "$out"
}

test_sysctl_and_ulimit_hold_in_the_guest() {
  local out
  out=$("${RUNQ[@]}" --rm --sysctl net.ipv4.ip_forward=1 --ulimit nofile=1234:1234 "$IMAGE" \
    sh -c 'cat /proc/sys/net/ipv4/ip_forward; ulimit -n' 2>&1)
  expect_eq "ip_forward and nofile in the guest" "$(printf '1\n1234')" "$out"
}

test_masked_and_readonly_paths_hold_in_the_guest() {
  # Docker's defaults, as runc applies them: /proc/timer_list masked
  # (reads empty), /proc/sys and /proc/sysrq-trigger read-only mounts,
  # /sys/firmware an empty tmpfs; systempaths=unconfined lifts them.
  local script='wc -c < /proc/timer_list; awk "\$2 ~ /^\/proc\/sys/ {split(\$4, o, \",\"); print \$2, o[1]}" /proc/mounts; ls /sys/firmware | wc -l'
  # runc's output is the reference; runc skips a read-only path the host
  # kernel lacks (this host may have no /proc/sysrq-trigger: the guest has).
  local got want
  want=$("${RUNC[@]}" --rm "$IMAGE" sh -c "$script" 2>&1)
  [[ "$want" == *"/proc/sys ro"* ]] || why "runc could not run the reference: $want" || return
  [ -e /proc/sysrq-trigger ] || want=$(sed '/^\/proc\/sys ro$/a /proc/sysrq-trigger ro' <<<"$want")
  got=$("${RUNQ[@]}" --rm "$IMAGE" sh -c "$script" 2>&1)
  expect_eq "defaults, as under runc" "$want" "$got" || return
  got=$("${RUNQ[@]}" --rm --security-opt systempaths=unconfined "$IMAGE" sh -c "$script" 2>&1)
  local lines; lines=$(echo "$got" | head -n 1)
  [ "$lines" -gt 0 ] 2>/dev/null || why "timer_list still masked with systempaths=unconfined: $got" || return
  if echo "$got" | grep -q '^/proc/sys'; then
    why "read-only /proc/sys with systempaths=unconfined: $got"
    return 1
  fi
}

test_seccomp_default_profile_unconfined_and_custom_profile() {
  local out prof
  # Docker's default profile refuses unshare (a user namespace needs no
  # capability, so only seccomp stands in the way).
  out=$("${RUNQ[@]}" --rm "$IMAGE" sh -c 'unshare -U true 2>&1; echo rc=$?')
  [[ "$out" == *"Operation not permitted"*"rc=1" ]] || why "default profile: $out" || return
  out=$("${RUNQ[@]}" --rm --security-opt seccomp=unconfined "$IMAGE" sh -c 'unshare -U true; echo rc=$?')
  expect_eq "unshare with seccomp=unconfined" rc=0 "$out" || return
  # A custom profile: everything allowed but chmod (EACCES).
  prof=$(mktemp)
  echo '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}' >"$prof"
  out=$("${RUNQ[@]}" --rm --security-opt seccomp="$prof" "$IMAGE" \
    sh -c 'unshare -U true; echo rc=$?; touch /tmp/f; chmod 600 /tmp/f 2>&1 | grep -o "Permission denied"')
  rm -f "$prof"
  expect_eq "custom profile: unshare allowed, chmod refused with its errno" "$(printf 'rc=0\nPermission denied')" "$out" || return
  # exec gets the container's filters too.
  local c; c=$(cname seccompexec)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null && wait_log "$c" ready || return
  out=$(docker exec "$c" sh -c 'unshare -U true 2>/dev/null; echo rc=$?')
  expect_eq "unshare in docker exec under the default profile" rc=1 "$out"
}

test_privileged_is_privileged_in_the_guest_not_on_the_host() {
  local c out pid
  c=$(cname priv)
  "${RUNQ[@]}" -d --name "$c" --privileged "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null &&
    wait_log "$c" ready || return
  # Every capability Docker grants (its list: CapEff = CapBnd, with
  # CAP_SYS_ADMIN), guest devices, and /proc/sys writable.
  out=$(docker exec "$c" sh -c '[ -c /dev/kmsg ] && echo guest-devices
    eff=$(awk "/^CapEff/ {print \$2}" /proc/self/status); bnd=$(awk "/^CapBnd/ {print \$2}" /proc/self/status)
    [ "$eff" = "$bnd" ] && [ $(( 0x$eff >> 21 & 1 )) = 1 ] && echo all-caps
    echo runqpriv > /proc/sys/kernel/hostname && hostname')
  expect_eq "guest devices, all capabilities, writable /proc/sys" \
    "$(printf 'guest-devices\nall-caps\nrunqpriv')" "$out" || return
  # The proxy's container got none of the host's devices (runc would
  # give a privileged container every one, e.g. the host's disks).
  # The count is of a /dev that is there: the proxy's (it has null).
  local devs
  pid=$(docker top "$c" -eo pid,comm | awk '$2 == "runq-proxy" {print $1}')
  [ -n "$pid" ] || why "no runq-proxy in docker top of $c" || return
  devs=$(ls "/proc/$pid/root/dev") && grep -qx null <<<"$devs" ||
    why "no /dev with null at /proc/$pid/root/dev: [$devs]" || return
  out=$(grep -cE '^(vd|sd|nvme|loop)' <<<"$devs" || true)
  expect_eq "host block devices in the proxy's container" 0 "$out"
}

test_sys_module_allows_modprobe_of_a_tree_module() {
  [ -d /var/lib/runq/qemu/kernels/runq ] || skip "the minimal kernel (which ships loadable modules) is not installed" || return
  local out
  # The minimal kernel ships its modules for this; Debian's initrd carries
  # only what boot needs.
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=runq --cap-add SYS_MODULE "$IMAGE" sh -c 'modprobe dummy && grep -c "^dummy " /proc/modules' 2>&1)
  expect_eq "modprobe dummy with CAP_SYS_MODULE, then in /proc/modules" 1 "$out" || return
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=runq "$IMAGE" sh -c 'modprobe dummy >/dev/null 2>&1; echo rc=$?; grep -c "^dummy " /proc/modules')
  expect_eq "modprobe dummy without CAP_SYS_MODULE" "$(printf 'rc=1\n0')" "$out" || return
  # The kernel loads a module on demand as a host kernel does (runc with
  # NET_ADMIN gets the same from the host's): no explicit modprobe.
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=runq --cap-add NET_ADMIN "$IMAGE" sh -c 'cat /proc/sys/kernel/modprobe; ip link add d0 type dummy && ip -o link show d0 | cut -d: -f2 | xargs' 2>&1)
  expect_eq "the kernel's modprobe, and a dummy link without modprobe" "$(printf '/sbin/modprobe\nd0')" "$out"
}
