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
