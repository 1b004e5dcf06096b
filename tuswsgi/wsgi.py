"""The WSGI application: routing, protocol version, method override, CORS, errors.

Requests are matched with a werkzeug routing ``Map`` and handed to
:class:`~tuswsgi.tus.TusHandlers`.  Whatever goes wrong becomes a response from
the error table; an unexpected exception is logged with its traceback and the
client gets a plain 500 ``ERR_INTERNAL`` without one.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from typing import Any, Callable, Iterable, Optional

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request

from .config import Config
from .errors import TusError
from .frontend import upload_url
from .hooks import RequestInfo
from .ietf import ALLOWED_HEADERS as IETF_ALLOWED_HEADERS
from .ietf import EXPOSED_HEADERS as IETF_EXPOSED_HEADERS
from .ietf import IetfHandlers, interop_version, names_version
from .logs import current_request_id, log_event
from .metrics import metrics_from_config
from .page import UploadPage
from .protocol import TUS_VERSION, check_version
from .responses import Response
from .service import UploadService, storage_error
from .tus import ALLOWED_HEADERS, EXPOSED_HEADERS, TusHandlers
from .upload import InvalidUploadId, UploadId, check_upload_id

log = logging.getLogger("tuswsgi")

COLLECTION_METHODS = ("POST", "OPTIONS")
UPLOAD_METHODS = ("HEAD", "PATCH", "DELETE", "GET", "OPTIONS")
OVERRIDABLE_METHODS = ("PATCH", "DELETE", "HEAD", "GET", "POST")
#: tus requests must name the protocol version; OPTIONS (discovery, CORS) and GET
#: (a plain download link) need not.
VERSIONED_METHODS = ("POST", "HEAD", "PATCH", "DELETE")


class TusApp:
    """A WSGI callable serving one tus endpoint at ``config.base_path``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = metrics_from_config(config)
        self.service = UploadService(config, self.metrics)
        self.handlers = TusHandlers(self.service)
        self.ietf = IetfHandlers(self.service, download=self.handlers.get)
        base = config.base_path
        rules = [
            Rule(base, endpoint="collection", methods=COLLECTION_METHODS),
            Rule(base + "<upload_id>", endpoint="upload", methods=UPLOAD_METHODS),
        ]
        self.page: Optional[UploadPage] = None
        if config.upload_page:
            self.page = UploadPage(base)
            page_path = config.upload_page_path
            rules += [Rule(page_path, endpoint="page", methods=("GET", "HEAD")),
                      Rule(page_path + "static/<path:name>", endpoint="asset", methods=("GET", "HEAD"))]
        if self.metrics.enabled:
            rules.append(Rule(config.metrics_path, endpoint="metrics", methods=("GET",)))
        self.url_map = Map(rules, strict_slashes=False, merge_slashes=False)
        self._wsgi: Callable = self._dispatch
        if config.behind_proxy:
            self._wsgi = _ForwardedToXForwarded(
                ProxyFix(self._dispatch, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1))

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        return self._wsgi(environ, start_response)

    def _dispatch(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        started = time.monotonic()
        request_id = _request_id(request.headers.get("X-Request-ID"))
        context = current_request_id.set(request_id)
        response, error_code = self.handle(request)
        self._finish(request, response)
        response.headers["X-Request-ID"] = request_id
        self.metrics.request(request.method, response.status_code)
        log_event("request", method=request.method, path=request.path,
                  status=response.status_code, error=error_code,
                  offset=response.headers.get("Upload-Offset"),
                  seconds=round(time.monotonic() - started, 4))
        current_request_id.reset(context)
        return response(environ, start_response)

    def handle(self, request: Request) -> tuple[Response, Optional[str]]:
        """Route one request; return the response and its error code, never raise."""
        render: Callable[[TusError], Response] = TusError.get_response
        try:
            if _is_preflight(request):
                return Response(status=204, headers=self._preflight_headers()), None
            method = self._effective_method(request)
            endpoint, args = self._match(request, method)
            if endpoint in ("page", "asset", "metrics"):
                return self._serve_extra(request, endpoint, args), None
            if method == "OPTIONS":
                response = self.handlers.options(request)
                response.headers.extend(self.ietf.discovery_headers())
                return response, None
            if not request.environ.get("wsgi.run_once"):  # a CGI process ends too soon
                self.service.maybe_sweep()
            version = interop_version(request, method)
            upload_id = args.get("upload_id")
            if upload_id is not None:  # checked once here; a bad one is simply not there
                args["upload_id"] = upload_id = _checked_id(upload_id)
            if version is not None and not _plain_get(request, method):
                render = functools.partial(self._render_ietf, version=version,
                                           upload_id=upload_id, method=method)
            elif version is None and method in VERSIONED_METHODS:
                check_version(request.headers.get("Tus-Resumable"))
            hook = self._authorize(request, method, upload_id)
            if version is None or (method == "GET" and version < 8):
                return getattr(self.handlers, method.lower())(request, hook, **args), None
            return getattr(self.ietf, method.lower())(request, hook, version, **args), None
        except TusError as error:
            if error.upload_id is not None:  # a refused creation made an upload: say where
                error.extra_headers.append(
                    ("Location", upload_url(request, self.config.base_path, error.upload_id)))
            if error.offset is not None:  # where a failed request left the upload
                error.extra_headers.append(("Upload-Offset", str(error.offset)))
            return render(error), error.error_code
        except HTTPException as exc:  # raised by werkzeug itself, e.g. a malformed header
            failure = TusError("ERR_BAD_REQUEST" if (exc.code or 500) < 500 else "ERR_INTERNAL")
            return render(failure), failure.error_code
        except OSError as exc:  # the file system failed outside the store's own handling
            failure = storage_error(exc)
            return render(failure), failure.error_code
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return TusError("ERR_INTERNAL").get_response(), "ERR_INTERNAL"

    def _render_ietf(self, error: TusError, version: int, upload_id: Optional[str],
                     method: str) -> Response:
        return self.ietf.error_response(error, version, upload_id, method)

    def _serve_extra(self, request: Request, endpoint: str, args: dict) -> Response:
        """The upload page, its assets, and the metrics."""
        if endpoint in ("page", "asset"):
            assert self.page is not None  # routed only when the page is on
            return self.page.index(request) if endpoint == "page" else self.page.asset(request, **args)
        body, content_type = self.metrics.render()
        return Response(body, content_type=content_type)

    def _authorize(self, request: Request, method: str,
                   upload_id: Optional[str]) -> Optional[RequestInfo]:
        """What hooks see of the request (when hooks are set, or a creation counts
        against its client), after the pre-access hook let it through: before any
        body is read."""
        if not self.service.hooks.transports and not (method == "POST" and self.service.counts_clients):
            return None
        hook = RequestInfo.from_environ(request.environ, method)
        self.service.authorize(hook, upload_id)
        return hook

    def _effective_method(self, request: Request) -> str:
        override = request.headers.get("X-HTTP-Method-Override")
        if request.method != "POST" or override is None:
            return request.method
        override = override.strip().upper()
        if override not in OVERRIDABLE_METHODS:
            raise TusError("ERR_INVALID_METHOD_OVERRIDE", f"got {override[:20]!r}")
        return override

    def _match(self, request: Request, method: str) -> tuple[str, dict[str, Any]]:
        adapter = self.url_map.bind("localhost", path_info=request.path, url_scheme="http")
        try:
            endpoint, args = adapter.match(method=method)
            return str(endpoint), dict(args)
        except MethodNotAllowed as error:
            allowed = ", ".join(error.valid_methods or ())
            raise TusError("ERR_METHOD_NOT_ALLOWED", headers=[("Allow", allowed)]) from None
        except (NotFound, HTTPException):
            raise TusError("ERR_NOT_FOUND") from None

    def _finish(self, request: Request, response: Response) -> None:
        """Headers every response carries."""
        if not _is_preflight(request):
            response.headers["Tus-Resumable"] = TUS_VERSION
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.extend(self._cors_headers(request))

    def _allowed_origin(self, request: Request) -> Optional[str]:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        origins = self.config.cors_origins
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    def _cors_headers(self, request: Request) -> list[tuple[str, str]]:
        wildcard = "*" in self.config.cors_origins
        # With an allow-list the answer depends on Origin, so caches must key on it.
        headers = [] if wildcard else [("Vary", "Origin")]
        allowed = self._allowed_origin(request)
        if allowed is not None:
            headers += [("Access-Control-Allow-Origin", allowed),
                        ("Access-Control-Expose-Headers", _EXPOSED)]
            if self.config.cors_allow_credentials:  # never with `*`: the config refuses it
                headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def _preflight_headers(self) -> list[tuple[str, str]]:
        return [("Access-Control-Allow-Methods", "POST, HEAD, PATCH, DELETE, GET, OPTIONS"),
                ("Access-Control-Allow-Headers", _ALLOWED),
                ("Access-Control-Max-Age", "86400")]


_EXPOSED = ", ".join(dict.fromkeys([*EXPOSED_HEADERS, *IETF_EXPOSED_HEADERS]))
_ALLOWED = ", ".join(dict.fromkeys([*ALLOWED_HEADERS, *IETF_ALLOWED_HEADERS]))


def _checked_id(upload_id: str) -> UploadId:
    try:
        return check_upload_id(upload_id)
    except InvalidUploadId:
        raise TusError("ERR_NOT_FOUND") from None


def _request_id(sent: Optional[str]) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    if sent and len(sent) <= 128 and sent.isprintable() and sent.isascii():
        return sent
    return uuid.uuid4().hex


def _plain_get(request: Request, method: str) -> bool:
    """A GET naming no protocol: a browser's download link, or a final-RFC client's
    offset retrieval.  Its errors stay plain text, as for every download."""
    return method == "GET" and not names_version(request)


def _is_preflight(request: Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers \
        and "Origin" in request.headers


class _ForwardedToXForwarded:
    """Translate RFC 7239 ``Forwarded`` into the ``X-Forwarded-*`` that ProxyFix reads,
    when the proxy sent only the standard header."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        forwarded = environ.get("HTTP_FORWARDED")
        if forwarded and not any(k in environ for k in ("HTTP_X_FORWARDED_PROTO",
                                                         "HTTP_X_FORWARDED_HOST")):
            nearest = forwarded.split(",")[-1]  # the element our own proxy appended
            for part in nearest.split(";"):
                name, _, value = part.strip().partition("=")
                value = value.strip().strip('"')
                key = {"proto": "HTTP_X_FORWARDED_PROTO", "host": "HTTP_X_FORWARDED_HOST",
                       "for": "HTTP_X_FORWARDED_FOR"}.get(name.strip().lower())
                if key and value:
                    environ[key] = value
        return self.app(environ, start_response)
