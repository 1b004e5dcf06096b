"""tuswsgi's gunicorn worker, and every other place tuswsgi touches gunicorn.

``tuswsgi.gunicorn_conf`` names the worker (``worker_class =
"tuswsgi.worker.TusWorker"``), as uvicorn ships ``UvicornWorker``: it is
gunicorn's threaded worker with three jobs of its own.

- **Framing.**  A request body is read through a :class:`~tuswsgi.framing.BodyReader`
  that this worker builds from gunicorn's parse of the head, so the position on
  the connection is exact whatever the application does.  An answer given before
  the body was read keeps the connection only when the rest is small
  (:data:`~tuswsgi.framing.DRAIN_BYTES`); otherwise it says ``Connection: close``
  and the connection closes *lingering*: the write side is shut after the
  response and what the client still sends is read and dropped for a while, so
  the client (or nginx) reads the answer instead of a reset.  ``100 Continue``
  goes out when the body is first read, never for a refused request.
- **Capacity.**  Threads are many and small (and the GIL's switch interval
  suits thousands of them, :data:`SWITCH_INTERVAL`); at most ``threads -
  reserved_threads`` of them read bodies at once, so requests without a body
  (HEAD, OPTIONS, DELETE) always find one, and a body beyond that is refused at
  once with 503.  A worker takes new connections only while it has room, so a
  connection never waits in a full worker while another one is free; when every
  worker is full, connections that waited :data:`OVERFLOW_GRACE` are taken as
  threads come free and answered (503 for a body).  New and idle connections
  wait in the event loop, not on a thread, and starting a thread never holds up
  the loop.
- **Shutdown.**  SIGTERM stops every running body at once (its bytes are kept,
  the client gets 503 and resumes), instead of waiting ``graceful_timeout``.

The gunicorn internals relied on are checked when the worker boots; if one is
missing the worker refuses to start and says which.  Other workers get what can
be done from outside: :func:`post_worker_init` (a gunicorn server hook) keeps a
sync worker alive through long bodies, and :func:`warn_if_unsupported` says at
boot what to run instead.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import select
import selectors
import signal
import socket
import sys
import threading
import time
from datetime import datetime
from functools import partial
from typing import Any, Callable, Iterator, Optional

import gunicorn
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.message import Request as GunicornRequest
from gunicorn.workers.gthread import TConn, ThreadWorker

from .body import CONNECTION_KEY, Connection, interrupt_all, reading
from .config import load_config
from .framing import BodyReader
from .threads import ThreadPool

log = logging.getLogger("tuswsgi")

#: gunicorn releases this worker was built and tested against (setup.py says the
#: same); CI runs the worker's tests on the oldest, GUNICORN_FLOOR, too.
SUPPORTED_GUNICORN = ((27, 0), (28, 0))
GUNICORN_FLOOR = "27.0.0"
#: Stack reserved per thread: thousands of threads, each needing little.
THREAD_STACK = 512 * 1024
#: How long a thread may hold the GIL before a thread waiting for it asks it to
#: let go (``sys.setswitchinterval``).  Every waiting thread wakes this often to
#: check; at CPython's 5 ms, a few hundred threads waiting at once wake 100,000
#: times a second, which slows the GIL's hand-overs, so more threads wait: past
#: ~1,500 slow uploads per worker the worker collapsed into that state (both
#: cores busy, uploads and new requests starved).  Threads here give the GIL up
#: at every system call, so a longer interval only bounds pure-Python stretches.
SWITCH_INTERVAL = 0.05
#: When every worker is full, a connection waits this long before a full worker
#: takes it anyway (to serve it if it has no body, or refuse it with 503).
OVERFLOW_GRACE = 0.25
#: After an early answer the connection lingers, reading and dropping what the
#: client still sends, until it stops for LINGER_IDLE or LINGER_TOTAL passes.
LINGER_IDLE = 5.0
LINGER_TOTAL = 30.0
#: The event loop checks in with gunicorn's arbiter this often (its timeout is 120 s).
NOTIFY_INTERVAL = 1.0
#: After running out of file descriptors, accepting pauses this long.
ACCEPT_PAUSE = 0.5
#: gunicorn's exit status for "the worker could not boot".
_WORKER_BOOT_ERROR = 3

#: How often a body being read checks in for a worker that is not tuswsgi's.
HEARTBEAT_INTERVAL = 1.0

#: Set once a TusWorker booted in this process, or the hook ran for another worker.
_booted = False
_hooked = False


def missing_interfaces() -> list[str]:
    """The gunicorn internals this worker relies on that this gunicorn lacks."""
    missing = []
    version = tuple(gunicorn.version_info[:2])
    low, high = SUPPORTED_GUNICORN
    if not low <= version < high:
        missing.append(f"gunicorn {gunicorn.__version__} (supported: >={low[0]}.{low[1]},<{high[0]}.0)")
    needs = [(ThreadWorker, ("handle", "finish_request", "enqueue_req", "set_accept_enabled",
                             "get_thread_pool", "wait_for_and_dispatch_events", "on_pending_socket_readable",
                             "murder_keepalived", "handle_exit", "_keepalive_after", "notify")),
             (TConn, ("init", "close", "set_timeout")),
             (GunicornRequest, ("_expected_100_continue", "should_close")),
             (gunicorn_wsgi, ("create",)), (LengthReader, ("read",)), (ChunkedReader, ("read",)),
             (socket.socket, ("_accept",))]  # CPython's, used by _Socket.accept_from
    for owner, names in needs:
        missing += [f"{getattr(owner, '__name__', owner)}.{name}" for name in names
                    if not hasattr(owner, name)]
    return missing


class _FramedInput:
    """``wsgi.input`` (and gunicorn's idea of the body): reads go through the
    :class:`BodyReader`, so gunicorn's own drain before the next request is exact."""

    def __init__(self, reader: BodyReader) -> None:
        self.reader = reader

    @property
    def failed(self) -> bool:  # gunicorn closes instead of draining when set
        return self.reader.broken

    def read(self, size: Optional[int] = None) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.reader.read(1 << 20), b""))
        data = b""
        while len(data) < size:  # WSGI's read(n) returns n bytes unless the body ends
            more = self.reader.read(size - len(data))
            if not more:
                break
            data += more
        return data

    def readline(self, size: Optional[int] = None) -> bytes:
        line = b""
        while not line.endswith(b"\n") and (size is None or size < 0 or len(line) < size):
            byte = self.reader.read(1)
            if not byte:
                break
            line += byte
        return line

    def readlines(self, hint: Optional[int] = None) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class _Socket(socket.socket):
    """A client socket whose blocking mode has a timeout, so a client that stops
    sending its request head, or stops reading its response, frees the thread.

    Under thousands of threads every system call is also a wait to get the GIL
    back, so this socket makes fewer.  Mode changes (an ``ioctl`` each, five per
    request from gunicorn): the timeout is set only when it changes, and the
    non-blocking mode gunicorn asks for while the connection waits in the event
    loop is not applied, since there only ``epoll`` looks at it (the lingering
    close, which reads there, sets it with :meth:`socket.socket.setblocking`).
    Reads and sends: in timeout mode CPython polls before each one; here a read
    or send that can complete at once goes straight to the (non-blocking)
    descriptor, and only one that cannot waits the socket's way.
    """

    __slots__ = ("io_timeout",)
    io_timeout: float

    @classmethod
    def accept_from(cls, listener: socket.socket, io_timeout: float) -> tuple[_Socket, Any]:
        """``listener.accept()`` without its intermediate socket object, whose
        creation asks the kernel for the address again."""
        fd, address = listener._accept()  # type: ignore[attr-defined]
        sock = cls(listener.family, listener.type, listener.proto, fileno=fd)
        sock.io_timeout = io_timeout
        return sock, address

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.io_timeout)

    def settimeout(self, value: Optional[float]) -> None:
        if value != self.gettimeout():
            super().settimeout(value)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if not flags and self.gettimeout():
            try:
                return os.read(self.fileno(), bufsize)
            except BlockingIOError:
                pass
        return super().recv(bufsize, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        if not flags and self.gettimeout():
            try:
                view = view[os.write(self.fileno(), view):]
            except BlockingIOError:
                pass
            if not view:
                return
        super().sendall(view, flags)


class _Conn(TConn):
    """A connection whose close after an early answer lingers (see the module doc)."""

    worker: Optional[TusWorker] = None

    def close(self, graceful: bool = False) -> None:
        if graceful and self.worker is not None:
            self.worker.linger(self)
        else:
            super().close(graceful)


class TusWorker(ThreadWorker):
    """gunicorn's gthread worker, sized and framed for uploads (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = load_config()
        reserved = min(settings.reserved_threads, self.cfg.threads // 2)
        self.body_slots = max(self.cfg.threads - reserved, 1)
        self.io_timeout = settings.network_timeout
        self._bodies = 0
        self._bodies_lock = threading.Lock()
        self._busy = 0
        self._lingering: dict[_Conn, tuple[float, float]] = {}
        self._accept_paused_until = 0.0
        self._overflow_since: Optional[float] = None
        self._listener_addresses: dict[int, Any] = {}
        self._notified = 0.0

    # -- boot -------------------------------------------------------------------
    def init_process(self) -> None:
        global _booted
        missing = missing_interfaces()
        if missing:
            self.log.critical("tuswsgi.worker.TusWorker cannot run on this gunicorn; missing: %s. "
                              "Install a supported gunicorn (see setup.py).", ", ".join(missing))
            sys.exit(_WORKER_BOOT_ERROR)
        _raise_fd_limit(self.log)
        threading.stack_size(THREAD_STACK)
        sys.setswitchinterval(SWITCH_INTERVAL)
        _booted = True
        super().init_process()

    def get_thread_pool(self) -> ThreadPool:
        """Request threads whose start never holds up the event loop."""
        return ThreadPool(self.cfg.threads)

    # -- connections ----------------------------------------------------------------
    def accept(self, listener: socket.socket) -> None:
        """Take a connection and wait, in the event loop, for its first request."""
        try:
            client, address = _Socket.accept_from(listener, self.io_timeout)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._pause_accepting(exc)
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = _Conn(self.cfg, client, address, self._listener_address(listener))
        conn.worker = self
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
        self._update_accepting()

    def _listener_address(self, listener: socket.socket) -> Any:
        """The listener's own address (asked of the kernel once, not per connection)."""
        address = self._listener_addresses.get(listener.fileno())
        if address is None:
            address = self._listener_addresses[listener.fileno()] = listener.getsockname()
        return address

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors: stop accepting for a moment rather than die.  The
        connections wait in the listen queue; those in flight carry on."""
        self.log.error("accept failed (%s); not accepting for %.1f s", exc.strerror, ACCEPT_PAUSE)
        self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
        self._update_accepting()

    def enqueue_req(self, conn: TConn) -> None:
        self._busy += 1
        super().enqueue_req(conn)
        self._update_accepting()

    def finish_request(self, conn: TConn, fs: Any) -> None:
        self._busy -= 1
        super().finish_request(conn, fs)
        self._update_accepting()

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self._has_room())

    def _has_room(self) -> bool:
        """Room for one more connection: counting those accepted and about to
        send a request, fewer than the body slots are taken."""
        return (self._busy + len(self.pending_conns) < self.body_slots
                and self._bodies < self.body_slots and time.monotonic() >= self._accept_paused_until)

    def _update_accepting(self) -> None:
        if self.alive and self.nr_conns < self.worker_connections:
            self.set_accept_enabled(True)
        else:
            super().set_accept_enabled(False)

    def notify(self) -> None:
        """Check in with the arbiter at most every :data:`NOTIFY_INTERVAL` rather
        than every turn of the event loop (each is a system call, see _Socket)."""
        now = time.monotonic()
        if now - self._notified >= NOTIFY_INTERVAL:
            self._notified = now
            super().notify()

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """One turn of the event loop, plus what this worker checks every turn."""
        if not self.alive:
            interrupt_all("shutdown")  # wakes bodies stuck on silent clients
            timeout = min(timeout, 0.1)
        elif not self._accepting:
            timeout = min(timeout, OVERFLOW_GRACE / 5)
        super().wait_for_and_dispatch_events(timeout)
        now = time.monotonic()
        self._end_lingering(now)
        if self.alive and not self._accepting:
            self._accept_overflow(now)
            self._update_accepting()

    def _accept_overflow(self, now: float) -> None:
        """Every worker is full and connections wait: once the queue has not
        emptied for a grace period (a worker with room would have taken them),
        take them as threads come free, every turn until it empties, so each
        client is answered (a body gets 503) rather than left waiting."""
        readable = [s for s in self.sockets if select.select([s], [], [], 0)[0]]
        if not readable:
            self._overflow_since = None
            return
        if self._overflow_since is None:
            self._overflow_since = now
        if now - self._overflow_since < OVERFLOW_GRACE or self._busy >= self.cfg.threads \
                or self.nr_conns >= self.worker_connections or now < self._accept_paused_until:
            return
        for listener in readable:
            listener.setblocking(False)
            self._accept_while_threads_are_free(listener)

    def _accept_while_threads_are_free(self, listener: socket.socket) -> None:
        """Drain the listen queue into free threads: every waiting client is
        answered now (a body with 503), not one per turn of the loop."""
        while self._busy + len(self.pending_conns) < self.cfg.threads \
                and self.nr_conns < self.worker_connections:
            taken = self.nr_conns
            self.accept(listener)
            if self.nr_conns == taken:  # the queue is empty
                return

    # -- lingering close -------------------------------------------------------------
    def linger(self, conn: _Conn) -> None:
        """Shut the write side after the response, then read and drop what the
        client still sends until it stops or closes (in the event loop)."""
        try:
            socket.socket.shutdown(conn.sock, socket.SHUT_WR)
            socket.socket.setblocking(conn.sock, False)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, conn))
        except (OSError, ValueError, KeyError):
            TConn.close(conn)
            return
        now = time.monotonic()
        self._lingering[conn] = (now + LINGER_TOTAL, now + LINGER_IDLE)

    def _on_linger_readable(self, conn: _Conn, _sock: Any) -> None:
        try:
            data = socket.socket.recv(conn.sock, 64 * 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_lingering(conn)
            return
        total, _ = self._lingering[conn]
        self._lingering[conn] = (total, time.monotonic() + LINGER_IDLE)

    def _end_lingering(self, now: float) -> None:
        for conn, deadlines in list(self._lingering.items()):
            if now >= min(deadlines):
                self._close_lingering(conn)

    def _close_lingering(self, conn: _Conn) -> None:
        self._lingering.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        TConn.close(conn)

    # -- shutdown ------------------------------------------------------------------
    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: stop accepting, and stop every running body now."""
        super().handle_exit(sig, frame)
        interrupt_all("shutdown")

    # -- one request ----------------------------------------------------------------
    def handle_request(self, req: Any, conn: TConn) -> bool:
        """Run the application for one HTTP/1 request with a framed body; return
        whether the connection may carry another request."""
        reader = _frame(req, conn)
        slot = self._body_slot(reader)
        connection = Connection(reader, conn.sock.sendall, busy=slot is None)
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = gunicorn_wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            environ[CONNECTION_KEY] = connection
            self._count_request(resp)
            respiter = self.wsgi(environ, _settling(resp, reader, conn.sock, slot))
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(respiter, "close"):
                    respiter.close()
        except OSError:
            raise
        except Exception:
            if resp is not None and resp.headers_sent:
                self.log.exception("Error handling request")
                raise StopIteration() from None
            raise
        finally:
            if slot is not None:
                slot.release()
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        if resp.should_close() or not reader.complete:
            return False
        conn.parser.unreader.unread(reader.leftover())
        return True

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        """Nothing to drain: the connection is kept only when its BodyReader read
        the body to its end (gunicorn's drain would set and reset the timeout)."""
        return keepalive

    def _body_slot(self, reader: BodyReader) -> Optional[_Slot]:
        """A body slot for the request (a no-op one when it has no body), or
        ``None`` when every slot is taken."""
        if reader.length == 0:
            return _Slot(None)
        with self._bodies_lock:
            if self._bodies >= self.body_slots:
                return None
            self._bodies += 1
        return _Slot(self._release_body)

    def _release_body(self) -> None:
        with self._bodies_lock:
            self._bodies -= 1

    def _count_request(self, resp: Any) -> None:
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:  # type: ignore[has-type]
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
        if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
            resp.force_close()


def _frame(req: Any, conn: TConn) -> BodyReader:
    """The request's body reader, from gunicorn's parse of the framing headers and
    the bytes it read past the head; gunicorn's own body is replaced by it."""
    gunicorn_reader = req.body.reader
    length = None if isinstance(gunicorn_reader, ChunkedReader) else gunicorn_reader.length
    expect = bool(req._expected_100_continue)
    req._expected_100_continue = False  # sent by the reader, when the body is read
    sock = conn.sock
    reader = BodyReader(sock, conn.parser.unreader.take_buffered(), length,
                        expect_continue=expect, shutdown=partial(_shutdown_read, sock))
    req.body = _FramedInput(reader)
    return reader


def _shutdown_read(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RD)  # also for TLS: keeps the session
    except OSError:
        pass


class _Slot:
    """A body slot, given back once: when the response starts (the body is done
    with), or when the request ends without one."""

    __slots__ = ("_release",)

    def __init__(self, release: Optional[Callable[[], None]]) -> None:
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def _settling(resp: Any, reader: BodyReader, sock: _Socket, slot: Optional[_Slot]) -> Callable[..., Any]:
    """``start_response`` that settles the body first: keep-alive when what is
    left was read, ``Connection: close`` otherwise; then the body slot is free."""
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not reader.settle():
            resp.force_close()
        if slot is not None:
            slot.release()
        sock.setblocking(True)  # the response's own timeout, whatever the body's was
        return resp.start_response(status, headers, exc_info)
    return start_response


def _raise_fd_limit(logger: Any) -> None:
    """Every open upload holds a connection, a lock and a data file: raise the
    soft descriptor limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-file limit from %d: %s", soft, exc)


# -- other gunicorn workers ---------------------------------------------------------

def post_worker_init(worker: Any) -> None:
    """gunicorn server hook: what tuswsgi needs from a worker that is not its own.

    gunicorn's sync worker is killed when it does not check in for ``timeout``
    seconds, which one long body easily takes (and its ``wsgi.input`` waits for
    whole blocks, so checking in between reads is not enough for a slow client).
    A thread checks in for it while a body is being read, which ``network_timeout``
    bounds.  SIGTERM also stops running bodies, as under :class:`TusWorker`.
    """
    global _hooked
    if isinstance(worker, TusWorker):
        return
    _hooked = True
    threading.Thread(target=_check_in_while_reading, args=(worker,), name="tuswsgi-heartbeat",
                     daemon=True).start()
    previous = signal.getsignal(signal.SIGTERM)
    if callable(previous):
        def handler(signum: int, frame: Any) -> None:
            previous(signum, frame)
            interrupt_all("shutdown")
        signal.signal(signal.SIGTERM, handler)


def _check_in_while_reading(worker: Any) -> None:
    while True:
        time.sleep(HEARTBEAT_INTERVAL)
        if reading():
            worker.notify()


def warn_if_unsupported() -> None:
    """Say once, at boot, when gunicorn runs tuswsgi without tuswsgi's worker."""
    if _booted or _hooked:
        return
    log.warning("tuswsgi is served by a gunicorn worker other than tuswsgi.worker.TusWorker: "
                "requests may wait behind slow uploads, and a sync worker serves one request "
                "at a time and kills uploads longer than its timeout. Run `tuswsgi serve`, or "
                "`gunicorn -c python:tuswsgi.gunicorn_conf tuswsgi:app`.")
