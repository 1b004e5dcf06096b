"""The request body as a stream the store can copy from, with the ways it can end.

A body ends normally (all ``Content-Length`` bytes, or the end of a chunked
body), or early: the client went away (:class:`ClientGone`), it stopped sending
for ``network_timeout`` seconds (:class:`BodyTimeout`), or a newer request for
the same upload asked this one to stop (:class:`BodyInterrupted`).  In every
case the bytes already handed to the store stay there.

Where the WSGI server exposes the client socket (gunicorn's ``gunicorn.socket``),
the timeout is set on the socket and an interruption shuts the socket's read
side, which wakes a read blocked on a silent client at once.  Elsewhere the
interruption is seen between blocks and the server's own timeout bounds a stall.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
import weakref
from typing import Any, Optional

#: How often a long body read tells gunicorn's arbiter that the worker is alive.
HEARTBEAT_INTERVAL = 5.0
#: After an interruption the holder keeps storing the bytes that already reached
#: the socket: with the read side shut, reads return what is queued and then end
#: at once, so for a dead or silent client this takes no time.  Only a client
#: still sending could keep it going; this bounds that case.
DRAIN_SECONDS = 2.0


class BodyError(Exception):
    """The body ended before it was complete."""


class ClientGone(BodyError):
    pass


class BodyTimeout(BodyError):
    pass


class BodyInterrupted(BodyError):
    """Stopped on purpose; ``reason`` is ``"handover"`` or ``"shutdown"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Bodies being read in this process, for :func:`interrupt_all` at shutdown.
_active_bodies: weakref.WeakSet[RequestBody] = weakref.WeakSet()


class RequestBody:
    """Bounded reads of a request body that never run past the declared length.

    Under gunicorn, a body of known length is read straight from the client
    socket (after the bytes gunicorn already buffered), and gunicorn's reader
    is kept told how much is left.  gunicorn's own reader waits until a whole
    requested block has arrived, so a timeout there would drop the partial
    block it holds; a plain ``recv`` returns every byte as it comes.
    """

    def __init__(self, environ: dict[str, Any], length: Optional[int],
                 network_timeout: float) -> None:
        self._input = environ["wsgi.input"]
        self.length = length
        self.received = 0
        self._interrupted: Optional[str] = None
        self._drain_until = 0.0
        self._socket: Optional[socket.socket] = environ.get("gunicorn.socket")
        self._worker = _gunicorn_worker() if self._socket is not None else None
        self._next_beat = time.monotonic() + HEARTBEAT_INTERVAL
        self._pending = b""
        self._gunicorn_reader = _gunicorn_length_reader(self._input) \
            if self._socket is not None and length is not None else None
        if self._gunicorn_reader is not None:
            self._pending = self._gunicorn_reader.unreader.take_buffered()
            if len(self._pending) > length:  # a pipelined next request: give it back
                self._gunicorn_reader.unreader.unread(self._pending[length:])
                self._pending = self._pending[:length]
        if self._socket is not None:
            self._socket.settimeout(network_timeout)
        _active_bodies.add(self)

    @classmethod
    def empty(cls) -> RequestBody:
        """A body of no bytes, for requests that only change state."""
        return cls({"wsgi.input": None}, 0, 0.0)

    @property
    def is_chunked(self) -> bool:
        return self.length is None

    def read(self, size: int) -> bytes:
        if self._interrupted and time.monotonic() >= self._drain_until:
            raise BodyInterrupted(self._interrupted)
        if self.length is not None:
            size = min(size, self.length - self.received)
            if size <= 0:
                return b""
        try:
            data = self._read_some(size)
        except (socket.timeout, TimeoutError):
            raise BodyTimeout() from None
        except Exception as exc:  # the server's own "peer went away" errors vary
            if self._interrupted:
                raise BodyInterrupted(self._interrupted) from None
            raise ClientGone(str(exc)) from None
        if not data:
            if self._interrupted:
                raise BodyInterrupted(self._interrupted)
            if self.length is not None:
                raise ClientGone(f"body ended after {self.received} of {self.length} bytes")
        self.received += len(data)
        if self._worker is not None and time.monotonic() >= self._next_beat:
            self._next_beat = time.monotonic() + HEARTBEAT_INTERVAL
            self._worker.notify()
        return data

    def _read_some(self, size: int) -> bytes:
        if self._gunicorn_reader is None:
            return self._input.read(size)
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
        else:
            data = self._socket.recv(size)
        self._gunicorn_reader.length = self.length - self.received - len(data)
        return data

    def interrupt(self, reason: str = "handover") -> None:
        """Ask the reader to stop (from the lock watcher thread or a signal handler).

        With the socket in hand, bytes that already arrived are still stored for a
        moment: the read side is shut, so reads return them and then end at once.
        """
        if self._gunicorn_reader is not None:
            self._drain_until = time.monotonic() + DRAIN_SECONDS
        self._interrupted = reason
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def has_more(self) -> bool:
        """True when a chunked body goes on past what was read (one byte probe)."""
        return bool(self.read(1))


def _gunicorn_length_reader(body: Any) -> Any:
    """gunicorn's reader for a body of known length, if nothing was read from it yet
    and it has the interface relied on (checked, so another version falls back)."""
    reader = getattr(body, "reader", None)
    unreader = getattr(reader, "unreader", None)
    buffer = getattr(body, "buf", None)
    if (type(reader).__name__ == "LengthReader" and isinstance(getattr(reader, "length", None), int)
            and hasattr(unreader, "take_buffered") and hasattr(unreader, "unread")
            and buffer is not None and buffer.tell() == 0):
        return reader
    return None


_worker_cache: list = []


def _gunicorn_worker() -> Any:
    """The gunicorn worker serving this process, found once from the call stack.

    gunicorn's default ``sync`` worker is killed when it does not check in for
    ``timeout`` (30 s) seconds, which a single long PATCH easily exceeds under
    ``gunicorn tuswsgi:app`` with no configuration.  Calling the worker's public
    ``notify()`` while a body streams keeps it alive; other workers ignore it.
    """
    if not _worker_cache:
        worker = None
        base = sys.modules.get("gunicorn.workers.base")
        frame = sys._getframe(1)
        while frame is not None and base is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, base.Worker):
                worker = candidate
                break
            frame = frame.f_back
        _worker_cache.append(worker)
    return _worker_cache[0]


def interrupt_all(reason: str) -> int:
    """Interrupt every body being read in this process; return how many."""
    bodies = list(_active_bodies)
    for body in bodies:
        body.interrupt(reason)
    return len(bodies)


def interrupt_bodies_on_sigterm() -> bool:
    """Make SIGTERM end running uploads at once, after the server's own handler.

    gunicorn answers SIGTERM by finishing in-flight requests within
    ``graceful_timeout`` and then killing them.  An upload can take hours, so
    instead every body being read stops now: its bytes are stored and its client
    gets 503 ``ERR_SERVER_SHUTDOWN`` and resumes elsewhere or after the restart.
    Only installed from the main thread, over a handler the server installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return False

    def handler(signum: int, frame: Any) -> None:
        previous(signum, frame)
        interrupt_all("shutdown")

    signal.signal(signal.SIGTERM, handler)
    return True
