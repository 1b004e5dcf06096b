"""BodyReader and RequestBody against a scripted socket: what arrives, when it
stalls, where the body ends, and how a stop drains what is still coming."""

from __future__ import annotations

import threading
import time
from typing import Optional, Union

import pytest

from tuswsgi import body as body_module
from tuswsgi.body import (
    CONNECTION_KEY,
    BodyInterrupted,
    BodyMalformed,
    BodyTimeout,
    ClientGone,
    Connection,
    RequestBody,
)
from tuswsgi.server.framing import (
    CONTINUE,
    DRAIN_BYTES,
    BodyEnded,
    BodyReader,
    FramingError,
    TooSlow,
    body_length,
    head_end,
)

Step = Union[bytes, str]  # bytes arrive; "timeout" raises; "eof" ends the stream


class ScriptedSocket:
    """Answers ``recv`` from a script, one step at a time, never more than asked."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.sent = b""
        self.timeout: Optional[float] = None
        self.shut = False
        self.recv_sizes: list[int] = []

    def recv(self, size: int, timeout: Optional[float] = None) -> bytes:
        self.recv_sizes.append(size)
        if self.shut or not self.steps:
            return b""
        step = self.steps[0]
        if step == "timeout":
            self.steps.pop(0)
            raise TimeoutError("timed out")
        if step == "eof":
            return b""
        assert isinstance(step, bytes)
        data, rest = step[:size], step[size:]
        if rest:
            self.steps[0] = rest
        else:
            self.steps.pop(0)
        return data

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def settimeout(self, value: Optional[float]) -> None:
        self.timeout = value

    def gettimeout(self) -> Optional[float]:
        return self.timeout

    def shutdown(self) -> None:
        self.shut = True


def reader(sock: ScriptedSocket, buffered: bytes = b"", length: Optional[int] = None,
           **options) -> BodyReader:
    options.setdefault("batch_wait", 0)
    return BodyReader(sock, buffered, length, shutdown=sock.shutdown, **options)


def read_all(body: BodyReader) -> bytes:
    return b"".join(iter(lambda: body.read(1 << 20), b""))


# -- Content-Length -----------------------------------------------------------------

def test_reads_return_what_arrived_without_waiting_for_a_block():
    body = reader(ScriptedSocket(b"abc", b"defg"), length=7)
    assert body.read(1 << 20) == b"abc"
    assert body.read(1 << 20) == b"defg"
    assert body.complete and body.read(10) == b""


def test_buffered_bytes_come_first_and_a_pipelined_request_is_given_back():
    body = reader(ScriptedSocket(), buffered=b"12345HEAD / HTTP/1.1\r\n", length=5)
    assert read_all(body) == b"12345"
    assert body.leftover() == b"HEAD / HTTP/1.1\r\n"


def test_a_timeout_keeps_every_byte_read_before_it():
    body = reader(ScriptedSocket(b"part", "timeout"), length=100)
    assert body.read(1 << 20) == b"part"
    with pytest.raises(TimeoutError):
        body.read(1 << 20)
    assert body.received == 4 and body.broken


def test_the_connection_ending_early_is_reported():
    body = reader(ScriptedSocket(b"ab", "eof"), length=10)
    assert body.read(10) == b"ab"
    with pytest.raises(BodyEnded):
        body.read(10)


def test_never_reads_past_the_declared_length():
    sock = ScriptedSocket(b"x" * 10)
    body = reader(sock, length=4)
    assert read_all(body) == b"xxxx"
    assert max(sock.recv_sizes) == 4


def test_reads_grow_for_a_fast_client_and_shrink_for_a_slow_one():
    sock = ScriptedSocket(*[b"x" * (1 << 20)] * 8, *[b"y" * 100] * 8)
    body = reader(sock, length=8 * (1 << 20) + 800)
    while not body.complete:
        body.read(1 << 20)
    assert max(sock.recv_sizes) == 1 << 20  # doubled up to MAX_RECV
    assert sock.recv_sizes[-1] < 64 * 1024  # back down while only 100 bytes come at a time


def test_100_continue_goes_out_at_the_first_read_only():
    sock = ScriptedSocket(b"hello")
    body = reader(sock, length=5, expect_continue=True)
    assert sock.sent == b"" and not body.continue_sent
    assert body.read(5) == b"hello"
    assert sock.sent == CONTINUE


# -- settling before the response ------------------------------------------------------

def test_a_small_rest_is_drained_and_the_connection_kept():
    sock = ScriptedSocket(b"x" * 1000, b"NEXT")
    body = reader(sock, length=1000)
    assert body.settle() is True
    assert body.leftover() == b"" and sock.steps == [b"NEXT"]  # the next request is untouched


def test_a_large_rest_closes_the_connection_without_reading_it():
    sock = ScriptedSocket(b"x" * 10)
    body = reader(sock, length=DRAIN_BYTES + 1)
    assert body.settle() is False
    assert sock.recv_sizes == []


def test_no_100_continue_sent_means_close_without_waiting():
    sock = ScriptedSocket()
    body = reader(sock, length=10, expect_continue=True)
    assert body.settle() is False
    assert sock.recv_sizes == [] and sock.sent == b""


def test_a_client_that_stalls_during_the_drain_closes_the_connection():
    body = reader(ScriptedSocket(b"x" * 5, "timeout"), length=100)
    assert body.settle() is False


# -- chunked -------------------------------------------------------------------------------

def test_chunked_body_with_extensions_and_trailers():
    wire = b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    body = reader(ScriptedSocket(wire[:7], wire[7:20], wire[20:]))
    assert read_all(body) == b"hello world"
    assert body.leftover() == b"NEXT"


def test_trailer_fields_are_kept_once_the_body_ended():
    wire = (b"5\r\nhello\r\n0\r\nUpload-Checksum: sha1 abc=\r\nX-Other:\t two words \r\n"
            b"upload-checksum:x\r\n\r\nNEXT")
    body = reader(ScriptedSocket(*[wire[i:i + 3] for i in range(0, len(wire), 3)]))
    assert body.trailers == []
    assert body.read(3) == b"hel"
    assert body.trailers == []  # not before the body is complete
    assert read_all(body) == b"lo"
    assert body.trailers == [("Upload-Checksum", "sha1 abc="), ("X-Other", "two words"),
                             ("upload-checksum", "x")]
    assert b"NEXT".startswith(body.leftover())  # nothing past the trailer section is taken


def test_a_content_length_body_has_no_trailers():
    body = reader(ScriptedSocket(b"hello"), length=5)
    assert read_all(body) == b"hello" and body.trailers == []


@pytest.mark.parametrize("line", [b"no colon", b" Folded: x", b"Bad Name: x", b"Name : x", b": x",
                                  b"N\x80me: x"])
def test_malformed_trailer_fields_are_refused(line):
    body = reader(ScriptedSocket(b"1\r\na\r\n0\r\n" + line + b"\r\n\r\n"))
    with pytest.raises(FramingError):
        read_all(body)
    assert body.broken and body.settle() is False


def test_a_trailer_section_is_bounded_like_a_header_block():
    lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))  # ~70 KiB
    with pytest.raises(FramingError):
        read_all(reader(ScriptedSocket(b"1\r\na\r\n0\r\n" + lines + b"\r\n")))
    endless = reader(ScriptedSocket(b"1\r\na\r\n0\r\nX: ", *[b"v" * 4096] * 20))
    with pytest.raises(FramingError):
        read_all(endless)


def test_request_body_gives_the_trailer_by_name():
    sock = ScriptedSocket(b"2\r\nab\r\n0\r\nupload-checksum: sha1 x\r\n\r\n")
    request = RequestBody(environ_for(sock, None), None, 5)
    assert request.reads_trailers
    assert request.read(10) == b"ab" and request.read(10) == b""
    assert request.trailer("Upload-Checksum") == ["sha1 x"]
    assert request.trailer("Other") == []


def test_a_plain_wsgi_input_has_no_trailers():
    import io
    request = RequestBody({"wsgi.input": io.BytesIO(b"ab")}, None, 5)
    assert not request.reads_trailers
    assert request.read(10) == b"ab" and request.trailer("Upload-Checksum") == []


def test_chunked_body_split_at_every_byte():
    wire = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    body = reader(ScriptedSocket(*[wire[i:i + 1] for i in range(len(wire))]))
    assert read_all(body) == b"abcde"
    assert body.leftover() == b""


@pytest.mark.parametrize("wire", [b"zz\r\n", b"5\r\nhelloXX", b"5\nhello\r\n", b"-1\r\n",
                                  b"1" * 20 + b"\r\n", b"5;a\rb\r\nhello\r\n"])
def test_malformed_chunk_framing_is_refused(wire):
    body = reader(ScriptedSocket(wire))
    with pytest.raises(FramingError):
        read_all(body)
    assert body.broken and body.settle() is False


def test_an_endless_chunk_size_line_is_refused_once_past_the_limit():
    sock = ScriptedSocket(*[b"1" * 4096] * 4)
    with pytest.raises(FramingError):
        read_all(reader(sock))


# -- RequestBody: the application's side ------------------------------------------------------

def environ_for(sock: ScriptedSocket, length: Optional[int]) -> dict:
    framed = reader(sock, length=length)
    return {CONNECTION_KEY: Connection(framed, sock.sendall)}


def test_request_body_maps_the_ways_a_body_ends():
    with pytest.raises(BodyTimeout):
        RequestBody(environ_for(ScriptedSocket("timeout"), 10), 10, 60).read(10)
    cut = RequestBody(environ_for(ScriptedSocket(b"ab", "eof"), 10), 10, 60)
    assert cut.read(10) == b"ab"
    with pytest.raises(ClientGone):
        cut.read(10)
    with pytest.raises(BodyMalformed):
        RequestBody(environ_for(ScriptedSocket(b"zz\r\n"), None), None, 60).read(10)


def test_under_the_worker_its_timeout_holds_not_the_applications():
    """The server owns the connection's timeouts: the application's own
    network_timeout applies only under other servers."""
    environ = environ_for(ScriptedSocket(), 10)
    environ[CONNECTION_KEY].body.timeout = 42.0
    RequestBody(environ, 10, 5.0)
    assert environ[CONNECTION_KEY].body.timeout == 42.0


def test_a_trickling_client_is_read_in_batches_half_a_second_apart():
    """10 bytes every 50 ms (200 B/s): once half a second has shown the rate, the
    reader pauses between reads, so one read gathers many pieces."""
    sock = TricklingSocket(200, 0.05)
    body = BodyReader(sock, b"", 2000, batch_wait=0.5, max_pause=0.5)
    sizes = []
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        sizes.append(len(body.read(1 << 20)))
    assert sizes[:3] == [10, 10, 10]  # no pause while the rate is unknown
    assert max(sizes) >= 80  # later reads, half a second apart, gather ~10 pieces
    assert len(sizes) < 20


def test_a_fast_client_is_never_paused():
    sock = ScriptedSocket(*[b"x" * 1000] * 50)
    body = BodyReader(sock, b"", 50_000, batch_wait=30)
    started = time.monotonic()
    while not body.complete:
        body.read(1 << 20)
    assert time.monotonic() - started < 5  # not one 30 s pause


def test_a_stop_ends_the_batching_pause_at_once():
    sock = TricklingSocket(1, 0)
    body = BodyReader(sock, b"", 1000, batch_wait=30, shutdown=sock.shutdown)
    assert body.read(100) == b"z" * 10
    threading.Timer(0.1, body.wake).start()
    started = time.monotonic()
    sock.shutdown()
    with pytest.raises(BodyEnded):  # the pause ended at the wake, then the shut read ended
        body.read(100)
    assert time.monotonic() - started < 5  # not the 30 s pause


def test_wakes_from_several_threads_race_without_an_error_and_keep_reads_prompt():
    """The watcher and a shutdown may both wake a reader, while it pauses."""
    body = BodyReader(TricklingSocket(1, 0), b"", 1000, batch_wait=30)
    body._pause_for = 30
    wakers = [threading.Thread(target=body.wake) for _ in range(8)]
    for waker in wakers:
        waker.start()
    started = time.monotonic()
    for _ in range(3):
        body._pause(30)  # returns at once from now on, however the wakes fell
    for waker in wakers:
        waker.join()
    assert time.monotonic() - started < 5


class TricklingSocket(ScriptedSocket):
    """Real time: ``count`` pieces ``gap`` seconds apart, then silence until shut."""

    def __init__(self, count: int, gap: float) -> None:
        super().__init__()
        self.count, self.gap = count, gap
        self.woken = threading.Event()
        self.queued = 0
        self.last = time.monotonic()

    def recv(self, size: int, timeout: Optional[float] = None) -> bytes:
        """Pieces of 10 bytes arrive every ``gap``; a read takes all that arrived."""
        if self.count:
            arrived = int((time.monotonic() - self.last) / self.gap) if self.gap else 1
            if arrived == 0:
                time.sleep(self.gap)
                arrived = 1
            arrived = min(arrived, self.count)
            self.count -= arrived
            self.last = time.monotonic()
            return b"z" * (10 * arrived)
        if not self.woken.wait(timeout):  # a silent client: the shutdown or the timeout ends it
            raise TimeoutError("timed out")
        return b""

    def shutdown(self) -> None:
        self.shut = True
        self.woken.set()


def drain_with_watcher(sock: TricklingSocket, length: int) -> tuple[int, float]:
    """Read as the store does while a watcher calls ``interrupt`` every 50 ms, as the
    lock watcher does after a hand-over request; return bytes kept and seconds."""
    body = RequestBody(environ_for(sock, length), length, 60)
    done = threading.Event()

    def watcher() -> None:
        while not done.wait(0.05):
            body.interrupt("handover")

    thread = threading.Thread(target=watcher, daemon=True)
    started = time.monotonic()
    thread.start()
    kept = 0
    try:
        with pytest.raises(BodyInterrupted):
            while True:
                kept += len(body.read(1 << 20))
    finally:
        done.set()
        thread.join(5)
    return kept, time.monotonic() - started


def test_a_stop_keeps_reading_while_bytes_keep_arriving():
    """Bytes 50 ms apart are still coming: all 10 pieces are stored."""
    kept, _ = drain_with_watcher(TricklingSocket(10, 0.05), 1000)
    assert kept == 100


def test_a_stop_wakes_a_read_blocked_on_a_silent_client():
    kept, seconds = drain_with_watcher(TricklingSocket(0, 0), 1000)
    assert kept == 0
    assert seconds < body_module.DRAIN_SECONDS  # woken after a gap, not at the 60 s timeout


def test_a_stop_ends_a_client_that_never_pauses_after_the_drain_time():
    kept, seconds = drain_with_watcher(TricklingSocket(10_000, 0.01), 1_000_000)
    assert 0 < kept < 100_000
    assert seconds >= body_module.DRAIN_SECONDS


def test_without_the_worker_a_stop_is_seen_at_the_next_read():
    import io
    body = RequestBody({"wsgi.input": io.BytesIO(b"abcdef")}, 6, 60)
    assert body.read(3) == b"abc"
    body.interrupt("stopped")
    with pytest.raises(BodyInterrupted):
        body.read(3)


# -- the minimum rate ------------------------------------------------------------------

def test_a_drip_below_the_minimum_rate_ends_as_too_slow_with_its_bytes():
    """10 bytes every 50 ms is 200 B/s: under a 1,000 B/s minimum judged over
    0.3 s windows, the read ends at the first window's end, bytes kept."""
    body = BodyReader(TricklingSocket(1000, 0.05), b"", 10_000, batch_wait=0, timeout=5,
                      min_rate=1000, rate_window=0.3)
    kept = 0
    started = time.monotonic()
    with pytest.raises(TooSlow):
        while True:
            kept += len(body.read(1 << 20))
    assert 0.25 < time.monotonic() - started < 2
    assert kept == body.received > 0


