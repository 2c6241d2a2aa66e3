# Waiting on real events, with timeouts that say what was awaited.
# Sourced by the test harness and the benchmark.

# wait_log CONTAINER TEXT [SECONDS]: block until TEXT appears in the
# container's output (stdout or stderr). `docker logs -f | grep -m1` in a
# plain pipeline would wait for docker logs to write again after the
# match; here grep's exit ends the wait and the follower is killed.
wait_log() {
  local c=$1 text=$2 secs=${3:-60} fd pid rc
  exec {fd}< <(timeout "$secs" docker logs -f "$c" 2>&1)
  pid=$!
  grep -q -m1 -F -- "$text" <&"$fd"
  rc=$?
  exec {fd}<&-
  kill "$pid" 2>/dev/null
  [ $rc -eq 0 ] || { _reason="no '$text' from container $c within ${secs}s"; return 1; }
}

# wait_runtime NAME [SECONDS]: until dockerd serves runtime NAME as
# /etc/docker/daemon.json now describes it (a reload is asynchronous).
wait_runtime() {
  local name=$1 secs=${2:-30} want end
  _runtime_json() { python3 -c 'import json,sys; print(json.dumps(json.loads(sys.stdin.read() or "null"), sort_keys=True))'; }
  want=$(python3 -c 'import json,sys; print(json.dumps(json.load(open("/etc/docker/daemon.json"))["runtimes"][sys.argv[1]]))' "$name" | _runtime_json)
  end=$((SECONDS + secs))
  until [ "$(docker info --format "{{json (index .Runtimes \"$name\")}}" 2>/dev/null | _runtime_json 2>/dev/null)" == "$want" ]; do
    [ $SECONDS -lt $end ] || { echo "dockerd did not serve runtime $name as daemon.json has it within ${secs}s" >&2; return 1; }
    sleep 0.2
  done
}
