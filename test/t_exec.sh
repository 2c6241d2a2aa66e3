# Issue 7: docker exec into the VM, HEALTHCHECK, containerd.

test_exec_streams_and_exit_code() {
  local c out err; c=$(cname exec); start_sleeper "$c" || return
  err=$(mktemp)
  out=$(docker exec "$c" sh -c 'echo out; echo err >&2; exit 7' 2>"$err")
  local rc=$? e; e=$(cat "$err"); rm -f "$err"
  expect_eq "exec exit code" 7 $rc && expect_eq "exec stdout" out "$out" && expect_eq "exec stderr" err "$e"
}

test_exec_user_workdir_env() {
  local c out; c=$(cname execu); start_sleeper "$c" || return
  out=$(docker exec -u nobody -w /tmp -e X=1 "$c" sh -c 'id -un; pwd; echo $X' | xargs)
  expect_eq "user, cwd, env of the exec'd process" "nobody /tmp 1" "$out"
}

test_exec_stdin() {
  local c; c=$(cname execi); start_sleeper "$c" || return
  expect_eq "echo hi | docker exec -i cat" hi "$(echo hi | docker exec -i "$c" cat)"
}

test_exec_runs_in_the_vm_and_sees_the_workload() {
  local c out; c=$(cname execns); start_sleeper "$c" || return
  out=$(docker exec "$c" sh -c 'echo "$(uname -r) $(cat /proc/1/comm)"')
  expect_eq "kernel and PID 1 seen by exec" "$(cat /var/lib/runq/qemu/kernels/default/version) sleep" "$out"
}

test_exec_detached_keeps_running_in_the_guest() {
  local c; c=$(cname execd); start_sleeper "$c" || return
  docker exec -d "$c" sh -c 'echo started > /tmp/d; exec sleep 300' || why "exec -d failed" || return
  timeout 30 sh -c "until docker exec $c test -e /tmp/d; do sleep 0.2; done" || why "detached process never ran" || return
  expect_eq "sleep processes in the guest" 2 "$(docker exec "$c" sh -c 'ps -o comm | grep -c "^sleep"')"
}

test_exec_tty_under_a_real_pty() {
  local c out; c=$(cname exect); start_sleeper "$c" || return
  out=$(timeout 60 script -qec "stty rows 20 cols 70; docker exec -t $c sh -c 'test -t 0 && test -t 1 && echo TTY; stty size'" /dev/null | tr -d '\r' | xargs)
  expect_eq "tty and size in exec -t" "TTY 20 70" "$out"
}

test_twenty_parallel_execs() {
  local c d i; c=$(cname execp); start_sleeper "$c" || return
  d=$(mktemp -d)
  for i in $(seq 1 20); do
    (docker exec "$c" sh -c "echo r$i; exit $((i % 5))" > "$d/$i"; echo "rc=$?" >> "$d/$i") &
  done
  wait
  for i in $(seq 1 20); do
    expect_eq "exec $i output and status" "r$i rc=$((i % 5))" "$(xargs < "$d/$i")" || { rm -rf "$d"; return 1; }
  done
  rm -rf "$d"
}

# The execs of the parallel test: four that cannot start (not found, not
# executable) and two that can.
FAILING_EXECS=(nosuchcmd bash /etc/passwd /tmp "sh -c 'exit 3'" true)

