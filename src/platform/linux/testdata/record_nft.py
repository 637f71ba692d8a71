#!/usr/bin/env python3
"""Records the nf_tables replies the decoders in ../nft_codec.rs are tested on.

Run as root in a private network namespace (never the host's ruleset):
    cd src/platform/linux/testdata && unshare -n python3 record_nft.py
The table is made by `nft` (not by the exporter's encoder), the packets are
real, and the requests are written here by hand, so the fixtures hold
only what the kernel sent. Writes nft_counters.bin (a GETOBJ dump of the
named counters), nft_elements.bin (a GETSETELEM dump of a dynamic set with
a counter per element), nft_owned_table.bin (a GETTABLE reply for a table
owned by a live `nft -i`) and nft_enoent.bin (the error for a missing set).
"""
import socket
import struct
import subprocess
import time

RULESET = """
table inet portrange_exporter_fixture {
  counter udp.fh.all { }
  counter udp.fh.closed { }
  set udp.fh.ports { type inet_service; flags dynamic,timeout; timeout 60s; size 4096; counter; }
  chain prerouting {
    type filter hook prerouting priority -350; policy accept;
    udp dport 3224-3324 counter name udp.fh.all
    udp dport 3300-3324 counter name udp.fh.closed
    udp dport 3300-3324 add @udp.fh.ports { udp dport }
  }
}
"""

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NFT = 10 << 8
GETTABLE, GETSETELEM, GETOBJ = 1, 13, 19
NFPROTO_INET = 1


def attr(kind, value):
    a = struct.pack("=HH", 4 + len(value), kind) + value
    return a + b"\0" * (-len(a) % 4)


def string(kind, s):
    return attr(kind, s.encode() + b"\0")


def request(kind, flags, seq, attrs):
    body = struct.pack("=BBH", NFPROTO_INET, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), NFT | kind, NLM_F_REQUEST | flags, seq, 0) + body


def exchange(msg, seq):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.send(msg)
    out = b""
    while True:
        d = s.recv(1 << 20)
        out += d
        done = False
        off = 0
        while off + 16 <= len(d):
            length, kind, _, mseq, _ = struct.unpack_from("=IHHII", d, off)
            if mseq == seq and kind in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
                done = True
            off += (length + 3) & ~3
        if done:
            return out


def main():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["nft", "-f", "-"], input=RULESET.encode(), check=True)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for port, n in ((3224, 5), (3300, 3), (3301, 2)):
        for _ in range(n):
            u.sendto(b"0123456789", ("127.0.0.1", port))
    table = "portrange_exporter_fixture"
    counters = exchange(
        request(GETOBJ, NLM_F_DUMP, 1, string(1, table) + attr(3, struct.pack(">I", 1))), 1
    )
    elements = exchange(
        request(GETSETELEM, NLM_F_DUMP, 2, string(1, table) + string(2, "udp.fh.ports")), 2
    )
    enoent = exchange(
        request(GETSETELEM, NLM_F_DUMP, 3, string(1, table) + string(2, "no.such.set")), 3
    )
    nft = subprocess.Popen(["nft", "-i"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    nft.stdin.write(b"add table inet owned { flags owner; }\n")
    nft.stdin.flush()
    time.sleep(0.5)
    owned = exchange(request(GETTABLE, NLM_F_ACK, 4, string(1, "owned")), 4)
    nft.stdin.close()
    nft.wait()
    for name, data in (
        ("nft_counters.bin", counters),
        ("nft_elements.bin", elements),
        ("nft_enoent.bin", enoent),
        ("nft_owned_table.bin", owned),
    ):
        with open(name, "wb") as f:
            f.write(data)
        print(name, len(data), "bytes")


main()
