#!/usr/bin/env bash
# dockerd.sh ensure  — make sure a dockerd answers; start one in the
#                      background if none runs (recorded, so stop can undo it)
# dockerd.sh restart — stop whichever dockerd runs, start one as ensure does
# dockerd.sh stop    — stop the dockerd that ensure started, if any
set -euo pipefail
state=/run/runq-test-dockerd.pid
log=/var/log/runq-dockerd.log

wait_for() { # wait_for SECONDS WHAT COMMAND...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      echo "dockerd.sh: timed out after ${secs}s waiting for $what" >&2
      [ -f $log ] && tail -n 20 $log >&2
      return 1
    fi
    sleep 0.1
  done
}

start() {
  echo "dockerd.sh: starting dockerd (log: $log)"
  # cgroupfs driver: there is no systemd here.
  setsid dockerd --exec-opt native.cgroupdriver=cgroupfs >>$log 2>&1 < /dev/null &
  echo $! > $state
  wait_for 60 "dockerd to answer on /var/run/docker.sock" docker info
}

case "${1:-}" in
ensure)
  if docker info >/dev/null 2>&1; then
    # Pick up a changed runtimes section.
    pid=$(pidof dockerd || true)
    [ -z "$pid" ] || kill -HUP $pid
    exit 0
  fi
  start
  ;;
restart)
  # Whoever started it: stop the running dockerd (its containers keep
  # running only under live-restore) and start ours.
  pid=$(pidof dockerd || true)
  if [ -n "$pid" ]; then
    kill "$pid"
    wait_for 60 "dockerd (pid $pid) to exit" sh -c "! kill -0 $pid"
  fi
  start
  ;;
stop)
  if [ -f $state ]; then
    pid=$(cat $state)
    kill "$pid" 2>/dev/null || true
    wait_for 30 "dockerd (pid $pid) to exit" sh -c "! kill -0 $pid"
    rm -f $state
  fi
  ;;
*) echo "usage: $0 ensure|restart|stop" >&2; exit 2 ;;
esac
