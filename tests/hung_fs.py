#!/usr/bin/python3
"""A file system that stops answering, for tests/hung_fs.rs.

usage: hung_fs.py MOUNTPOINT CONTROL PROGRAM

Serves a directory, owned by root with mode 0755, holding `prog` (the
bytes of PROGRAM, mode 0755) and the link `ctxlink` -> `prog`. While the
file CONTROL exists, every operation blocks, as on an NFS mount whose
server is gone; once it is removed they all answer again. Runs in the
foreground until unmounted.
"""
import errno
import os
import stat
import sys
import time

from fusepy import FUSE, FuseOSError, Operations


class Hung(Operations):
    def __init__(self, control, data):
        self.control = control
        self.data = data
        self.t = time.time()

    def _wait(self):
        while os.path.exists(self.control):
            time.sleep(0.05)

    def getattr(self, path, fh=None):
        self._wait()
        base = dict(st_uid=0, st_gid=0, st_atime=self.t, st_mtime=self.t, st_ctime=self.t)
        if path == "/":
            return dict(base, st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
        if path == "/prog":
            return dict(base, st_mode=stat.S_IFREG | 0o755, st_nlink=1, st_size=len(self.data))
        if path == "/ctxlink":
            return dict(base, st_mode=stat.S_IFLNK | 0o777, st_nlink=1, st_size=4)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        self._wait()
        return [".", "..", "prog", "ctxlink"]

    def readlink(self, path):
        self._wait()
        if path == "/ctxlink":
            return "prog"
        raise FuseOSError(errno.ENOENT)

    def open(self, path, flags):
        self._wait()
        return 0

    def read(self, path, size, offset, fh):
        self._wait()
        return self.data[offset:offset + size]


if __name__ == "__main__":
    mountpoint, control, program = sys.argv[1:4]
    with open(program, "rb") as f:
        data = f.read()
    FUSE(Hung(control, data), mountpoint, foreground=True, ro=True, allow_other=True,
         attr_timeout=1.0, entry_timeout=1.0)
