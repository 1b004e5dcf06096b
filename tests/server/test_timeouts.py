"""Every socket state has a timeout, against real gunicorn with tuswsgi's worker,
plain and with TLS served by gunicorn itself (a self-signed certificate).

The server runs with short timeouts (1 s; the minimum body rate judged over 2 s)
so each test sees its state end: a head that never completes, a connection that
never sends a byte, an idle kept-alive connection, a silent body, a body that
drips below the minimum rate, a response the client does not read, and a
lingering close.  A head over the size limit is refused as soon as it crosses
the limit, and at ``max_connections`` the oldest waiting connection makes room.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest
import requests
from conftest import OCTET, TUS, start_gunicorn, wait_for_size
from support.nginx import make_certificate
from support.rawhttp import RawConnection, request_bytes

pytestmark = pytest.mark.e2e

SHORT = {"TUSWSGI_HEAD_TIMEOUT": "1s", "TUSWSGI_KEEPALIVE_TIMEOUT": "1s", "TUSWSGI_NETWORK_TIMEOUT": "1s",
         "TUSWSGI_LINGER_TIMEOUT": "1s", "TUSWSGI_MIN_BODY_RATE": "200", "TUSWSGI_MIN_BODY_RATE_WINDOW": "2s",
         "TUSWSGI_MAX_HEAD_SIZE": "8K"}


@dataclass
class Endpoint:
    port: int
    upload_dir: Path
    tls: Optional[ssl.SSLContext]

    def connect(self, timeout: float = 10) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return self.tls.wrap_socket(sock) if self.tls else sock

    def raw(self) -> RawConnection:
        return RawConnection(self.port, tls=self.tls)

    def create(self, length: int) -> str:
        with self.raw() as conn:
            answer = conn.request("POST", "/files/", {**TUS, "Upload-Length": str(length)})
        assert answer.status == 201, answer
        return answer.header("location").rsplit("/", 1)[1]

    def offset(self, upload: str) -> int:
        with self.raw() as conn:
            answer = conn.request("HEAD", f"/files/{upload}", TUS)
        assert answer.status == 200, answer
        return int(answer.header("upload-offset"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, Endpoint]]:
    tmp = tmp_path_factory.mktemp("timeouts")
    cert, key = make_certificate(tmp)
    plain = start_gunicorn(tmp, workers=1, threads=8, env=SHORT, name="plain")
    secure = start_gunicorn(tmp, workers=1, threads=8, env=SHORT, name="tls", upload_dir=plain.upload_dir,
                            args=("--certfile", str(cert), "--keyfile", str(key)))
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    try:
        yield {"plain": Endpoint(plain.port, plain.upload_dir, None),
               "tls": Endpoint(secure.port, secure.upload_dir, context)}
    finally:
        plain.stop()
        secure.stop()


@pytest.fixture(params=["plain", "tls"])
def server(request, servers) -> Endpoint:
    return servers[request.param]


def read_until_closed(sock: socket.socket, limit: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed."""
    sock.settimeout(limit)
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            return received, time.monotonic()
        received += data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- request heads -------------------------------------------------------------------

def test_a_head_that_trickles_is_answered_408_at_the_head_timeout(server):
    sock = server.connect()
    started = time.monotonic()
    for byte in b"PATCH /files/x HTTP/1.1\r\nHost: t\r\nX-Slow: ":
        sock.sendall(bytes([byte]))
        if time.monotonic() - started > 0.3:
            break
    dripping = threading.Event()

    def drip() -> None:  # a byte every 0.2 s, as a slowloris client does, until answered
        while not dripping.wait(0.2):
            try:
                sock.sendall(b"a")
            except OSError:
                return
    threading.Thread(target=drip, daemon=True).start()
    answer, closed = read_until_closed(sock)
    dripping.set()
    sock.close()
    assert status_of(answer) == 408 and b"ERR_REQUEST_HEAD_TIMEOUT" in answer
    assert 0.9 <= closed - started < 4


