#!/usr/bin/env python3
"""tuswsgi as a CGI script, for shared hosting with Apache and nothing else.

One process per request: fine for a few uploads at a time.  Prefer Passenger or
mod_wsgi (deploy/) where the host offers them.

    public_html/uploads/         the directory served at https://example.com/uploads/
        tuswsgi.cgi              this file, chmod 755 (the #! line names the host's Python 3)
        .htaccess                deploy/.htaccess: routes every URL below to this script
        tus.ini                  [tuswsgi] settings (denied to browsers by .htaccess)
        lib/                     `pip install --target lib tuswsgi_server-*.whl` (denied too)

Set ``upload_dir`` in tus.ini to a directory outside public_html.  The tus
endpoint is then https://example.com/uploads/files/.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
if not os.environ.get("TUSWSGI_CONFIG") and os.path.isfile(os.path.join(HERE, "tus.ini")):
    os.environ["TUSWSGI_CONFIG"] = os.path.join(HERE, "tus.ini")

from wsgiref.handlers import CGIHandler  # noqa: E402

from tuswsgi.config import PRODUCTION_DEFAULTS, apply_defaults  # noqa: E402

# A CGI process ends with its response, so a cleanup pass started in passing would
# be killed half-way: unless tus.ini says otherwise, run `tuswsgi cleanup` from
# cron instead (docs/deploying.md, "Shared hosting with CGI only").
apply_defaults(os.environ, {**PRODUCTION_DEFAULTS, "cleanup_interval": "0"})


def _public_script_name(environ: dict) -> dict:
    """.htaccess rewrites /uploads/files/<id> to /uploads/tuswsgi.cgi/files/<id>;
    give the app the URL prefix the client used (/uploads), so Location headers
    name /uploads/files/<id> and not the script."""
    script = environ.get("SCRIPT_NAME", "")
    uri = environ.get("REQUEST_URI", "")
    if script and not uri.startswith(script):
        environ["SCRIPT_NAME"] = script.rsplit("/", 1)[0]
    return environ


class _CountingInput:
    """``wsgi.input`` that counts what the app read of the request body."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.consumed += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.stream.readline(size)
        self.consumed += len(data)
        return data

    def __iter__(self):
        return iter(self.readline, b"")


def _drain(environ: dict, body: _CountingInput) -> None:
    """Read the rest of a body the app did not want (a 409 or 423 answer, say).

    Apache writes the whole body to a CGI script before it reads the answer; a
    script that exits without reading it makes Apache drop the connection with no
    response at all, where the client needed the 409 to resume correctly.
    """
    length = environ.get("CONTENT_LENGTH") or ""
    if not length.isdigit():
        return
    remaining = int(length) - body.consumed
    while remaining > 0:
        block = body.read(min(remaining, 1 << 16))
        if not block:  # the client went away
            return
        remaining -= len(block)


def main() -> None:
    from tuswsgi import create_app

    application = create_app()

    def app(environ, start_response):
        body = environ["wsgi.input"] = _CountingInput(environ["wsgi.input"])
        result = application(_public_script_name(environ), start_response)
        _drain(environ, body)
        return result

    CGIHandler().run(app)


if __name__ == "__main__":
    main()
