"""The request body as a stream the store can copy from, with the ways it can end.

A body ends normally (all ``Content-Length`` bytes, or the end of a chunked
body), or early: the client went away (:class:`ClientGone`), it stopped sending
for ``network_timeout`` seconds (:class:`BodyTimeout`), or it was asked to stop
(:class:`BodyInterrupted`): a newer request for the same upload took over, the
server is shutting down, or a hook said so.  In every case the bytes already
handed to the store stay there.

Under tuswsgi's worker the body comes from the worker's
:class:`~tuswsgi.server.framing.BodyReader` (``environ["tuswsgi.connection"]``):
every read returns what has arrived, the worker's settings bound its waits, and
a stop wakes a read blocked on a silent client.  Under any other WSGI server it
is ``wsgi.input``, read in blocks of :data:`WSGI_BLOCK`.  When that server
publishes the connection's socket (:data:`tuswsgi.server.PUBLISHED_SOCKET`),
a watchdog thread cuts a block that has waited ``network_timeout`` and a stop
wakes a blocked read, both by shutting the socket's read side: the server's
read returns what it has, so no byte that arrived is lost.  Without a socket
(mod_wsgi, CGI) the server's own timeout bounds a silent client, and a stop is
seen between blocks.

A stop for a hand-over is gentle with bytes already on their way: reading goes
on while they keep arriving (gaps under :data:`DRAIN_GAP`, for at most
:data:`DRAIN_SECONDS`), so a client that sent its last bytes and vanished, and
then resumes, is told an offset that counts them.  A shutdown stores what has
arrived and ends at once (:data:`SHUTDOWN_DRAIN`), so a restart is not held up.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from typing import Any, Callable, Optional

from .server import PUBLISHED_SOCKET
from .server.framing import BodyEnded, BodyReader, FramingError, TooSlow

#: environ key of the :class:`Connection` the worker offers.
CONNECTION_KEY = "tuswsgi.connection"
#: After a stop, a gap this long with no byte ends the body.
DRAIN_GAP = 0.2
#: After a stop, the body ends this long later even if bytes keep coming.
DRAIN_SECONDS = 2.0
#: A shutdown does not wait for bytes on their way: what has arrived is stored,
#: and the body ends at once (within this long for a client that never pauses).
SHUTDOWN_DRAIN = (0.0, 0.2)
#: Largest block read from a plain ``wsgi.input``, which waits for a whole block:
#: under another server, a client must send this much per ``network_timeout``.
WSGI_BLOCK = 16 * 1024
#: How often the watchdog looks for blocks waiting longer than ``network_timeout``.
WATCH_INTERVAL = 0.25


class BodyError(Exception):
    """The body ended before it was complete."""


class ClientGone(BodyError):
    pass


class BodyTimeout(BodyError):
    pass


class BodyTooSlow(BodyTimeout):
    """Bytes kept coming, but slower than the server's minimum rate."""


class BodyMalformed(BodyError):
    """The chunked framing is broken."""