def test_a_connection_that_sends_nothing_is_closed_at_the_head_timeout(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # not even a TLS hello
    started = time.monotonic()
    answer, closed = read_until_closed(sock)
    sock.close()
    assert answer == b""
    assert 0.9 <= closed - started < 4


def test_an_idle_kept_alive_connection_is_reused_then_closed_at_the_keepalive_timeout(server):
    with server.raw() as conn:
        assert conn.request("OPTIONS", "/files/", {}).status in (200, 204)
        time.sleep(0.3)  # idle, well within the timeout: the connection is reused
        assert conn.request("OPTIONS", "/files/", {}).status in (200, 204)
        idle_since = time.monotonic()
        _, closed = read_until_closed(conn.sock)
    assert 0.9 <= closed - idle_since < 4


def test_a_head_over_the_limit_is_refused_as_soon_as_it_crosses_it(server):
    """8 KiB allowed; a 10 MiB header sent at 2 MiB/s is answered 431 within a
    second, long before it could all arrive."""
    sock = server.connect()
    stop = threading.Event()

    def send_slowly() -> None:
        try:
            sock.sendall(b"POST /files/ HTTP/1.1\r\nHost: t\r\nX-Big: ")
            for _ in range(160):  # 160 x 64 KiB = 10 MiB, 32 pieces a second
                if stop.wait(1 / 32):
                    return
                sock.sendall(b"a" * 65536)
        except OSError:
            return
    started = time.monotonic()
    threading.Thread(target=send_slowly, daemon=True).start()
    sock.settimeout(10)
    answer = sock.recv(65536)
    answered = time.monotonic() - started
    stop.set()
    sock.close()
    assert status_of(answer) == 431 and b"ERR_REQUEST_HEAD_TOO_LARGE" in answer
    assert answered < 2


# -- bodies ---------------------------------------------------------------------------

def send_partial_patch(server: Endpoint, upload: str, length: int, first: bytes) -> socket.socket:
    sock = server.connect()
    sock.sendall(request_bytes("PATCH", f"/files/{upload}", {**TUS, "Upload-Offset": "0",
                                                              "Content-Type": OCTET},
                               content_length=length) + first)
    return sock


def test_a_silent_body_is_cut_at_the_network_timeout_and_keeps_its_bytes(server):
    upload = server.create(100_000)
    data = os.urandom(12_345)
    sock = send_partial_patch(server, upload, 100_000, data)
    started = time.monotonic()
    answer, closed = read_until_closed(sock)
    sock.close()
    assert status_of(answer) == 408 and b"ERR_REQUEST_TIMEOUT" in answer
    assert 0.9 <= closed - started < 4
    assert server.offset(upload) == len(data)
    assert (server.upload_dir / upload).read_bytes() == data


def test_a_drip_below_the_minimum_rate_is_cut_and_keeps_its_bytes(server):
    """A byte every 0.5 s resets any silence timeout, but is 2 bytes a second
    against a minimum of 200 over 2 s: the body ends like a silent one."""
    upload = server.create(100_000)
    sock = send_partial_patch(server, upload, 100_000, b"0123456789")
    started = time.monotonic()
    stop = threading.Event()
    sent = [10]

    def drip() -> None:
        while not stop.wait(0.5):
            try:
                sock.sendall(b"x")
            except OSError:
                return
            sent[0] += 1
    threading.Thread(target=drip, daemon=True).start()
    answer, closed = read_until_closed(sock)
    stop.set()
    sock.close()
    assert status_of(answer) == 408 and b"ERR_BODY_TOO_SLOW" in answer
    assert 1.5 <= closed - started < 6
    stored = (server.upload_dir / upload).read_bytes()
    assert stored == b"0123456789" + b"x" * (len(stored) - 10)
    assert server.offset(upload) == len(stored) >= 10


def test_a_slow_client_above_the_minimum_rate_is_never_cut(server):
    upload = server.create(2_000)
    sock = send_partial_patch(server, upload, 2_000, b"")
    for _ in range(20):  # 100 bytes every 0.15 s: about 660 bytes a second, for 3 s
        time.sleep(0.15)
        sock.sendall(b"y" * 100)
    answer, _ = read_until_closed(sock) if server.tls else (sock.recv(65536), 0)
    sock.close()
    assert status_of(answer) == 204
    assert (server.upload_dir / upload).read_bytes() == b"y" * 2_000


# -- responses and closes ---------------------------------------------------------------

def finished_upload(server: Endpoint, size: int) -> str:
    upload = server.create(size)
    with server.raw() as conn:
        answer = conn.request("PATCH", f"/files/{upload}", {**TUS, "Upload-Offset": "0",
                                                             "Content-Type": OCTET}, b"d" * size)
    assert answer.status == 204, answer
    return upload


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_client_that_reads_nothing_of_its_response_frees_its_thread_at_the_network_timeout(
        tmp_path, tls):
    """Two request threads, both sending a large download to a client that reads
    nothing: after 1 s without progress each gives up, and a HEAD that waited
    for a thread is answered."""
    cert, key = make_certificate(tmp_path)
    args = ("--certfile", str(cert), "--keyfile", str(key)) if tls else ()
    started = start_gunicorn(tmp_path, workers=1, threads=2, env=SHORT, args=args)
    context = ssl.create_default_context(cafile=str(cert)) if tls else None
    if context is not None:
        context.check_hostname = False
    server = Endpoint(started.port, started.upload_dir, context)
    stuck: list[socket.socket] = []
    try:
        upload = finished_upload(server, 24 << 20)  # far more than the kernel buffers hold
        for _ in range(2):
            sock = server.connect()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request_bytes("GET", f"/files/{upload}", {}))
            stuck.append(sock)
        asked = time.monotonic()
        assert server.offset(upload) == 24 << 20  # waits for a thread
        waited = time.monotonic() - asked
        assert 0.5 <= waited < 5, waited
    finally:
        for sock in stuck:
            sock.close()
        started.stop()


