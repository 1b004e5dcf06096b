"""A client connection's socket as request threads use it: every wait bounded.

The event loop keeps each client socket non-blocking for its whole life (no
mode switch, which is one system call each and, under TLS, lost its timeout
across gunicorn's own switches).  A request thread reads and writes through a
:class:`Wire`, which tries the operation at once and, when it would block,
waits with ``poll`` for at most the time it is given: a client that stops
sending, or stops reading its response, frees the thread after
``network_timeout``, with or without TLS.  A write's timeout runs from the last
byte the client took, not from the start of the write, so a slow but reading
client is never cut.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from typing import Any, BinaryIO, Optional

#: The interim response gunicorn's ``wsgi.create`` sends for ``Expect:
#: 100-continue``; tuswsgi sends it itself when the body is first read.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_READ = select.POLLIN | select.POLLPRI
_WRITE = select.POLLOUT


class Wire:
    """Bounded reads and writes on one non-blocking client socket."""

    __slots__ = ("_poll", "_polled", "fd", "send_timeout", "sock", "tls")

    def __init__(self, sock: socket.socket, send_timeout: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.send_timeout = send_timeout
        self._poll = select.poll()
        self._polled = 0

    # -- reading ------------------------------------------------------------------
    def recv(self, size: int, timeout: Optional[float]) -> bytes:
        """What has arrived, up to ``size`` bytes, waiting at most ``timeout``
        seconds (``None``: no limit) for the first; ``b""`` at the end.

        Raises ``TimeoutError`` when nothing arrived in time.
        """
        while True:
            try:
                if self.tls:
                    return self._recv_records(size)
                return os.read(self.fd, size)
            except (BlockingIOError, ssl.SSLWantReadError):
                self.wait(_READ, timeout)
            except ssl.SSLWantWriteError:
                self.wait(_WRITE, timeout)

    def _recv_records(self, size: int) -> bytes:
        """What TLS can give at once, up to ``size``: one ``recv`` decrypts one
        record, and a client sending small pieces sends a record each."""
        data = self.sock.recv(size)
        while data and len(data) < size:
            try:
                more = self.sock.recv(size - len(data))
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not more:
                break
            data += more
        return data

    def pending(self) -> bool:
        """Bytes TLS already decrypted, which ``poll`` cannot see."""
        return self.tls and bool(self.sock.pending())  # type: ignore[attr-defined]

    # -- writing ------------------------------------------------------------------
    def sendall(self, data: Any) -> None:
        """Send every byte; ``TimeoutError`` when the client takes none for
        ``send_timeout`` seconds."""
        view = memoryview(data).cast("B")
        while view:
            try:
                sent = self.sock.send(view) if self.tls else os.write(self.fd, view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                self.wait(_WRITE, self.send_timeout)
                continue
            except ssl.SSLWantReadError:
                self.wait(_READ, self.send_timeout)
                continue
            view = view[sent:]

    def send(self, data: Any) -> int:
        """All of ``data``, except the ``100 Continue`` gunicorn's
        ``wsgi.create`` sends at once: the body reader sends that one itself,
        when the application first reads the body (see :mod:`.framing`)."""
        if bytes(data) == CONTINUE:
            return len(data)
        self.sendall(data)
        return len(data)

    def sendfile(self, file: BinaryIO, offset: int = 0, count: Optional[int] = None) -> int:
        """``count`` bytes of ``file`` from ``offset`` (to its end when ``None``),
        by the kernel when the connection is plain, each stall bounded."""
        if self.tls:
            raise ValueError("sendfile on a TLS connection")
        fd = file.fileno()
        left = os.fstat(fd).st_size - offset if count is None else count
        sent = 0
        while left > 0:
            try:
                done = os.sendfile(self.fd, fd, offset + sent, min(left, 1 << 30))
            except BlockingIOError:
                self.wait(_WRITE, self.send_timeout)
                continue
            if done == 0:
                break
            sent += done
            left -= done
        return sent

    # -- waiting ------------------------------------------------------------------
    def wait(self, events: int, timeout: Optional[float]) -> None:
        """Until the socket is ready for ``events``; ``TimeoutError`` after
        ``timeout`` seconds.  Errors and hang-ups count as ready: the
        operation tried next reports them."""
        if self._polled != events:
            self._poll.register(self.fd, events)
            self._polled = events
        millis = None if timeout is None else max(timeout, 0) * 1000
        if not self._poll.poll(millis):
            raise TimeoutError("the client sent or took nothing in time")

    def fileno(self) -> int:
        return self.fd

    def shutdown_read(self) -> None:
        """Wake a read blocked on this socket: later reads end at once."""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RD)  # TLS too: keeps the session
        except OSError:
            pass
