#!/usr/bin/env bash
# make demo: run a container in a VM and show that it is one.
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/dockerd.sh ensure
IMAGE=runq-test/busybox:latest
echo "==> image: $IMAGE (busybox-static through docker import; seconds, once)"
test/lib/image.sh
echo "==> run: a container in its own VM (boots its guest kernel: 1-3 s under TCG)"
echo
echo "host kernel:   $(uname -r)"
echo "host CPUs:     $(nproc), host RAM: $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
echo
echo "\$ docker run --runtime runq --rm $IMAGE sh -c '...'"
set +e
time docker run --runtime runq --rm "$IMAGE" sh -c '
  echo "guest kernel:  $(uname -r)"
  echo "guest CPUs:    $(grep -c ^processor /proc/cpuinfo), guest RAM: $(awk "/MemTotal/ {print int(\$2/1024)}" /proc/meminfo) MiB"
  echo "guest root:    $(awk "\$2 == \"/\" {print \$3}" /proc/mounts) (the container image, shared from the host)"
  exit 3'
rc=$?
set -e
echo "exit code:     $rc (the workload exited 3)"
[ $rc -eq 3 ]
