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
