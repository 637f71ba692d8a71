#!/bin/bash
# What the listener trail shows of the command lines of issue 26, for one
# exporter binary: each line is held by a copy of the system's python named
# after the program that would read it (python3, mysql, redis-cli, sshpass,
# curl, nc), which writes that command line over its own, binds a UDP port
# of the default range and waits. Prints, per port, the cmdline that
# /api/v1/events serves and the one the log has. Root only; runs in a
# private network namespace of its own.
#
#   docs/command_lines_measure.sh BINARY [EXPORTER FLAGS...]
#
# e.g. docs/command_lines_measure.sh target/release/portrange_exporter \
#          --web.serve-command-lines-without-auth
set -eu
if [ "${IN_NETNS:-}" != 1 ]; then
  exec env IN_NETNS=1 unshare -n bash "$0" "$@"
fi
bin=$(realpath "$1"); shift
here=$(cd "$(dirname "$0")" && pwd)
ip link set lo up
dir=$(mktemp -d)
trap 'kill $(cat "$dir"/pids 2>/dev/null) 2>/dev/null; rm -rf "$dir"' EXIT
python=$(realpath /usr/bin/python3)
cp "$here/../tests/cmdline_holder.py" "$dir/h"
# The holders read this fifo until the script exits (fd 9 is its only writer).
mkfifo "$dir/hold"
exec 9<>"$dir/hold"
# hold PROGRAM PORT ARG...: a python copy named PROGRAM whose command line is ARG...
hold() {
  prog=$1 port=$2; shift 2
  [ -x "$dir/$prog" ] || cp "$python" "$dir/$prog"
  want=$(printf '%s\n' "$@" | head -c -1 | tr '\n' '\0' | xxd -p | tr -d '\n')
  len=$(( ${#want} / 2 + 1 ))
  fill=$(( len - (2 + 2 + ${#port} + 1 + 1) ))
  filler=$(head -c "$fill" /dev/zero | tr '\0' x)
  (cd "$dir" && CMDLINE_HEX=$want exec -a m "./$prog" h "$port" "$filler" <"$dir/hold" >"$dir/out.$port") &
  echo $! >>"$dir/pids"
  until grep -q ready "$dir/out.$port" 2>/dev/null; do sleep 0.05; done
}
hold python3 3230 python3 bind.py 3230 -p hunter2 --password=abc1 -a redispw2 https://user:pw3@db.example -H 'Authorization: Bearer tok4' --token tok5 PGPASSWORD=pg6 --db-password pass7 -ppass8
hold mysql 3231 mysql -uroot -ppass8 -h db.example
hold redis-cli 3232 redis-cli -h db.example -a redispw2 -p 6379
hold sshpass 3233 sshpass -p hunter2 ssh -p 2222 db.example
hold curl 3234 curl -u alice:cpw5 -H 'Authorization: Bearer tok4' https://user:pw3@db.example/
hold sshfs 3235 sshfs -o user=u,password=opw7,allow_other h:/d /mnt
hold nc 3236 nc -l -u -p 3255
"$bin" --web.listen-address 127.0.0.1:10224 --log.format json "$@" 2>"$dir/log" &
echo $! >>"$dir/pids"
sleep 3
curl -s http://127.0.0.1:10224/api/v1/events >"$dir/events.json"
python3 - "$dir/events.json" "$dir/log" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
print('cmdline_withheld:', json.dumps(doc.get('cmdline_withheld', '(no such field)')))
for e in doc['events']:
    if e['kind'] == 'appeared':
        print('served %d %s' % (e['port'], json.dumps(e['cmdline'])))
for line in open(sys.argv[2]):
    try:
        l = json.loads(line)
    except ValueError:
        continue
    if l.get('msg') == 'listener appeared':
        print('logged %s %s' % (l['port'], json.dumps(l.get('cmdline'))))
EOF
