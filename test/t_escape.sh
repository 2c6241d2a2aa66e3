# Security I: a hostile image (symlinks at its mount destinations), its
# volumes and its guest cannot get anything run, mounted or written outside
# the VM. Each case runs the same image under runc as the reference: the
# mount lands where runc puts it, inside the image; under runq the workload
# still runs in the VM and the QEMU tree is unchanged.

ESC_IMAGE=runq-test/hostile:latest
TREE=/var/lib/runq/qemu

# The hostile image: busybox plus links that point at the tree's programs
# (/usr/bin/runq-proxy is the container's PID 1 under runq).
escape_image() {
  docker image inspect "$ESC_IMAGE" >/dev/null 2>&1 && return 0
  local root
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,usr/bin,etc,tmp,proc,sys,dev,deep/a,data}
  cp /bin/busybox "$root/bin/busybox"
  for a in sh cat ls uname echo mount cp ln mkdir id test grep stat sha256sum; do
    ln -s busybox "$root/bin/$a"
  done
  ln -s /usr/bin "$root/abs"
  ln -s ../../usr/bin "$root/rel"
  ln -s /c2 "$root/c1"
  ln -s usr/./bin/../bin "$root/c2"
  ln -s ../../../../../../usr/bin "$root/deep/a/b"
  ln -s /usr/bin/runq-proxy "$root/etc/hosts"
  echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin:/usr/bin' - "$ESC_IMAGE" >/dev/null
  local rc=$?
  rm -rf "$root"
  return $rc
}

# A fingerprint of every file of the tree: names, sizes, modes, times.
tree_print() {
  find "$TREE" -xdev -printf '%p %s %m %T@\n' | sort | sha256sum | cut -c1-16
}

# The content a hostile volume brings: a program named like the proxy
# (busybox, which would print "applet not found" and fail the container)
# and a marker.
hostile_dir() {
  local d
  d=$(mktemp -d)
  cp /bin/busybox "$d/runq-proxy"
  echo "marker-$RANDOM" >"$d/MARK"
  echo "$d"
}

