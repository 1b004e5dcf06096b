"""HTTP/1.1 request framing on a connection: the one place that knows where a
request head ends, how long its body is, and where the next request begins.

:func:`head_end` finds the end of a head in the bytes the event loop gathered,
and :func:`body_length` reads the framing headers strictly (whatever parser
produced them): a request that carries both ``Content-Length`` and
``Transfer-Encoding``, or any coding but ``chunked``, is refused, since a proxy
in front may frame it differently.

:class:`BodyReader` then reads the body from the connection's
:class:`~tuswsgi.server.wire.Wire`, with ``Content-Length`` or ``chunked``
framing, and keeps an exact account at every moment: payload handed out,
framing consumed, and bytes read past the end of the body (a pipelined next
request), which :meth:`BodyReader.leftover` gives back.  When a response goes
out before the body was read to its end, :meth:`BodyReader.settle` either reads
the rest (a small remainder, bounded in bytes and time) or says the connection
must close; it is never reused at an unknown position.

Reads return what has arrived, never waiting for a full block, so a client that
stalls or is cut keeps every byte it sent.  A client that trickles (below
:data:`TRICKLE_RATE`) is read only once about :data:`BATCH_TARGET` bytes can have
gathered in the kernel (every :data:`BATCH_WAIT` to :data:`MAX_PAUSE`
seconds), so a phone at 8 KiB/s wakes its thread every 4 s instead of for every
packet: with thousands of slow uploads, those wake-ups are what a worker
spends.  Faster clients are never paused, and a stop, a drain or an eviction
ends a pause at once.  A body slower than the
server's minimum rate over a whole window (a drip that resets any silence
timeout with each byte) ends with :class:`TooSlow`, its bytes kept.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable, Iterable, Optional, Protocol

#: A remainder the server still reads to keep a connection after an early answer
#: (Go's net/http reads 256 KiB); a larger one closes the connection instead.
DRAIN_BYTES = 256 * 1024
#: Longest wait for that remainder before the connection is closed instead.
DRAIN_SECONDS = 1.0
#: Bounds on one read: small while a client trickles (memory per open upload
#: stays small), doubling up to the maximum while every read comes back full.
MIN_RECV = 16 * 1024
MAX_RECV = 1024 * 1024
#: A body arriving slower than TRICKLE_RATE (bytes a second), judged after
#: BATCH_WAIT, is read when about BATCH_TARGET bytes can have gathered, at least
#: BATCH_WAIT and at most MAX_PAUSE apart (within what the kernel's receive
#: buffer holds, so a pause never stalls the client); a read of BATCH_BYTES or
#: more shows it is not trickling.
TRICKLE_RATE = 32 * 1024
BATCH_BYTES = 16 * 1024
BATCH_TARGET = 32 * 1024
BATCH_WAIT = 1.0
MAX_PAUSE = 5.0
#: Bounds on the framing lines of a chunked body.
MAX_CHUNK_LINE = 8190
MAX_TRAILERS = 64 * 1024
#: A body must have been read this long before its rate says anything.
RATE_SETTLES = 1.0

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = re.compile(r"[0-9]{1,18}")
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Source(Protocol):
    """What a body is read from (a :class:`~tuswsgi.server.wire.Wire`)."""

    def recv(self, size: int, timeout: Optional[float]) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...


class BodyEnded(Exception):
    """The connection ended before the body did."""


class FramingError(Exception):
    """The framing is malformed or ambiguous: where the next request starts is unknown."""


class TooSlow(TimeoutError):
    """The body arrived slower than the minimum rate over a whole window, or
    was stopped to give its place to a new body while it was that slow."""


# -- the head -------------------------------------------------------------------------

def head_end(buffer: bytes | bytearray, searched: int = 0) -> int:
    """Where the request head in ``buffer`` ends (just past its blank line),
    or -1; the first ``searched`` bytes are known not to hold the end."""
    end = buffer.find(b"\r\n\r\n", max(searched - 3, 0))
    return end + 4 if end >= 0 else -1


def body_length(headers: Iterable[tuple[str, str]]) -> Optional[int]:
    """The body's length from the parsed head's framing headers (names in
    capitals, as gunicorn gives them); ``None`` for ``chunked``.

    Raises :class:`FramingError` for a head whose framing a proxy could read
    differently: both headers, a coding other than ``chunked``, more than one
    ``Content-Length``, or one that is not a plain decimal number.
    """
    lengths = [value for name, value in headers if name == "CONTENT-LENGTH"]
    codings = [item.strip(" \t").lower() for name, value in headers
               if name == "TRANSFER-ENCODING" for item in value.split(",")]
    if codings:
        if lengths or codings != ["chunked"]:
            raise FramingError("Transfer-Encoding must be chunked alone, without Content-Length")
        return None
    if not lengths:
        return 0
    if len(lengths) > 1 or not _DIGITS.fullmatch(lengths[0]):
        raise FramingError("Content-Length must be one decimal number")
    return int(lengths[0])


# -- the body -------------------------------------------------------------------------

class BodyReader:
    """The body of one request, read from ``source`` after the ``buffered`` bytes.

    ``length`` is the ``Content-Length``; ``None`` means ``chunked``.  With
    ``expect_continue`` the ``100 Continue`` goes out at the first read, so an
    answer given without reading costs the client nothing (as in Go's net/http).
    ``timeout`` bounds each wait for the next byte; with ``min_rate`` (bytes a
    second) every ``rate_window`` seconds of the body must bring that many on
    average, or the read ends with :class:`TooSlow`.
    """

    __slots__ = ("_batch_wait", "_buffer", "_continue", "_evicted", "_max_pause", "_pause_for", "_phase",
                 "_recv_size", "_remaining", "_shutdown", "_source", "_started", "_trailers", "_wake_lock",
                 "_window_end", "_window_mark", "_woken", "broken", "length", "min_rate",
                 "rate_window", "received", "timeout", "waiting_since")

    def __init__(self, source: Source, buffered: bytes, length: Optional[int], *,
                 expect_continue: bool = False, shutdown: Optional[Callable[[], None]] = None,
                 batch_wait: float = BATCH_WAIT, max_pause: float = MAX_PAUSE,
                 timeout: Optional[float] = None,
                 min_rate: float = 0, rate_window: float = 30.0) -> None:
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
        self.timeout = timeout
        self.min_rate = min_rate
        self.rate_window = rate_window
        self._window_end = 0.0  # when the current rate window closes (0: not started)
        self._window_mark = 0   # ``received`` when it opened
        self._evicted = False
        self._batch_wait = batch_wait
        self._max_pause = max_pause
        self._pause_for = 0.0  # before the next read: the body trickles
        #: Held until :meth:`wake`; a batching pause waits to acquire it.  A lock,
        #: not an Event: an Event is two kilobytes, times every open upload.
        self._wake_lock = threading.Lock()
        self._wake_lock.acquire()
        self._woken = False
        self._started = 0.0  # when the first read began
        #: Set when the position on the connection is lost (a read failed, the read
        #: side was shut): the connection must close after the response.
        self.broken = False
        #: ``time.monotonic()`` when a blocking read began, ``None`` outside one;
        #: read by another thread to tell a silent client from a sending one.
        self.waiting_since: Optional[float] = None
        self._trailers: Optional[list[tuple[str, str]]] = None  # a list once any arrive

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
        return list(self._trailers or ()) if self.complete else []

    def leftover(self) -> bytes:
        """Bytes read past the end of the body: the start of the next request."""
        if not self.complete:
            raise RuntimeError("the body has not been read to its end")
        data, self._buffer = bytes(self._buffer), bytearray()
        return data

    def rate(self, now: float) -> Optional[float]:
        """Payload bytes a second in the current window, once the body has been
        read for :data:`RATE_SETTLES`; ``None`` before (or when it is done)."""
        if not self._started or self.complete or now - self._started < RATE_SETTLES:
            return None
        opened = self._window_end - self.rate_window
        return (self.received - self._window_mark) / max(now - opened, 1e-3)

    # -- reading ------------------------------------------------------------------
    def read(self, size: int) -> bytes:
        """Up to ``size`` payload bytes, as soon as any arrive; ``b""`` at the end.

        Raises :class:`BodyEnded` when the connection ends first, ``TimeoutError``
        (:class:`TooSlow` included) when the client is silent or too slow,
        :class:`FramingError` for a malformed chunked body, ``OSError`` from the
        socket.
        """
        if size <= 0 or self._phase == "done":
            return b""
        try:
            if self._evicted:
                raise TooSlow("stopped for a new body while below the minimum rate")
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
        previous, self.min_rate = self.timeout, 0
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
        self._pause_for = 0.0
        self._woken = True
        _release(self._wake_lock)

    def shutdown_read(self) -> None:
        """Wake a read blocked on a silent client: later reads end at once."""
        self.broken = True
        self.wake()
        if self._shutdown is not None:
            self._shutdown()

    def evict(self) -> None:
        """End the body now, as too slow: its place goes to a new one."""
        self._evicted = True
        if self.waiting_since is not None:
            self.shutdown_read()
        else:
            self.wake()

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
            self._trailers = [*(self._trailers or ()), _field(line)]

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
        """One read into the buffer, for framing (never needed for payload)."""
        chunk = self._recv(MIN_RECV)
        if not chunk:
            raise self._ended()
        self._buffer += chunk

    def _raw(self, size: int) -> bytes:
        """At most ``size`` bytes of the body stream, from the buffer or one read."""
        if self._buffer:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data
        gathered = self._pause_for > 0  # bytes gathered for a while: take them in one read
        want = min(size, max(self._recv_size, 2 * BATCH_TARGET) if gathered else self._recv_size)
        data = self._recv(want)
        if not data:
            raise self._ended()
        if len(data) == want == self._recv_size:
            self._recv_size = min(self._recv_size * 2, MAX_RECV)
        elif len(data) * 4 < self._recv_size:
            self._recv_size = max(self._recv_size // 2, MIN_RECV)
        self._pause_for = self._pause_length(len(data), gathered)
        return data

    def _ended(self) -> Exception:
        if self._evicted:
            return TooSlow("stopped for a new body while below the minimum rate")
        return BodyEnded(f"connection ended after {self.received} body bytes")

    def _pause_length(self, count: int, gathered: bool = False) -> float:
        """How long the body's bytes may gather before the next read: 0 unless it
        trickles (slower than TRICKLE_RATE, judged after BATCH_WAIT; a large read
        that did not follow a pause shows it does not); then the time
        BATCH_TARGET bytes take at its rate, within BATCH_WAIT..MAX_PAUSE."""
        elapsed = time.monotonic() - self._started
        if not self._batch_wait or self._woken or (count >= BATCH_BYTES and not gathered) \
                or elapsed < self._batch_wait:
            return 0.0
        rate = self.received / elapsed
        if rate >= TRICKLE_RATE:
            return 0.0
        return min(max(BATCH_TARGET / max(rate, 1.0), self._batch_wait), self._max_pause)

    # -- waiting ------------------------------------------------------------------
    def _recv(self, size: int) -> bytes:
        if self._continue:
            self._continue = False
            self._source.sendall(CONTINUE)
        paused_at = time.monotonic()
        if self._pause_for:  # not past the end of the rate window: it is judged on time
            window_left = self._window_end - paused_at if self.min_rate else self._pause_for
            self._pause(min(self._pause_for, max(window_left, 0)))
        now = time.monotonic()
        if not self._started:
            self._started, self._window_end = now, now + self.rate_window
        self.waiting_since = now
        try:
            return self._recv_in_time(size, now, paused_at)
        finally:
            self.waiting_since = None

    def _recv_in_time(self, size: int, now: float, since: float) -> bytes:
        """One read, bounded by the timeout (counted ``since`` the pause before
        it began) and, with a minimum rate, judged at the end of each rate window
        it spans."""
        deadline = None if self.timeout is None else since + self.timeout
        while True:
            wait = None if deadline is None else max(deadline - now, 0)
            window_ends = self.min_rate and (wait is None or self._window_end - now < wait)
            if window_ends:
                wait = max(self._window_end - now, 0)
            try:
                data = self._source.recv(size, wait)
            except TimeoutError:
                if not window_ends:
                    raise TimeoutError("no data within the timeout") from None
                now = time.monotonic()
                self._judge_rate(now)
                continue
            if self.min_rate:
                self._judge_rate(time.monotonic(), len(data))
            return data

    def _judge_rate(self, now: float, arriving: int = 0) -> None:
        """At the end of a rate window: too few bytes in it ends the body."""
        if not self.min_rate or now < self._window_end:
            return
        if self.received + arriving - self._window_mark < self.min_rate * self.rate_window:
            raise TooSlow(f"below {self.min_rate:g} bytes/s over {self.rate_window:g} s")
        self._window_mark, self._window_end = self.received + arriving, now + self.rate_window

    def _pause(self, seconds: float) -> None:
        """Let a trickling client's bytes gather, unless woken meanwhile."""
        if self._wake_lock.acquire(timeout=seconds):
            _release(self._wake_lock)  # stays woken: later pauses return at once


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