test_failing_execs_in_parallel_never_harm_the_container_on_1_2_4_vcpus() {
  local ref cpus c d i k cmd want got n=0 bad=0 names=()
  local -A expect
  # What runc answers for each is the reference, not a table of ours.
  ref=$(cname ref)
  "${RUNC[@]}" -d --name "$ref" "$IMAGE" sleep 600 >/dev/null || why "runc reference failed" || return
  for k in "${!FAILING_EXECS[@]}"; do
    eval "docker exec $ref ${FAILING_EXECS[$k]}" >/dev/null 2>&1
    expect[$k]=$?
  done
  d=$(mktemp -d)
  for cpus in 1 2 4; do
    c=$(cname "fail$cpus"); names+=("$c")
    start_sleeper "$c" -e RUNQ_CPU=$cpus || { rm -rf "$d"; return 1; }
  done
  # 100 execs per VM, 8 at a time over the three VMs: 200 in all that
  # cannot start (4 of each 6).
  for i in $(seq 0 299); do
    c=${names[$((i % 3))]} k=$(( (i / 3) % ${#FAILING_EXECS[@]} ))
    while [ "$(jobs -rp | wc -l)" -ge 8 ]; do wait -n; done
    (eval "docker exec $c ${FAILING_EXECS[$k]}" >/dev/null 2>&1; echo "$c $k $?" >"$d/$i") &
  done
  wait
  for i in $(seq 0 299); do
    read -r c k got <"$d/$i" || { bad=$((bad + 1)); continue; }
    want=${expect[$k]}
    n=$((n + 1))
    [ "$got" = "$want" ] || { bad=$((bad + 1)); echo "  $c: docker exec ${FAILING_EXECS[$k]}: $got, runc says $want"; }
  done
  rm -rf "$d"
  echo "  $n execs over VMs of 1, 2, 4 vCPUs; runc's statuses: $(for k in "${!FAILING_EXECS[@]}"; do printf '[%s]=%s ' "${FAILING_EXECS[$k]}" "${expect[$k]}"; done)"
  expect_eq "execs answered as under runc" 0 "$bad" || return
  expect_eq "execs run" 300 "$n" || return
  for i in 0 1 2; do
    expect_eq "${names[$i]} after the execs" "true alive" \
      "$(docker inspect -f '{{.State.Running}}' "${names[$i]}") $(docker exec "${names[$i]}" echo alive 2>&1)" || return
  done
}

test_runq_exec_command_of_the_go_runq() {
  local c r s n out
  c=$(cname rqexec); r=$(cname rqexec-runc); s=$(cname rqexec-stopped); n=$(cname rqexec-noexec)
  start_sleeper "$c" || return
  out=$(/var/lib/runq/runq-exec -e A=b "$c" sh -c 'echo "$A $(cat /proc/1/comm)"; exit 3'); local rc=$?
  expect_eq "output and status through runq-exec" "b sleep rc=3" "$out rc=$rc" || return
  "${RUNC[@]}" -d --name "$r" "$IMAGE" sleep 600 >/dev/null || why "runc container failed" || return
  "${RUNQ[@]}" --name "$s" "$IMAGE" true >/dev/null 2>&1
  start_sleeper "$n" -e RUNQ_NOEXEC=1 || return
  for x in "nosuchcontainer-$$:no such container" "$r:does not run under runq" "$s:is not running" "$n:exec is disabled"; do
    out=$(/var/lib/runq/runq-exec "${x%%:*}" true 2>&1); rc=$?
    [[ $rc -eq 1 && "$out" == "runq-exec: "*"${x#*:}"* ]] || why "runq-exec ${x%%:*}: rc=$rc [$out]" || return
  done
}

test_noexec_refuses_exec() {
  local c err; c=$(cname noexec); start_sleeper "$c" -e RUNQ_NOEXEC=1 || return
  err=$(docker exec "$c" true 2>&1) && { why "exec succeeded"; return 1; }
  [[ "$err" == *"exec is disabled for this container"* ]] || why "message was: $err"
}

wait_health() { # CONTAINER STATUS
  timeout 60 sh -c "until [ \"\$(docker inspect -f '{{.State.Health.Status}}' $1)\" = $2 ]; do sleep 0.2; done" ||
    why "$1 never became $2 (is $(docker inspect -f '{{.State.Health.Status}}' "$1"))"
}

test_healthcheck_healthy_and_unhealthy() {
  local good bad; good=$(cname healthy); bad=$(cname unhealthy)
  "${RUNQ[@]}" -d --name "$good" --health-cmd 'test -e /tmp/ok' --health-interval 1s --health-retries 1 \
    "$IMAGE" sh -c 'touch /tmp/ok; exec sleep 600' >/dev/null || why "start failed" || return
  "${RUNQ[@]}" -d --name "$bad" --health-cmd 'test -e /tmp/never' --health-interval 1s --health-retries 1 \
    "$IMAGE" sleep 600 >/dev/null || why "start failed" || return
  wait_health "$good" healthy && wait_health "$bad" unhealthy
}

test_docker_top_and_stats() {
  local c; c=$(cname top); start_sleeper "$c" || return
  docker top "$c" | grep -q qemu-system || why "docker top does not list the VM's QEMU" || return
  docker stats --no-stream --format '{{.MemUsage}}' "$c" | grep -q MiB || why "docker stats gave no memory figure"
}

test_runtime_args_from_daemon_json_and_sigusr() {
  local c out
  out=$(docker run --runtime runq-opts --rm "$IMAGE" sh -c 'nproc; awk "/MemTotal/ {print \$2}" /proc/meminfo' | xargs)
  set -- $out
  expect_eq "nproc with runtimeArgs --cpu 2" 2 "$1" || return
  in_range "MemTotal kB with runtimeArgs --mem 300" "$2" 250000 307200 || return
  out=$(docker run --runtime runq-opts --rm -e RUNQ_CPU=1 "$IMAGE" nproc)
  expect_eq "RUNQ_CPU over runtimeArgs" 1 "$out" || return
  c=$(cname sigusr)
  docker run --runtime runq-opts -d --name "$c" "$IMAGE" sh -c \
    'mkdir -p /.runq; printf "#!/bin/sh\necho hook-ran\n" > /.runq/SIGUSR1; chmod +x /.runq/SIGUSR1;
     trap "echo workload-got-usr1" USR1; trap "echo workload-got-alrm" ALRM; echo ready; while true; do sleep 0.1; done' >/dev/null || why "start failed" || return
  wait_log "$c" ready || return
  docker kill -s USR1 "$c" >/dev/null
  wait_log "$c" hook-ran 20 || return
  # A SIGUSR1 passed on to the workload would be pending there before a
  # SIGALRM sent now (one relay passes signals on in order), and the shell
  # runs pending traps by signal number: once the ALRM trap has printed,
  # a USR1 trap would have printed before it, on the same stream.
  docker kill -s ALRM "$c" >/dev/null
  wait_log "$c" workload-got-alrm 20 || return
  # (why returns 1: `&& why ... && return 1` would never return.)
  docker logs "$c" 2>&1 | grep -q workload-got-usr1 && { why "with --sigusr the workload still got SIGUSR1"; return 1; }
  return 0
}

test_containerd_ctr_run_with_runc_binary() {
  local a=/run/docker/containerd/containerd.sock ns=runqtest out rc tar
  [ -S $a ] || a=/run/containerd/containerd.sock
  tar=$(mktemp)
  docker save "$IMAGE" -o "$tar" && ctr -a $a -n $ns image import "$tar" >/dev/null || { rm -f "$tar"; why "image import failed"; return; }
  rm -f "$tar"
  out=$(timeout 120 ctr -a $a -n $ns run --rm --runc-binary /var/lib/runq/runq "docker.io/$IMAGE" "ctr-$$" sh -c 'uname -r; exit 5')
  rc=$?
  expect_eq "ctr run exit code" 5 $rc && expect_eq "ctr run output" "$(cat /var/lib/runq/qemu/kernels/default/version)" "$out"
}

test_containerd_config_registration_merges_and_is_idempotent() {
  local d; d=$(mktemp -d)
  printf 'version = 2\nroot = "/var/lib/containerd"\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n' > "$d/config.toml"
  contrib/containerd-register.sh "$d/config.toml" /var/lib/runq/runq >/dev/null || { rm -rf "$d"; why "registration failed"; return; }
  contrib/containerd-register.sh "$d/config.toml" /var/lib/runq/runq >/dev/null || { rm -rf "$d"; why "second registration failed"; return; }
  local out
  out=$(python3 -c '
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
r = c["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
print(c["root"], r["runc"]["runtime_type"], r["runq"]["runtime_type"], r["runq"]["options"]["BinaryName"])' "$d/config.toml")
  expect_eq "merged config" "/var/lib/containerd io.containerd.runc.v2 io.containerd.runc.v2 /var/lib/runq/runq" "$out" || { rm -rf "$d"; return 1; }
  contrib/containerd-register.sh "$d/config.toml" /other/runq >/dev/null 2>&1 && { rm -rf "$d"; why "a conflicting definition was overwritten"; return 1; }
  rm -rf "$d"
}