# escape_case NAME PROBE DOCKER-ARGS...: the probe's output under runc and
# runq must match, runq's workload must run in the VM, the tree unchanged.
escape_case() {
  local name=$1 probe=$2
  shift 2
  escape_image || why "building $ESC_IMAGE failed" || return
  local before ref out
  before=$(tree_print)
  ref=$("${RUNC[@]}" --rm "$@" "$ESC_IMAGE" sh -c "$probe" 2>&1) || why "$name: runc reference failed: $ref" || return
  out=$("${RUNQ[@]}" --rm "$@" "$ESC_IMAGE" sh -c "uname -r; $probe" 2>&1) || why "$name: runq run failed: $out" || return
  local kernel=${out%%$'\n'*} rest
  rest=${out#*$'\n'}
  [ "$kernel" != "$(uname -r)" ] || why "$name: the workload ran on the host kernel" || return
  expect_eq "$name: probe output (runc vs runq)" "$ref" "$rest" || return
  expect_eq "$name: QEMU tree fingerprint" "$before" "$(tree_print)"
}

# escape_dir_case NAME PROBE DOCKER-ARGS...: escape_case with a fresh
# hostile_dir, named @DIR@ in the arguments.
escape_dir_case() {
  local name=$1 probe=$2 d rc
  shift 2
  d=$(hostile_dir)
  escape_case "$name" "$probe" "${@//@DIR@/$d}"
  rc=$?
  rm -rf "$d"
  return $rc
}

test_escape_absolute_symlink_volume_stays_in_the_image() {
  escape_dir_case "-v DIR:/abs (/abs -> /usr/bin)" 'cat /usr/bin/MARK' -v "@DIR@:/abs"
}

test_escape_relative_symlink_volume_stays_in_the_image() {
  escape_dir_case "-v DIR:/rel (/rel -> ../../usr/bin)" 'cat /usr/bin/MARK' -v "@DIR@:/rel"
}

test_escape_named_volume_filled_in_a_vm_stays_in_the_image() {
  local v="rqt-esc-$$-$RANDOM" out rc
  docker volume create "$v" >/dev/null || why "docker volume create failed" || return
  # The first container's guest fills the volume with a would-be proxy.
  out=$("${RUNQ[@]}" --rm -v "$v:/vol" "$ESC_IMAGE" sh -c 'cp /bin/busybox /vol/runq-proxy && echo filled-in-vm >/vol/MARK' 2>&1) ||
    { docker volume rm "$v" >/dev/null; why "filling the volume from a VM failed: $out"; return; }
  escape_case "named volume at /abs" 'cat /usr/bin/MARK; ls /usr/bin' -v "$v:/abs"
  rc=$?
  docker volume rm "$v" >/dev/null 2>&1
  return $rc
}

test_escape_symlink_chain_stays_in_the_image() {
  escape_dir_case "-v DIR:/c1/x (/c1 -> /c2 -> usr/./bin/../bin)" 'cat /usr/bin/x/MARK' -v "@DIR@:/c1/x"
}

test_escape_dotdot_at_depth_stays_in_the_image() {
  escape_dir_case "-v DIR:/deep/a/b (b -> ../../../../../../usr/bin)" 'cat /usr/bin/MARK' -v "@DIR@:/deep/a/b"
}

test_escape_mount_flag_bind_stays_in_the_image() {
  escape_dir_case "--mount type=bind,dst=/rel" 'cat /usr/bin/MARK' --mount "type=bind,src=@DIR@,dst=/rel"
}

test_escape_link_inside_a_volume_stays_in_the_image() {
  # The volume itself holds a link that climbs out of it; a second mount
  # goes through that link.
  local v w
  v=$(hostile_dir)
  w=$(hostile_dir)
  ln -s ../../../../../usr "$v/up"
  escape_case "-v VOL:/data -v DIR:/data/up/bin" 'cat /usr/bin/MARK' -v "$v:/data" -v "$w:/data/up/bin"
  local rc=$?
  rm -rf "$v" "$w"
  return $rc
}

test_escape_volumes_from_stays_in_the_image() {
  local d src rc
  d=$(hostile_dir)
  src=$(cname escsrc)
  docker create --name "$src" -v "$d:/abs" "$ESC_IMAGE" true >/dev/null ||
    { rm -rf "$d"; why "creating the --volumes-from source failed"; return; }
  escape_case "--volumes-from (/abs)" 'cat /usr/bin/MARK' --volumes-from "$src"
  rc=$?
  rm -rf "$d"
  return $rc
}

test_escape_docker_hosts_file_through_a_symlink_stays_in_the_image() {
  # /etc/hosts -> /usr/bin/runq-proxy: Docker's hosts file is bind-mounted
  # at /etc/hosts.
  # (Docker itself replaces such a link with a file before the runtime.)
  escape_case "/etc/hosts -> /usr/bin/runq-proxy" 'grep -c localhost /etc/hosts; ls /usr/bin | wc -l'
}

test_escape_tmpfs_through_a_symlink_lands_in_the_image() {
  escape_case "--tmpfs /abs" 'grep " /usr/bin " /proc/mounts | cut -d" " -f3' --tmpfs /abs
}

test_escape_runq_disk_mountpoint_through_a_symlink_lands_in_the_image() {
  escape_image || why "building $ESC_IMAGE failed" || return
  local img before out
  img=$(mktemp)
  truncate -s 64M "$img" && mkfs.ext4 -q -F "$img" || { rm -f "$img"; why "mkfs.ext4 failed"; return; }
  before=$(tree_print)
  out=$("${RUNQ[@]}" --rm -v "$img:/dev/runq/d1/none/ext4/abs" "$ESC_IMAGE" sh -c 'uname -r; grep " /usr/bin " /proc/mounts | cut -d" " -f3' 2>&1)
  local rc=$?
  rm -f "$img"
  [ $rc -eq 0 ] || why "docker run failed: $out" || return
  expect_eq "disk at /abs lands on the image's /usr/bin" "ext4" "${out#*$'\n'}" || return
  expect_eq "QEMU tree fingerprint" "$before" "$(tree_print)"
}

test_escape_guest_written_qcow2_backing_file_is_never_followed() {
  # The guest turns its raw disk into a qcow2 image whose backing file is a
  # host path; the next start must not open that path.
  local img hdr out rc
  img=$(mktemp) hdr=$(mktemp)
  truncate -s 64M "$img"
  qemu-img create -q -f qcow2 -b /etc/shadow -F raw "$hdr.q" 64M && head -c 65536 "$hdr.q" >"$hdr" ||
    { rm -f "$img" "$hdr" "$hdr.q"; why "qemu-img create failed"; return; }
  out=$("${RUNQ[@]}" --rm -v "$img:/dev/runq/q1/none" -v "$hdr:/hdr:ro" "$IMAGE" \
    sh -c 'dd if=/hdr of=/dev/disk/by-runq-id/q1 conv=notrunc,fsync 2>/dev/null && echo written' 2>&1)
  expect_eq "guest writes the header" "written" "$out" || { rm -f "$img" "$hdr" "$hdr.q"; return 1; }
  qemu-img info "$img" | grep -q 'backing file: /etc/shadow' ||
    { rm -f "$img" "$hdr" "$hdr.q"; why "the disk does not carry the hostile header"; return; }
  out=$("${RUNQ[@]}" --rm -v "$img:/dev/runq/q1/none" "$IMAGE" true 2>&1)
  rc=$?
  rm -f "$img" "$hdr" "$hdr.q"
  [ $rc -ne 0 ] || why "a disk naming a backing file was attached" || return
  [[ "$out" == *'runq disk "/dev/runq/q1/none"'*'backing file'* ]] || why "not refused by name: $out"
}

# status_of PID FIELD: one field of /proc/PID/status.
status_of() {
  awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "/proc/$1/status"
}

test_escape_host_side_processes_run_confined() {
  local c pid proxy qemu fsd vsock
  c=$(cname confined)
  start_sleeper "$c" || return
  proxy=$(docker inspect -f '{{.State.Pid}}' "$c")
  [ -n "$proxy" ] && [ "$proxy" != 0 ] || why "no pid for $c" || return
  qemu=$(pgrep -P "$proxy" -f '^(/usr/bin/)?qemu-system' | head -1)
  fsd=$(pgrep -P "$proxy" -x virtiofsd | head -1)
  vsock=$(pgrep -P "$proxy" -x vhost-device-vs | head -1)
  [ -n "$qemu" ] && [ -n "$fsd" ] && [ -n "$vsock" ] || why "helpers not found under proxy $proxy: qemu=$qemu virtiofsd=$fsd vsock=$vsock" || return
  # An exec's proxy, alive while its process runs (runc has started it
  # when docker exec -d returns).
  docker exec -d "$c" sleep 120 || why "docker exec -d failed" || return
  local ex
  ex=$(pgrep -n -f '^/usr/bin/runq-proxy exec')
  [ -n "$ex" ] || why "no exec proxy found" || return
  local p name uid capeff seccomp nnp table=""
  for p in "proxy:$proxy" "qemu:$qemu" "virtiofsd:$fsd" "vsock:$vsock" "exec:$ex"; do
    name=${p%%:*} pid=${p#*:}
    uid=$(status_of "$pid" Uid | awk '{print $2}')
    capeff=$(status_of "$pid" CapEff)
    seccomp=$(status_of "$pid" Seccomp)
    nnp=$(status_of "$pid" NoNewPrivs)
    table+="$name uid=$uid capeff=$capeff seccomp=$seccomp nnp=$nnp; "
  done
  echo "  confinement: $table"
  # virtiofsd's sandbox: chrooted into the shared root (the image).
  local fsroot
  fsroot=$(stat -c %i "/proc/$fsd/root/")
  [ "$fsroot" = "$(stat -c %i "/proc/$proxy/root/rootfs/")" ] ||
    why "virtiofsd's root is not the shared rootfs (inode $fsroot)" || return
  expect_eq "proxy, qemu, virtiofsd, vsock (uid capeff seccomp nnp)" \
    "proxy uid=0 capeff=0000000000000020 seccomp=2 nnp=1; qemu uid=2147483646 capeff=0000000000000000 seccomp=2 nnp=1; virtiofsd uid=0 capeff=00000000880000db seccomp=2 nnp=1; vsock uid=0 capeff=0000000000000000 seccomp=2 nnp=1; exec uid=0 capeff=0000000000000000 seccomp=2 nnp=1; " \
    "$table"
}

test_escape_qemu_standin_gets_eperm_for_the_host_reaching_calls() {
  # A copy of the tree whose QEMU is the stand-in (hard links: the real
  # tree is untouched), used by runtime runq-standin (test/run).
  local tree out
  gcc -static -O2 -o /tmp/runq-standin.$$ test/lib/standin.c || why "building the stand-in failed" || return
  tree=$(standin_tree) || why "copying the tree failed" || return
  rm -f "$tree/usr/bin/qemu-system-x86_64" && install -m 0755 /tmp/runq-standin.$$ "$tree/usr/bin/qemu-system-x86_64"
  rm -f /tmp/runq-standin.$$
  out=$(timeout 120 docker run --runtime runq-standin --rm "$IMAGE" true 2>&1)
  rm -rf "$tree"
  local line
  line=$(grep -o 'standin: .*' <<<"$out" | head -1)
  [ -n "$line" ] || why "the stand-in's report did not reach docker run: $out" || return
  echo "  $line"
  [[ "$line" == *"open_by_handle_at=EPERM mknod=EPERM mount=EPERM uid=2147483646 "*"capeff=0000000000000000 seccomp=2 nnp=1"* ]] ||
    why "the stand-in was not confined: $line"
}

# system_volume_image NAME: an image whose VOLUMEs sit where Docker's
# system mounts are, filled by Docker from the image: /dev holds
# mqueue -> /usr, and /usr/bin/runq-proxy is a would-be proxy.
system_volume_image() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  local root rc
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,usr/bin,dev,proc,sys,etc,tmp}
  cp /bin/busybox "$root/bin/busybox" && cp /bin/busybox "$root/usr/bin/runq-proxy"
  for a in sh uname cat ls; do ln -s busybox "$root/bin/$a"; done
  : >"$root/dev/null"
  ln -s /usr "$root/dev/mqueue"
  ln -s /etc "$root/dev/pts"
  echo /bin/busybox >"$root/etc/ld.so.preload"
  tar -C "$root" -c . | docker import -c 'VOLUME ["/dev", "/dev/mqueue", "/dev/pts"]' -c 'ENV PATH=/bin:/usr/bin' - "$1" >/dev/null
  rc=$?
  rm -rf "$root"
  return $rc
}