def test_a_client_above_the_minimum_rate_is_never_cut():
    body = BodyReader(TricklingSocket(100, 0.01), b"", 1000, batch_wait=0, timeout=5,
                      min_rate=200, rate_window=0.2)
    assert read_all(body) == b"z" * 1000


def test_a_silent_client_is_judged_at_the_window_end_not_the_timeout():
    body = BodyReader(TricklingSocket(0, 0), b"", 1000, batch_wait=0, timeout=30,
                      min_rate=100, rate_window=0.2)
    started = time.monotonic()
    with pytest.raises(TooSlow):
        body.read(100)
    assert time.monotonic() - started < 5


def test_an_evicted_body_ends_as_too_slow_even_while_waiting():
    sock = TricklingSocket(0, 0)
    body = BodyReader(sock, b"", 1000, batch_wait=0, timeout=30, shutdown=sock.shutdown)
    threading.Timer(0.1, body.evict).start()
    started = time.monotonic()
    with pytest.raises(TooSlow):
        body.read(100)
    assert time.monotonic() - started < 5


# -- the head ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, searched, end", [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 0, 27),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 25, 27),  # the end straddles what was searched
    (b"GET / HTTP/1.1\r\nHost: a\r\n", 0, -1),
    (b"", 0, -1),
])
def test_head_end(data, searched, end):
    assert head_end(data, searched) == end


