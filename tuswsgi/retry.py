"""Work that failed for a reason that passes (a full or read-only disk for a
moment), tried again in the background, less and less often, until it succeeds
or gives up.  Knows nothing of uploads: an attempt is a callable that says
whether it is done.

One daemon thread per process, started on first use (and again in a forked
child), so a worker with nothing to retry has none.  What is still pending when
the process ends, or when an attempt gives up, is left to whoever else does the
work in passing (the service's cleanup pass).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

log = logging.getLogger("tuswsgi")

#: An attempt returns ``True`` when the work is done (or nothing is left to do).
Attempt = Callable[[], bool]


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    key: str = field(compare=False)
    attempt: Attempt = field(compare=False)
    delay: float = field(compare=False)
    deadline: float = field(compare=False)


class Retrier:
    """Runs each scheduled attempt after ``first`` seconds, then after twice as
    long each time (at most ``longest``), until it returns ``True`` or ``give_up``
    seconds have passed since it was scheduled.  One entry per key: scheduling a
    key already waiting leaves it as it is."""

    def __init__(self, *, first: float = 1.0, longest: float = 60.0, give_up: float = 3600.0) -> None:
        self.first = first
        self.longest = longest
        self.give_up = give_up
        self._queue: list[_Entry] = []
        self._keys: set[str] = set()
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._pid = 0

    def schedule(self, key: str, attempt: Attempt) -> None:
        now = time.monotonic()
        with self._wake:
            self._start_thread()
            if key in self._keys:
                return
            self._keys.add(key)
            heapq.heappush(self._queue, _Entry(now + self.first, next(self._seq), key, attempt,
                                               self.first, now + self.give_up))
            self._wake.notify()

    def pending(self) -> list[str]:
        """The keys still waiting (tests, and what an operator may ask)."""
        with self._wake:
            return sorted(self._keys)

    def _start_thread(self) -> None:
        if self._pid == os.getpid():
            return
        if self._pid:  # a forked child: the parent's queue and thread are not ours
            self._queue, self._keys = [], set()
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="tuswsgi-retry", daemon=True).start()

    def _run(self) -> None:
        while True:
            entry = self._next_due()
            done = self._try(entry)
            with self._wake:
                now = time.monotonic()
                if done or now >= entry.deadline:
                    self._keys.discard(entry.key)
                    if not done:
                        log.error("gave up retrying %s after %.0fs; the cleanup pass will try again",
                                  entry.key, self.give_up)
                    continue
                entry.delay = min(entry.delay * 2, self.longest)
                entry.due = now + entry.delay
                heapq.heappush(self._queue, entry)

    def _next_due(self) -> _Entry:
        with self._wake:
            while True:
                wait: Optional[float] = None
                if self._queue:
                    wait = self._queue[0].due - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._queue)
                self._wake.wait(wait)

    @staticmethod
    def _try(entry: _Entry) -> bool:
        try:
            return entry.attempt()
        except Exception:
            log.exception("retrying %s failed", entry.key)
            return False
