# Security II: the operator's limits are ceilings. Docker's --memory and
# --cpus (and the runtime's --max-mem/--max-cpu) bound what RUNQ_MEM and
# RUNQ_CPU may ask for, and the operator-only RUNQ_* variables are refused
# when the container (its image's ENV included) sets them.

# env_image NAME ENV...: the test image with ENV lines of an image author.
env_image() {
  local name=$1 c rc
  shift
  docker image inspect "$name" >/dev/null 2>&1 && return 0
  c=$(docker create "$IMAGE" true) || return 1
  local changes=()
  for e in "$@"; do changes+=(-c "ENV $e"); done
  docker export "$c" | docker import "${changes[@]}" -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' - "$name" >/dev/null
  rc=$?
  docker rm "$c" >/dev/null
  return $rc
}

# The memory limit in bytes of a running container's cgroup (v2, or v1's
# memory controller).
cgroup_memory_limit() {
  local pid path
  pid=$(docker inspect -f '{{.State.Pid}}' "$1") || return 1
  if path=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' "/proc/$pid/cgroup") && [ -n "$path" ]; then
    cat "/sys/fs/cgroup/memory$path/memory.limit_in_bytes"
  else
    path=$(awk -F: '$1 == 0 {print $3}' "/proc/$pid/cgroup")
    cat "/sys/fs/cgroup$path/memory.max"
  fi
}

test_limits_runq_mem_above_docker_memory_is_refused() {
  local out before
  before=$(vm_processes)
  out=$("${RUNQ[@]}" --rm -m 512m -e RUNQ_MEM=4096 "$IMAGE" true 2>&1) && { why "docker run succeeded"; return 1; }
  [[ "$out" == *'RUNQ_MEM=4096: above the container'"'"'s limit of 512 (docker'"'"'s --memory)'* ]] || why "message: $out" || return
  # (a VM of an earlier test may still be going away: never more after)
  in_range "VM processes after the refusal" "$(vm_processes)" 0 "$before"
}

test_limits_image_env_cannot_raise_the_memory_or_cpus() {
  env_image runq-test/bigmem RUNQ_MEM=4096 RUNQ_CPU=8 || why "building the image failed" || return
  local out
  out=$("${RUNQ[@]}" --rm -m 512m runq-test/bigmem true 2>&1) && { why "docker run succeeded"; return 1; }
  [[ "$out" == *"RUNQ_MEM=4096: above the container's limit of 512"* ]] || why "message: $out" || return
  out=$("${RUNQ[@]}" --rm --cpus 2 -m 1g runq-test/bigmem true 2>&1) && { why "docker run succeeded"; return 1; }
  [[ "$out" == *"RUNQ_CPU=8: above the container's limit of 2 (docker's --cpus)"* ]] || why "message: $out"
}

test_limits_cgroup_is_the_vm_size_plus_the_overhead() {
  local c max mem
  c=$(cname cg)
  start_sleeper "$c" -m 512m || return
  max=$(cgroup_memory_limit "$c") || why "no memory cgroup for $c" || return
  mem=$(docker exec "$c" awk '/MemTotal/ {print $2}' /proc/meminfo)
  echo "  cgroup memory.max $((max >> 20)) MiB, guest MemTotal $((mem >> 10)) MiB"
  # 512 MiB of guest RAM + 128 MiB (QEMU, helpers) + 32 MiB (TCG cache)
  in_range "cgroup memory.max (MiB)" $((max >> 20)) 512 $((512 + 160)) || return
  in_range "guest MemTotal (MiB)" $((mem >> 10)) 400 512
}

test_limits_guest_out_of_memory_ends_only_its_container() {
  local other hog out
  other=$(cname other) hog=$(cname hog)
  start_sleeper "$other" || return
  # More than the guest has, in a tmpfs the guest cannot swap out.
  out=$("${RUNQ[@]}" --name "$hog" -m 256m --tmpfs /big:size=1g "$IMAGE" \
    sh -c 'dd if=/dev/zero of=/big/f bs=1M count=600 2>/dev/null; echo survived' 2>&1)
  local rc=$?
  [ "$rc" -ne 0 ] || [[ "$out" != *survived* ]] || why "600 MiB fit in a 256 MiB guest: $out" || return
  expect_eq "the other container" "running" "$(docker inspect -f '{{.State.Status}}' "$other")" || return
  out=$(docker exec "$other" echo alive 2>&1)
  expect_eq "exec into the other container" "alive" "$out"
}