test_escape_volumes_at_dockers_system_mount_paths_never_reach_the_host() {
  local img=runq-test/sysvol before out
  system_volume_image "$img" || why "building $img failed" || return
  before=$(tree_print)
  out=$("${RUNQ[@]}" --rm "$img" uname -r 2>&1) || why "docker run failed: $out" || return
  [ "$out" != "$(uname -r)" ] || why "the workload ran on the host kernel" || return
  expect_eq "QEMU tree fingerprint" "$before" "$(tree_print)" || return
  # The same with -v: a volume at /dev holding pts -> /usr, one at
  # /dev/pts holding bin/runq-proxy.
  local w x
  w=$(mktemp -d) x=$(hostile_dir)
  ln -s /usr "$w/pts" && : >"$w/null" && mkdir "$x/bin" && cp /bin/busybox "$x/bin/runq-proxy"
  out=$("${RUNQ[@]}" --rm -v "$w:/dev" -v "$x:/dev/pts" -v "$w:/sys" "$IMAGE" uname -r 2>&1)
  local rc=$?
  rm -rf "$w" "$x"
  [ $rc -eq 0 ] || why "docker run with -v at /dev, /dev/pts, /sys failed: $out" || return
  [ "$out" != "$(uname -r)" ] || why "the workload ran on the host kernel" || return
  expect_eq "QEMU tree fingerprint" "$before" "$(tree_print)"
}

