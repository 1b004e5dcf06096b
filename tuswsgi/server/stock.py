"""tuswsgi under gunicorn's own workers (sync, gthread): what is done from outside.

Those workers know nothing of uploads.  What tuswsgi needs of them it takes
from what they publish to every application: the WSGI environ (its
``gunicorn.socket``, used by :mod:`tuswsgi.body` to cut a silent client and to
wake a stalled body for a hand-over) and gunicorn's server hooks:
:func:`post_worker_init` keeps a sync worker alive through long bodies and
stops running bodies on SIGTERM.  :func:`warn_if_unsupported` says at boot
what to run instead.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from ..body import interrupt_all, reading

log = logging.getLogger("tuswsgi")

#: How often a body being read checks in for a worker that is not tuswsgi's.
HEARTBEAT_INTERVAL = 1.0

#: Set when tuswsgi's own worker boots in this process, or the hook ran for another.
_booted = False
_hooked = False


def mark_booted() -> None:
    """tuswsgi's worker runs this process: nothing to warn about."""
    global _booted
    _booted = True


def post_worker_init(worker: Any) -> None:
    """gunicorn server hook: what tuswsgi needs from a worker that is not its own.

    gunicorn's sync worker is killed when it does not check in for ``timeout``
    seconds, which one long body easily takes (and its ``wsgi.input`` waits for
    whole blocks, so checking in between reads is not enough for a slow client).
    A thread checks in for it while a body is being read, which ``network_timeout``
    bounds.  SIGTERM also stops running bodies, as under tuswsgi's worker.
    """
    global _hooked
    if _booted:
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
    log.warning("tuswsgi is served by a gunicorn worker other than tuswsgi.server.TusWorker: "
                "requests may wait behind slow uploads, and a sync worker serves one request "
                "at a time and kills uploads longer than its timeout. Run `tuswsgi serve`, or "
                "`gunicorn -c python:tuswsgi.gunicorn_conf tuswsgi:app`.")