class BodyInterrupted(BodyError):
    """Stopped on purpose; ``reason`` is ``"handover"``, ``"shutdown"`` or ``"stopped"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """What tuswsgi's worker offers a request beyond WSGI.

    ``body`` is the framed body, ``send`` writes raw bytes on the connection (an
    interim response, before the final one), and ``busy`` says the worker has no
    room for another body now: the request is refused with 503.
    """

    __slots__ = ("body", "busy", "send")

    def __init__(self, body: BodyReader, send: Callable[[bytes], None], *, busy: bool = False) -> None:
        self.body = body
        self.send = send
        self.busy = busy


#: Bodies being read in this process, for :func:`interrupt_all` at shutdown.
_active_bodies: weakref.WeakSet[RequestBody] = weakref.WeakSet()


class RequestBody:
    """Bounded reads of a request body that never run past its end."""

    def __init__(self, environ: dict[str, Any], length: Optional[int],
                 network_timeout: float) -> None:
        connection: Optional[Connection] = environ.get(CONNECTION_KEY)
        self._framed = connection.body if connection is not None else None
        self._input = environ.get("wsgi.input")
        #: The other server's socket, when it publishes one (not under tuswsgi's worker).
        self._socket = environ.get(PUBLISHED_SOCKET) if self._framed is None else None
        self.length = length
        self.received = 0
        self._timeout = network_timeout
        self._stop: Optional[str] = None
        self._stop_at = 0.0
        self._drain = (DRAIN_GAP, DRAIN_SECONDS)  # of the stop under way
        self._expired = False
        self._waiting_since: Optional[float] = None  # a wsgi.input read under way
        if self._framed is not None:
            self.length = self._framed.length
        _active_bodies.add(self)
        if self._socket is not None:
            _watchdog.start()

    @classmethod
    def empty(cls) -> RequestBody:
        """A body of no bytes, for requests that only change state."""
        return cls({}, 0, 1.0)

    @property
    def is_chunked(self) -> bool:
        return self.length is None

    @property
    def reads_trailers(self) -> bool:
        """Whether a chunked body's trailer section reaches us: only through tuswsgi's
        worker.  Other WSGI servers parse it and drop it (PEP 3333 has no place
        for it), so there a trailer is simply never seen."""
        return self._framed is not None

    def trailer(self, name: str) -> list[str]:
        """The values of trailer field ``name`` (any case), once the body ended."""
        if self._framed is None:
            return []
        wanted = name.lower()
        return [value for field, value in self._framed.trailers if field.lower() == wanted]

    def read(self, size: int) -> bytes:
        if self._stop is not None and (self._framed is None
                                       or time.monotonic() >= self._stop_at + self._drain[1]):
            raise BodyInterrupted(self._stop)
        if self.length is not None:
            size = min(size, self.length - self.received)
            if size <= 0:
                return b""
        data = self._read_some(size)
        self.received += len(data)
        return data

    def _read_some(self, size: int) -> bytes:
        try:
            data = self._read_source(size)
        except TooSlow:
            raise BodyTooSlow() from None
        except TimeoutError:
            if self._stop is not None:
                raise BodyInterrupted(self._stop) from None
            raise BodyTimeout() from None
        except FramingError as exc:
            raise BodyMalformed(str(exc)) from None
        except (BodyEnded, OSError, ValueError) as exc:  # servers word "peer went away" variously
            raise self._ended(str(exc)) from None
        if not data and self.length is not None and self.received < self.length:
            raise self._ended(f"body ended after {self.received} of {self.length} bytes")
        return data

    def _read_source(self, size: int) -> bytes:
        if self._framed is not None:
            return self._framed.read(size)
        if self._input is None:
            return b""
        self._waiting_since = time.monotonic()
        try:
            return bytes(self._input.read(min(size, WSGI_BLOCK)))
        finally:
            self._waiting_since = None

    def _ended(self, detail: str) -> BodyError:
        """Why a body that ended early ended: a stop, the watchdog, or the client."""
        if self._stop is not None:
            return BodyInterrupted(self._stop)
        if self._expired:
            return BodyTimeout()
        return ClientGone(detail)

    def interrupt(self, reason: str = "handover") -> None:
        """Ask the reader to stop; safe from another thread or a signal handler.

        Called again while the stop stands (the lock watcher does, each poll), it
        wakes a read that has waited :data:`DRAIN_GAP` on a silent client, or
        :data:`DRAIN_SECONDS` on a client that keeps sending (for a shutdown:
        :data:`SHUTDOWN_DRAIN`).
        """
        now = time.monotonic()
        if self._stop is None:
            self._stop, self._stop_at = reason, now
            self._drain = SHUTDOWN_DRAIN if reason == "shutdown" else (DRAIN_GAP, DRAIN_SECONDS)
            if self._framed is not None:
                self._framed.timeout = self._drain[0]
                self._framed.wake()
        if self._framed is not None and self._framed.broken:
            return
        gap, most = self._drain
        waiting = self._framed.waiting_since if self._framed is not None else self._waiting_since
        if now >= self._stop_at + most or (waiting is not None and now - waiting >= gap):
            self._shutdown_read()

    def expire_if_silent(self, now: float) -> None:
        """From the watchdog: a ``wsgi.input`` read that waited ``network_timeout``
        ends, keeping what it read."""
        waiting = self._waiting_since
        if waiting is not None and now - waiting >= self._timeout and not self._expired:
            self._expired = True
            self._shutdown_read()

    def _shutdown_read(self) -> None:
        """Wake a read blocked on the client: it returns what it has, later reads end."""
        if self._framed is not None:
            self._framed.shutdown_read()
        elif self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def has_more(self) -> bool:
        """True when a chunked body goes on past what was read (one byte probe)."""
        return bool(self.read(1))


class _Watchdog:
    """One daemon thread per process, started when a body is first read from
    another server's ``wsgi.input``, that cuts blocks waiting too long."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="tuswsgi-body-watchdog", daemon=True)
            self._thread.start()

    @staticmethod
    def _run() -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            for body in list(_active_bodies):
                body.expire_if_silent(now)


_watchdog = _Watchdog()


def reading() -> bool:
    """Whether a body is being read in this process."""
    return bool(_active_bodies)


def interrupt_all(reason: str) -> int:
    """Interrupt every body being read in this process; return how many."""
    bodies = list(_active_bodies)
    for body in bodies:
        body.interrupt(reason)
    return len(bodies)
