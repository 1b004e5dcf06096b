"""Per-upload locks across threads and worker processes, with hand-over.

A lock is filelock's native lock (``flock`` on Unix) on a descriptor of
``<id>.lock``, through ``filelock.lock_descriptor``: the same primitive as
``filelock.FileLock`` at a few microseconds instead of a hundred and more, which
matters at a thousand requests a second.  The kernel drops the lock when its
holder dies, so a ``kill -9`` never leaves an upload locked, and the lock file is
never unlinked while in use (unlinking a lock file someone else still holds lets
a third request lock a fresh inode and write at the same time).

Hand-over: a request that finds the lock taken asks the holder to stop by
stamping ``<id>.stop`` with a new modification time, again every poll, until it
gets the lock or ``lock_timeout`` passes.  In the holder's process a watcher
thread compares that stamp with the one it saw when the lock was taken; a change
calls the holder's ``on_stop``, which ends its request body early.  Because only
a *change* counts, a stop file left by a dead process never stops anyone.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from filelock import lock_descriptor, unlock_descriptor

POLL_INTERVAL = 0.05
FIRST_POLL = 0.001


class LockTimeout(Exception):
    """The holder did not let go within the timeout."""


def _stamp(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


class _Hold:
    __slots__ = ("on_stop", "seen", "stop_path", "stopped")

    def __init__(self, stop_path: str, on_stop: Callable[[], None]) -> None:
        self.stop_path = stop_path
        self.seen = _stamp(stop_path)
        self.on_stop = on_stop
        self.stopped = False


class _StopWatcher:
    """One daemon thread per process that notices stop requests for its holds."""

    def __init__(self) -> None:
        self._holds: set[_Hold] = set()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()

    def add(self, hold: _Hold) -> None:
        with self._cond:
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="tuswsgi-stop-watcher",
                                                daemon=True)
                self._thread.start()
            self._holds.add(hold)
            self._cond.notify()

    def remove(self, hold: _Hold) -> None:
        with self._cond:
            self._holds.discard(hold)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._holds:
                    self._cond.wait()
                holds = list(self._holds)
            for hold in holds:
                if not hold.stopped and _stamp(hold.stop_path) != hold.seen:
                    hold.stopped = True
                    hold.on_stop()
            time.sleep(POLL_INTERVAL)


_watcher = _StopWatcher()


class UploadLocker:
    """Hands out per-upload locks for uploads stored in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    @contextmanager
    def hold(self, upload_id: str, timeout: float,
             on_stop: Optional[Callable[[], None]] = None) -> Iterator[bool]:
        """Hold the lock of ``upload_id`` (already validated) for the ``with`` block,
        which receives whether the lock had to be taken over from another request.

        ``on_stop`` runs on the watcher thread when a newer request asks for the
        upload; the holder should then finish quickly and leave the block.  Holds
        without one (a HEAD, a DELETE) are short and are not watched.
        """
        base = os.path.join(self.directory, upload_id)
        fd = os.open(base + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            handed_over = self._acquire(fd, base + ".stop", timeout)
            hold = _Hold(base + ".stop", on_stop) if on_stop is not None else None
            if hold is not None:
                _watcher.add(hold)
            try:
                yield handed_over
            finally:
                if hold is not None:
                    _watcher.remove(hold)
                unlock_descriptor(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _acquire(fd: int, stop_path: str, timeout: float) -> bool:
        """Take the lock; return whether a holder had to be asked to stop.

        With ``timeout <= 0`` nobody is asked: the caller only wants a free lock
        (the cleanup must never interrupt a running upload)."""
        if lock_descriptor(fd, blocking=False):
            return False
        if timeout <= 0:
            raise LockTimeout(stop_path)
        deadline = time.monotonic() + timeout
        pause = FIRST_POLL
        while True:
            _request_stop(stop_path)
            if lock_descriptor(fd, blocking=False):
                return True
            if time.monotonic() >= deadline:
                raise LockTimeout(stop_path)
            time.sleep(pause)
            pause = min(pause * 2, POLL_INTERVAL)  # most holds end within a millisecond


def _request_stop(stop_path: str) -> None:
    """Stamp the stop file with a fresh time, creating it if needed."""
    now = time.time_ns()
    try:
        os.utime(stop_path, ns=(now, now))
    except FileNotFoundError:
        with open(stop_path, "ab"):
            pass
        os.utime(stop_path, ns=(now, now))
