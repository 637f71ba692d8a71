#!/usr/bin/env bash
# The ephemeral collector's cost (issue 20), in a private network namespace
# so that nothing on the host is touched or counted:
#
#   cargo build --release && unshare -n bash benches/ephemeral_cost.sh
#
# 100,000 sockets in the default dynamic range 32768-60999: 50,000
# ESTABLISHED held by 50 processes (pool1..pool50, 1,000 each, spread over
# 13 destination ports of a backend that never accepts) and 50,000
# TIME_WAIT (connections a client closed first, toward 4 other ports).
# Scrapes come from ports outside the dynamic range (curl --local-port),
# as Prometheus's would from another host: a scraper on the same host in the
# dynamic range is a new socket of a new process at every scrape, which sends
# the attribution looking for it through every owner of its uid.
#
# Prints, medians of 7 runs each, taken within TIME_WAIT's 60 s:
#   ss        ss -Htan 'sport >= :32768 and sport <= :60999' (no -p)
#   with      a scrape of /metrics with the collector (the default)
#   without   a scrape of an exporter run with --no-collector.ephemeral
#   with, scraped from the dynamic range: curl without --local-port
# and the ratios the issue sets: with/ss (goal <= 1.0) and
# with/(without + ss) (goal <= 1.2), and the peak RSS (goal <= 32 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
exporter=target/release/portrange_exporter
[ -x "$exporter" ] || { echo "build first: cargo build --release" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'kill -CONT $(jobs -p) 2>/dev/null; kill $(jobs -p) 2>/dev/null; [ -n "${KEEP_LOG:-}" ] && cp "$tmp/with.log" "$KEEP_LOG"; rm -rf "$tmp"' EXIT
ip link set lo up
ulimit -n 20000
sysctl -q -w net.ipv4.tcp_max_tw_buckets=262144

ready() { # file: wait until the holder printed its line
  for _ in $(seq 1 600); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "a holder did not start: $1" >&2; exit 1
}

# The backend: 13 listeners that never accept (stopped after listen()).
specs=""
for p in $(seq 7001 7013); do specs="$specs listen:127.0.0.2:$p"; done
mkfifo "$tmp/backend.in"
python3 tests/ephemeral_client.py --name backend $specs <"$tmp/backend.in" >"$tmp/backend.out" &
backend=$!
exec 3>"$tmp/backend.in"
ready "$tmp/backend.out"
kill -STOP "$backend"

# 50 pools of 1,000 connections each (77 per destination port, a few 76).
for i in $(seq 1 50); do
  specs=""
  for p in $(seq 7001 7013); do specs="$specs tcp:127.0.0.2:$p:77"; done
  mkfifo "$tmp/pool$i.in"
  python3 tests/ephemeral_client.py --name "pool$i" $specs <"$tmp/pool$i.in" >"$tmp/pool$i.out" &
  eval "exec $((10 + i))>\"$tmp/pool$i.in\""
done
for i in $(seq 1 50); do ready "$tmp/pool$i.out"; done

# The TIME_WAIT side's server: accepts, closes when the client does.
specs=""
for p in $(seq 8001 8004); do specs="$specs listen:127.0.0.3:$p"; done
mkfifo "$tmp/tw.in"
python3 tests/ephemeral_client.py --name twserver $specs <"$tmp/tw.in" >"$tmp/tw.out" &
exec 4>"$tmp/tw.in"
ready "$tmp/tw.out"

"$exporter" --web.listen-address 127.0.0.1:10224 ${EXPORTER_LOG_LEVEL:+--log.level "$EXPORTER_LOG_LEVEL"} 2>"$tmp/with.log" &
with=$!
"$exporter" --web.listen-address 127.0.0.1:10225 --no-collector.ephemeral 2>"$tmp/without.log" &
without=$!
sleep 1
scrape() { curl --local-port 20000-20999 -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$1/metrics"; }
# Warm both caches on the held connections.
for _ in 1 2 3; do scrape 10224 >/dev/null; scrape 10225 >/dev/null; done

# 50,000 TIME_WAIT (two clients at once, each closing right after its
# connect), then measure at once: TIME_WAIT lasts 60 s.
clients=""
for half in 0 1; do
  python3 -c '
import socket, sys
half = int(sys.argv[1])
for i in range(25000):
    s = socket.create_connection(("127.0.0.3", 8001 + (2 * i + half) % 4))
    s.close()
' "$half" &
  clients="$clients $!"
done
wait $clients
sleep 1
echo "sockets in the dynamic range: $(ss -Htan 'sport >= :32768 and sport <= :60999' | wc -l)" \
  "(time-wait: $(ss -Htan state time-wait 'sport >= :32768 and sport <= :60999' | wc -l))"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ss_t=$(for _ in $(seq 7); do /usr/bin/time -f '%e' ss -Htan 'sport >= :32768 and sport <= :60999' 2>&1 >/dev/null; done | median)
with_t=$(for _ in $(seq 7); do scrape 10224; done | median)
without_t=$(for _ in $(seq 7); do scrape 10225; done | median)
# A scraper on the same host whose connection lands in the dynamic range: a
# new process and socket at every scrape, found without re-reading the pools.
local_t=$(for _ in $(seq 7); do curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1:10224/metrics; done | median)
rss=$(awk '/VmHWM/ {print $2}' "/proc/$with/status")
curl --local-port 20000-20999 -s http://127.0.0.1:10224/metrics \
  | grep -E '^portrange_(ephemeral_(ports|ports_free_min|ports_in_use|sockets)|scrape_collector_duration_seconds)\{' \
  | grep -v ' 0$'
echo "ss      $ss_t s"
echo "with    $with_t s"
echo "without $without_t s"
echo "with, scraped from the dynamic range $local_t s"
awk -v w="$with_t" -v s="$ss_t" -v o="$without_t" -v r="$rss" 'BEGIN {
  printf "with / ss              = %.2f (goal <= 1.0)\n", w / s
  printf "with / (without + ss)  = %.2f (goal <= 1.2)\n", w / (o + s)
  printf "peak RSS               = %.1f MiB (goal <= 32)\n", r / 1024
}'
kill "$with" "$without"
