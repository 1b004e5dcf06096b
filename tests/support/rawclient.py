"""A small resumable client on raw http.client and sockets, for the fault tests:
each request on its own connection, bodies sent exactly, partial bodies left open."""

from __future__ import annotations

import http.client
import socket
import time
from urllib.parse import urlsplit

from conftest import OCTET, TUS


def raw_request(port: int, method: str, path: str, body: bytes = b"", headers=None,
                timeout: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers={**TUS, **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def raw_create(port: int, length: int) -> str:
    response = raw_request(port, "POST", "/files/", headers={"Upload-Length": str(length)})
    assert response.status == 201, response.status
    return urlsplit(response.getheader("Location")).path


def raw_offset(port: int, path: str) -> int:
    response = raw_request(port, "HEAD", path)
    assert response.status == 200, response.status
    return int(response.getheader("Upload-Offset"))


def raw_resume(port: int, path: str, data: bytes, chunk: int, attempts: int = 200) -> int:
    """Upload ``data`` to ``path`` from the server's offset, surviving any error by
    asking for the offset again.  Returns how many requests failed on the way."""
    failures = 0
    for _ in range(attempts):
        try:
            offset = raw_offset(port, path)
            if offset == len(data):
                return failures
            response = raw_request(port, "PATCH", path, data[offset:offset + chunk],
                                   {"Upload-Offset": str(offset), "Content-Type": OCTET})
            if response.status != 204:
                failures += 1
        except (OSError, http.client.HTTPException, AssertionError):
            failures += 1
            time.sleep(0.05)
    raise AssertionError(f"upload {path} did not finish after {attempts} attempts")


def send_partial_patch(port: int, path: str, offset: int, data: bytes, sent: int) -> socket.socket:
    """Start a PATCH for ``data`` but send only ``sent`` body bytes; return the socket."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"PATCH {path} HTTP/1.1\r\nHost: test\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: {OCTET}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    sock.sendall(head + data[:sent])
    return sock


def read_status(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    sock.settimeout(timeout)
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(reply.split(b" ", 2)[1]), head + b"\r\n\r\n" + body
