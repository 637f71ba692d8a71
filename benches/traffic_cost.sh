#!/bin/sh
# The traffic collector's cost (docs/performance.md, "Traffic counters"). Run as root:
#   cargo build --release && unshare -n sh benches/traffic_cost.sh
# A private network namespace: the host's ruleset is never touched. Needs iperf3, curl, python3.
BIN=${BIN:-target/release/portrange_exporter}
ip link set lo up
ALL=$(mktemp --suffix=.yml)
run_iperf() {
  iperf3 -s -p 3224 -1 >/dev/null 2>&1 &
  S=$!
  sleep 0.3
  iperf3 -c 127.0.0.1 -p 3224 -u -b $1 -l 1400 -t 5 -J 2>/dev/null | python3 -c "
import json,sys; d=json.load(sys.stdin)['end']['sum']
print('  -b $1: %.0f Mbit/s received, %d/%d lost (%.2f%%)' % (d['bits_per_second']/1e6*(1-d['lost_percent']/100), d['lost_packets'], d['packets'], d['lost_percent']))"
  wait $S
}
for rate in 500M 1G 0; do
  echo "without the table:"; run_iperf $rate
  $BIN --collector.traffic --web.listen-address 127.0.0.1:10224 2>/dev/null &
  P=$!; sleep 0.5; curl -s 127.0.0.1:10224/metrics >/dev/null
  echo "with the table (framehawk 3224-3324, udp+tcp):"; run_iperf $rate
  curl -s 127.0.0.1:10224/metrics | grep 'received_packets_total{.*udp.*listening'
  kill $P; wait $P 2>/dev/null
done
cat > "$ALL" <<'Y'
ranges:
  - name: all
    ports: 1-65535
Y
$BIN --collector.traffic --config.file "$ALL" --web.listen-address 127.0.0.1:10224 2>/dev/null &
P=$!; sleep 0.5; curl -s 127.0.0.1:10224/metrics >/dev/null
python3 -c "
import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for p in range(1,65536):
    if p!=10224: s.sendto(b'x',('127.0.0.1',p))
"
for i in 1 2 3 4 5; do
  /usr/bin/time -f "  scrape %e s" curl -s -o /tmp/tr-m.txt 127.0.0.1:10224/metrics
  grep -E 'collector_duration_seconds' /tmp/tr-m.txt | tr '\n' ' '; echo
done
grep 'received_packets_total{.*udp' /tmp/tr-m.txt
curl -s 127.0.0.1:10224/api/v1/status | python3 -c "import json,sys; d=json.load(sys.stdin)['traffic']['ranges']; print([(r['protocol'], r['probed_ports']) for r in d])"
ps -o rss= -p $P | awk '{print "  exporter RSS " $1 " KiB"}'
kill $P; wait $P 2>/dev/null
rm -f "$ALL"


# Per-packet cost against the number of intervals (docs/performance.md,
# "Per-packet cost and the number of intervals"): benches/udp_flood.c sends
# 16-byte datagrams with sendmmsg and prints the CPU time per datagram; on
# loopback the receive path, the prerouting hook included, runs in the
# sender's context, so the difference to "no table" is what the table
# costs a packet. To a port outside every range (what most of a host's
# traffic is) and to the last interval, with no table, one interval and
# 600 single ports (20000, 20002, ... 21198). OLD_BIN=<a 0.3 binary> adds
# 0.3's one rule per interval (it cannot install 600 single ports, so 200).
echo; echo "per-packet CPU time by the number of intervals (ns per datagram, two runs each):"
FLOOD=$(mktemp); cc -O2 -o "$FLOOD" "$(dirname "$0")/udp_flood.c" || exit 1
N=${N:-300000}
ONE=$(mktemp --suffix=.yml); MANY=$(mktemp --suffix=.yml); OLD=$(mktemp --suffix=.yml)
printf 'ranges:\n  - name: one\n    ports: 21198\n    protocols: [udp]\n' > "$ONE"
python3 -c "print('ranges:\n  - name: sip\n    ports: [' + ', '.join(str(20000+2*i) for i in range(600)) + ']\n    protocols: [udp]')" > "$MANY"
python3 -c "print('ranges:\n  - name: sip\n    ports: [' + ', '.join(str(20798+2*i) for i in range(200)) + ']\n    protocols: [udp]')" > "$OLD"
measure() {
  echo "  $1: outside $($FLOOD 5201 $N)/$($FLOOD 5201 $N), last interval $($FLOOD 21198 $N)/$($FLOOD 21198 $N)"
}
with() { # binary, configuration, label
  $1 --collector.traffic --config.file "$2" --web.listen-address 127.0.0.1:10224 2>/dev/null &
  P=$!; sleep 0.6
  curl -s 127.0.0.1:10224/metrics | grep -q 'collector_success{collector="traffic"} 1' || echo "  (not installed)"
  measure "$3"; kill $P; wait $P 2>/dev/null
}
for round in 1 2; do
  measure "no table"
  with "$BIN" "$ONE" "1 interval"
  with "$BIN" "$MANY" "600 intervals"
  if [ -n "$OLD_BIN" ]; then
    with "$OLD_BIN" "$ONE" "1 interval, 0.3"
    with "$OLD_BIN" "$OLD" "200 intervals, 0.3"
  fi
done
rm -f "$FLOOD" "$ONE" "$MANY" "$OLD"
