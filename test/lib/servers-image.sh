#!/usr/bin/env bash
# Build runq-test/debian-servers (no registry is reachable): Debian 12 with
# real servers and a toolchain from Debian's packages, made by mmdebstrap
# and piped into `docker import`. Idempotent; ~1 min the first time.
set -euo pipefail
IMAGE=runq-test/debian-servers:latest
PACKAGES=nginx-light,redis-server,redis-tools,gcc,libc6-dev,make,iptables
# An image built from another package list is rebuilt, not trusted.
have=$(docker image inspect -f '{{index .Config.Labels "runq.packages"}}' "$IMAGE" 2>/dev/null || true)
[ "$have" != "$PACKAGES" ] || exit 0
for p in mmdebstrap apache2-utils; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap apache2-utils >/dev/null; break; }
done
echo "servers-image.sh: building $IMAGE with mmdebstrap ($PACKAGES; ~1 min)"
log=$(mktemp)
if ! mmdebstrap --variant=apt --include="$PACKAGES" bookworm - 2>"$log" |
  docker import -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' -c "LABEL runq.packages=$PACKAGES" - "$IMAGE" >/dev/null; then
  tail -n 20 "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
