"""Holds UDP 127.0.0.1:PORT under a command line of the caller's choosing.

usage: CMDLINE_HEX=HEX PYTHON h PORT FILLER   (with argv[0] "m")

Writes the NUL-separated arguments in CMDLINE_HEX over its own command line
(the kernel's argument area of this process, through /proc/self/mem; its
length must equal that area's, which the caller sizes with FILLER), binds
UDP 127.0.0.1:PORT, prints "ready" and holds the socket until its stdin
closes. Its executable stays the python it was started as: a copy named
after a program (mysql, sshpass) makes a process whose executable and
command line are that program's, as the trail sees a real one.
"""
import os
import socket
import sys

want = bytes.fromhex(os.environ['CMDLINE_HEX']) + b'\0'
stat = open('/proc/self/stat', 'rb').read()
fields = stat[stat.rindex(b')') + 2:].split()
# Fields 48 and 49 of stat(5): arg_start and arg_end.
start, end = int(fields[45]), int(fields[46])
if len(want) != end - start:
    sys.exit('the command line area is %d bytes, not %d' % (end - start, len(want)))
with open('/proc/self/mem', 'r+b', buffering=0) as mem:
    mem.seek(start)
    mem.write(want)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', int(sys.argv[1])))
print('ready', flush=True)
sys.stdin.read()
