"""The benchmark's tus client: raw sockets, HTTP/1.1 keep-alive, no library.

Every server is driven by exactly this code.  Bodies are sent from one
preallocated buffer (``sendall`` of memoryview slices), so the client costs a
few syscalls per MiB; concurrent workloads fork one process per client so the
GIL of the driver is never shared.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import socket
import time
import traceback
from typing import Callable, Optional
from urllib.parse import urlsplit

#: Body bytes: random (not compressible, not all zeros), sent over and over.
PAYLOAD = memoryview(os.urandom(4 << 20))
TUS = "1.0.0"


class HTTPError(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, timeout: float = 300.0) -> None:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body_len: int = 0) -> tuple[int, dict[str, str]]:
        """Send a request whose body is ``body_len`` bytes of PAYLOAD; return (status, headers)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Tus-Resumable: {TUS}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body_len or method in ("PATCH", "POST"):
            lines.append(f"Content-Length: {body_len}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body_len <= 256 << 10:  # small: one write for head and body
            self.sock.sendall(head + PAYLOAD[:body_len] if body_len else head)
        else:
            self.sock.sendall(head)
            left = body_len
            size = len(PAYLOAD)
            while left:
                n = min(left, size)
                self.sock.sendall(PAYLOAD[:n])
                left -= n
        return self._response(method)

    def _response(self, method: str) -> tuple[int, dict[str, str]]:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                raise HTTPError("connection closed before a response")
            self.buf += data
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            return self._response(method)
        if method != "HEAD" and status not in (204, 304):
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._skip_chunked()
            else:
                self._skip(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers

    def _fill(self, size: int) -> None:
        while len(self.buf) < size:
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                raise HTTPError("connection closed inside a response body")
            self.buf += data

    def _skip(self, length: int) -> None:
        self._fill(length)
        self.buf = self.buf[length:]

    def _skip_chunked(self) -> None:
        """Discard a chunked body (Node.js answers POST with one, empty)."""
        while True:
            while b"\r\n" not in self.buf:
                self._fill(len(self.buf) + 1)
            line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while True:  # optional trailers, then the blank line
                    self._fill(2)
                    if self.buf.startswith(b"\r\n"):
                        self.buf = self.buf[2:]
                        return
                    while b"\r\n" not in self.buf:
                        self._fill(len(self.buf) + 1)
                    self.buf = self.buf.split(b"\r\n", 1)[1]
            self._skip(size + 2)


def create(conn: Conn, length: int, metadata: str = "filename YmVuY2guYmlu") -> str:
    status, headers = conn.request("POST", "/files/", {"Upload-Length": str(length),
                                                       "Upload-Metadata": metadata})
    if status != 201:
        raise HTTPError(f"POST answered {status}")
    return urlsplit(headers["location"]).path


def patch(conn: Conn, path: str, offset: int, size: int) -> int:
    status, headers = conn.request("PATCH", path, {"Upload-Offset": str(offset),
                                                   "Content-Type": "application/offset+octet-stream"},
                                   body_len=size)
    if status != 204:
        raise HTTPError(f"PATCH answered {status}")
    new_offset = int(headers["upload-offset"])
    if new_offset != offset + size:
        raise HTTPError(f"PATCH offset {new_offset}, expected {offset + size}")
    return new_offset


def upload(addr: tuple[str, int], size: int, chunk: int, conn: Optional[Conn] = None) -> dict:
    """POST + PATCHes of ``chunk`` bytes; times the PATCH phase only."""
    own = conn is None
    conn = conn or Conn(*addr)
    try:
        path = create(conn, size)
        offset, requests = 0, 0
        started = time.perf_counter()
        while offset < size:
            offset = patch(conn, path, offset, min(chunk, size - offset))
            requests += 1
        elapsed = time.perf_counter() - started
        return {"path": path, "bytes": size, "requests": requests, "seconds": elapsed}
    finally:
        if own:
            conn.close()


# -- parallel clients ------------------------------------------------------

def _child(index: int, fn: Callable, args: tuple, queue) -> None:
    try:
        queue.put((index, fn(index, *args)))
    except BaseException as exc:  # report, never hang the parent
        queue.put((index, {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}))


def run_parallel(n: int, fn: Callable, *args) -> list:
    """Run ``fn(index, *args)`` in ``n`` forked processes; return their results in order."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(i, fn, args, queue), daemon=True) for i in range(n)]
    for proc in procs:
        proc.start()
    results: list = [None] * n
    for _ in range(n):
        index, result = queue.get(timeout=1800)
        results[index] = result
    for proc in procs:
        proc.join(timeout=10)
    return results


def _wait_until(start_at: float) -> None:
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)


def loop_requests(index: int, addr, start_at: float, duration: float, kind: str,
                  paths: list[str], patch_size: int = 0, clients: int = 1) -> dict:
    """One keep-alive client issuing ``kind`` requests back to back for ``duration`` s.

    kind: ``head`` (over ``paths`` in random order), ``post`` (creations),
    ``patch`` (``patch_size``-byte appends, each to the next of this client's
    share of ``paths``: clients never write to the same upload).
    """
    rng = random.Random(index)
    conn = Conn(*addr)
    offsets: dict[str, int] = {}
    done = errors = 0
    order = list(paths[index::clients]) if kind == "patch" else list(paths)
    rng.shuffle(order)
    _wait_until(start_at)
    deadline = start_at + duration
    i = 0
    while time.time() < deadline:
        try:
            if conn.closed:
                conn = Conn(*addr)
            if kind == "head":
                status, _ = conn.request("HEAD", order[i % len(order)])
                if status != 200:
                    raise HTTPError(f"HEAD answered {status}")
            elif kind == "post":
                create(conn, 1 << 20)
            else:
                path = order[i % len(order)]
                offsets[path] = patch(conn, path, offsets.get(path, 0), patch_size)
            done += 1
        except (OSError, HTTPError, KeyError, ValueError):
            errors += 1
            conn.close()
        i += 1
    elapsed = time.time() - start_at
    conn.close()
    return {"requests": done, "errors": errors, "seconds": elapsed}


def concurrent_uploads(index: int, addr, start_at: float, counter, total: int, size: int) -> dict:
    """Take upload numbers from ``counter`` until ``total`` are taken; one PATCH each."""
    conn = Conn(*addr)
    done = errors = 0
    _wait_until(start_at)
    while True:
        with counter.get_lock():
            if counter.value >= total:
                break
            counter.value += 1
        try:
            if conn.closed:
                conn = Conn(*addr)
            upload(addr, size, size, conn)
            done += 1
        except (OSError, HTTPError, KeyError, ValueError):
            errors += 1
            conn.close()
    conn.close()
    return {"uploads": done, "errors": errors, "finished": time.time()}
