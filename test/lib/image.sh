#!/usr/bin/env bash
# Build the local test image (no registry is reachable): a busybox-static
# rootfs piped into `docker import`. Idempotent.
set -euo pipefail
IMAGE=${IMAGE:-runq-test/busybox:latest}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,home,var/www}
# BUSYBOX: another busybox-static build (the s390x one for the cross-arch
# test); the applet list comes from the host's busybox of the same version.
cp "${BUSYBOX:-/bin/busybox}" "$root/bin/busybox"
for applet in $(/bin/busybox --list-full); do
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
games:x:60:
nogroup:x:65534:
G
# For the exit-code tests: a file that is not executable.
echo "not a program" > "$root/etc/notexec"
chmod 0644 "$root/etc/notexec"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' - "$IMAGE" >/dev/null
echo "image.sh: built $IMAGE"
