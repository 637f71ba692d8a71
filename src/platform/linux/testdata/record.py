#!/usr/bin/env python3
"""Records a kernel sock_diag reply for the decoder's unit test.

Run as root: unshare -n python3 record.py udp4_reply.bin
It binds UDP 0.0.0.0:3224 and 127.0.0.1:3300 (connected to 127.0.0.1:9),
sends SOCK_DIAG_BY_FAMILY (AF_INET, IPPROTO_UDP, seq 1) with the bytecode
of `sport >= :3224 and sport <= :3324`, and writes the reply datagrams
back to back. The request is built here independently of the Rust code.
"""
import socket
import struct
import subprocess
import sys

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("0.0.0.0", 3224))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.bind(("127.0.0.1", 3300))
b.connect(("127.0.0.1", 9))
noise = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
noise.bind(("127.0.0.1", 4000))  # outside the filter: must not appear

bc = struct.pack("=BBH", 2, 8, 20) + struct.pack("=BBH", 0, 0, 3224)
bc += struct.pack("=BBH", 3, 8, 12) + struct.pack("=BBH", 0, 0, 3324)
req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_UDP, 0, 0, 0xFFFFFFFF) + b"\0" * 48
req += struct.pack("=HH", 4 + len(bc), 1) + bc
msg = struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req

nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG
nl.sendto(msg, (0, 0))
out = b""
while True:
    data = nl.recv(65536)
    out += data
    # stop once a datagram holds NLMSG_DONE (3) or NLMSG_ERROR (2)
    off, done = 0, False
    while off < len(data):
        ln, kind = struct.unpack_from("=IH", data, off)
        if kind in (2, 3):
            done = True
        off += (ln + 3) & ~3
    if done:
        break
open(sys.argv[1], "wb").write(out)
print(f"wrote {len(out)} bytes")
