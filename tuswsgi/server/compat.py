"""Everything tuswsgi takes from gunicorn, in one list, checked when a worker boots.

tuswsgi's worker builds on what gunicorn offers worker authors and shares among
its own workers: the ``Worker`` base class (arbiter, signals, configuration,
reload, logging, hooks), the HTTP/1.1 request-head parser, ``wsgi.create``
(the WSGI environ and gunicorn's ``Response``), and the TLS context its
settings describe.  The loop, admission, framing, keep-alive, lingering close
and shutdown are tuswsgi's own (the rest of :mod:`tuswsgi.server`).

Every module of the package imports gunicorn through this one, and
:data:`USED` names each attribute it relies on; :func:`missing` reports what an
installed gunicorn lacks, and the worker refuses to boot, naming it, rather
than fail on the first request.  ``tests/unit/test_compat.py`` fails when a
name is used but not listed here.
"""

from __future__ import annotations

from typing import Any

import gunicorn
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from gunicorn.http.wsgi import Response, create
from gunicorn.sock import ssl_context
from gunicorn.workers.base import Worker

#: The oldest gunicorn the worker runs on (setup.py says ``gunicorn>=`` this, and
#: no cap).  23.0 is the first release that takes a worker class object from
#: its configuration (``tuswsgi.gunicorn_conf`` hands it the worker with
#: tuswsgi's settings), and the first with the request-smuggling fixes of 2024
#: in the head parser; CI runs the worker's suites on it.
FLOOR = "23.0.0"

__all__ = ["FLOOR", "USED", "IterUnreader", "Request", "Response", "Worker", "create", "missing",
           "ssl_context", "version"]

#: Owner, and the attributes of it that tuswsgi uses.  The attributes gunicorn
#: sets on instances (a worker's ``cfg``, ``log``, ``wsgi``, ``sockets``,
#: ``alive``, ``nr``, ``max_requests``, ``ppid``, ``PIPE``; a request's
#: ``headers``, ``method``, ``version``) are checked by :func:`missing` on a
#: request it parses, and by the server tests.
USED: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (Worker, ("init_process", "run", "notify", "handle_exit", "handle_quit", "handle_error")),
    (Request, ("should_close",)),
    (Response, ("start_response", "write", "write_file", "close", "force_close", "should_close")),
    (IterUnreader, ("read", "unread")),
)

#: Behaviour relied on that no name shows: ``create()`` answers ``Expect:
#: 100-continue`` by calling ``send`` on the socket it is given (every release
#: since 20); :class:`~tuswsgi.server.wire.Wire` holds that back so the body
#: reader sends it when the body is first read (tests/unit/test_compat.py).

#: gunicorn settings the worker reads (``self.cfg.<name>``).
SETTINGS = ("threads", "worker_connections", "keepalive", "graceful_timeout", "is_ssl",
            "pre_request", "post_request", "proxy_protocol", "max_requests")

_PROBE = b"PUT /probe HTTP/1.1\r\nHost: probe\r\nContent-Length: 3\r\n\r\n"


def version() -> str:
    return str(gunicorn.__version__)


def missing(cfg: Any) -> list[str]:
    """What this gunicorn lacks of :data:`USED` and :data:`SETTINGS`, and
    whether its parser reads a request head into what tuswsgi reads of it."""
    absent = [] if _release(version()) >= _release(FLOOR) else [f"gunicorn >= {FLOOR}"]
    absent += [f"{owner.__qualname__}.{name}" for owner, names in USED
              for name in names if not hasattr(owner, name)]
    absent += [f"setting {name}" for name in SETTINGS if not hasattr(cfg, name)]
    try:
        request = Request(cfg, IterUnreader([_PROBE]), ("127.0.0.1", 0), 1)
        understood = (request.method, request.version, ("CONTENT-LENGTH", "3") in request.headers)
    except Exception as exc:  # any failure means the parser is not usable
        absent.append(f"Request(cfg, IterUnreader, peer_addr, req_number) ({exc!r})")
    else:
        if understood != ("PUT", (1, 1), True):
            absent.append(f"Request.method/.version/.headers (read {understood!r})")
    return absent


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())
