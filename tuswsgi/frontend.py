"""What every protocol front-end (tus 1.0.0, the IETF draft) reads from a request
the same way: its body, its upload URLs, and what hooks see of it."""

from __future__ import annotations

from typing import Optional

from werkzeug.wrappers import Request

from .body import RequestBody
from .hooks import RequestInfo
from .protocol import parse_uint

#: WSGI environ key under which the dispatcher leaves the request's hook view.
HOOK_REQUEST_KEY = "tuswsgi.hook_request"


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
    return RequestBody(request.environ, length, network_timeout)


def upload_url(request: Request, base_path: str, upload_id: str) -> str:
    """The absolute URL of an upload, honouring the script name (and, through
    ProxyFix, the public scheme, host and prefix)."""
    return f"{request.scheme}://{request.host}{request.script_root}{base_path}{upload_id}"


def hook_request(request: Request) -> Optional[RequestInfo]:
    """What hooks see of the request, when hooks are configured."""
    return request.environ.get(HOOK_REQUEST_KEY)