test_escape_a_link_swapped_in_a_shared_volume_during_the_start_stays_harmless() {
  # Another container's guest (played by a host process on the volume's
  # directory) swaps sub <-> lnk while the victim starts with a mount below
  # sub. runc may then walk the link, but only inside the proxy's own root:
  # towards /usr, the mount is covered by the tree's; towards the root
  # itself, runq start finds a root that is not runq's and kills it.
  local target v x before pid i out kernel=0 failed=0 killed=0
  gcc -static -O2 -o /tmp/runq-swapper.$$ test/lib/swapper.c || why "building the swapper failed" || return
  before=$(tree_print)
  for target in /usr /; do
    v=$(mktemp -d) x=$(hostile_dir)
    mkdir "$v/sub" "$x/bin" "$x/rootfs" && ln -s "$target" "$v/lnk" && cp /bin/busybox "$x/bin/runq-proxy"
    /tmp/runq-swapper.$$ "$v" &
    pid=$!
    for i in $(seq 10); do
      if out=$("${RUNQ[@]}" --rm -v "$v:/data" -v "$x:/data/sub" "$IMAGE" uname -r 2>&1); then
        [ "$out" != "$(uname -r)" ] || { kill "$pid"; rm -rf "$v" "$x"; why "-> $target run $i: the workload ran on the host kernel"; return; }
        kernel=$((kernel + 1))
      else
        [[ "$out" != *"applet not found"* ]] || { kill "$pid"; rm -rf "$v" "$x"; why "-> $target run $i: the volume's runq-proxy ran: $out"; return; }
        [[ "$out" != *"root is not runq's"* ]] || killed=$((killed + 1))
        failed=$((failed + 1))
      fi
    done
    kill "$pid"
    wait "$pid" 2>/dev/null
    rm -rf "$v" "$x"
  done
  rm -f /tmp/runq-swapper.$$
  echo "  20 starts under the swap (10 towards /usr, 10 towards /): $kernel ran in the VM, $failed refused ($killed by runq start's root check)"
  expect_eq "QEMU tree fingerprint" "$before" "$(tree_print)"
}

