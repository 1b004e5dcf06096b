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

import socket
import sys
import time
from typing import Any, Optional

#: How often a long body read tells gunicorn's arbiter that the worker is alive.
HEARTBEAT_INTERVAL = 5.0


class BodyError(Exception):
    """The body ended before it was complete."""


class ClientGone(BodyError):
    pass


class BodyTimeout(BodyError):
    pass


class BodyInterrupted(BodyError):
    pass


class RequestBody:
    """Bounded reads from ``wsgi.input`` that never run past the declared length."""

    def __init__(self, environ: dict[str, Any], length: Optional[int],
                 network_timeout: float) -> None:
        self._input = environ["wsgi.input"]
        self.length = length
        self.received = 0
        self._interrupted = False
        self._socket: Optional[socket.socket] = environ.get("gunicorn.socket")
        self._worker = _gunicorn_worker() if self._socket is not None else None
        self._next_beat = time.monotonic() + HEARTBEAT_INTERVAL
        if self._socket is not None:
            self._socket.settimeout(network_timeout)

    @property
    def is_chunked(self) -> bool:
        return self.length is None

    @property
    def complete(self) -> bool:
        return self.length is not None and self.received >= self.length

    def read(self, size: int) -> bytes:
        if self._interrupted:
            raise BodyInterrupted()
        if self.length is not None:
            size = min(size, self.length - self.received)
            if size <= 0:
                return b""
        try:
            data = self._input.read(size)
        except (socket.timeout, TimeoutError):
            raise BodyTimeout() from None
        except Exception as exc:  # the server's own "peer went away" errors vary
            if self._interrupted:
                raise BodyInterrupted() from None
            raise ClientGone(str(exc)) from None
        if not data:
            if self._interrupted:
                raise BodyInterrupted()
            if self.length is not None:
                raise ClientGone(f"body ended after {self.received} of {self.length} bytes")
        self.received += len(data)
        if self._worker is not None and time.monotonic() >= self._next_beat:
            self._next_beat = time.monotonic() + HEARTBEAT_INTERVAL
            self._worker.notify()
        return data

    def interrupt(self) -> None:
        """Ask the reader to stop (called from the lock watcher thread)."""
        self._interrupted = True
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def has_more(self) -> bool:
        """True when a chunked body goes on past what was read (one byte probe)."""
        return bool(self.read(1))


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
