"""One request, on a request thread: from a complete head to the verdict on its
connection.

The head is parsed by gunicorn's parser; its framing headers are read strictly
(:func:`~tuswsgi.server.framing.body_length`); the body is a
:class:`~tuswsgi.server.framing.BodyReader` on the connection's wire, offered to
the application as ``wsgi.input`` and, with more than WSGI says, as
``environ["tuswsgi.connection"]``.  gunicorn's ``wsgi.create`` builds the
environ and its ``Response`` writes the answer.  ``start_response`` settles the
body first (drain a small rest or say ``Connection: close``) and frees the
body's place; the verdict then says whether the connection carries another
request, closes, or closes lingering.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, Optional

from ..body import CONNECTION_KEY, Connection
from . import compat
from .framing import BodyReader, FramingError, body_length
from .loop import BodyPlaces, Conn, Verdict, plain_response

log = logging.getLogger("tuswsgi")


@dataclass(frozen=True)
class BodyRules:
    """How a body is read: ``timeout`` for each wait for the next byte; at least
    ``min_rate`` bytes a second over every ``rate_window`` (0: no minimum)."""

    timeout: float
    min_rate: float
    rate_window: float


class RequestHandler:
    """Serves one request on a connection for ``worker`` (a gunicorn worker:
    its ``cfg``, ``log``, ``wsgi``, hooks and request count)."""

    def __init__(self, worker: Any, rules: BodyRules, places: BodyPlaces) -> None:
        self.worker = worker
        self.rules = rules
        self.places = places

    def __call__(self, conn: Conn) -> Verdict:
        head, rest = conn.take_head()
        worker = self.worker
        try:
            req = compat.Request(worker.cfg, compat.IterUnreader([head]), conn.address, conn.requests)
        except Exception as exc:  # gunicorn's parse errors: it answers them itself
            worker.handle_error(None, conn.wire, conn.address, exc)
            return Verdict.LINGER
        try:
            length = body_length(req.headers)
        except FramingError:
            conn.wire.sendall(plain_response(b"400 Bad Request", "ERR_BAD_REQUEST"))
            return Verdict.LINGER
        reader = BodyReader(conn.wire, rest, length, expect_continue=_expects_continue(req),
                            shutdown=conn.wire.shutdown_read, timeout=self.rules.timeout,
                            min_rate=self.rules.min_rate, rate_window=self.rules.rate_window)
        placed = length == 0 or self.places.take(reader)
        try:
            resp = self._respond(conn, req, reader, placed)
        finally:
            self.places.give_back(reader)
        if resp is None:  # an error answer went out, or none could: the client may still send
            return Verdict.LINGER
        if not reader.complete:  # answered early; where the body stopped is lost when broken
            return Verdict.CLOSE if reader.broken else Verdict.LINGER
        leftover = reader.leftover()
        if resp.should_close():
            return Verdict.LINGER if leftover else Verdict.CLOSE
        conn.buffer += leftover
        return Verdict.KEEP

    def _respond(self, conn: Conn, req: Any, reader: BodyReader, placed: bool) -> Optional[Any]:
        """Run the application and write its answer; the response, or ``None``
        when it could not be completed (the client went away or stopped
        reading, or the application failed after the headers went out)."""
        worker = self.worker
        environ: dict[str, Any] = {}
        resp = None
        try:
            worker.cfg.pre_request(worker, req)
            started = datetime.now()
            resp, environ = compat.create(req, conn.wire, conn.address, conn.server, worker.cfg)
            environ.update({"wsgi.input": FramedInput(reader), "wsgi.multithread": True,
                            "gunicorn.socket": conn.sock,
                            CONNECTION_KEY: Connection(reader, conn.wire.sendall, busy=not placed)})
            self._count(resp)
            respiter = worker.wsgi(environ, self._settling(resp, reader))
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                worker.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(respiter, "close"):
                    respiter.close()
        except OSError:  # the client went away, or took nothing for network_timeout
            return None
        except (Exception, SystemExit) as exc:
            if resp is not None and resp.headers_sent:
                worker.log.exception("Error handling request")
                return None
            worker.handle_error(req, conn.wire, conn.address, exc)
            return None
        finally:
            try:
                worker.cfg.post_request(worker, req, environ, resp)
            except Exception:
                worker.log.exception("Exception in post_request hook")
        return resp

    def _settling(self, resp: Any, reader: BodyReader) -> Callable[..., Any]:
        """``start_response`` that settles the body first: keep-alive when what is
        left was read (and the worker is not stopping), ``Connection: close``
        otherwise; then the body's place is free."""
        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not self.worker.alive or not reader.settle():
                resp.force_close()
            self.places.give_back(reader)
            return resp.start_response(status, headers, exc_info)
        return start_response

    def _count(self, resp: Any) -> None:
        """gunicorn's request count (``max_requests``), and ``Connection: close``
        when the worker stops or keep-alive is off."""
        worker = self.worker
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False
        if not worker.alive or worker.cfg.keepalive <= 0:
            resp.force_close()


def _expects_continue(req: Any) -> bool:
    return tuple(req.version) >= (1, 1) and any(
        name == "EXPECT" and value.strip().lower() == "100-continue" for name, value in req.headers)




class FramedInput:
    """``wsgi.input``: reads go through the :class:`BodyReader`, so the position
    on the connection stays exact whatever the application reads."""

    def __init__(self, reader: BodyReader) -> None:
        self.reader = reader

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
