"""tuswsgi's gunicorn worker: gunicorn's ``Worker`` base class, tuswsgi's loop.

``tuswsgi.gunicorn_conf`` names it (``worker_class``), as uvicorn ships
``UvicornWorker``.  gunicorn keeps what its own workers share: the arbiter,
signals, configuration, reload, logging, hooks, the request-head parser,
``wsgi.create`` and ``Response``.  The rest is tuswsgi's (:mod:`.loop`,
:mod:`.admission`, :mod:`.handler`, :mod:`.framing`, :mod:`.wire`,
:mod:`.pool`), on the documented surface listed in :mod:`.compat`.

Settings come from gunicorn's configuration: gunicorn's own (``threads``,
``worker_connections``, ``keepalive``, ``graceful_timeout``, TLS) and, for
what gunicorn has no setting for, :class:`ServerSettings` on the worker class,
which ``tuswsgi.gunicorn_conf`` fills from tuswsgi's settings table
(:meth:`TusWorker.configured`).  Named on its own (``-k
tuswsgi.server.TusWorker``) the worker uses the table's defaults.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, ClassVar, Optional

from ..body import interrupt_all
from ..config import Config, defaults
from . import compat, stock
from .admission import Capacity
from .handler import BodyRules, RequestHandler
from .loop import BodyPlaces, Loop, Timeouts

#: Stack reserved per thread: thousands of threads, each needing little.
THREAD_STACK = 512 * 1024
#: How long a thread may hold the GIL before a thread waiting for it asks it to
#: let go (``sys.setswitchinterval``).  Every waiting thread wakes this often to
#: check; at CPython's 5 ms, a few hundred threads waiting at once wake 100,000
#: times a second, which slows the GIL's hand-overs.  Threads here give the GIL
#: up at every system call, so a longer interval only bounds pure-Python stretches.
SWITCH_INTERVAL = 0.05
#: The worker checks in with gunicorn's arbiter this often (its timeout is 120 s).
NOTIFY_INTERVAL = 1.0
#: A lingering close ends at the latest this many times ``linger_timeout`` after it began.
LINGER_TOTAL_FACTOR = 6
#: gunicorn's exit status for "the worker could not boot".
WORKER_BOOT_ERROR = 3


@dataclass(frozen=True)
class ServerSettings:
    """The worker's settings that gunicorn has no setting for (see tuswsgi's
    settings table for each one's meaning)."""

    network_timeout: float
    head_timeout: float
    linger_timeout: float
    min_body_rate: float
    min_body_rate_window: float
    reserved_threads: int
    max_head_size: int

    @classmethod
    def from_config(cls, config: Config) -> ServerSettings:
        return cls(**{field.name: getattr(config, field.name) for field in fields(cls)})


class TusWorker(compat.Worker):
    """A gunicorn worker that owns its connections (see the module doc)."""

    #: The table's defaults; :meth:`configured` makes a class with others.
    settings: ClassVar[ServerSettings] = ServerSettings.from_config(defaults())

    @classmethod
    def configured(cls, config: Config) -> type[TusWorker]:
        """This worker with ``config``'s settings: what a gunicorn configuration
        file names as its ``worker_class``."""
        return type(cls.__name__, (cls,), {"settings": ServerSettings.from_config(config),
                                           "__module__": cls.__module__, "__qualname__": cls.__qualname__})

    def init_process(self) -> None:
        problems = compat.missing(self.cfg) + self._unsupported()
        if problems:
            self.log.critical("tuswsgi.server.TusWorker cannot run on gunicorn %s: %s",
                              compat.version(), "; ".join(problems))
            sys.exit(WORKER_BOOT_ERROR)
        _raise_fd_limit(self.log)
        threading.stack_size(THREAD_STACK)
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._notified = 0.0
        self.loop: Optional[Loop] = None
        stock.mark_booted()
        super().init_process()

    def _unsupported(self) -> list[str]:
        """Settings this worker does not implement, rather than ignore."""
        problems = []
        if self.cfg.proxy_protocol not in (False, "off", "v1"):
            problems.append(f"proxy_protocol = {self.cfg.proxy_protocol!r} (only v1 is supported)")
        return problems

    def run(self) -> None:
        settings = self.settings
        places = BodyPlaces(Capacity.of(self.cfg.threads, settings.reserved_threads,
                                        self.cfg.worker_connections).body_slots, settings.min_body_rate)
        rules = BodyRules(settings.network_timeout, settings.min_body_rate, settings.min_body_rate_window)
        self.loop = Loop(
            list(self.sockets), RequestHandler(self, rules, places),
            capacity=Capacity.of(self.cfg.threads, settings.reserved_threads, self.cfg.worker_connections),
            places=places,
            timeouts=Timeouts(head=settings.head_timeout, keepalive=max(self.cfg.keepalive, 0),
                              linger=settings.linger_timeout,
                              linger_total=settings.linger_timeout * LINGER_TOTAL_FACTOR),
            send_timeout=settings.network_timeout, max_head=settings.max_head_size,
            tls=compat.ssl_context(self.cfg) if self.cfg.is_ssl else None,
            wake_fds=(self.PIPE[0],), on_turn=self._check_in)
        self.loop.run_while(lambda: self.alive)
        self.loop.drain(grace=self.cfg.graceful_timeout, stop_bodies=partial(interrupt_all, "shutdown"))

    def _check_in(self) -> None:
        """Tell the arbiter this worker lives, at most every :data:`NOTIFY_INTERVAL`;
        stop when the arbiter is gone."""
        now = time.monotonic()
        if now - self._notified >= NOTIFY_INTERVAL:
            self._notified = now
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False


def _raise_fd_limit(logger: Any) -> None:
    """Every open upload holds a connection, a lock and a data file: raise the
    soft descriptor limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-file limit from %d: %s", soft, exc)
