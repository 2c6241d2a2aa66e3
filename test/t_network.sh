# Issue 4: the VM takes the container's place on Docker's networks. Only
# networks, containers and veth pairs these tests create are addressed.

HTTPD='mkdir -p /www && echo "vm-says-$(hostname)" > /www/index.html && echo ready && exec httpd -f -p 80 -h /www'

# A GET of http://$0/ with busybox nc (busybox-static's wget crashes in
# its libc resolver, under runc as well); the body's last line. The
# server says "ready" just before httpd listens: retry until it answers.
HTTP_GET='for i in $(seq 100); do
  r=$(printf "GET / HTTP/1.0\r\n\r\n" | nc -w 10 "$0" 80 | tail -n 1); [ -n "$r" ] && break; sleep 0.1
done; echo "$r"'

test_runq_and_runc_reach_a_runq_server_by_name() {
  local net web out; net=$(nname userdef); web=$(cname web)
  docker network create "$net" >/dev/null || why "network create failed" || return
  "${RUNQ[@]}" -d --name "$web" --hostname websrv --network "$net" "$IMAGE" sh -c "$HTTPD" >/dev/null || why "start failed" || return
  wait_log "$web" ready || return
  out=$("${RUNQ[@]}" --rm --network "$net" "$IMAGE" sh -c "$HTTP_GET" "$web")
  expect_eq "runq -> runq by name" vm-says-websrv "$out" || return
  out=$("${RUNC[@]}" --rm --network "$net" "$IMAGE" sh -c "$HTTP_GET" "$web")
  expect_eq "runc -> runq by name" vm-says-websrv "$out"
}

