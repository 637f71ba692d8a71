#!/usr/bin/env python3
"""Takes ports of the dynamic range for tests/ephemeral.rs, holding them
until its stdin closes.

usage: ephemeral_client.py --name COMM SPEC...
  listen:ADDR:PORT        TCP listener (ADDR in brackets for IPv6) with a backlog of 4096 that accepts
                          and closes each connection when its peer does (so
                          the peer that closes first gets TIME_WAIT)
  tcp:ADDR:PORT:N         N TCP connections to ADDR:PORT (connect() without
                          bind(): the kernel picks the local port); N "max"
                          connects until connect() fails
  udp:ADDR:N              N UDP sockets bound to ADDR port 0 (autobind);
                          "max" until bind() fails
  conn,KEY=VALUE,...      N connections the way a client picks its source:
                          proto=tcp|udp, dst=ADDR (IPv4 or IPv6), port=PORT,
                          n=N|max; flags: each (connection i goes to ADDR+i,
                          a destination of its own), bind=ADDR (bind((ADDR,
                          0)) before connect()), reuseaddr (SO_REUSEADDR),
                          noport (IP_BIND_ADDRESS_NO_PORT: bind() leaves the
                          port to connect())
The process renames itself (comm) to COMM with prctl(PR_SET_NAME), then
prints "ready" and, per SPEC, "COUNT:ERRNO-NAME" (ERRNO-NAME "ok" when no
call failed), on one line.
"""
import ctypes
import errno
import ipaddress
import socket
import selectors
import sys
import threading

args = sys.argv[1:]
if args[:1] == ["--name"]:
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(args[1].encode()), 0, 0, 0)
    args = args[2:]

held = []
out = []
sel = selectors.DefaultSelector()


def serve():
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if key.data == "listener":
                conn, _ = s.accept()
                sel.register(conn, selectors.EVENT_READ, "conn")
            else:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()

for spec in args:
    if spec.startswith("conn,"):
        opts = {}
        for item in spec.split(",")[1:]:
            k, _, v = item.partition("=")
            opts[k] = v
        dst = ipaddress.ip_address(opts["dst"])
        family = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
        stype = socket.SOCK_STREAM if opts["proto"] == "tcp" else socket.SOCK_DGRAM
        limit = 1 << 30 if opts["n"] == "max" else int(opts["n"])
        count, failed = 0, "ok"
        while count < limit:
            s = socket.socket(family, stype)
            try:
                if "reuseaddr" in opts:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if "noport" in opts:
                    s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
                if "bind" in opts:
                    s.bind((opts["bind"], 0))
                to = dst + count if "each" in opts else dst
                s.connect((str(to), int(opts["port"])))
            except OSError as e:
                s.close()
                failed = errno.errorcode.get(e.errno, str(e.errno))
                break
            held.append(s)
            count += 1
        out.append(f"{count}:{failed}")
        continue
    kind, rest = spec.split(":", 1)
    if kind == "listen":
        addr, port = rest.rsplit(":", 1)
        addr = addr.strip("[]")
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port)))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "listener")
        held.append(s)
        out.append("1:ok")
        continue
    if kind == "tcp":
        addr, port, n = rest.split(":")
    elif kind == "udp":
        addr, n = rest.split(":")
    else:
        sys.exit(f"unknown spec {spec}")
    limit = 1 << 30 if n == "max" else int(n)
    count, failed = 0, "ok"
    while count < limit:
        if kind == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.connect((addr, int(port)))
            except OSError as e:
                s.close()
                failed = errno.errorcode.get(e.errno, str(e.errno))
                break
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((addr, 0))
            except OSError as e:
                s.close()
                failed = errno.errorcode.get(e.errno, str(e.errno))
                break
        held.append(s)
        count += 1
    out.append(f"{count}:{failed}")
threading.Thread(target=serve, daemon=True).start()
print("ready " + " ".join(out), flush=True)
sys.stdin.read()