test_limits_operator_only_variables_from_the_image_are_refused() {
  local var out
  for var in RUNQ_ACCEL=tcg RUNQ_SHARE=9p RUNQ_CPUARGS=max RUNQ_KERNEL=debian RUNQ_GUEST_ARCH=x86_64; do
    local img
    img=$(echo "runq-test/env-${var%%=*}" | tr 'A-Z_' 'a-z-')
    env_image "$img" "$var" || why "building $img failed" || return
    out=$("${RUNQ[@]}" --rm "$img" true 2>&1) && { why "$var from the image was accepted"; return 1; }
    [[ "$out" == *"${var%%=*} may only be set by the operator"* ]] || why "$var: message: $out" || return
    # The operator allows them on runtime runq-env.
    out=$("${RUNQ_ENV[@]}" --rm "$img" echo ok 2>&1)
    expect_eq "$var allowed by --allow-env" "ok" "$out" || return
  done
}

test_limits_cpuargs_host_is_refused_without_kvm() {
  if [ -e /dev/kvm ] && ! grep -q kvm_pvm /proc/modules 2>/dev/null && [ ! -e /sys/module/kvm_pvm ]; then
    skip "KVM may run guests on this host; the refusal is for hosts where guests run under TCG"
    return
  fi
  local out
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_CPUARGS=host "$IMAGE" true 2>&1) && { why "docker run succeeded"; return 1; }
  [[ "$out" == *"--cpuargs host needs KVM, and guests run under TCG here"* ]] || why "message: $out"
}

# hostile_guest MODE [NAME]: docker run through runtime runq-standin, whose
# tree (a hard-linked copy) boots test/lib/hostile-init.c as the guest's
# init in MODE; prints docker run's output and ends with "rc=N". With
# NAME, the container has that name and its stdout goes to /dev/null.
hostile_guest() {
  local tree dir out rc
  dir=$(mktemp -d)
  gcc -static -O2 -o "$dir/init" test/lib/hostile-init.c || { rm -rf "$dir"; return 1; }
  echo "$1" >"$dir/mode"
  tree=$(standin_tree) || { rm -rf "$dir"; return 1; }
  local k
  k=$(readlink -f "$tree/kernels/default")
  rm -f "$k/initrd" && (cd "$dir" && printf 'init\nmode\n' | cpio -o -H newc --quiet) >"$k/initrd"
  if [ -n "${2:-}" ]; then
    out=$(timeout 300 docker run --runtime runq-standin --rm --name "$2" "$IMAGE" true 2>&1 >/dev/null)
  else
    out=$(timeout 120 docker run --runtime runq-standin --rm "$IMAGE" true 2>&1)
  fi
  rc=$?
  rm -rf "$tree" "$dir"
  printf '%s\nrc=%s\n' "$out" "$rc"
}

test_limits_hostile_guest_flood_then_bad_frame_keeps_the_proxy_small() {
  local c dir pid first=0 peak=0 out
  c=$(cname flood-frames)
  dir=$(mktemp -d)
  hostile_guest flood "$c" >"$dir/out" &
  local run=$!
  # The proxy is the container's init: sample its resident set while the
  # guest pushes 64 MiB of legal frames through it, until it ends.
  local end=$((SECONDS + 120))
  until pid=$(docker inspect -f '{{.State.Pid}}' "$c" 2>/dev/null) && [ "${pid:-0}" != 0 ]; do
    [ $SECONDS -lt $end ] || { wait $run; rm -rf "$dir"; why "the flooding container never ran"; return 1; }
    kill -0 $run 2>/dev/null || break
    sleep 0.05
  done
  while [ -n "${pid:-}" ] && [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; do
    local rss; rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    [ -n "$rss" ] || break
    [ "$first" -gt 0 ] || first=$rss
    [ "$rss" -le "$peak" ] || peak=$rss
    sleep 0.05
  done
  wait $run
  out=$(cat "$dir/out"); rm -rf "$dir"
  echo "  flood + oversized frame: proxy VmRSS $first kB at first sight, at most $peak kB; $(head -n1 <<<"$out")"
  [[ "$(head -n1 <<<"$out")" == "runq: the guest broke the control protocol: frame of 2147483647 bytes exceeds the 131072-byte limit"* ]] ||
    why "expected the oversized frame's line, got [$out]" || return
  [ "$first" -gt 0 ] || why "the proxy was never sampled" || return
  in_range "proxy RSS growth (kB)" $((peak - first)) 0 4096
}

test_limits_hostile_guest_frames_end_only_its_own_container() {
  local other mode out want
  other=$(cname other)
  start_sleeper "$other" || return
  for mode in oversized malformed hostonly signal; do
    out=$(hostile_guest "$mode") || why "setting up the hostile guest ($mode) failed" || return
    case $mode in
      oversized) want="runq: the guest broke the control protocol: frame of 2147483647 bytes exceeds the 131072-byte limit" ;;
      malformed) want="runq: the guest broke the control protocol: undecodable frame" ;;
      hostonly) want="runq: the guest broke the control protocol: undecodable frame" ;;
      signal) want="" ;;
    esac
    echo "  $mode: $(echo "$out" | tr '\n' ' ')"
    if [ "$mode" = signal ]; then
      expect_eq "exit status of Signaled(i32::MAX)" "rc=255" "$(tail -n1 <<<"$out")" || return
    else
      [[ "$(head -n1 <<<"$out")" == "$want"* ]] || why "$mode: expected [$want...], got [$out]" || return
      expect_eq "$mode: lines of output" 2 "$(wc -l <<<"$out")" || return
      [[ "$(tail -n1 <<<"$out")" != "rc=0" ]] || why "$mode: docker run succeeded" || return
    fi
  done
  expect_eq "exec into the other container" "alive" "$(docker exec "$other" echo alive 2>&1)"
}

