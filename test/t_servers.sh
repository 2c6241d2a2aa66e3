# Real servers and a toolchain from Debian's packages (issue 17), each run
# under runc and under runq in the same test and driven by its real client:
# nginx (workers as www-data) under ApacheBench from the host through -p,
# redis-server (as user redis) under redis-benchmark from a runc container,
# gcc (as uid 1000) building a program on a volume. Results are compared;
# the figures are printed (and measured properly by `make bench`).

SERVERS_IMAGE=runq-test/debian-servers:latest

servers_image() {
  test/lib/servers-image.sh >/dev/null || why "building $SERVERS_IMAGE failed" || return
}

# uids_of NAME CONTAINER: the distinct uids of its processes called NAME.
uids_of() {
  docker exec "$2" sh -c 'for d in /proc/[0-9]*; do [ "$(cat $d/comm 2>/dev/null)" = "$0" ] && awk "/^Uid:/ {print \$2}" $d/status; done | sort -un | xargs' "$1"
}

# ratio A B: A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

test_servers_nginx_under_apachebench_through_a_published_port() {
  servers_image || return
  local rt c port out failed rps body
  declare -A r_rps r_body r_uids
  for rt in runc runq; do
    c=$(cname "nginx-$rt")
    docker run -d --runtime "$rt" --name "$c" -p 127.0.0.1::80 "$SERVERS_IMAGE" \
      sh -c 'echo "<p>served under $0</p>" >/var/www/html/index.html; echo ready; exec nginx -g "daemon off;"' "parity" >/dev/null ||
      why "nginx under $rt did not start" || return
    wait_log "$c" ready 120 || return
    port=$(docker port "$c" 80/tcp | head -n1 | cut -d: -f2)
    # The server answers once it listens: wait for that, 60 s at most.
    body=$(python3 - "$port" <<'PY'
import sys, time, urllib.request
end = time.time() + 60
while True:
    try:
        print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=5).read().decode(), end="")
        break
    except OSError as e:
        if time.time() > end:
            sys.exit(f"nginx on port {sys.argv[1]} did not answer within 60 s: {e}")
        time.sleep(0.2)
PY
) || why "nginx under $rt did not answer" || return
    out=$(ab -q -n 2000 -c 8 "http://127.0.0.1:$port/" 2>&1)
    failed=$(awk '/^Failed requests:/ {print $3}' <<<"$out")
    rps=$(awk '/^Requests per second:/ {print $4}' <<<"$out")
    [ "$failed" = 0 ] && [ -n "$rps" ] || why "ab against nginx under $rt: failed=[$failed] [$out]" || return
    r_rps[$rt]=$rps r_body[$rt]=$body r_uids[$rt]=$(uids_of nginx "$c")
  done
  echo "  nginx, ab -n 2000 -c 8: runc ${r_rps[runc]} req/s, runq ${r_rps[runq]} req/s (runq/runc $(ratio "${r_rps[runq]}" "${r_rps[runc]}"))"
  expect_eq "the page served" "${r_body[runc]}" "${r_body[runq]}" || return
  expect_eq "nginx's uids (master root, workers www-data)" "${r_uids[runc]}" "${r_uids[runq]}" || return
  expect_eq "nginx's uids under runc" "0 33" "${r_uids[runc]}"
}

test_servers_redis_under_redis_benchmark_from_a_runc_container() {
  servers_image || return
  local net rt c out set get
  declare -A r_set r_get r_val r_uids
  net=$(nname srv)
  docker network create "$net" >/dev/null || why "network create failed" || return
  for rt in runc runq; do
    c=$(cname "redis-$rt")
    docker run -d --runtime "$rt" --name "$c" --network "$net" "$SERVERS_IMAGE" \
      setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no --save '' --appendonly no >/dev/null ||
      why "redis under $rt did not start" || return
    wait_log "$c" "Ready to accept connections" 120 || return
    out=$(docker run --rm --runtime runc --network "$net" "$SERVERS_IMAGE" sh -c \
      "redis-cli -h $c set k parity >/dev/null && redis-cli -h $c get k && redis-benchmark -h $c -q -n 20000 -c 8 -t set,get --csv" 2>&1)
    r_val[$rt]=$(head -n1 <<<"$out")
    set=$(awk -F'"' '$2 == "SET" {print $4}' <<<"$out")
    get=$(awk -F'"' '$2 == "GET" {print $4}' <<<"$out")
    [ -n "$set" ] && [ -n "$get" ] || why "redis-benchmark against $rt: [$out]" || return
    r_set[$rt]=$set r_get[$rt]=$get r_uids[$rt]=$(uids_of redis-server "$c")
  done
  echo "  redis-benchmark -n 20000 -c 8: SET runc ${r_set[runc]}/s, runq ${r_set[runq]}/s ($(ratio "${r_set[runq]}" "${r_set[runc]}")); GET runc ${r_get[runc]}/s, runq ${r_get[runq]}/s ($(ratio "${r_get[runq]}" "${r_get[runc]}"))"
  expect_eq "GET after SET" "parity parity" "${r_val[runc]} ${r_val[runq]}" || return
  expect_eq "redis-server's uid" "${r_uids[runc]}" "${r_uids[runq]}" || return
  [ "${r_uids[runc]}" != 0 ] || why "redis-server runs as root under runc"
}

