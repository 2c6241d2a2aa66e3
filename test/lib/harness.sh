# Test harness: sourced by test/run. Each test is a function named test_*
# in a test/t_*.sh file; it returns 0 to pass, 1 to fail (after calling
# `why "..."`), or calls `skip "reason"` (only for what the host lacks).
IMAGE=${IMAGE:-runq-test/busybox:latest}
RUNQ=(docker run --runtime runq)
RUNC=(docker run --runtime runc)
# runq whose operator lets containers set the operator-only RUNQ_* (test/run)
RUNQ_ENV=(docker run --runtime runq-env)

_reason=""
why() { _reason="$*"; return 1; }
skip() { _reason="$*"; return 77; }

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
  [ "$2" == "$3" ] || why "$1: expected [$2], got [$3]"
}

. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

# start_sleeper NAME [DOCKER-ARGS...]: a running runq container, waited
# for until its workload printed its first line.
start_sleeper() {
  "${RUNQ[@]}" -d --name "$1" "${@:2}" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null ||
    why "docker run -d $1 failed" || return
  wait_log "$1" ready 90
}

# standin_tree: a copy of the installed QEMU tree (hard links: the real
# tree is untouched when a file is replaced) at the path runtime
# runq-standin uses (test/run registers it); prints the path.
STANDIN_TREE=/var/lib/runq/standin-tree
standin_tree() {
  rm -rf "$STANDIN_TREE" && cp -al /var/lib/runq/qemu "$STANDIN_TREE" && echo "$STANDIN_TREE"
}

# in_range WHAT VALUE LOW HIGH
in_range() {
  [ "$2" -ge "$3" ] 2>/dev/null && [ "$2" -le "$4" ] || why "$1: [$2] not in [$3, $4]"
}

# wait_exit CONTAINER [SECONDS]: its exit code, or "timeout".
wait_exit() {
  timeout "${2:-60}" docker wait "$1" 2>/dev/null || echo timeout
}

# containerd_state_dirs: where a containerd serving dockerd keeps its
# task bundles: dockerd's own (state /run/docker/containerd/daemon), the
# system's (/run/containerd), and whatever state directory a running
# containerd was given (--state, or state = in its --config file).
containerd_state_dirs() {
  local pid args cfg
  {
    echo /run/docker/containerd/daemon
    echo /run/containerd
    for pid in $(pgrep -x containerd); do
      args=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)
      sed -n '/^--state$/{n;p}; s/^--state=//p' <<<"$args"
      cfg=$(sed -n '/^\(-c\|--config\)$/{n;p}; s/^--config=//p' <<<"$args")
      [ -z "$cfg" ] || sed -n 's/^state *= *"\(.*\)"/\1/p' "$cfg" 2>/dev/null
    done
  } | xargs -r realpath -m | sort -u
}

# task_bundles: the task bundle directories of dockerd's containers
# (namespace moby), under any of those; one a line.
task_bundles() {
  local d
  for d in $(containerd_state_dirs); do
    ls -d "$d"/io.containerd.runtime.v2.task/moby/*/ 2>/dev/null
  done
}

# Processes that must not outlive a runq container.
vm_processes() {
  pgrep -c -f '^(qemu-system|virtiofsd|vhost-device-vsock|/usr/bin/runq-proxy)' || true
}

# A fresh container name that cleanup removes. Called as $(cname x), so
# the name is recorded in a file, not a variable of the subshell.
_containers_file=$(mktemp)
cname() {
  local n="runqtest-$1-$$-$RANDOM"
  echo "$n" >> "$_containers_file"
  echo "$n"
}
# Networks and host veth pairs a test created, removed after its
# containers (recorded in files for the same reason as cname).
_networks_file=$(mktemp)
_links_file=$(mktemp)
nname() {
  local n="rqt-$1-$$-$RANDOM"
  echo "$n" >> "$_networks_file"
  echo "$n"
}
test_veth() { # test_veth NAME: a veth pair NAME/NAME-p, both up
  echo "$1" >> "$_links_file"
  ip link add "$1" type veth peer name "$1-p" && ip link set "$1" up && ip link set "$1-p" up
}
cleanup_containers() {
  local names
  names=$(cat "$_containers_file")
  [ -z "$names" ] || docker rm -f $names >/dev/null 2>&1 || true
  : > "$_containers_file"
  names=$(cat "$_networks_file")
  [ -z "$names" ] || docker network rm $names >/dev/null 2>&1 || true
  : > "$_networks_file"
  for l in $(cat "$_links_file"); do ip link del "$l" 2>/dev/null || true; done
  : > "$_links_file"
}
