"""Per-upload locks across threads, worker processes and hosts, with hand-over.

A lock is filelock's native lock (``flock`` on Unix) on a descriptor of
``<id>.lock``, through ``filelock.lock_descriptor``: the same primitive as
``filelock.FileLock`` at a few microseconds instead of a hundred and more.  The
kernel drops the lock when its holder dies, so a ``kill -9`` never leaves an
upload locked, and the lock file is never unlinked while in use (unlinking a lock
file someone else still holds lets a third request lock a fresh inode).

Hand-over: a request that finds the lock taken asks the holder to stop by
creating ``.stops/<id>`` in the upload directory, again every poll, until it
gets the lock or ``lock_timeout`` passes.  One watcher thread per process lists
that directory every :data:`POLL_INTERVAL` while the process holds watched
locks, so the cost of a poll does not grow with the number of open uploads; a
hold whose upload is named there has its ``on_stop`` called, and called again
every poll until it lets go.  A new holder removes the request it satisfied, so
a request left behind by a crashed process stops nobody later than once.

Creating these files tolerates the answers a shared filesystem gives when two
hosts race (``EEXIST`` for a plain ``O_CREAT``, ``ESTALE``).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from filelock import lock_descriptor, unlock_descriptor

log = logging.getLogger("tuswsgi")

POLL_INTERVAL = 0.05
FIRST_POLL = 0.001
STOPS_DIR = ".stops"
#: Errors a shared filesystem answers for a file another host just created or replaced.
_RACE_ERRORS = (errno.EEXIST, errno.ESTALE)


class LockTimeout(Exception):
    """The holder did not let go within the timeout."""


def open_shared(path: str, flags: int) -> int:
    """``os.open(path, flags | O_CREAT)`` that tolerates a racing creator.

    Some distributed filesystems answer ``EEXIST`` to the loser of a plain
    ``O_CREAT`` race, or ``ESTALE`` for a name another client just replaced;
    the file is there, so opening it again succeeds.
    """
    for attempt in range(3):
        try:
            return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno not in _RACE_ERRORS or attempt == 2:
                raise
    raise AssertionError("not reached")


class _Hold:
    __slots__ = ("on_stop", "stopped", "upload_id")

    def __init__(self, upload_id: str, on_stop: Callable[[], None]) -> None:
        self.upload_id = upload_id
        self.on_stop = on_stop
        self.stopped = False


class _StopWatcher:
    """One daemon thread per process and directory that notices stop requests."""

    def __init__(self, stops_dir: str) -> None:
        self.stops_dir = stops_dir
        self._reset()
        _watchers.add(self)

    def _reset(self) -> None:
        """A fresh state; in a forked child, whose copy of the condition may be
        held by the parent's watcher thread, which the child does not have."""
        self._holds: dict[str, _Hold] = {}
        self._stopped: set[_Hold] = set()  # asked to stop, not let go yet
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None

    def add(self, hold: _Hold) -> None:
        with self._cond:
            self._holds[hold.upload_id] = hold
            self._ensure_thread()
            self._cond.notify()

    def remove(self, hold: _Hold) -> None:
        with self._cond:
            self._stopped.discard(hold)
            if self._holds.get(hold.upload_id) is hold:
                del self._holds[hold.upload_id]

    def _ensure_thread(self) -> None:
        """Start the thread if this process has none (first use, after a fork, or
        after a start that failed: it is tried again at the next hold)."""
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name="tuswsgi-stop-watcher", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread could be created (EAGAIN)
            self._thread = None
            log.error("cannot start the lock hand-over watcher (%s); will retry", exc)
            return
        self._thread = thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._holds:
                    self._cond.wait()
            for hold in self._to_stop():
                hold.stopped = True
                try:
                    hold.on_stop()
                except Exception:
                    log.exception("lock hand-over callback failed")
            time.sleep(POLL_INTERVAL)

    def _to_stop(self) -> list[_Hold]:
        """Holds asked to stop: those named in the stops directory, and those
        already stopped (poked again until they let go).  The work follows the
        requests, not the thousands of holds a worker may have."""
        try:
            with os.scandir(self.stops_dir) as entries:
                requested = [entry.name for entry in entries]
        except OSError:
            requested = []
        with self._cond:
            self._stopped.update(self._holds[name] for name in requested if name in self._holds)
            return list(self._stopped)


_watchers: weakref.WeakSet[_StopWatcher] = weakref.WeakSet()


def _reset_watchers_in_child() -> None:
    for watcher in list(_watchers):
        watcher._reset()


os.register_at_fork(after_in_child=_reset_watchers_in_child)


class UploadLocker:
    """Hands out per-upload locks for uploads stored in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.stops_dir = os.path.join(directory, STOPS_DIR)
        self._watcher = _StopWatcher(self.stops_dir)

    @contextmanager
    def hold(self, upload_id: str, timeout: float,
             on_stop: Optional[Callable[[], None]] = None) -> Iterator[bool]:
        """Hold the lock of ``upload_id`` (already validated) for the ``with`` block,
        which receives whether the lock had to be taken over from another request.

        ``on_stop`` runs on the watcher thread when a newer request asks for the
        upload, and again every poll until the block is left; the holder should
        then finish quickly.  Holds without one (a HEAD, a DELETE) are short and
        are not watched.
        """
        fd = open_shared(os.path.join(self.directory, upload_id + ".lock"), os.O_RDWR)
        try:
            handed_over = self._acquire(fd, upload_id, timeout)
            hold = _Hold(upload_id, on_stop) if on_stop is not None else None
            if hold is not None:
                self._watcher.add(hold)
            try:
                yield handed_over
            finally:
                if hold is not None:
                    self._watcher.remove(hold)
                unlock_descriptor(fd)
        finally:
            os.close(fd)

    def _acquire(self, fd: int, upload_id: str, timeout: float) -> bool:
        """Take the lock; return whether a holder had to be asked to stop.

        With ``timeout <= 0`` nobody is asked: the caller only wants a free lock
        (the cleanup must never interrupt a running upload)."""
        if lock_descriptor(fd, blocking=False):
            self._withdraw(upload_id)
            return False
        if timeout <= 0:
            raise LockTimeout(upload_id)
        deadline = time.monotonic() + timeout
        pause = FIRST_POLL
        while True:
            self._request_stop(upload_id)
            if lock_descriptor(fd, blocking=False):
                self._withdraw(upload_id)
                return True
            if time.monotonic() >= deadline:
                self._withdraw(upload_id)
                raise LockTimeout(upload_id)
            time.sleep(pause)
            pause = min(pause * 2, POLL_INTERVAL)  # most holds end within a millisecond

    def _request_stop(self, upload_id: str) -> None:
        path = os.path.join(self.stops_dir, upload_id)
        try:
            os.close(open_shared(path, os.O_WRONLY))
        except FileNotFoundError:  # the first hand-over in this directory
            os.makedirs(self.stops_dir, exist_ok=True)
            os.close(open_shared(path, os.O_WRONLY))

    def _withdraw(self, upload_id: str) -> None:
        """Remove the stop request for ``upload_id``: it was met, or given up."""
        try:
            os.unlink(os.path.join(self.stops_dir, upload_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ESTALE:
                raise
