#!/usr/bin/env python3
"""Socket-to-file copy strategies, outside any server: what the hot path could cost.

    python bench/copypaths.py [--mib 2048] [--dir /dev/shm]

A sender process pushes N MiB over loopback TCP; the receiver copies them to a
file with each strategy and prints MiB/s and its own user/sys CPU seconds:

- ``recv+write``       ``sock.recv(1 MiB)`` then ``os.write`` (what tuswsgi's
                       RequestBody._read_some + FileStore._copy do today: a fresh
                       bytes object, i.e. a malloc/free of up to 1 MiB, per block);
- ``recv_into+write``  one preallocated bytearray reused with ``recv_into``;
- ``splice``           ``os.splice`` socket -> pipe -> file, no copy through Python.
"""

import argparse
import os
import resource
import socket
import sys
import time

BLOCK = 1 << 20


def sender(port: int, total: int) -> None:
    payload = memoryview(os.urandom(4 << 20))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        left = total
        while left:
            n = min(left, len(payload))
            sock.sendall(payload[:n])
            left -= n


def receive(strategy: str, conn: socket.socket, fd: int, total: int) -> None:
    left = total
    if strategy == "recv+write":
        while left:
            data = conn.recv(min(BLOCK, left))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            left -= len(data)
    elif strategy == "recv_into+write":
        buf = bytearray(BLOCK)
        mv = memoryview(buf)
        while left:
            n = conn.recv_into(mv, min(BLOCK, left))
            view = mv[:n]
            while view:
                view = view[os.write(fd, view):]
            left -= n
    else:
        r, w = os.pipe()
        try:
            import fcntl
            fcntl.fcntl(w, 1031, BLOCK)  # F_SETPIPE_SZ
        except OSError:
            pass
        sfd = conn.fileno()
        while left:
            n = os.splice(sfd, w, min(BLOCK, left))
            left -= n
            while n:
                n -= os.splice(r, fd, n)
        os.close(r)
        os.close(w)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=2048)
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--repeat", type=int, default=3, help="alternate the strategies this often")
    args = parser.parse_args()
    total = args.mib << 20
    for strategy in ("recv+write", "recv_into+write", "splice") * args.repeat:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        pid = os.fork()
        if pid == 0:
            listener.close()
            sender(port, total)
            os._exit(0)
        conn, _ = listener.accept()
        path = os.path.join(args.dir, f"copypaths-{os.getpid()}")
        append = 0 if strategy == "splice" else os.O_APPEND  # splice(2) refuses O_APPEND files
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | append, 0o644)
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        receive(strategy, conn, fd, total)
        elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
        os.close(fd)
        os.unlink(path)
        conn.close()
        listener.close()
        os.waitpid(pid, 0)
        print(f"{strategy:16s} {args.mib / elapsed:7.0f} MiB/s  receiver user {after.ru_utime - before.ru_utime:.2f}s"
              f" sys {after.ru_stime - before.ru_stime:.2f}s  minor faults {after.ru_minflt - before.ru_minflt}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
