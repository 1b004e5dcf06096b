"""The built-in browser upload page: one HTML file and its static assets.

The page is plain HTML/CSS/JS kept in ``tuswsgi/static``; it learns the tus
endpoint from a ``data-endpoint`` attribute filled in here, so it works under
any base path or script name without a build step.
"""

from __future__ import annotations

import html
import os
from typing import Optional

from werkzeug.utils import safe_join
from werkzeug.wrappers import Request
from werkzeug.wsgi import wrap_file

from .errors import TusError
from .responses import Response

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


class UploadPage:
    def __init__(self, base_path: str) -> None:
        self.base_path = base_path

    def index(self, request: Request) -> Response:
        if not request.path.endswith("/"):  # relative asset URLs need the slash
            return Response(status=308, headers=[
                ("Location", request.script_root + request.path + "/")])
        with open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8") as handle:
            template = handle.read()
        endpoint = html.escape(request.script_root + self.base_path, quote=True)
        page = template.replace("{{endpoint}}", endpoint)
        response = Response(page, content_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")
        response.headers["Cache-Control"] = "no-cache"
        return response

    def asset(self, request: Request, name: str) -> Response:
        path: Optional[str] = safe_join(STATIC_DIR, name)
        extension = os.path.splitext(name)[1]
        if path is None or extension not in _TYPES or not os.path.isfile(path):
            raise TusError("ERR_NOT_FOUND")
        response = Response(wrap_file(request.environ, open(path, "rb")),  # noqa: SIM115 (closed by the server)
                            content_type=_TYPES[extension], direct_passthrough=True)
        response.content_length = os.path.getsize(path)
        response.headers["Cache-Control"] = "no-cache"
        return response