def test_a_lingering_close_ends_once_the_client_is_silent(server):
    """An early answer (404) with 10 MB still to come: the server answers with
    Connection: close and shuts its side, then drops what still arrives (a byte
    0.5 s later is taken quietly) and closes 1 s after the client went quiet (a
    byte 2.5 s later is refused with a reset)."""
    sock = server.connect()
    sock.sendall(request_bytes("PATCH", "/files/" + "0" * 32, {**TUS, "Upload-Offset": "0",
                                                                 "Content-Type": OCTET},
                               content_length=10_000_000) + b"z" * 100_000)
    answer, _ = read_until_closed(sock)  # the answer, then the server's half-close
    assert status_of(answer) == 404 and b"Connection: close" in answer
    time.sleep(0.5)
    assert not reset_after_sending(sock)  # still lingering: the byte is read and dropped
    time.sleep(2.5)
    assert reset_after_sending(sock)      # closed: the kernel answers with a reset
    sock.close()


def reset_after_sending(sock: socket.socket) -> bool:
    """Send a byte (raw TCP: the lingering server drops bytes unread, TLS or not);
    whether the server's kernel then resets the connection."""
    try:
        socket.socket.sendall(sock, b"z")
        time.sleep(0.3)
        socket.socket.sendall(sock, b"z")
        sock.settimeout(0.3)
        socket.socket.recv(sock, 1)
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return False


# -- the connection cap -------------------------------------------------------------------

def test_at_max_connections_the_oldest_waiting_connection_makes_room(tmp_path):
    server = start_gunicorn(tmp_path, workers=1, threads=8,
                            env={"TUSWSGI_MAX_CONNECTIONS": "20", "TUSWSGI_HEAD_TIMEOUT": "60s"})
    try:
        waiting = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(40)]
        answer = requests.options(server.url, timeout=10)
        assert answer.status_code in (200, 204)
        closed = [server_closed(sock) for sock in waiting]
        kept = closed.index(False)  # the oldest were closed, in order, to make room
        assert 20 <= kept <= 22 and not any(closed[kept:]), closed
    finally:
        for sock in waiting:
            sock.close()
        server.stop()


def server_closed(sock: socket.socket, wait: float = 0.3) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_uploads_survive_the_short_timeouts_when_clients_are_prompt(server):
    """The same server stores a normal upload, on one kept-alive connection."""
    data = os.urandom(3 << 20)
    upload = server.create(len(data))
    with server.raw() as conn:
        for start in range(0, len(data), 1 << 20):
            answer = conn.request("PATCH", f"/files/{upload}", {**TUS, "Upload-Offset": str(start),
                                                                 "Content-Type": OCTET},
                                  data[start:start + (1 << 20)])
            assert answer.status == 204, answer
    wait_for_size(server.upload_dir / upload, len(data))
    assert (server.upload_dir / upload).read_bytes() == data
