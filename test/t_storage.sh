# Issue 5: storage as Docker users know it.

test_bind_mount_read_write_and_owner() {
  local d out; d=$(mktemp -d)
  chmod 0777 "$d"
  echo from-host > "$d/in"
  chmod 0644 "$d/in"
  out=$("${RUNQ[@]}" --rm -v "$d:/data" -u 1000:1000 "$IMAGE" sh -c 'cat /data/in; echo from-guest > /data/out')
  expect_eq "host file read in the guest" from-host "$out" || { rm -rf "$d"; return 1; }
  expect_eq "guest write seen on the host" from-guest "$(cat "$d/out" 2>/dev/null)" || { rm -rf "$d"; return 1; }
  expect_eq "owner of the guest's file on the host" 1000:1000 "$(stat -c %u:%g "$d/out")"
  rm -rf "$d"
}

test_read_only_bind_mount_refuses_writes() {
  local d out; d=$(mktemp -d)
  out=$("${RUNQ[@]}" --rm -v "$d:/data:ro" "$IMAGE" sh -c 'touch /data/x 2>/dev/null && echo wrote || echo refused')
  expect_eq "write to a :ro volume" refused "$out" || { rm -rf "$d"; return 1; }
  [ ! -e "$d/x" ] || why "file appeared on the host"
  rm -rf "$d"
}

test_tmpfs_is_a_tmpfs_in_the_guest() {
  local out
  out=$("${RUNQ[@]}" --rm --tmpfs /scratch:size=10m,mode=1770 "$IMAGE" sh -c \
    'echo $(stat -f -c %T /scratch) $(stat -c %a /scratch) $(df -k /scratch | awk "NR==2 {print \$2}")')
  expect_eq "fs type, mode, size (kB) of --tmpfs /scratch" "tmpfs 1770 10240" "$out"
}

test_runtime_tmpfs_option() {
  local out
  out=$("${RUNQ[@]}" --rm -e RUNQ_TMPFS=/fast "$IMAGE" stat -f -c %T /fast)
  expect_eq "RUNQ_TMPFS=/fast" tmpfs "$out"
}

test_read_only_root() {
  local out
  out=$("${RUNQ[@]}" --rm --read-only --tmpfs /tmp "$IMAGE" sh -c \
    'touch /newfile 2>/dev/null && echo wrote || echo refused; touch /tmp/ok && echo tmp-ok')
  expect_eq "--read-only root, writable --tmpfs /tmp" "refused tmp-ok" "$(echo $out)"
}

test_named_volume_and_volumes_from() {
  local vol c out; vol="rqvol-$$-$RANDOM"; c=$(cname volsrc)
  "${RUNQ[@]}" --rm --mount "type=volume,source=$vol,target=/v" "$IMAGE" sh -c 'echo kept > /v/f' || why "writer failed" || return
  out=$("${RUNQ[@]}" --rm -v "$vol:/v:ro" "$IMAGE" cat /v/f)
  expect_eq "named volume content in a second VM" kept "$out" || { docker volume rm "$vol" >/dev/null; return 1; }
  docker create --runtime runq --name "$c" -v "$vol:/shared" "$IMAGE" true >/dev/null
  out=$("${RUNQ[@]}" --rm --volumes-from "$c" "$IMAGE" cat /shared/f)
  expect_eq "--volumes-from" kept "$out"
  local rc=$?
  docker rm -f "$c" >/dev/null; docker volume rm "$vol" >/dev/null
  return $rc
}

test_shm_size() {
  local out
  out=$("${RUNQ[@]}" --rm --shm-size 96m "$IMAGE" df -k /dev/shm | awk 'NR==2 {print $2}')
  expect_eq "/dev/shm size (kB) with --shm-size 96m" 98304 "$out"
}

test_docker_cp_both_ways() {
  local c f out; c=$(cname cp); f=$(mktemp)
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'echo in-vm > /tmp/made-in-vm; echo ready; exec sleep 600' >/dev/null &&
    wait_log "$c" ready || return
  echo from-host-cp > "$f"
  docker cp "$f" "$c:/tmp/copied-in" || why "docker cp into the container failed" || return
  out=$(docker exec "$c" cat /tmp/copied-in)
  expect_eq "file copied in, seen in the guest" from-host-cp "$out" || return
  docker cp "$c:/tmp/made-in-vm" "$f" || why "docker cp out of the container failed" || return
  expect_eq "file made in the guest, copied out" in-vm "$(cat "$f")"
  rm -f "$f"
}

