"""Floods of slow connections, and a probe and an honest upload beside them.

    python tests/support/flood.py PORT KIND N SECONDS

opens N connections to 127.0.0.1:PORT (about a thousand a second) and holds each
in the way KIND says, for at most SECONDS, then prints one JSON line: for every
connection whether it connected, how long after connecting the server closed it
(``null`` if it never did) and the status it answered with, if any.

- ``head``: a request head that never ends: a byte every 10 s (slowloris);
- ``silent``: connects and sends nothing;
- ``body``: a creation request (``POST`` with ``Upload-Length`` and a body of
  1 MB) whose body comes a byte every 20 s.

:class:`Probe` (a thread) meanwhile makes a POST, a HEAD and a 1 KiB PATCH every
250 ms, each on a new connection, and :class:`HonestUpload` (a thread) sends 800
bytes every 100 ms (8 KiB/s, a phone) in one PATCH; the tests and
``bench/floods.py`` compare what they got with and without the flood.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import resource
import socket
import sys
import threading
import time
from typing import Optional

KINDS = ("head", "silent", "body")
DRIP = {"head": 10.0, "body": 20.0}
CONNECTS_PER_SECOND = 1000
BODY_LENGTH = 1_000_000
TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"


def _opening(kind: str) -> bytes:
    if kind == "head":
        return b"POST /files/ HTTP/1.1\r\nHost: flood\r\nX-Slow: "
    if kind == "body":
        return (f"POST /files/ HTTP/1.1\r\nHost: flood\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Length: {BODY_LENGTH}\r\nContent-Type: {OCTET}\r\n"
                f"Content-Length: {BODY_LENGTH}\r\n\r\nx").encode()
    return b""


async def _hold(port: int, kind: str, until: float, gate: asyncio.Semaphore) -> dict:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    result: dict = {"connected": False, "closed_after": None, "status": None}
    try:
        async with gate:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 30)
        result["connected"] = True
        started = loop.time()
        if kind != "silent":
            await loop.sock_sendall(sock, _opening(kind))
        drip = asyncio.ensure_future(_drip(sock, DRIP[kind])) if kind in DRIP else None
        try:
            answer = await asyncio.wait_for(_until_closed(sock), max(until - loop.time(), 0.1))
            result["closed_after"] = round(loop.time() - started, 2)
            if answer[:9].startswith(b"HTTP/1."):
                result["status"] = int(answer.split(b" ", 2)[1])
        except asyncio.TimeoutError:
            pass
        finally:
            if drip is not None:
                drip.cancel()
    except OSError:
        pass
    finally:
        sock.close()
    return result


async def _drip(sock: socket.socket, every: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        try:
            await loop.sock_sendall(sock, b"a")
        except OSError:
            return


async def _until_closed(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    received = b""
    while True:
        try:
            data = await loop.sock_recv(sock, 4096)
        except OSError:
            return received
        if not data:
            return received
        received += data


async def flood(port: int, kind: str, count: int, seconds: float) -> list[dict]:
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    gate = asyncio.Semaphore(200)
    tasks = []
    for number in range(count):
        tasks.append(asyncio.ensure_future(_hold(port, kind, until, gate)))
        if number % 100 == 99:
            await asyncio.sleep(100 / CONNECTS_PER_SECOND)
    return list(await asyncio.gather(*tasks))


def main() -> None:
    port, kind, count, seconds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("started", flush=True)
    print(json.dumps(asyncio.run(flood(port, kind, count, seconds))), flush=True)


# -- beside the flood ---------------------------------------------------------------------

def _request(port: int, method: str, path: str, body: bytes = b"", headers: Optional[dict] = None,
             timeout: float = 10) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers={**TUS, **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


class Probe(threading.Thread):
    """A new client every 250 ms: POST, HEAD, PATCH, each on a new connection."""

    def __init__(self, port: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.port, self.every = port, every
        self.results: list[tuple[str, bool, float]] = []  # (method, answered as expected, seconds)
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.every):
            self.once()

    def once(self) -> None:
        path = "/files/none"
        for kind, expected in (("POST", 201), ("HEAD", 200), ("PATCH", 204)):
            started = time.monotonic()
            try:
                if kind == "POST":
                    response = _request(self.port, "POST", "/files/", headers={"Upload-Length": "1024"})
                    path = "/files/" + (response.getheader("Location") or "/").rsplit("/", 1)[1]
                elif kind == "HEAD":
                    response = _request(self.port, "HEAD", path)
                else:
                    response = _request(self.port, "PATCH", path, b"p" * 1024,
                                        {"Upload-Offset": "0", "Content-Type": OCTET})
                ok = response.status == expected
            except (OSError, http.client.HTTPException):
                ok = False
            self.results.append((kind, ok, time.monotonic() - started))
            if not ok:
                return

    def stop(self) -> list[tuple[str, bool, float]]:
        self._stopped.set()
        self.join(30)
        return self.results


class HonestUpload(threading.Thread):
    """A phone: one PATCH sending 800 bytes every 100 ms (8 KiB/s)."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.length = int(8000 * seconds) + 8000
        response = _request(port, "POST", "/files/", headers={"Upload-Length": str(self.length)})
        #: The upload's ID, or ``None`` when the server refused to create it.
        self.upload = (response.getheader("Location") or "/").rsplit("/", 1)[1] \
            if response.status == 201 else None
        self.created = response.status
        self.sent = 0

    def run(self) -> None:
        if self.upload is None:
            return
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        head = (f"PATCH /files/{self.upload} HTTP/1.1\r\nHost: phone\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Offset: 0\r\nContent-Type: {OCTET}\r\nContent-Length: {self.length}\r\n\r\n")
        try:
            sock.sendall(head.encode())
            started = time.monotonic()
            for tick in range(int(self.seconds * 10)):
                sock.sendall(b"h" * 800)
                self.sent += 800
                time.sleep(max(started + (tick + 1) / 10 - time.monotonic(), 0))
        except OSError:
            pass
        finally:
            sock.close()


if __name__ == "__main__":
    main()
