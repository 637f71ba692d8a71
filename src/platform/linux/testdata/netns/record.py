"""Records the /proc/net files the procnet.rs tests decode.

Run as root: `unshare -n python3 record.py`. It brings loopback up, then,
as nobody (uid 65534), holds the sockets listed in README.md and copies
/proc/self/net/{tcp,tcp6,udp,udp6,sockstat,sockstat6} here.
"""
import os
import shutil
import socket
import subprocess
import time

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
os.setgid(65534)
os.setuid(65534)

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 3224))
listener.listen(8)
# A connection the client closes first: its end (127.0.0.1:3225) stays in TIME_WAIT.
closer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
closer.bind(("127.0.0.1", 3225))
closer.connect(("127.0.0.1", 3224))
accepted, _ = listener.accept()
closer.close()
time.sleep(0.1)
accepted.close()
# A connection that stays up (client on an ephemeral port).
client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect(("127.0.0.1", 3224))
server_end, _ = listener.accept()
v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
v6.bind(("::", 3300))
v6.listen(8)
udp = []
for addr, port in [("0.0.0.0", 3224), ("127.0.0.1", 3226), ("127.0.0.1", 4000)]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    udp.append(s)
udp[1].connect(("127.0.0.1", 9))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.bind(("::1", 3324))
time.sleep(0.1)
here = os.path.dirname(os.path.abspath(__file__))
for name in ["tcp", "tcp6", "udp", "udp6", "sockstat", "sockstat6"]:
    with open(f"/proc/self/net/{name}", "rb") as src:
        data = src.read()
    with open(os.path.join(here, name), "wb") as dst:
        dst.write(data)