# Disk images live here during a test; removed with the test's containers.
disk_dir() {
  local d; d=$(mktemp -d /var/tmp/runq-disks.XXXXXX)
  echo "$d" >>"$_trees_file_disks"
  echo "$d"
}
_trees_file_disks=$(mktemp)
drop_disks() { local d; for d in $(cat "$_trees_file_disks"); do rm -rf "$d"; done; : >"$_trees_file_disks"; }

test_ext4_raw_disk_written_in_guest_read_on_host_and_as_qcow2() {
  local d out
  d=$(disk_dir)
  truncate -s 64M "$d/data.raw" && mkfs.ext4 -q -F "$d/data.raw" || { why "mkfs.ext4 failed"; drop_disks; return 1; }
  out=$("${RUNQ[@]}" --rm -v "$d/data.raw:/dev/runq/data/none/ext4/mnt/data" "$IMAGE" \
    sh -c 'echo written-in-the-vm > /mnt/data/f && sync && stat -f -c %T /mnt/data' 2>&1)
  expect_eq "fs type at the disk's mount point" ext2/ext3 "$out" || { drop_disks; return 1; }
  expect_eq "file read on the host with debugfs" written-in-the-vm \
    "$(debugfs -R 'cat /f' "$d/data.raw" 2>/dev/null)" || { drop_disks; return 1; }
  qemu-img convert -O qcow2 "$d/data.raw" "$d/data.qcow2" || { why "qemu-img convert failed"; drop_disks; return 1; }
  out=$("${RUNQ[@]}" --rm -v "$d/data.qcow2:/dev/runq/q1/writeback/ext4/data:ro" "$IMAGE" \
    sh -c 'cat /data/f; touch /data/g 2>/dev/null && echo writable || echo read-only' 2>&1)
  drop_disks
  expect_eq "the same content from a qcow2 copy, mounted :ro" "$(printf 'written-in-the-vm\nread-only')" "$out"
}

