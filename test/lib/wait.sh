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
