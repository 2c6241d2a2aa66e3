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
