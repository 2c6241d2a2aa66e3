# What a workload sees of its process and container, printed in sections
# the same way under any runtime (test/t_parity.sh runs it under runc and
# runq with the same flags and compares). busybox sh and tools only.
echo "== id"; id
echo "== umask"; umask
echo "== ulimit"; ulimit -a
echo "== status"
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
echo "== env"; env | grep -v '^PWD=' | sort
echo "== home"; echo "$HOME"
echo "== dev"
ls -ln /dev | tail -n +2 | awk '{ if ($1 ~ /^[cb]/) print $1, $3, $4, $5, $6, $NF; else print $1, $3, $4, $NF }'
echo "== mounts"
# The mount that is on top at each place (the last one listed): its type
# and ro/rw with nosuid, nodev, noexec.
awk '{ n = split($4, o, ","); f = o[1]
       for (i = 2; i <= n; i++) if (o[i] ~ /^(nosuid|nodev|noexec)$/) f = f "," o[i]
       top[$2] = $3 " " f }
     END { for (d in top) print d, top[d] }' /proc/self/mounts | sort
echo "== hostname"; cat /etc/hostname
echo "== hosts"; ip=$(hostname -i 2>/dev/null | cut -d' ' -f1); sed "s/$ip/IP/g" /etc/hosts
echo "== resolv.conf"; cat /etc/resolv.conf
echo "== writable"
for d in /tmp /dev/shm /; do
  if touch "$d/.parity" 2>/dev/null; then echo "$d yes"; rm -f "$d/.parity"; else echo "$d no"; fi
done
for f in /dev/null /dev/zero /dev/full /dev/tty; do
  if (echo x >"$f") 2>/dev/null; then echo "$f yes"; else echo "$f no"; fi
done
echo "== sysctl"
for k in net/ipv4/ip_forward net/ipv4/ip_local_port_range net/ipv4/ip_unprivileged_port_start kernel/shmmax; do
  echo "$k $(cat /proc/sys/$k 2>&1)"
done