# proxy_threads PID: its thread count now.
proxy_threads() { awk '/^Threads:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

test_limits_dns_flood_from_the_guest_keeps_the_proxy_bounded() {
  local net peer c dir pid base max=0 n stop
  net=$(nname flood); peer=$(cname peer); c=$(cname flood)
  docker network create "$net" >/dev/null || why "network create failed" || return
  start_sleeper "$peer" --network "$net" --network-alias peer-alias || return
  dir=$(mktemp -d)
  gcc -static -O2 -o "$dir/connflood" test/lib/connflood.c || why "building connflood failed" || return
  start_sleeper "$c" --network "$net" -v "$dir:/flood:ro" || return
  pid=$(docker inspect -f '{{.State.Pid}}' "$c")
  base=$(proxy_threads "$pid")
  stop=$dir/stop
  # Sample the proxy's threads until the flood is over.
  (while [ ! -e "$stop" ]; do t=$(proxy_threads "$pid"); [ -n "$t" ] && [ "$t" -gt "$max" ] && max=$t && echo "$max" >"$dir/max"; sleep 0.05; done) &
  local sampler=$!
  timeout 600 docker exec "$c" /flood/connflood 20000 >"$dir/out" 2>&1 &
  local flood=$!
  # Other containers keep starting meanwhile.
  expect_eq "a container started during the flood" started "$("${RUNQ[@]}" --rm "$IMAGE" echo started 2>&1)" ||
    { wait $flood; touch "$stop"; wait $sampler; rm -rf "$dir"; return 1; }
  wait $flood
  n=$(cat "$dir/out")
  touch "$stop"; wait $sampler
  max=$(cat "$dir/max" 2>/dev/null || echo "$base")
  rm -rf "$dir"
  echo "  flood: $(head -n1 <<<"$n"); proxy threads: $base before, at most $max during (cap: 2 x 32 relayed streams)"
  [[ "$n" == *done* ]] || why "the flood did not finish: [$n]" || return
  in_range "proxy threads during the flood" "$max" "$base" $((base + 2 * 32 + 2)) || return
  # The container keeps working: its DNS answers again.
  local ip; ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$peer")
  expect_eq "DNS after the flood" "Address: $ip" \
    "$(docker exec "$c" sh -c 'nslookup peer-alias 2>/dev/null | grep -A1 "^Name:" | tail -n 1')"
}

test_limits_guest_cgroup_shows_the_vms_size_to_workload_and_exec() {
  local c out
  c=$(cname cg)
  start_sleeper "$c" -m 300m --cpus 2 || return
  out=$(docker exec "$c" sh -c 'cat /sys/fs/cgroup/memory.max; nproc; test -e /sys/fs/cgroup/cpu.max || echo no-cpu.max; cat /proc/self/cgroup; awk "\$2 == \"/sys/fs/cgroup\" {print \$3}" /proc/self/mounts' | xargs)
  expect_eq "exec: memory.max, vCPUs, no cpu.max, its cgroup, the fs" "314572800 2 no-cpu.max 0::/ cgroup2" "$out" || return
  out=$(docker exec "$c" sh -c 'grep -l "^1$" /sys/fs/cgroup/cgroup.procs >/dev/null && echo workload-inside; touch /sys/fs/cgroup/x 2>&1 | grep -o "Read-only file system"')
  expect_eq "the workload (pid 1) is in it; read-only" "workload-inside Read-only file system" "$(xargs <<<"$out")"
}
