#!/usr/bin/env python3
"""Holds sockets for the integration tests until its stdin closes.

usage: holder.py --name COMM [--fork-child CHILDCOMM] SPEC...
  udp:ADDR:PORT           bound, unconnected UDP socket (a listener)
  udpc:ADDR:PORT:RPORT    UDP socket connected to 127.0.0.1:RPORT (not a listener)
  tcp:ADDR:PORT           TCP listener
  tcpc:ADDR:PORT          TCP connection to a listener on ADDR:PORT (the
                          accepted end is held too)
ADDR may be an IPv6 address in brackets. The process renames itself (comm)
to COMM with prctl(PR_SET_NAME), prints "ready" and waits for its stdin to
close. With --fork-child, it then forks a child that inherits every socket,
renames itself CHILDCOMM and sleeps until killed; the line printed is
"ready CHILDPID", and closing stdin ends only the parent.
"""
import ctypes
import socket
import sys

import os
import signal

args = sys.argv[1:]
name = None
child_name = None
if args[:1] == ["--name"]:
    name = os.fsencode(args[1])
    args = args[2:]
if args[:1] == ["--fork-child"]:
    child_name = os.fsencode(args[1])
    args = args[2:]
libc = ctypes.CDLL(None, use_errno=True)


def rename(comm):
    # PR_SET_NAME = 15; the kernel keeps the first 15 bytes.
    libc.prctl(15, ctypes.c_char_p(comm), 0, 0, 0)


if name is not None:
    rename(name)

held = []


def split(spec):
    kind, rest = spec.split(":", 1)
    if rest.startswith("["):
        addr, rest = rest[1:].split("]:", 1)
        fam = socket.AF_INET6
    else:
        addr, rest = rest.split(":", 1)
        fam = socket.AF_INET
    return kind, fam, addr, rest.split(":")


for spec in args:
    kind, fam, addr, nums = split(spec)
    port = int(nums[0])
    if kind == "udp":
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((addr, port))
    elif kind == "udpc":
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((addr, port))
        s.connect(("127.0.0.1" if fam == socket.AF_INET else "::1", int(nums[1])))
    elif kind == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(16)
    elif kind == "tcpc":
        s = socket.create_connection((addr, port))
        held.append(s)
        continue
    else:
        sys.exit(f"unknown spec {spec}")
    held.append(s)

if child_name is not None:
    pid = os.fork()
    if pid == 0:
        rename(child_name)
        os.close(0)
        while True:
            signal.pause()
    print(f"ready {pid}", flush=True)
else:
    print("ready", flush=True)
sys.stdin.read()
