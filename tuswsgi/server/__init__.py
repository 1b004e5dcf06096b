"""tuswsgi's HTTP/1.1 server half: a gunicorn worker that owns its connections.

Name it as gunicorn's worker class: ``gunicorn -k tuswsgi.server.TusWorker``
(``tuswsgi.gunicorn_conf`` does, with the settings of tuswsgi's table).  The
worker is imported on first use, so the application side (``tuswsgi.body``
uses :mod:`.framing`) never imports gunicorn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TusWorker"]


def __getattr__(name: str) -> Any:
    if name == "TusWorker":
        from .worker import TusWorker
        return TusWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
