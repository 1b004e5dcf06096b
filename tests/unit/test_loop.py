"""The worker's event loop in process: a real listening socket and real client
sockets, a clock the test moves, and a ``serve`` that answers 204.  The server
tests run the same loop inside gunicorn; these pin its bookkeeping."""

from __future__ import annotations

import socket
import time
from typing import Callable, Iterator

import pytest

from tuswsgi.server.admission import FRESH, Capacity
from tuswsgi.server.loop import BodyPlaces, Conn, Loop, Timeouts, Verdict

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(conn: Conn) -> Verdict:
    """What the handler does for a request without a body: answer, and give back
    what came after the head (a pipelined request)."""
    _, rest = conn.take_head()
    conn.buffer += rest
    conn.wire.sendall(ANSWER)
    return Verdict.KEEP


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def loop(clock: Clock) -> Iterator[Loop]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    running = Loop([listener], answer, capacity=Capacity.of(8, 2, 100), places=BodyPlaces(6, 0),
                   timeouts=Timeouts(head=30, keepalive=60, linger=5, linger_total=30),
                   send_timeout=5, max_head=4096, clock=clock)
    listener.setblocking(False)
    yield running
    for conn in [*running.heads, *running.idle, *running.lingering]:
        conn.sock.close()
    listener.close()


def connect(loop: Loop) -> socket.socket:
    return socket.create_connection(loop.listeners[0].getsockname(), timeout=5)


def turn_until(loop: Loop, done: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the loop did not get there"
        loop.turn()


def received(sock: socket.socket) -> Callable[[], bool]:
    sock.setblocking(False)
    buffer = bytearray()

    def check() -> bool:
        try:
            buffer.extend(sock.recv(4096))
        except BlockingIOError:
            pass
        return bytes(buffer).endswith(ANSWER)
    return check


def test_a_kept_alive_connection_leaves_the_fresh_count_once_its_time_is_up(loop, clock):
    """A connection counts as a request to come for FRESH seconds after it was
    taken, however often its requests move it between the loop's states."""
    client = connect(loop)
    for _ in range(5):
        client.sendall(REQUEST)
        turn_until(loop, received(client))
        turn_until(loop, lambda: not loop.busy)  # back in the loop, idle
        clock.now += FRESH
    assert loop.load().fresh == 0
    assert not loop.fresh  # the deque does not grow with a long-lived connection
    client.close()


def test_a_new_connection_counts_until_its_head_arrives(loop, clock):
    client = connect(loop)
    turn_until(loop, lambda: len(loop.heads) == 1)
    assert loop.load().fresh == 1
    client.sendall(REQUEST)
    turn_until(loop, received(client))
    assert loop.load().fresh == 0
    client.close()


def test_a_head_not_complete_at_the_head_timeout_is_answered_408(loop, clock):
    client = connect(loop)
    client.sendall(b"GET / HTTP/1.1\r\nHost")
    turn_until(loop, lambda: any(conn.buffer for conn in loop.heads))
    clock.now += 31
    loop.turn()
    client.settimeout(5)
    assert client.recv(4096).startswith(b"HTTP/1.1 408 Request Timeout")
    assert not loop.heads and len(loop.lingering) == 1
    client.close()


def test_an_idle_connection_is_closed_at_the_keepalive_timeout(loop, clock):
    client = connect(loop)
    client.sendall(REQUEST)
    turn_until(loop, received(client))
    turn_until(loop, lambda: len(loop.idle) == 1)
    clock.now += 61
    loop.turn()
    assert not loop.idle
    client.settimeout(5)
    assert client.recv(4096) == b""
    client.close()


def test_a_head_over_the_limit_is_refused_431_before_it_ends(loop, clock):
    client = connect(loop)
    client.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 5000)  # no end in sight
    client.settimeout(5)
    turn_until(loop, lambda: bool(loop.lingering))
    assert client.recv(4096).startswith(b"HTTP/1.1 431")
    client.close()


def test_pipelined_requests_are_served_one_after_another(loop, clock):
    client = connect(loop)
    client.sendall(REQUEST * 3)
    client.setblocking(False)
    buffer = bytearray()

    def all_three() -> bool:
        try:
            buffer.extend(client.recv(4096))
        except BlockingIOError:
            pass
        return bytes(buffer) == ANSWER * 3
    turn_until(loop, all_three)
    client.close()


class Holder:
    """A body with a known rate, as BodyPlaces sees it."""

    def __init__(self, rate: float) -> None:
        self.bytes_per_second, self.evicted = rate, False

    def rate(self, now: float) -> float:
        return self.bytes_per_second

    def evict(self) -> None:
        self.evicted = True


def test_a_full_worker_gives_a_new_body_the_place_of_the_slowest_drip_among_the_oldest():
    places = BodyPlaces(3, min_rate=240)
    phone, drip, slower = Holder(8192), Holder(1.0), Holder(0.05)
    for holder in (phone, drip, slower):
        assert places.take(holder)  # type: ignore[arg-type]
    assert places.take(Holder(8192))  # type: ignore[arg-type]
    assert slower.evicted and not drip.evicted and not phone.evicted
    assert len(places) == 3


def test_a_full_worker_of_fast_bodies_refuses_the_new_one():
    places = BodyPlaces(2, min_rate=240)
    for _ in range(2):
        assert places.take(Holder(8192))  # type: ignore[arg-type]
    assert not places.take(Holder(8192))  # type: ignore[arg-type]


def test_only_the_longest_held_places_are_looked_at():
    places = BodyPlaces(BodyPlaces.SCAN + 1, min_rate=240)
    fast = [Holder(8192) for _ in range(BodyPlaces.SCAN)]
    late_drip = Holder(0.05)
    for holder in [*fast, late_drip]:
        places.take(holder)  # type: ignore[arg-type]
    assert not places.take(Holder(8192))  # type: ignore[arg-type]
    assert not late_drip.evicted  # it comes up once older places are given back
