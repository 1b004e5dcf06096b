"""What every protocol front-end (tus 1.0.0, the IETF draft) reads from a request
the same way: its body, its upload URLs, and what hooks see of it."""

from __future__ import annotations

from typing import Optional

from werkzeug.wrappers import Request

from .body import CONNECTION_KEY, RequestBody
from .errors import TusError
from .protocol import parse_uint

#: Seconds a client refused for want of capacity is told to wait (Retry-After).
RETRY_AFTER = 2


def request_body(request: Request, network_timeout: float) -> Optional[RequestBody]:
    """The body as a stream, or ``None`` when the request has none.

    A body has a ``Content-Length`` above zero or is chunked (which the server
    de-chunks and marks with ``wsgi.input_terminated``).
    """
    length = parse_uint(request.headers.get("Content-Length"), "ERR_INVALID_CONTENT_LENGTH")
    chunked = length is None and bool(request.environ.get("wsgi.input_terminated")) \
        and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if not length and not chunked:
        return None
    connection = request.environ.get(CONNECTION_KEY)
    if connection is not None and connection.busy:
        raise TusError("ERR_SERVER_BUSY", headers=[("Retry-After", str(RETRY_AFTER))])
    return RequestBody(request.environ, length, network_timeout)


def send_interim(request: Request, head: bytes) -> bool:
    """Write an interim (1xx) response before the final one, where the server
    lets us (tuswsgi's worker); return whether it was sent."""
    connection = request.environ.get(CONNECTION_KEY)
    if connection is None or request.environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return False
    try:
        connection.send(head)
    except OSError:
        return False
    return True


def upload_url(request: Request, base_path: str, upload_id: str) -> str:
    """The absolute URL of an upload, honouring the script name (and, through
    ProxyFix, the public scheme, host and prefix)."""
    return f"{request.scheme}://{request.host}{request.script_root}{base_path}{upload_id}"
