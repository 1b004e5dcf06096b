"""HTTP/1.1 request-body framing on a connection: the one place that knows where a
body ends and the next request begins.

The server hands over the connection's socket and the bytes it already read past
the request head.  :class:`BodyReader` then reads the body, with
``Content-Length`` or ``chunked`` framing, and keeps an exact account at every
moment: payload handed out, framing consumed, and bytes read past the end of the
body (a pipelined next request), which :meth:`BodyReader.leftover` gives back.
When a response goes out before the body was read to its end, :meth:`settle`
either reads the rest (a small remainder, bounded in bytes and time) or says the
connection must close; it is never reused at an unknown position.

Reads return what has arrived (one ``recv``), never waiting for a full block, so
a client that stalls or is cut keeps every byte it sent.  A read waits for data
with ``poll``, never inside a ``recv`` that holds its buffer, so a thousand
waiting uploads hold no buffers; a plain socket is read with one ``os.read``
when bytes are already there (most reads), without ``poll``.  A client that
trickles (below :data:`TRICKLE_RATE`, 32 KiB/s) is read :data:`BATCH_WAIT`
apart, letting the kernel gather its bytes, so a slow upload wakes its thread
once a second instead of for every packet: each wake-up is three turns for the
GIL (the wake, the read, the write to disk), and with thousands of slow
uploads per worker those turns are what the worker spends.  Faster clients
are never paused.  Nothing here imports the WSGI server; :mod:`tuswsgi.worker`
builds the reader and honours its verdict.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from typing import Callable, Optional, Protocol

#: A remainder the server still reads to keep a connection after an early answer
#: (Go's net/http reads 256 KiB); a larger one closes the connection instead.
DRAIN_BYTES = 256 * 1024
#: Longest wait for that remainder before the connection is closed instead.
DRAIN_SECONDS = 1.0
#: Bounds on one ``recv``: small while a client trickles (memory per open upload
#: stays small), doubling up to the maximum while every read comes back full.
MIN_RECV = 16 * 1024
MAX_RECV = 1024 * 1024
#: A body arriving slower than TRICKLE_RATE (bytes a second) is read BATCH_WAIT
#: apart; a read of BATCH_BYTES or more shows it is not trickling.
TRICKLE_RATE = 32 * 1024
BATCH_BYTES = 16 * 1024
BATCH_WAIT = 1.0
#: Bounds on the framing lines of a chunked body.
MAX_CHUNK_LINE = 8190
MAX_TRAILERS = 64 * 1024

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Source(Protocol):
    """What a body is read from: a connected socket (``fileno`` lets reads wait
    with ``poll``; a source without one is read directly)."""

    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...


class BodyEnded(Exception):
    """The connection ended before the body did."""


class FramingError(Exception):
    """A chunked body is malformed: where the next request starts is unknown."""


class BodyReader:
    """The body of one request, read from ``source`` after the ``buffered`` bytes.

    ``length`` is the ``Content-Length``; ``None`` means ``chunked``.  With
    ``expect_continue`` the ``100 Continue`` goes out at the first read, so an
    answer given without reading costs the client nothing (as in Go's net/http).
    """

    def __init__(self, source: Source, buffered: bytes, length: Optional[int], *,
                 expect_continue: bool = False, shutdown: Optional[Callable[[], None]] = None,
                 batch_wait: float = BATCH_WAIT) -> None:
        self._source = source
        self._buffer = bytearray(buffered)
        self.length = length
        #: Payload bytes handed to the application so far.
        self.received = 0
        self._remaining = length if length is not None else 0  # of the current chunk
        self._phase = "data" if length is not None else "size"
        if length == 0:
            self._phase = "done"
        self._continue = expect_continue
        self._shutdown = shutdown
        self._recv_size = MIN_RECV
        #: The longest a read waits for the next byte (``None``: no limit).
        self.timeout: Optional[float] = None
        self._poller = _poller_for(source)
        self._plain = _plain_socket(source)
        self._batch_wait = batch_wait
        self._batching = False
        #: Held until :meth:`wake`; a batching pause waits to acquire it.  A lock,
        #: not an Event: an Event is two kilobytes, times every open upload.
        self._wake_lock = threading.Lock()
        self._wake_lock.acquire()
        self._woken = False
        self._started = 0.0  # when the first payload byte was read
        #: Set when the position on the connection is lost (a read failed, the read
        #: side was shut): the connection must close after the response.
        self.broken = False
        #: ``time.monotonic()`` when a blocking read began, ``None`` outside one;
        #: read by another thread to tell a silent client from a sending one.
        self.waiting_since: Optional[float] = None
        self._trailers: list[tuple[str, str]] = []

    # -- state ------------------------------------------------------------------
    @property
    def is_chunked(self) -> bool:
        return self.length is None

    @property
    def complete(self) -> bool:
        """The whole body, framing included, has been read."""
        return self._phase == "done"

    @property
    def continue_sent(self) -> bool:
        return not self._continue

    @property
    def trailers(self) -> list[tuple[str, str]]:
        """The trailer fields of a chunked body, ``(name, value)`` as sent, once the
        body is complete (none before, and none for a ``Content-Length`` body)."""
        return list(self._trailers) if self.complete else []

    def leftover(self) -> bytes:
        """Bytes read past the end of the body: the start of the next request."""
        if not self.complete:
            raise RuntimeError("the body has not been read to its end")
        data, self._buffer = bytes(self._buffer), bytearray()
        return data

    # -- reading ----------------------------------------------------------------
    def read(self, size: int) -> bytes:
        """Up to ``size`` payload bytes, as soon as any arrive; ``b""`` at the end.

        Raises :class:`BodyEnded` when the connection ends first, ``TimeoutError``
        when the source's timeout passes, :class:`FramingError` for a malformed
        chunked body, ``OSError`` from the socket.
        """
        if size <= 0 or self._phase == "done":
            return b""
        try:
            while self._phase != "data":
                self._advance()
                if self._phase == "done":
                    return b""
            data = self._raw(min(size, self._remaining))
        except BaseException:
            self.broken = True
            raise
        self._remaining -= len(data)
        self.received += len(data)
        if self._remaining == 0:
            self._phase = "done" if self.length is not None else "crlf"
        return data

    def settle(self, *, max_bytes: int = DRAIN_BYTES, seconds: float = DRAIN_SECONDS) -> bool:
        """Read and discard what is left of the body, if that is small; return
        whether the connection may carry another request.

        Called when the response is about to go out.  A client that waited for
        ``100 Continue`` and did not get it may never send the body, so then the
        connection closes without waiting.
        """
        if self.complete:
            return True
        if self.broken or self._continue:
            return False
        if self.length is not None and self.length - self.received > max_bytes:
            return False
        self.wake()
        deadline = time.monotonic() + seconds
        previous = self.timeout
        drained = 0
        try:
            while not self.complete:
                left = deadline - time.monotonic()
                if left <= 0 or drained > max_bytes:
                    return False
                self.timeout = left
                drained += len(self.read(64 * 1024))
            return True
        except (OSError, BodyEnded, FramingError):
            return False
        finally:
            self.timeout = previous

    def wake(self) -> None:
        """Read promptly from now on: end a batching pause (a stop, a drain)."""
        self._batching = False
        self._woken = True
        _release(self._wake_lock)

    def shutdown_read(self) -> None:
        """Wake a read blocked on a silent client: later reads end at once."""
        self.broken = True
        self.wake()
        if self._shutdown is not None:
            self._shutdown()

    # -- framing ------------------------------------------------------------------
    def _advance(self) -> None:
        """Consume framing until payload can be read or the body ends (chunked)."""
        if self._phase == "crlf":
            while len(self._buffer) < 2:
                self._fill()
            if self._buffer[:2] != b"\r\n":
                raise FramingError("chunk data is not followed by CRLF")
            del self._buffer[:2]
            self._phase = "size"
        elif self._phase == "size":
            self._chunk_size(self._line(MAX_CHUNK_LINE))
        elif self._phase == "trailers":
            self._read_trailers()

    def _chunk_size(self, line: bytes) -> None:
        digits, _, extension = line.partition(b";")
        digits = digits.rstrip(b" \t") if extension else digits
        if not digits or len(digits) > 16 or not _HEX.issuperset(digits):
            raise FramingError(f"bad chunk size {line[:40]!r}")
        if b"\r" in extension or b"\n" in extension:
            raise FramingError("bad chunk extension")
        size = int(digits, 16)
        if size == 0:
            self._phase = "trailers"
        else:
            self._remaining, self._phase = size, "data"

    def _read_trailers(self) -> None:
        """The trailer section, kept as fields; bounded like a header block."""
        total = 0
        while True:
            line = self._line(MAX_TRAILERS - total)
            total += len(line) + 2
            if total > MAX_TRAILERS:
                raise FramingError("trailer section too long")
            if line == b"":
                self._phase = "done"
                return
            self._trailers.append(_field(line))

    def _line(self, limit: int) -> bytes:
        """One CRLF-terminated line of framing, without the CRLF."""
        searched = 0
        while True:
            end = self._buffer.find(b"\r\n", searched)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 2]
                if b"\n" in line:
                    raise FramingError("bare LF in chunk framing")
                return line
            if len(self._buffer) > limit:
                raise FramingError("chunk framing line too long")
            searched = max(0, len(self._buffer) - 1)
            self._fill()

    def _fill(self) -> None:
        """One recv into the buffer, for framing (never needed for payload)."""
        chunk = self._recv(MIN_RECV)
        if not chunk:
            raise BodyEnded(f"connection ended after {self.received} body bytes")
        self._buffer += chunk

    def _raw(self, size: int) -> bytes:
        """At most ``size`` bytes of the body stream, from the buffer or one recv."""
        if self._buffer:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data
        want = min(size, self._recv_size)
        data = self._recv(want)
        if not data:
            raise BodyEnded(f"connection ended after {self.received} body bytes")
        if len(data) == want == self._recv_size:
            self._recv_size = min(self._recv_size * 2, MAX_RECV)
        elif len(data) * 4 < self._recv_size:
            self._recv_size = max(self._recv_size // 2, MIN_RECV)
        self._batching = self._trickling(len(data))
        return data

    def _trickling(self, count: int) -> bool:
        """Whether the body arrives so slowly that pausing between reads costs it
        nothing: slower than TRICKLE_RATE, judged after BATCH_WAIT."""
        now = time.monotonic()
        if not self._started:
            self._started = now
        elapsed = now - self._started
        if not self._batch_wait or self._woken or count >= BATCH_BYTES \
                or elapsed < self._batch_wait:
            return False
        return self.received / elapsed < TRICKLE_RATE

    def _recv(self, size: int) -> bytes:
        if self._continue:
            self._continue = False
            self._source.sendall(CONTINUE)
        if self._batching:
            self._pause()
        self.waiting_since = time.monotonic()
        try:
            if self._plain is not None and self._plain.gettimeout() is not None:
                return self._recv_direct(self._plain.fileno(), size)
            if self._poller is not None and not self._source_pending():
                self._wait_readable()
            return self._source.recv(size)
        except socket.timeout:
            raise TimeoutError("no data within the timeout") from None
        finally:
            self.waiting_since = None

    def _recv_direct(self, fd: int, size: int) -> bytes:
        """Read what has arrived on a plain socket, waiting with ``poll`` only when
        nothing has.  The socket's own ``recv`` polls before every read when it has
        a timeout: a second system call, and a second wait for the GIL, per read."""
        while True:
            try:
                return os.read(fd, size)
            except BlockingIOError:
                self._wait_readable()

    def _wait_readable(self) -> None:
        assert self._poller is not None
        timeout = None if self.timeout is None else max(self.timeout, 0) * 1000
        if not self._poller.poll(timeout):
            raise TimeoutError("no data within the timeout")

    def _pause(self) -> None:
        """Let a trickling client's bytes gather, unless woken meanwhile."""
        if self._wake_lock.acquire(timeout=self._batch_wait):
            _release(self._wake_lock)  # stays woken: later pauses return at once

    def _source_pending(self) -> bool:
        """Bytes a TLS socket already decrypted, which ``poll`` cannot see."""
        pending = getattr(self._source, "pending", None)
        return bool(pending and pending())


def _field(line: bytes) -> tuple[str, str]:
    """One ``name: value`` field line (RFC 9112 5): a token name, no space before the
    colon, no line folding."""
    name, colon, value = line.partition(b":")
    if not colon or not name or not _TOKEN.issuperset(name):
        raise FramingError(f"bad trailer field {line[:40]!r}")
    return name.decode("ascii"), value.strip(b" \t").decode("latin-1")


def _release(lock: threading.Lock) -> None:
    """Release ``lock`` unless it is free already (another wake got there first)."""
    try:
        lock.release()
    except RuntimeError:
        pass


def _plain_socket(source: Source) -> Optional[socket.socket]:
    """``source`` when it is a plain socket, read with ``os.read`` while it is in
    timeout mode (CPython keeps its descriptor non-blocking then); ``None`` for
    TLS, whose bytes only its own ``recv`` decrypts, and for other sources."""
    if isinstance(source, socket.socket) and not isinstance(source, ssl.SSLSocket) \
            and hasattr(select, "poll"):
        return source
    return None


def _poller_for(source: Source) -> Optional[select.poll]:
    fileno = getattr(source, "fileno", None)
    if fileno is None or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(fileno(), select.POLLIN)
    return poller