test_xfs_disk_mounted_and_by_runq_id_links() {
  local d out
  d=$(disk_dir)
  truncate -s 320M "$d/x.img" && mkfs.xfs -q "$d/x.img" || { why "mkfs.xfs failed"; drop_disks; return 1; }
  truncate -s 16M "$d/raw.img"
  out=$("${RUNQ[@]}" --rm -v "$d/x.img:/dev/runq/xfs1/unsafe/xfs/srv" -v "$d/raw.img:/dev/runq/raw-2/writethrough" \
    "$IMAGE" sh -c 'awk "\$2 == \"/srv\" {print \$3}" /proc/mounts
      for id in xfs1 raw-2; do [ -b /dev/disk/by-runq-id/$id ] && readlink /dev/disk/by-runq-id/$id | sed "s/vd[a-z]$/vdX/;s/^/$id block /"; done' 2>&1)
  drop_disks
  expect_eq "xfs mount and by-runq-id links" "$(printf 'xfs\nxfs1 block ../../vdX\nraw-2 block ../../vdX')" "$out"
}

test_disk_with_a_uuid_id_mounts_and_is_linked_by_it() {
  local d out id=0f8fad5b-d9cb-469f-a165-70867728950e
  d=$(disk_dir)
  truncate -s 8M "$d/u2.img"; truncate -s 32M "$d/u.img" && mkfs.ext4 -q "$d/u.img" || { why "mkfs.ext4 failed"; drop_disks; return 1; }
  out=$("${RUNQ[@]}" --rm -v "$d/u.img:/dev/runq/$id/none/ext4/mnt/u" -v "$d/u2.img:/dev/runq/short/none" "$IMAGE" \
    sh -c "awk '\$2 == \"/mnt/u\" {print \$3}' /proc/mounts; echo hi >/mnt/u/f && cat /mnt/u/f
      for i in $id short; do [ -b /dev/disk/by-runq-id/\$i ] && echo \"\$i linked\"; done" 2>&1)
  drop_disks
  expect_eq "a 36-character (UUID) disk id" "$(printf 'ext4\nhi\n%s linked\nshort linked' "$id")" "$out"
}

test_binds_under_dev_and_under_a_tmpfs_are_there_as_under_runc() {
  local d rt out
  declare -A got
  d=$(mktemp -d)
  echo log-file >"$d/termination-log"; mkdir "$d/x" && echo in-x >"$d/x/f"
  for rt in runc runq; do
    got[$rt]=$(docker run --rm --runtime "$rt" -v "$d/termination-log:/dev/termination-log" -v "$d/x:/run/x:ro" \
      --tmpfs /run "$IMAGE" sh -c 'cat /dev/termination-log /run/x/f; touch /run/x/g 2>&1 | grep -o "Read-only file system"; touch /run/y && echo tmpfs-writable' 2>/dev/null)
  done
  rm -rf "$d"
  expect_eq "a bind in /dev, a read-only bind under --tmpfs /run" "${got[runc]}" "${got[runq]}" || return
  expect_eq "under runc" "$(printf 'log-file\nin-x\nRead-only file system\ntmpfs-writable')" "${got[runc]}"
}

test_bad_disk_specs_are_refused_by_name_with_nothing_left() {
  local d c out rc
  d=$(disk_dir)
  truncate -s 16M "$d/a.img"
  for spec in "/dev/runq/a/fast:cache \"fast\" must be" "/dev/runq/a.b/none:id \"a.b\" must be" \
    "/dev/runq/a/none/ntfs/x:filesystem \"ntfs\" must be"; do
    c=$(cname baddisk)
    out=$("${RUNQ[@]}" --name "$c" -v "$d/a.img:${spec%%:*}" "$IMAGE" true 2>&1)
    rc=$?
    [ $rc -ne 0 ] || { why "${spec%%:*} was accepted"; drop_disks; return 1; }
    [[ "$out" == *"${spec#*:}"* ]] || { why "message for ${spec%%:*}: $out"; drop_disks; return 1; }
  done
  c=$(cname dupdisk)
  out=$("${RUNQ[@]}" --name "$c" -v "$d/a.img:/dev/runq/a/none" -v "$d/a.img:/dev/runq/a/unsafe/ext4/x" "$IMAGE" true 2>&1)
  drop_disks
  [[ "$out" == *'runq disk id "a" is used twice'* ]] || why "duplicate id: $out" || return
  expect_eq "QEMU/helper processes left" 0 "$(vm_processes)" || return
  local left; left=$(task_bundles | grep -c . || true)
  expect_eq "task bundles left" "$(docker ps -q | grep -c . || true)" "$left"
}

test_rootdisk_keeps_root_changes_across_runs() {
  local d out
  d=$(disk_dir)
  truncate -s 128M "$d/root.img" && mkfs.ext4 -q -F "$d/root.img" || { why "mkfs.ext4 failed"; drop_disks; return 1; }
  mkdir -p "$d/vol" && echo vol-data >"$d/vol/v"
  out=$("${RUNQ[@]}" --rm -e RUNQ_ROOTDISK=root -e RUNQ_ROOTDISK_EXCLUDE=/home \
    -v "$d/root.img:/dev/runq/root/none/ext4" -v "$d/vol:/vol" "$IMAGE" \
    sh -c 'echo first-run > /persist; [ -e /home ] && echo home || echo no-home; cat /vol/v; stat -f -c %T /' 2>&1)
  expect_eq "first run: /home excluded, volume, ext4 root" "$(printf 'no-home\nvol-data\next2/ext3')" "$out" || { drop_disks; return 1; }
  out=$("${RUNQ[@]}" --rm -e RUNQ_ROOTDISK=root -v "$d/root.img:/dev/runq/root/none/ext4" "$IMAGE" cat /persist 2>&1)
  drop_disks
  expect_eq "second run reads what the first wrote to /" first-run "$out"
}

test_ninep_root_transport() {
  local d out
  d=$(mktemp -d) && echo over-9p >"$d/f"
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=runq -e RUNQ_SHARE=9p -v "$d:/vol" "$IMAGE" \
    sh -c 'awk "\$2 == \"/\" {print \$3; exit}" /proc/mounts; cat /vol/f; echo back > /vol/g; ls /bin/busybox' 2>&1)
  expect_eq "9p root, volume read, busybox" "$(printf '9p\nover-9p\n/bin/busybox')" "$out" || { rm -rf "$d"; return 1; }
  expect_eq "guest write through 9p seen on the host" back "$(cat "$d/g" 2>/dev/null)"
  rm -rf "$d"
}

test_kernel_choice_and_9p_refused_where_the_kernel_lacks_it() {
  local out
  [ -d /var/lib/runq/qemu/kernels/runq ] || skip "the minimal kernel is not installed (make install KERNEL=debian)" || return
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=debian "$IMAGE" uname -r 2>&1)
  expect_eq "uname -r with RUNQ_KERNEL=debian" "$(cat /var/lib/runq/qemu/kernels/debian/version)" "$out" || return
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=runq "$IMAGE" uname -r 2>&1)
  expect_eq "uname -r with RUNQ_KERNEL=runq" "$(cat /var/lib/runq/qemu/kernels/runq/version)" "$out" || return
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=debian -e RUNQ_SHARE=9p "$IMAGE" true 2>&1)
  [[ "$out" == *'guest kernel "debian"'*'has no 9p'* ]] || why "9p on the cloud kernel: $out" || return
  out=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=nosuch "$IMAGE" true 2>&1)
  [[ "$out" == *'guest kernel "nosuch" is not installed'*'installed: '* ]] || why "unknown kernel: $out"
}