@pytest.mark.parametrize("headers, length", [
    ([], 0),
    ([("CONTENT-LENGTH", "12")], 12),
    ([("TRANSFER-ENCODING", "chunked")], None),
    ([("TRANSFER-ENCODING", " Chunked ")], None),
])
def test_body_length(headers, length):
    assert body_length(headers) == length


@pytest.mark.parametrize("headers", [
    [("CONTENT-LENGTH", "12"), ("TRANSFER-ENCODING", "chunked")],
    [("TRANSFER-ENCODING", "gzip, chunked")],
    [("TRANSFER-ENCODING", "chunked"), ("TRANSFER-ENCODING", "chunked")],
    [("CONTENT-LENGTH", "1"), ("CONTENT-LENGTH", "1")],
    [("CONTENT-LENGTH", "+1")],
    [("CONTENT-LENGTH", "\u0661")],  # ARABIC-INDIC DIGIT ONE: a digit, but not an ASCII one
    [("CONTENT-LENGTH", "")],
])
def test_ambiguous_framing_is_refused(headers):
    with pytest.raises(FramingError):
        body_length(headers)


@pytest.mark.parametrize("rate, count, gathered, pause", [
    (1024, 100, False, 5.0),             # a drip: the longest pause
    (8 * 1024, 800, False, 4.0),         # a phone at 8 KiB/s: about 32 KiB gather in 4 s
    (8 * 1024, 32 * 1024, True, 4.0),    # ... and what gathered in the pause keeps it paused
    (30 * 1024, 3000, False, 32 / 30),   # just below the trickle rate: about a second
    (40 * 1024, 4000, False, 0.0),       # not trickling
    (1024, 20_000, False, 0.0),          # a large read without a pause shows it is not trickling
])
def test_a_trickling_body_is_read_when_about_32_kib_can_have_gathered(rate, count, gathered, pause):
    body = BodyReader(ScriptedSocket(), b"", 10 << 20)
    body._started = time.monotonic() - 10
    body.received = rate * 10
    assert body._pause_length(count, gathered) == pytest.approx(pause, rel=0.01)
