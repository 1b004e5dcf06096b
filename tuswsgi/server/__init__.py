"""tuswsgi's HTTP/1.1 server half: a gunicorn worker that owns its connections.

Name it as gunicorn's worker class: ``gunicorn -k tuswsgi.server.TusWorker``
(``tuswsgi.gunicorn_conf`` does, with the settings of tuswsgi's table).  The
worker is imported on first use, so the application side (``tuswsgi.body``
uses :mod:`.framing`) never imports gunicorn.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["APP_LOAD_ERROR", "PUBLISHED_SOCKET", "TusWorker", "run_id_process", "server_command",
           "warn_if_unsupported"]

#: gunicorn's exit status for "the application failed to load": its master then
#: stops instead of restarting workers that cannot start.
APP_LOAD_ERROR = 4
#: Where gunicorn's own workers put the connection's socket in the WSGI environ.
PUBLISHED_SOCKET = "gunicorn.socket"


def server_command(extra: list[str]) -> list[str]:
    """The command ``tuswsgi serve`` runs: gunicorn with tuswsgi's settings
    (:mod:`tuswsgi.gunicorn_conf`), ``extra`` gunicorn options, tuswsgi's app."""
    return [sys.executable, "-m", "gunicorn", "-c", "python:tuswsgi.gunicorn_conf", *extra, "tuswsgi:app"]


def run_id_process() -> int:
    """The process every worker of this server run shares: gunicorn's master
    when gunicorn runs this process, else the process itself."""
    return os.getppid() if "gunicorn" in sys.modules else os.getpid()


def warn_if_unsupported() -> None:
    """At boot under gunicorn, say so when its worker is not tuswsgi's."""
    if "gunicorn" in sys.modules:
        from .stock import warn_if_unsupported as warn
        warn()


def __getattr__(name: str) -> Any:
    if name == "TusWorker":
        from .worker import TusWorker
        return TusWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
