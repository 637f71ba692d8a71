set -e
ip link set lo up
ulimit -n 20000
SPECS=""
for p in $(seq 7001 7013); do SPECS="$SPECS listen:127.0.0.2:$p"; done
mkfifo /tmp/eph_srv_in; python3 tests/ephemeral_client.py --name backend $SPECS < /tmp/eph_srv_in > /tmp/eph_srv_out & exec 7>/tmp/eph_srv_in
sleep 1
# server accepts: it would need 50k fds; so use a non-accepting variant: stop its selector by SIGSTOP after listen
kill -STOP $!
for i in 1 2 3 4 5; do
  S=""; for p in $(seq 7001 7013); do S="$S tcp:127.0.0.2:$p:769"; done
  mkfifo /tmp/eph_c$i; python3 tests/ephemeral_client.py --name pool$i $S < /tmp/eph_c$i > /tmp/eph_c$i.out & eval "exec $((10+i))>/tmp/eph_c$i"
done
sleep 8
cat /tmp/eph_c*.out | cut -c1-80
ss -Htan state established | wc -l
target/release/portrange_exporter --web.listen-address 127.0.0.1:10224 2>/tmp/eph_exp.log & EXP=$!
sleep 1
for i in 1 2 3; do curl -s -o /dev/null -w 'scrape %{time_total}\n' http://127.0.0.1:10224/metrics; done
for i in 1 2 3 4 5; do curl -s -o /dev/null -w 'scrape %{time_total}\n' http://127.0.0.1:10224/metrics; done
for i in 1 2 3 4 5; do /usr/bin/time -f 'ss %e s' ss -Htan 'sport >= :32768 and sport <= :60999' > /dev/null; done
grep VmHWM /proc/$EXP/status
curl -s http://127.0.0.1:10224/metrics | grep -E '^portrange_ephemeral_(ports_free_min|ports_in_use|holders)|collector_duration'
kill $EXP
