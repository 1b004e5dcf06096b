"""The worker's request threads: a pool whose ``submit`` never waits for a thread.

The event loop hands every complete request head to a thread.  With
``concurrent.futures.ThreadPoolExecutor``, ``submit`` starts a thread when none
is idle, and ``threading.Thread.start`` returns only once the new thread has
run, which means once it got the GIL: with thousands of threads reading slow
uploads that is a long wait on the event loop's own thread (measured on
gunicorn's threaded worker during a ramp to 2,500 uploads per worker: 50-85 %
of the loop's time in thread starts, 2 ms each at 100 threads and 30 ms at
2,000).

:class:`ThreadPool` starts a thread with ``_thread.start_new_thread``, which
returns as soon as the thread exists; the thread takes its call from the queue
when it first gets the GIL.  At most ``size`` threads; an idle one is reused
before a new one starts; threads live until :meth:`shutdown`.
"""

from __future__ import annotations

import _thread
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional

log = logging.getLogger("tuswsgi")

_Work = tuple[Future, Callable[..., Any], tuple]


class ThreadPool:
    """At most ``size`` threads running submitted calls (see the module doc)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._work: queue.SimpleQueue[Optional[_Work]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads done with a call and not yet given another
        self._shut = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on a pool thread; returns at once."""
        if self._shut:
            raise RuntimeError("cannot submit after shutdown")
        future: Future = Future()
        self._work.put((future, fn, args))
        if self._claim_thread():
            self._start_thread()
        return future

    def shutdown(self) -> None:
        """Let every thread end once the calls already submitted have run.
        Nothing waits for them."""
        self._shut = True
        for _ in range(self._threads):
            self._work.put(None)

    def _claim_thread(self) -> bool:
        """Give the call just queued an idle thread; failing that, say whether
        a new one may start (at full size the call waits for a thread)."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                return False
            if self._threads >= self.size:
                return False
            self._threads += 1
            return True

    def _start_thread(self) -> None:
        try:
            _thread.start_new_thread(self._serve, ())
        except RuntimeError as exc:  # no thread could be created: the call waits for one
            with self._lock:
                self._threads -= 1
            log.error("cannot start a request thread (%s); %d running", exc, self._threads)

    def _serve(self) -> None:
        """One pool thread: run calls until :meth:`shutdown`."""
        while True:
            work = self._work.get()
            if work is None:
                return
            _run(*work)
            del work  # the call's arguments, until the next one arrives
            with self._lock:
                self._idle += 1


def _run(future: Future, fn: Callable[..., Any], args: tuple) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args)
    except BaseException as exc:  # as ThreadPoolExecutor: the future carries it
        future.set_exception(exc)
    else:
        future.set_result(result)