test_servers_gcc_builds_a_program_on_a_volume_as_a_user() {
  servers_image || return
  local d rt out
  declare -A r_out r_ms r_sum
  d=$(mktemp -d)
  for rt in runc runq; do
    mkdir -p "$d/$rt"
    cat >"$d/$rt/primes.c" <<'C'
#include <stdio.h>
int main(void) {
  unsigned long n = 0, sum = 0;
  for (unsigned long i = 2; n < 20000; i++) {
    int prime = 1;
    for (unsigned long j = 2; j * j <= i; j++) if (i % j == 0) { prime = 0; break; }
    if (prime) { n++; sum += i; }
  }
  printf("%lu primes, sum %lu\n", n, sum);
  return 0;
}
C
    printf 'primes: primes.c\n\tgcc -O2 -o $@ $<\n' >"$d/$rt/Makefile"
    chown -R 1000:1000 "$d/$rt"
    out=$(docker run --rm --runtime "$rt" --user 1000:1000 -v "$d/$rt:/src" -w /src "$SERVERS_IMAGE" \
      sh -c 's=$(date +%s%N); make -s primes || exit 1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); ./primes; stat -c "%u" primes' 2>"$d/err") ||
      why "the build under $rt failed: [$out $(cat "$d/err")]" || return
    r_ms[$rt]=$(sed -n 1p <<<"$out") r_out[$rt]=$(sed -n '2,$p' <<<"$out") r_sum[$rt]=$(sha256sum <"$d/$rt/primes" | cut -c1-16)
  done
  rm -rf "$d"
  echo "  gcc -O2 (make, as uid 1000, on a volume): runc ${r_ms[runc]} ms, runq ${r_ms[runq]} ms (runq/runc $(ratio "${r_ms[runq]}" "${r_ms[runc]}"))"
  expect_eq "the program's output and owner" "${r_out[runc]}" "${r_out[runq]}" || return
  expect_eq "the binaries (sha256)" "${r_sum[runc]}" "${r_sum[runq]}"
}

test_servers_iptables_in_the_vm_with_the_minimal_kernel() {
  servers_image || return
  [ -d /var/lib/runq/qemu/kernels/runq ] || skip "the minimal kernel is not installed (make install KERNEL=debian)" || return
  local rules='iptables -A INPUT -p tcp --dport 9 -m comment --comment runq -j DROP && iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE && iptables -S INPUT && iptables -t nat -S POSTROUTING'
  local want got
  # Netfilter modules load on demand (nf_tables, nft_compat, xt_*): as
  # under runc, where the host kernel loads them.
  want=$(docker run --rm --runtime runc --cap-add NET_ADMIN "$SERVERS_IMAGE" sh -c "$rules" 2>&1) ||
    { want=""; echo "  (runc here: $(tail -n1 <<<"$want"); runq checked alone)"; }
  got=$("${RUNQ_ENV[@]}" --rm -e RUNQ_KERNEL=runq --cap-add NET_ADMIN "$SERVERS_IMAGE" sh -c "$rules" 2>&1) ||
    why "iptables in the VM failed: [$got]" || return
  if [ -n "$want" ]; then
    expect_eq "iptables -S under runq and runc" "$want" "$got"
  else
    expect_eq "the rules listed back" "$(printf -- '-P INPUT ACCEPT\n-A INPUT -p tcp -m tcp --dport 9 -m comment --comment runq -j DROP\n-P POSTROUTING ACCEPT\n-A POSTROUTING -o eth0 -j MASQUERADE')" "$got"
  fi
}