test_embedded_dns_alias_udp_and_tcp() {
  local net web out; net=$(nname dns); web=$(cname dnsweb)
  docker network create "$net" >/dev/null || why "network create failed" || return
  "${RUNQ[@]}" -d --name "$web" --network "$net" --network-alias svc-alias "$IMAGE" sh -c "$HTTPD" >/dev/null ||
    why "start failed" || return
  wait_log "$web" ready || return
  local ip; ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$web")
  out=$("${RUNQ[@]}" --rm --network "$net" "$IMAGE" sh -c 'nslookup svc-alias 2>/dev/null | grep -A1 "^Name:" | tail -n 1')
  expect_eq "alias over UDP" "Address: $ip" "$out" || return
  # The same question over TCP: a 2-byte length, then a DNS query for
  # svc-alias (type A); the answer ends with the 4 address bytes.
  out=$("${RUNQ[@]}" --rm --network "$net" "$IMAGE" sh -c \
    'printf "\000\033\022\064\001\000\000\001\000\000\000\000\000\000\011svc-alias\000\000\001\000\001" |
       nc -w 5 127.0.0.11 53 | od -An -tu1 | xargs | awk "{print \$(NF-3)\".\"\$(NF-2)\".\"\$(NF-1)\".\"\$NF}"')
  expect_eq "alias over TCP" "$ip" "$out"
}

test_published_port_on_localhost() {
  local web out; web=$(cname pub)
  "${RUNQ[@]}" -d --name "$web" --hostname pubsrv -p 127.0.0.1::80 "$IMAGE" sh -c "$HTTPD" >/dev/null || why "start failed" || return
  wait_log "$web" ready || return
  local port; port=$(docker port "$web" 80/tcp | head -n 1 | awk -F: '{print $NF}')
  # "ready" comes just before httpd listens, and docker-proxy accepts on
  # 127.0.0.1 before the VM does: wait for an answer, not a connection.
  out=$(timeout 30 bash -c "until body=\$(exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3) &&
                              [ -n \"\$body\" ]; do sleep 0.1; done; tail -n 1 <<<\"\$body\"")
  expect_eq "answer on 127.0.0.1:$port" vm-says-pubsrv "$out"
}

test_two_networks_connected_before_start() {
  local n1 n2 c out want n; n1=$(nname first); n2=$(nname second); c=$(cname twonets)
  docker network create "$n1" >/dev/null && docker network create "$n2" >/dev/null || why "network create failed" || return
  docker create --runtime runq --name "$c" --network "$n1" "$IMAGE" sh -c \
    'echo "addrs: $(ip -o -4 addr | awk "{print \$2, \$4}" | sort | xargs)"; exec sleep 600' >/dev/null || why "create failed" || return
  docker network connect "$n2" "$c" || why "network connect failed" || return
  docker start "$c" >/dev/null || why "start failed" || return
  wait_log "$c" addrs: || return
  out=$(docker logs "$c" | sed -n 's/^addrs: //p')
  want=""
  local i=0
  for n in "$n1" "$n2"; do
    want+="eth$i $(docker inspect -f "{{(index .NetworkSettings.Networks \"$n\").IPAddress}}/{{(index .NetworkSettings.Networks \"$n\").IPPrefixLen}}" "$c") "
    i=$((i + 1))
  done
  want+="lo 127.0.0.1/8"
  # names and addresses as the container has them (the guest's ifindex
  # order follows virtio-mmio probing, not the container's)
  expect_eq "guest interfaces and their addresses" "$want" "$out"
}

test_static_ip_mtu_and_network_none() {
  local net out; net=$(nname static)
  docker network create --subnet 10.98.7.0/24 -o com.docker.network.driver.mtu=1400 "$net" >/dev/null || why "network create failed" || return
  out=$("${RUNQ[@]}" --rm --network "$net" --ip 10.98.7.77 "$IMAGE" sh -c \
    'echo $(ip -o -4 addr show eth0 | awk "{print \$4}") $(cat /sys/class/net/eth0/mtu) $(ip route | grep default | awk "{print \$3}")')
  expect_eq "address, MTU, gateway with --ip" "10.98.7.77/24 1400 10.98.7.1" "$out" || return
  out=$("${RUNQ[@]}" --rm --network none "$IMAGE" sh -c 'ls /sys/class/net | xargs')
  expect_eq "interfaces with --network none" lo "$out"
}

test_macvlan_network_on_a_test_veth() {
  local net a out veth="rqtv$$"; net=$(nname macvlan); a=$(cname mva)
  test_veth "$veth" || why "cannot create a veth pair" || return
  docker network create -d macvlan --subnet 10.97.0.0/24 -o parent="$veth" "$net" >/dev/null || why "macvlan network create failed" || return
  "${RUNQ[@]}" -d --name "$a" --network "$net" --ip 10.97.0.10 "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null ||
    why "start failed" || return
  wait_log "$a" ready || return
  out=$("${RUNQ[@]}" --rm --network "$net" --ip 10.97.0.11 "$IMAGE" sh -c 'ping -c 2 -W 5 10.97.0.10 >/dev/null && echo reached')
  expect_eq "ping between two runq VMs on macvlan" reached "$out"
}

test_hosts_links_and_add_host() {
  local web out; web=$(cname linked)
  "${RUNQ[@]}" -d --name "$web" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null || why "start failed" || return
  wait_log "$web" ready || return
  out=$("${RUNQ[@]}" --rm --link "$web:peer" --add-host extra.test:10.1.2.3 --hostname hn1 "$IMAGE" sh -c \
    'grep -c -w peer /etc/hosts; grep extra.test /etc/hosts | awk "{print \$1}"; cat /etc/hostname' | xargs)
  expect_eq "--link entry, --add-host entry, /etc/hostname" "1 10.1.2.3 hn1" "$out"
}

test_runq_dns_options_write_the_documented_resolv_conf() {
  local out want
  out=$("${RUNQ[@]}" --rm -e RUNQ_DNS=1.2.3.4,5.5.5.5 -e RUNQ_DNS_OPTS=timeout:7 -e RUNQ_DNS_SEARCH=foo.com "$IMAGE" cat /etc/resolv.conf | od -c)
  want=$(printf '# Generated by RunQ\noptions timeout:7\nsearch foo.com\nnameserver 1.2.3.4\nnameserver 5.5.5.5\n' | od -c)
  expect_eq "resolv.conf bytes" "$want" "$out" || return
  out=$("${RUNQ[@]}" --rm --dns 9.9.9.9 -e RUNQ_DNS_PRESERVE=1 "$IMAGE" grep nameserver /etc/resolv.conf)
  expect_eq "RUNQ_DNS_PRESERVE keeps Docker's file" "nameserver 9.9.9.9" "$out"
}

test_host_and_container_networks_are_refused_clearly() {
  local err c; c=$(cname netsrc)
  err=$("${RUNQ[@]}" --rm --network host "$IMAGE" true 2>&1) && { why "--network host accepted"; return 1; }
  [[ "$err" == *"runq: --network host is not supported"* ]] || why "message was: $err" || return
  "${RUNQ[@]}" -d --name "$c" "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null && wait_log "$c" ready || return
  err=$("${RUNQ[@]}" --rm --network "container:$c" "$IMAGE" true 2>&1) && { why "--network container: accepted"; return 1; }
  [[ "$err" == *"runq: --network container:... is not supported"* ]] || why "message was: $err"
}

test_ipv6_address_route_and_reachability_both_ways() {
  local net vm peer out; net=$(nname v6); vm=$(cname v6vm); peer=$(cname v6peer)
  if [ "$(cat /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null || echo 1)" != 0 ]; then
    skip "IPv6 is disabled in this host's kernel"
    return
  fi
  docker network create --ipv6 --subnet 10.96.0.0/24 --subnet fd96:1::/64 "$net" >/dev/null ||
    why "IPv6 network create failed" || return
  "${RUNC[@]}" -d --name "$peer" --network "$net" --ip6 fd96:1::20 "$IMAGE" sleep 600 >/dev/null || why "peer start failed" || return
  "${RUNQ[@]}" -d --name "$vm" --network "$net" --ip6 fd96:1::10 "$IMAGE" sh -c 'echo ready; exec sleep 600' >/dev/null &&
    wait_log "$vm" ready || return
  # neighbour discovery towards a guest needs multicast through the
  # macvtap: a runq VM and a runc container both reach the VM
  out=$("${RUNQ[@]}" --rm --network "$net" --ip6 fd96:1::11 "$IMAGE" sh -c \
    'echo $(ip -6 -o addr show eth0 scope global | awk "{print \$4}") $(ip -6 route | awk "/^default/ {print \$3}");
     ping6 -c 2 -W 5 fd96:1::20 >/dev/null && echo out-ok; ping6 -c 2 -W 5 fd96:1::10 >/dev/null && echo vm-ok')
  expect_eq "IPv6 address, gateway, runq->runc, runq->runq" "fd96:1::11/64 fd96:1::1 out-ok vm-ok" "$(echo $out)" || return
  out=$(docker exec "$peer" sh -c 'ping6 -c 2 -W 5 fd96:1::10 >/dev/null && echo in-ok')
  expect_eq "runc -> runq over IPv6" in-ok "$out"
}
