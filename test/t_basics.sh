# Issue 2: the walking skeleton, as a user sees it through docker run.

test_guest_kernel_not_host_kernel() {
  local guest want
  guest=$("${RUNQ[@]}" --rm "$IMAGE" uname -r) || why "docker run failed" || return
  want=$(cat /var/lib/runq/qemu/kernels/default/version)
  [ "$guest" != "$(uname -r)" ] || why "guest reports the host kernel $guest" || return
  expect_eq "guest kernel" "$want" "$guest"
}

test_exit_codes() {
  local cmd want got
  while IFS='|' read -r want cmd; do
    "${RUNQ[@]}" --rm "$IMAGE" sh -c "$cmd" >/dev/null 2>&1
    got=$?
    expect_eq "exit code of '$cmd'" "$want" "$got" || return
  done <<'CASES'
0|true
1|false
42|exit 42
CASES
  "${RUNQ[@]}" --rm "$IMAGE" /etc >/dev/null 2>&1; expect_eq "directory as command" 126 $? || return
  "${RUNQ[@]}" --rm "$IMAGE" /etc/notexec >/dev/null 2>&1; expect_eq "non-executable file" 126 $? || return
  "${RUNQ[@]}" --rm "$IMAGE" no-such-command >/dev/null 2>&1; expect_eq "missing command" 127 $?
}

test_missing_command_message() {
  local err
  err=$("${RUNQ[@]}" --rm "$IMAGE" no-such-command 2>&1 >/dev/null)
  [[ "$err" == *'"no-such-command": executable file not found in $PATH'* ]] ||
    why "stderr was: $err"
}

test_stdout_and_stderr_stay_apart() {
  local out err
  err=$(mktemp)
  out=$("${RUNQ[@]}" --rm "$IMAGE" sh -c 'echo out; echo err >&2' 2>"$err")
  local e; e=$(cat "$err"); rm -f "$err"
  expect_eq stdout out "$out" && expect_eq stderr err "$e"
}

test_stdin_eof_reaches_workload() {
  local n
  n=$(printf 'a\nb\n' | "${RUNQ[@]}" --rm -i "$IMAGE" wc -l)
  expect_eq "wc -l of two lines" 2 "$(echo $n)"
}

test_docker_kill_sigkill_is_137() {
  local c; c=$(cname kill)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null || why "start failed" || return
  wait_log "$c" ready || return
  docker kill -s KILL "$c" >/dev/null
  expect_eq "exit code after kill -s KILL" 137 "$(wait_exit "$c")"
}

test_signals_reach_the_workload() {
  local c; c=$(cname usr1)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c \
    'trap "echo got-usr1" USR1; trap "echo got-hup" HUP; echo ready; while true; do sleep 0.1; done' >/dev/null ||
    why "start failed" || return
  wait_log "$c" ready || return
  docker kill -s USR1 "$c" >/dev/null && wait_log "$c" got-usr1 20 || return
  docker kill -s HUP "$c" >/dev/null && wait_log "$c" got-hup 20
}

test_docker_stop_with_trap_exits_0_and_stops_the_vm() {
  local c; c=$(cname stop)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c \
    'trap "echo bye; exit 0" TERM; echo ready; while true; do sleep 0.1; done' >/dev/null || why "start failed" || return
  wait_log "$c" ready || return
  local t0=$SECONDS
  docker stop -t 30 "$c" >/dev/null
  local took=$((SECONDS - t0))
  expect_eq "exit code after docker stop" 0 "$(docker inspect -f '{{.State.ExitCode}}' "$c")" || return
  [ $took -le 5 ] || why "docker stop took ${took}s although the trap exits at once" || return
  wait_log "$c" bye 5
}

test_no_vm_processes_left_after_runs() {
  # Everything above ran and ended; nothing of theirs may remain.
  cleanup_containers
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)"
}

test_bad_runq_env_is_refused_clearly() {
  local err rc c; c=$(cname badmem)
  err=$("${RUNQ[@]}" --rm --name "$c" -e RUNQ_MEM=12x "$IMAGE" true 2>&1)
  rc=$?
  [ $rc -ne 0 ] || why "docker run succeeded" || return
  [[ "$err" == *'RUNQ_MEM="12x": not a number of MiB'* ]] || why "message was: $err" || return
  expect_eq "QEMU/helper processes after refusal" 0 "$(vm_processes)" || return
  # containerd keeps task bundles here (dockerd's own containerd, or a
  # system one); the refused container's must be gone.
  local id; id=$(docker ps -aq --no-trunc --filter "name=$c")
  [ -z "$id" ] || why "the refused container is still listed ($id)" || return
  local left; left=$(ls -d /run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/*/ \
    /run/containerd/io.containerd.runtime.v2.task/moby/*/ 2>/dev/null | grep -c . || true)
  local running; running=$(docker ps -q | grep -c . || true)
  expect_eq "task bundles (one per running container)" "$running" "$left"
}

