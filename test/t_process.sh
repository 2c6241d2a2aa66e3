# Issue 3: the OCI process, as runc would run it.

# What a process can see of itself, printed on one line.
PROBE='echo "$(id) | $(pwd) | $(hostname) | $(ulimit -n) $(ulimit -Hn) | $#:$*"'

test_process_attributes_match_runc() {
  local flags a b
  while IFS= read -r flags; do
    # shellcheck disable=SC2086
    a=$("${RUNQ[@]}" --rm $flags "$IMAGE" sh -c "$PROBE" x one two 2>&1)
    # shellcheck disable=SC2086
    b=$("${RUNC[@]}" --rm $flags "$IMAGE" sh -c "$PROBE" x one two 2>&1)
    # The hostname defaults to the container id, which differs per run.
    if [[ "$flags" != *--hostname* ]]; then
      a=$(awk -F' [|] ' -v OFS=' | ' '{$3 = "ID"; print}' <<<"$a")
      b=$(awk -F' [|] ' -v OFS=' | ' '{$3 = "ID"; print}' <<<"$b")
    fi
    expect_eq "runq vs runc with '$flags'" "$b" "$a" || return
  done <<'FLAGS'

-u nobody
-u 1000:1000 --group-add games
-u nobody --group-add 60 --group-add 4242
-w /tmp
-w /does/not/exist/yet
--hostname vm-host-1
--ulimit nofile=321:654
FLAGS
}

test_entrypoint_and_args() {
  local out
  out=$("${RUNQ[@]}" --rm --entrypoint /bin/echo "$IMAGE" hello "two words")
  expect_eq "entrypoint output" "hello two words" "$out"
}

test_workload_has_its_own_pid_namespace() {
  local out
  # PID 1 is the workload itself; runq-init, outside the namespace, is
  # invisible.
  out=$("${RUNQ[@]}" --rm "$IMAGE" sh -c 'echo "$$ $(cat /proc/1/comm) $(ps -o comm | grep -c runq-init)"')
  expect_eq "own pid, PID 1's name, runq-init processes seen" "1 sh 0" "$out"
}

test_docker_init_is_pid1_and_forwards_signals() {
  local out c
  out=$("${RUNQ[@]}" --rm --init "$IMAGE" sh -c 'cat /proc/1/comm')
  expect_eq "PID 1 with --init" "docker-init" "$out" || return
  c=$(cname init)
  "${RUNQ[@]}" -d --init --name "$c" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null || why "start failed" || return
  wait_log "$c" ready || return
  docker kill -s TERM "$c" >/dev/null
  expect_eq "exit code of a workload killed by SIGTERM (via docker-init)" 143 "$(wait_exit "$c")"
}

test_tty_under_a_real_pty() {
  local out
  out=$(timeout 60 script -qec "stty rows 33 cols 101; docker run --runtime runq --rm -t $IMAGE sh -c 'test -t 0 && test -t 1 && echo TTY-OK; stty size; tty'" /dev/null | tr -d '\r' | xargs)
  expect_eq "tty check, size and name in the guest" "TTY-OK 33 101 /dev/pts/0" "$out"
}

test_ctrl_c_reaches_a_tty_workload() {
  local out
  out=$(python3 test/lib/pty_run.py ctrl-c GOT-INT -- docker run --runtime runq --rm -it "$IMAGE" sh -c \
    "trap 'echo GOT-INT; exit 7' INT; echo READY; while true; do sleep 0.1; done")
  expect_eq "Ctrl-C trapped, and the exit code" "GOT-INT 7" "$out"
}

# The caller's terminal changes size: docker client -> daemon -> shim ->
# the container's pty -> proxy SIGWINCH -> guest pty -> workload.
test_tty_resize_reaches_the_workload() {
  local out
  out=$(python3 test/lib/pty_run.py resize:41:123 SIZE -- docker run --runtime runq --rm -it "$IMAGE" sh -c \
    "trap 'echo SIZE \$(stty size); exit 0' WINCH; echo READY; while true; do sleep 0.1; done")
  expect_eq "size seen by the workload after the resize, and the exit code" "SIZE 41 123 0" "$out"
}

