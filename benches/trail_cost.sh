#!/bin/sh
# The listener trail's watch cost: the exporter's CPU while idle (no
# scrape) with 102,000 sockets outside the watched range, spread over 6
# processes of 17,000 fds each (8,500 UDP + 8,500 TCP listeners on
# 127.0.0.N:30000-38499; one process may hold about 20,000 fds here), for each --collector.trail.interval given.
# As root; runs in a private network namespace (never the host's ports):
#   unshare -n sh benches/trail_cost.sh [SECONDS] [INTERVAL...]
# e.g. unshare -n sh benches/trail_cost.sh 60 off 1s 200ms
set -eu
secs=${1:-60}; shift || true
[ $# -gt 0 ] || set -- off 1s
exe=${EXPORTER:-$(dirname "$0")/../target/release/portrange_exporter}
ip link set lo up
pids=""
for n in 1 2 3 4 5 6; do
  python3 - "$n" <<'PY' &
import resource, socket, sys, time
n = sys.argv[1]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
keep = []
for p in range(30000, 38500):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((f"127.0.0.{n}", p)); keep.append(u)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind((f"127.0.0.{n}", p)); t.listen(1); keep.append(t)
open(f"/tmp/trail-cost-ready-{n}", "w").close()
time.sleep(100000)
PY
  pids="$pids $!"
done
for n in 1 2 3 4 5 6; do
  while [ ! -e /tmp/trail-cost-ready-$n ]; do
    sleep 0.2
    for p in $pids; do kill -0 "$p" 2>/dev/null || { echo "a socket holder died"; exit 1; }; done
  done
  rm -f /tmp/trail-cost-ready-$n
done
echo "sockets: $(ss -Htanu | wc -l) (ss -Htanu in this namespace)"
tck=$(getconf CLK_TCK)
for iv in "$@"; do
  "$exe" --web.listen-address 127.0.0.1:10299 --collector.trail.interval "$iv" 2>/dev/null &
  ep=$!
  sleep 3   # start-up and the first passes
  a=$(awk '{print $14+$15}' /proc/$ep/stat)
  sleep "$secs"
  b=$(awk '{print $14+$15}' /proc/$ep/stat)
  kill $ep; wait $ep 2>/dev/null || true
  awk -v a="$a" -v b="$b" -v t="$tck" -v s="$secs" -v iv="$iv" \
    'BEGIN { printf "interval %-6s CPU %.2f s in %d s idle = %.2f%% of one core\n", iv, (b-a)/t, s, 100*(b-a)/t/s }'
done
kill $pids
