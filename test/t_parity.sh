# Differential parity with runc (issue 17): test/lib/parity-probe.sh runs
# under --runtime runc and --runtime runq with the same flags; the outputs
# are compared line by line. What differs by design is normalised by the
# rules below, each with its reason (README, "Differences from runc");
# everything else that differs is printed and fails the test.

PARITY_PROBE=test/lib/parity-probe.sh

# The flag sets, one per line: a name, then docker run flags.
parity_flag_sets() {
  cat <<EOF2
default
user --user nobody
user-group --user 1000:1000 --group-add 27
read-only --read-only
privileged --privileged
cap-drop --cap-drop all
cap-add --cap-drop all --cap-add NET_ADMIN --cap-add SYS_TIME
no-new-privs --security-opt no-new-privileges
tmpfs --tmpfs /run:size=1m --tmpfs /scratch:rw,noexec,nosuid,size=2m
volumes -v $PARITY_VOL:/data -v $PARITY_VOL:/ro:ro
ulimit --ulimit nofile=1024:2048 --ulimit nproc=500:600 --ulimit core=0
sysctl --sysctl net.ipv4.ip_local_port_range=40000\ 50000 --sysctl net.ipv4.ip_unprivileged_port_start=80
env -e FOO=bar -e EMPTY= --workdir /tmp
tty -t
user-tty --user nobody -t
EOF2
}

# parity_normalise: the output of one runtime, with what differs by design
# made equal (each rule says why).
parity_normalise() {
  sed -E \
    `# The root and Docker's bind mounts (volumes, /etc/hosts...) reach the` \
    `# guest over virtiofs; under runc they are overlay and the host's fs.` \
    -e 's#^(/|/etc/hostname|/etc/hosts|/etc/resolv.conf|/data|/ro) (overlay|ext4|xfs|btrfs|virtiofs|9p) #\1 FS #' \
    `# A guest kernel with magic SysRq shows the read-only path as a mount;` \
    `# runc skips it on a host kernel without it (read-only either way).` \
    -e '/^\/proc\/sysrq-trigger /d' \
    `# cgroups: the guest is always cgroup v2, namespaced (its limits are` \
    `# the VM's); this host's runc gives v1 controllers (compared when the` \
    `# host is v2).` \
    $([ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || echo "-e /^\/sys\/fs\/cgroup/d") \
    -e 's/\r$//'
}

test_parity_with_runc_over_flag_sets() {
  local name flags raw=0 left=0 sets=0 compared=0 probes=0 a b d
  PARITY_VOL=$(mktemp -d)
  d=$(mktemp -d)
  while read -r name flags; do
    sets=$((sets + 1))
    # (word splitting of $flags is the point; "\ " keeps a space in a value)
    eval "set -- $flags"
    if ! docker run --rm --runtime runc --hostname parity "$@" "$IMAGE" sh -c "$(cat $PARITY_PROBE)" >"$d/runc" 2>&1; then
      # The reference itself cannot run here (a sandboxed host refuses
      # runc --privileged); nothing to compare, and said so.
      echo "  $name: not compared: runc fails on this host: $(grep -m1 -o 'runc create failed: .*' "$d/runc" || head -n1 "$d/runc")"
      continue
    fi
    "${RUNQ[@]}" --rm --hostname parity "$@" "$IMAGE" sh -c "$(cat $PARITY_PROBE)" >"$d/runq" 2>&1
    compared=$((compared + 1))
    probes=$(grep -c '^== ' "$d/runc")
    a=$(diff "$d/runc" "$d/runq" | grep -c '^[<>]')
    raw=$((raw + a))
    diff <(parity_normalise <"$d/runc") <(parity_normalise <"$d/runq") >"$d/diff"
    b=$(grep -c '^[<>]' "$d/diff")
    left=$((left + b))
    if [ "$b" -gt 0 ]; then
      echo "  $name ($flags): runc < > runq"
      sed 's/^/    /' "$d/diff"
    fi
  done < <(parity_flag_sets)
  rm -rf "$d" "$PARITY_VOL"
  echo "  parity: $probes probes x $compared of $sets flag sets; lines differing: $raw raw, $left after the documented rules"
  expect_eq "unexplained differences from runc" 0 "$left"
}
