"""The worker's event loop: every connection that is not running a request.

One thread, one ``selectors`` poller.  A connection lives here while it has no
request to run: a TLS handshake, a request head arriving, idle between
requests, and a lingering close.  Each of those states has its own timeout
(:class:`Timeouts`), and a connection past it is closed: nothing a client can
do holds a socket for ever.  Once a head is complete the connection goes to a
request thread (:mod:`.pool`) and comes back when the response is out, to wait
for the next head, to close, or to linger.

Timers cost nothing per connection: each state keeps its connections in an
ordered dict in the order of their deadlines (each is "now + that state's
timeout" when set), so the loop only ever looks at the front of each.

Admission (:mod:`.admission`) decides, from plain counts, whether the loop
takes connections from the listen queue; at ``max_connections`` the oldest
lingering, idle or slow-head connection is closed to make room.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import queue
import select
import selectors
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterator, Optional

from ..errors import ERRORS
from .admission import FRESH, OVERFLOW_GRACE, Capacity, Load, evictable, has_room, may_accept, must_shed
from .framing import BodyReader, head_end
from .pool import ThreadPool
from .wire import Wire

log = logging.getLogger("tuswsgi")

#: Bytes read from a connection at a time while its head arrives.
HEAD_READ = 16 * 1024
#: Connections taken from the listen queue in one turn of the loop.
ACCEPT_BATCH = 64
#: After running out of file descriptors, accepting pauses this long.
ACCEPT_PAUSE = 0.5
#: The longest turn of the loop (bounds how late the worker checks in).
MAX_TURN = 1.0
#: When the worker stops, connections waiting for a head (or idle) get this
#: long to send one; it is served, with ``Connection: close``.
STOP_WAIT = 1.0


@dataclass(frozen=True)
class Timeouts:
    """How long a connection may stay in each state of the loop."""

    head: float       # from connecting, or from the first byte of a later head, to its end
    keepalive: float  # idle between requests
    linger: float     # reading and dropping after an early answer, since the last byte
    linger_total: float


class Verdict(Enum):
    """What becomes of a connection once its request is answered."""

    KEEP = "keep"      # wait for the next request
    CLOSE = "close"    # close now: nothing more can arrive that matters
    LINGER = "linger"  # the client may still be sending: read and drop, then close


class Conn:
    """One client connection, as the loop sees it."""

    __slots__ = ("address", "buffer", "deadline", "requests", "searched", "server", "since",
                 "sock", "state", "wire")

    def __init__(self, sock: socket.socket, address: Any, server: Any, send_timeout: float) -> None:
        self.sock = sock
        self.wire = Wire(sock, send_timeout)
        self.address = address
        self.server = server
        self.buffer = bytearray()  # bytes read and not yet handed to a request
        self.searched = 0          # of ``buffer``, known to hold no head end
        self.requests = 0
        self.state = "head"
        self.since = 0.0
        self.deadline = 0.0

    def take_head(self) -> tuple[bytes, bytes]:
        """The complete head at the start of the buffer, and what follows it."""
        end = head_end(self.buffer)
        head, rest = bytes(self.buffer[:end]), bytes(self.buffer[end:])
        self.buffer, self.searched = bytearray(), 0
        return head, rest


class BodyPlaces:
    """The places for bodies being read, shared by the request threads.

    When all are taken, a new body gets the place of the slowest body below
    ``min_rate`` (that one ends as too slow, its bytes kept), else none.  Only the
    :data:`SCAN` longest-held places are looked at, so a full worker answers a
    new body in constant time: a drip that has held a place long is the first
    to give way, and a place held long by a body above the minimum is never
    taken.
    """

    #: How many of the longest-held places a new body may look at.
    SCAN = 256

    def __init__(self, slots: int, min_rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.min_rate = min_rate
        self._clock = clock
        self._holders: dict[BodyReader, None] = {}  # in the order they took their place
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._holders)

    def take(self, reader: BodyReader) -> bool:
        """A place for ``reader``; ``False`` when there is none to give."""
        with self._lock:
            if len(self._holders) < self.slots:
                self._holders[reader] = None
                return True
            now = self._clock()
            oldest = itertools.islice(self._holders, self.SCAN)
            victim = evictable(((holder.rate(now), holder) for holder in oldest),
                               self.min_rate) if self.min_rate else None
            if victim is None:
                return False
            del self._holders[victim]
            self._holders[reader] = None
        victim.evict()
        return True

    def give_back(self, reader: BodyReader) -> None:
        with self._lock:
            self._holders.pop(reader, None)


class Loop:
    """Accept, wait for heads, keep alive, linger; hand complete heads to threads.

    ``serve(conn)`` runs on a request thread for each complete head at the
    start of ``conn.buffer`` and returns a :class:`Verdict` (with any bytes
    read past the request left in ``conn.buffer``).
    """

    def __init__(self, listeners: list[socket.socket], serve: Callable[[Conn], Verdict], *,
                 capacity: Capacity, places: BodyPlaces, timeouts: Timeouts, send_timeout: float,
                 max_head: int, tls: Optional[ssl.SSLContext] = None, wake_fds: tuple[int, ...] = (),
                 on_turn: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.listeners = listeners
        self.serve = serve
        self.capacity = capacity
        self.places = places
        self.timeouts = timeouts
        self.send_timeout = send_timeout
        self.max_head = max_head
        self.tls = tls
        self.on_turn = on_turn
        self.clock = clock
        self.pool = ThreadPool(capacity.threads)
        self.selector = selectors.DefaultSelector()
        self.heads: OrderedDict[Conn, None] = OrderedDict()   # TLS handshakes and heads arriving
        self.idle: OrderedDict[Conn, None] = OrderedDict()
        self.lingering: OrderedDict[Conn, float] = OrderedDict()  # to the close at the latest
        self.busy: set[Conn] = set()
        #: Connections taken in the last FRESH seconds, with when (``Conn.since``
        #: moves on with each state; this stays).
        self.fresh: collections.deque[tuple[float, Conn]] = collections.deque()
        self._done: queue.SimpleQueue[tuple[Conn, Verdict]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_done)
        for fd in wake_fds:
            self.selector.register(fd, selectors.EVENT_READ, _drain)
        self._servers = {listener.fileno(): listener.getsockname() for listener in listeners}
        self._listening = False
        self._stopping = False
        self._overflow_since: Optional[float] = None
        self._paused_until = 0.0

    # -- running ------------------------------------------------------------------
    def run_while(self, alive: Callable[[], bool]) -> None:
        """Serve until ``alive()`` turns false."""
        for listener in self.listeners:
            listener.setblocking(False)
        while alive():
            self.turn()

    def turn(self) -> None:
        """One turn: wait for events or the next deadline, then act."""
        timeout = self._next_timeout(self.clock())
        for key, _events in self.selector.select(timeout):
            if isinstance(key.data, Conn):
                self._on_conn(key.data)
            else:
                key.data(key.fileobj)
        now = self.clock()
        self._expire(now)
        self._admit(now)
        self.on_turn()

    def drain(self, *, grace: float, stop_bodies: Callable[[], object]) -> None:
        """Stop: take no new connection, ask running bodies to stop
        (``stop_bodies``, every turn), give waiting connections
        :data:`STOP_WAIT` to send a head, and running requests at most ``grace``
        seconds to finish."""
        self._stopping = True
        self._listen(False)
        for listener in self.listeners:
            listener.close()
        now = self.clock()
        for conn in [*self.heads, *self.idle, *self.lingering]:
            conn.deadline = min(conn.deadline, now + STOP_WAIT)
        deadline = now + grace
        while (self.busy or self.heads or self.idle or self.lingering) and self.clock() < deadline:
            stop_bodies()
            self.turn()
        self.pool.shutdown()

    def finished(self, conn: Conn, verdict: Verdict) -> None:
        """From a request thread: the connection is the loop's again."""
        self._done.put((conn, verdict))
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    # -- admission ------------------------------------------------------------------
    def load(self) -> Load:
        return Load(requests=len(self.busy), fresh=self._fresh(self.clock()), bodies=len(self.places),
                    connections=len(self.heads) + len(self.idle) + len(self.lingering) + len(self.busy),
                    sheddable=len(self.heads) + len(self.idle) + len(self.lingering),
                    overflow_since=self._overflow_since, paused_until=self._paused_until)

    def _fresh(self, now: float) -> int:
        """Connections taken in the last FRESH seconds still waiting for their first head."""
        while self.fresh and now - self.fresh[0][0] > FRESH:
            self.fresh.popleft()
        return sum(1 for _, conn in self.fresh if conn.requests == 0 and conn.state in ("tls", "head"))

    def _admit(self, now: float) -> None:
        """Listen while admission says so; while full, watch the listen queue
        for connections that wait (see :mod:`.admission`)."""
        if self._stopping:
            return
        load = self.load()
        if has_room(self.capacity, load) or now < self._paused_until:
            self._overflow_since = None
        elif any(select.select(self.listeners, [], [], 0)[0]):
            self._overflow_since = self._overflow_since or now
        else:
            self._overflow_since = None
        self._listen(may_accept(self.capacity, self.load(), now))

    def _listen(self, on: bool) -> None:
        if on == self._listening:
            return
        for listener in self.listeners:
            if on:
                self.selector.register(listener, selectors.EVENT_READ, self._accept)
            else:
                self.selector.unregister(listener)
        self._listening = on

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            now = self.clock()
            if not may_accept(self.capacity, self.load(), now):
                return
            if must_shed(self.capacity, self.load()):
                self._shed_one()
            try:
                sock, address = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed (%s); not accepting for %.1f s", exc.strerror, ACCEPT_PAUSE)
                    self._paused_until = now + ACCEPT_PAUSE
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            self._admit_conn(sock, address, self._servers[listener.fileno()], now)

    def _admit_conn(self, sock: socket.socket, address: Any, server: Any, now: float) -> None:
        sock.setblocking(False)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError):
                sock.close()
                return
        conn = Conn(sock, address, server, self.send_timeout)
        conn.state = "tls" if self.tls is not None else "head"
        self._wait(conn, self.heads, now, self.timeouts.head)
        self.fresh.append((now, conn))
        self.selector.register(sock, selectors.EVENT_READ, conn)

    def _shed_one(self) -> None:
        """Close the connection that matters least: a lingering one, else the
        oldest idle or slow-head one."""
        fronts = [next(iter(states)) for states in (self.idle, self.heads) if states]
        if self.lingering:
            self._close(next(iter(self.lingering)))
        elif fronts:
            self._close(min(fronts, key=lambda conn: conn.since))

    # -- connections ----------------------------------------------------------------
    def _on_conn(self, conn: Conn) -> None:
        try:
            if conn.state == "linger":
                self._on_linger_readable(conn)
            elif conn.state == "tls":
                self._handshake(conn)
            else:
                self._read_head(conn)
        except Exception:  # one connection's trouble must not end the worker's others
            log.exception("error on a connection from %s", conn.address)
            self._close(conn)

    def _handshake(self, conn: Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self.selector.modify(sock, selectors.EVENT_WRITE, conn)
            return
        except (OSError, ValueError):
            self._close(conn)
            return
        conn.state = "head"
        self.selector.modify(sock, selectors.EVENT_READ, conn)
        self._read_head(conn)

    def _read_head(self, conn: Conn) -> None:
        """Read what arrived of a head; hand it on once complete, refuse it
        once it is too large, close on the client's end."""
        while True:
            try:
                data = conn.sock.recv(HEAD_READ)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError:
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            if conn.state == "idle":
                del self.idle[conn]
                conn.state = "head"
                self._wait(conn, self.heads, self.clock(), self.timeouts.head)
            conn.buffer += data
            if self._head_complete(conn) or not conn.wire.pending():
                return

    def _head_complete(self, conn: Conn, *, registered: bool = True) -> bool:
        """Hand the connection on once its head is complete, or refuse the head
        once it is too large; whether either happened."""
        end = head_end(conn.buffer, conn.searched)
        if end < 0 and len(conn.buffer) <= self.max_head:
            conn.searched = len(conn.buffer)
            return False
        del self.heads[conn]
        if registered:
            self.selector.unregister(conn.sock)
        if end < 0 or end > self.max_head:
            self._refuse(conn, b"431 Request Header Fields Too Large", "ERR_REQUEST_HEAD_TOO_LARGE")
        else:
            self._dispatch(conn)
        return True

    def _dispatch(self, conn: Conn) -> None:
        """Hand a connection with a complete head (no longer registered) to a
        request thread."""
        conn.state = "busy"
        conn.requests += 1
        self.busy.add(conn)
        self.pool.submit(self._serve, conn)

    def _serve(self, conn: Conn) -> None:
        """On a request thread."""
        verdict = Verdict.CLOSE
        try:
            verdict = self.serve(conn)
        except Exception:
            log.exception("error serving a request")
        finally:
            self.finished(conn, verdict)

    def _drain_done(self, fd: int) -> None:
        _drain(fd)
        while True:
            try:
                conn, verdict = self._done.get_nowait()
            except queue.Empty:
                return
            self.busy.discard(conn)
            self._resume(conn, verdict)

    def _resume(self, conn: Conn, verdict: Verdict) -> None:
        """A connection back from its request: next head, idle, linger or close."""
        if verdict is Verdict.CLOSE or (self._stopping and verdict is Verdict.KEEP):
            self._close(conn, registered=False)
            return
        if verdict is Verdict.LINGER:
            self._linger(conn)
            return
        now = self.clock()
        conn.state = "head" if conn.buffer else "idle"
        if conn.buffer:  # the start of a pipelined request, or all of it
            self._wait(conn, self.heads, now, self.timeouts.head)
            if self._head_complete(conn, registered=False):
                return
        else:
            self._wait(conn, self.idle, now, self.timeouts.keepalive)
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        if conn.wire.pending():
            self._read_head(conn)

    # -- lingering close -----------------------------------------------------------
    def _linger(self, conn: Conn) -> None:
        """Shut the write side after the response, then read and drop what the
        client still sends until it stops or closes, so it reads the answer
        instead of a reset."""
        try:
            socket.socket.shutdown(conn.sock, socket.SHUT_WR)
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError, KeyError):
            self._close(conn, registered=False)
            return
        now = self.clock()
        conn.state = "linger"
        self.lingering[conn] = now + self.timeouts.linger_total
        conn.deadline = now + self.timeouts.linger

    def _on_linger_readable(self, conn: Conn) -> None:
        try:
            data = socket.socket.recv(conn.sock, 64 * 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.deadline = min(self.clock() + self.timeouts.linger, self.lingering[conn])

    # -- timers -------------------------------------------------------------------
    def _wait(self, conn: Conn, states: OrderedDict, now: float, timeout: float) -> None:
        conn.since, conn.deadline = now, now + timeout
        states[conn] = None

    def _next_timeout(self, now: float) -> float:
        fronts = [next(iter(states)).deadline for states in (self.heads, self.idle) if states]
        if self.lingering:
            fronts.append(min(conn.deadline for conn in self.lingering))
        if not self._listening and not self._stopping:
            fronts.append(now + OVERFLOW_GRACE / 5)
        return max(min([now + MAX_TURN, *fronts]) - now, 0)

    def _expire(self, now: float) -> None:
        for conn in _due(self.heads, now):
            if conn.buffer:
                self.heads.pop(conn, None)
                self.selector.unregister(conn.sock)
                self._refuse(conn, b"408 Request Timeout", "ERR_REQUEST_HEAD_TIMEOUT")
            else:
                self._close(conn)
        for conn in _due(self.idle, now):
            self._close(conn)
        for conn in [conn for conn in self.lingering if conn.deadline <= now]:
            self._close(conn)


    # -- ending -------------------------------------------------------------------
    def _refuse(self, conn: Conn, status: bytes, code: str) -> None:
        """Answer a head the loop will not hand on (too large, too slow), then
        linger: the client may still be sending it.  ``conn`` is in no state and
        not registered."""
        try:
            conn.sock.send(plain_response(status, code))
        except (OSError, ValueError):
            pass
        self._linger(conn)

    def _close(self, conn: Conn, *, registered: bool = True) -> None:
        for states in (self.heads, self.idle, self.lingering):
            states.pop(conn, None)
        if registered:
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.state = "closed"
        try:
            conn.sock.close()
        except OSError:
            pass


def _due(states: OrderedDict, now: float) -> Iterator[Conn]:
    """The connections at the front of ``states`` whose deadline has passed."""
    while states:
        conn = next(iter(states))
        if conn.deadline > now:
            return
        yield conn
        states.pop(conn, None)


def _drain(fd: Any) -> None:
    try:
        while os.read(fd if isinstance(fd, int) else fd.fileno(), 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def plain_response(status: bytes, code: str) -> bytes:
    """A complete ``Connection: close`` response from the loop itself."""
    body = f"{code}: {ERRORS[code][1]}\n".encode()
    return (b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