test_escape_device_cgroup_names_no_other_containers_taps() {
  # No rule for a whole class of devices beyond Docker's own (pts, and
  # mknod without access): a macvtap rule for every minor once let
  # anything able to mknod open another container's macvtap.
  local c pid path list
  c=$(cname devcg)
  start_sleeper "$c" || return
  pid=$(docker inspect -f '{{.State.Pid}}' "$c")
  path=$(awk -F: '$2 == "devices" {print $3}' "/proc/$pid/cgroup")
  [ -n "$path" ] || skip "cgroup v2: the device rules are a BPF program, not a list to read" || return
  list=$(cat "/sys/fs/cgroup/devices$path/devices.list")
  local bad
  bad=$(grep -E '^c [0-9]+:\* r' <<<"$list" | grep -v '^c 136:\*' || true)
  [ -z "$bad" ] || why "rules for every minor of a device class: $bad" || return
  grep -q '^c 10:200 rwm' <<<"$list" || why "no rule for /dev/net/tun: $list"
}

test_escape_runq_start_kills_a_container_whose_root_is_not_runqs() {
  # The waiting init's root is compared with <bundle>/runq/root. A mount
  # that raced onto that root cannot be staged on demand, so the test, with
  # runq driven as containerd drives it, swaps the bundle's directory
  # between create and start instead: the init keeps the old one.
  local b state id="rq-rootcheck-$$" out rc
  b=$(mktemp -d) state=$(mktemp -d)
  mkdir "$b/rootfs"
  local src
  src=$(cname export)
  docker create --name "$src" "$IMAGE" true >/dev/null && docker export "$src" | tar -C "$b/rootfs" -x ||
    { rm -rf "$b" "$state"; why "exporting the image failed"; return; }
  (cd "$b" && runc spec) && python3 - "$b/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["echo", "ran"]
json.dump(c, open(p, "w"))
PY
  # First as it is: it must start (the check passes runq's own root).
  /var/lib/runq/runq --root "$state" create -b "$b" "$id" </dev/null >/dev/null 2>&1 ||
    { rm -rf "$b" "$state"; why "runq create failed"; return; }
  out=$(/var/lib/runq/runq --root "$state" start "$id" 2>&1)
  rc=$?
  /var/lib/runq/runq --root "$state" delete -f "$id" >/dev/null 2>&1
  [ $rc -eq 0 ] || { rm -rf "$b" "$state"; why "runq start of an untouched bundle failed: $out"; return; }
  cp "$b/runq/config.orig.json" "$b/config.json" && rm -rf "$b/runq"
  /var/lib/runq/runq --root "$state" create -b "$b" "$id" </dev/null >/dev/null 2>&1 ||
    { rm -rf "$b" "$state"; why "runq create failed"; return; }
  mv "$b/runq/root" "$b/runq/root.old" && mkdir "$b/runq/root"
  out=$(/var/lib/runq/runq --root "$state" start "$id" 2>&1)
  rc=$?
  /var/lib/runq/runq --root "$state" delete -f "$id" >/dev/null 2>&1
  rm -rf "$b" "$state"
  [ $rc -ne 0 ] || why "runq start let a container whose root is not runq's run: $out" || return
  [[ "$out" == *"root is not runq's"* ]] || why "not refused by the root check: $out"
}