test_attach_only_stdout() {
  local out
  out=$(docker run --runtime runq --rm -a stdout "$IMAGE" sh -c 'echo out; echo err >&2' 2>&1)
  expect_eq "output with -a stdout" "out" "$out"
}

test_runqenv_file() {
  local out
  out=$("${RUNQ[@]}" --rm -e RUNQ_RUNQENV=1 -e 'TRICKY=a "b" $c `d`' "$IMAGE" sh -c '. /.runqenv && echo "[$TRICKY]"')
  expect_eq "TRICKY read back from /.runqenv" '[a "b" $c `d`]' "$out" || return
  # As the Go runq: 0400, the workload's own (its secrets are nobody else's).
  out=$("${RUNQ[@]}" --rm -u 1000:1000 -e RUNQ_RUNQENV=1 -e S=x "$IMAGE" sh -c 'stat -c "%a %u %g" /.runqenv; . /.runqenv && echo "$S"')
  expect_eq "mode, owner, readable by the workload" "400 1000 1000 x" "$(xargs <<<"$out")"
}

test_runqenv_off_by_default() {
  local out
  # An answer either way, so that a docker run that fails is no pass.
  out=$("${RUNQ[@]}" --rm "$IMAGE" sh -c 'if [ -e /.runqenv ]; then echo present; else echo absent; fi' 2>&1)
  expect_eq "/.runqenv without RUNQ_RUNQENV" absent "$out"
}

# reboot(2) needs CAP_SYS_BOOT, as under runc: an init system gets it.
test_systemd_mode_exit_codes() {
  local boot="--cap-add SYS_BOOT"
  "${RUNQ[@]}" --rm $boot -e RUNQ_SYSTEMD=1 "$IMAGE" poweroff -f; expect_eq "poweroff with RUNQ_SYSTEMD" 0 $? || return
  "${RUNQ[@]}" --rm $boot -e RUNQ_SYSTEMD=1 "$IMAGE" halt -f; expect_eq "halt with RUNQ_SYSTEMD" 0 $? || return
  "${RUNQ[@]}" --rm $boot -e RUNQ_SYSTEMD=1 "$IMAGE" true; expect_eq "other end with RUNQ_SYSTEMD" 1 $? || return
  # Without RUNQ_SYSTEMD, as runc: its statuses for the same runs are the
  # reference (SIGINT's 130 with CAP_SYS_BOOT, 1 without); 125 is docker's.
  local int perm
  "${RUNC[@]}" --rm $boot "$IMAGE" poweroff -f; int=$?
  "${RUNC[@]}" --rm -e RUNQ_SYSTEMD=1 "$IMAGE" poweroff -f 2>/dev/null; perm=$?
  # runc's answers are what they must be (else the comparison proves
  # nothing: both runtimes could fail the same way).
  expect_eq "runc: poweroff -f with CAP_SYS_BOOT (SIGINT)" 130 "$int" || return
  expect_eq "runc: poweroff -f without CAP_SYS_BOOT" 1 "$perm" || return
  "${RUNQ[@]}" --rm $boot "$IMAGE" poweroff -f; expect_eq "poweroff without RUNQ_SYSTEMD (SIGINT, as runc)" $int $? || return
  "${RUNQ[@]}" --rm -e RUNQ_SYSTEMD=1 "$IMAGE" poweroff -f; expect_eq "poweroff without CAP_SYS_BOOT fails, as runc" $perm $?
}

test_systemd_mode_sigterm_becomes_sigrtmin_plus_4() {
  local c; c=$(cname systemd)
  # glibc's SIGRTMIN is 34: systemd's SIGRTMIN+4 is 38.
  "${RUNQ[@]}" -d --name "$c" --cap-add SYS_BOOT -e RUNQ_SYSTEMD=1 "$IMAGE" sh -c \
    'trap "echo got-rtmin4; poweroff -f" 38; trap "echo got-term" TERM; echo ready; while true; do sleep 0.1; done' >/dev/null ||
    why "start failed" || return
  wait_log "$c" ready || return
  docker stop -t 30 "$c" >/dev/null
  wait_log "$c" got-rtmin4 5 || return
  expect_eq "exit code after poweroff on SIGRTMIN+4" 0 "$(docker inspect -f '{{.State.ExitCode}}' "$c")"
}