test_accel_kvm_refused_where_kvm_cannot_run_guests() {
  local err
  if ! grep -q kvm_pvm /proc/modules 2>/dev/null && [ ! -e /sys/module/kvm_pvm ] && [ -e /dev/kvm ]; then
    skip "this host's KVM is not PVM; the refusal path is for hosts whose KVM cannot run stock guests"
    return
  fi
  err=$("${RUNQ_ENV[@]}" --rm -e RUNQ_ACCEL=kvm "$IMAGE" true 2>&1) && { why "docker run succeeded"; return 1; }
  [[ "$err" == *"--accel kvm: KVM cannot run a guest here"* ]] || why "message was: $err"
}

test_accel_auto_fallback_to_tcg_prints_one_line_on_docker_runs_stderr() {
  local errf out err
  [ ${#ACCEL_ARGS[@]} -gt 0 ] || { skip "KVM runs guests here: --accel auto does not fall back"; return; }
  errf=$(mktemp)
  out=$(docker run --runtime runq-auto --rm "$IMAGE" sh -c 'echo out; echo err >&2' 2>"$errf")
  err=$(cat "$errf")
  expect_eq "stdout" out "$out" || return
  expect_eq "stderr lines" 2 "$(wc -l <"$errf")" || return
  [[ "$(head -n1 <<<"$err")" == "runq: /dev/kvm: KVM not usable here ("*"); falling back to TCG (an emulated guest"* ]] ||
    why "first stderr line: [$(head -n1 <<<"$err")]" || return
  expect_eq "the workload's stderr after it" err "$(tail -n1 <<<"$err")" || return
  # The operator's --accel tcg (runtime runq here) accepts TCG: no line.
  "${RUNQ[@]}" --rm "$IMAGE" true 2>"$errf"
  expect_eq "stderr under --accel tcg" "" "$(cat "$errf")"
  rm -f "$errf"
}

test_go_runq_runtime_options_with_nestedvm() {
  local out rc
  # runq-goopts: the Go runq's options (test/run), --nestedvm among them.
  out=$(docker run --runtime runq-goopts --rm "$IMAGE" sh -c 'grep -cwE "vmx|svm" /proc/cpuinfo; nproc; cat /etc/resolv.conf | tail -n1; test -f /.runqenv && echo env; mount | grep -c " /scratch "' 2>&1)
  rc=$?
  if [ ${#ACCEL_ARGS[@]} -gt 0 ]; then
    # No KVM here: refused by runq create with one line, nothing left.
    expect_eq "docker run status" 125 "$rc" || return
    [[ "$(grep -c . <<<"$out")" -le 2 && "$out" == *"runq: --nestedvm: guests run under TCG here, and nested virtualisation needs KVM"* ]] ||
      why "expected one line naming --nestedvm, got [$out]" || return
    # The same options without --nestedvm (runtime runq-goopts-nonested,
    # test/run) work unchanged.
    out=$(docker run --runtime runq-goopts-nonested --rm "$IMAGE" sh -c 'nproc; tail -n1 /etc/resolv.conf; test -f /.runqenv && echo env; grep -c " /scratch " /proc/mounts; awk "\$2 == \"/\" {print \$3}" /proc/mounts' 2>&1)
    expect_eq "cpus, dns, runqenv, tmpfs, 9p (--9pcache selects it)" "1 nameserver 10.0.0.53 env 1 9p" "$(xargs <<<"$out")"
  else
    expect_eq "docker run status" 0 "$rc" || return
    [ "$(head -n1 <<<"$out")" -ge 1 ] || why "no vmx/svm in the guest's cpuinfo: [$out]"
  fi
}

test_user_workdir_hostname_env() {
  local out
  out=$("${RUNQ[@]}" --rm -u nobody -w /tmp --hostname vmhost -e GREETING=hi "$IMAGE" \
    sh -c 'echo "$(id -u) $(pwd) $(hostname) $GREETING"')
  expect_eq "uid cwd hostname env" "65534 /tmp vmhost hi" "$out"
}

test_thousand_env_vars_of_1k_pass_intact() {
  local f sum_in sum_out
  f=$(mktemp)
  for i in $(seq 1 1000); do printf 'V%04d=%s\n' "$i" "$(printf "%01024d" "$i")"; done > "$f"
  sum_in=$(sort "$f" | sha256sum | cut -d' ' -f1)
  sum_out=$("${RUNQ[@]}" --rm --env-file "$f" "$IMAGE" sh -c 'env | grep "^V[0-9]" | sort | sha256sum' | cut -d' ' -f1)
  rm -f "$f"
  expect_eq "sha256 of 1000 x 1 KiB variables" "$sum_in" "$sum_out"
}
