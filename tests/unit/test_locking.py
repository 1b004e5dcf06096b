"""UploadLocker in-process: exclusion, hand-over, timeouts, stale requests, fork, and
a watcher thread that could not start."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tuswsgi.locking import LockTimeout, UploadLocker, open_shared

ID = "a" * 32


@pytest.fixture
def locker(tmp_path) -> UploadLocker:
    return UploadLocker(str(tmp_path))


class Holder(threading.Thread):
    """Holds the lock in another thread until released or asked to stop."""

    def __init__(self, locker: UploadLocker, *, watched: bool = True) -> None:
        super().__init__(daemon=True)
        self.locker = locker
        self.watched = watched
        self.holding = threading.Event()
        self.release = threading.Event()
        self.stops = 0

    def on_stop(self) -> None:
        self.stops += 1
        self.release.set()

    def run(self) -> None:
        with self.locker.hold(ID, 1.0, self.on_stop if self.watched else None):
            self.holding.set()
            self.release.wait(10)


def start_holder(locker: UploadLocker, **options) -> Holder:
    holder = Holder(locker, **options)
    holder.start()
    assert holder.holding.wait(5)
    return holder


def test_a_free_lock_is_taken_without_asking_anyone(locker):
    with locker.hold(ID, 1.0) as handed_over:
        assert handed_over is False
    assert not os.path.exists(locker.stops_dir)  # no request was ever made


def test_two_holders_exclude_each_other(locker):
    holder = start_holder(locker, watched=False)
    with pytest.raises(LockTimeout), locker.hold(ID, 0.2):
        pass
    holder.release.set()
    holder.join(5)
    with locker.hold(ID, 1.0) as handed_over:
        assert handed_over is False


def test_a_newcomer_asks_the_holder_to_stop_and_gets_the_lock(locker):
    holder = start_holder(locker)
    started = time.monotonic()
    with locker.hold(ID, 5.0) as handed_over:
        assert handed_over is True
        assert holder.stops >= 1
    assert time.monotonic() - started < 2  # a hang guard: the hand-over takes a poll or two
    assert os.listdir(locker.stops_dir) == []  # the request was withdrawn once met


def test_on_stop_is_called_again_every_poll_until_the_holder_lets_go(locker):
    """Why: a body blocked on a silent client is woken only by a later call."""
    calls = threading.Semaphore(0)
    holding, released = threading.Event(), threading.Event()

    def holder() -> None:
        with locker.hold(ID, 1.0, calls.release):
            holding.set()
            released.wait(10)

    def newcomer() -> None:
        with locker.hold(ID, 10.0):
            pass

    threads = [threading.Thread(target=holder, daemon=True), threading.Thread(target=newcomer, daemon=True)]
    threads[0].start()
    assert holding.wait(5)
    threads[1].start()
    for _ in range(3):
        assert calls.acquire(timeout=5)
    released.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


def test_timeout_zero_never_interrupts(locker):
    holder = start_holder(locker)
    with pytest.raises(LockTimeout), locker.hold(ID, 0):
        pass
    assert holder.stops == 0 and not holder.release.is_set()
    assert not os.path.exists(os.path.join(locker.stops_dir, ID))
    holder.release.set()
    holder.join(5)


def test_a_newcomer_that_gives_up_withdraws_its_request(locker):
    holder = start_holder(locker, watched=False)
    with pytest.raises(LockTimeout), locker.hold(ID, 0.1):
        pass
    assert os.listdir(locker.stops_dir) == []
    holder.release.set()
    holder.join(5)


def test_a_stale_request_left_by_a_dead_process_stops_nobody(locker):
    """A crashed newcomer's request file: the next holder removes it when it takes
    the lock, so it stops nobody later."""
    os.makedirs(locker.stops_dir)
    open(os.path.join(locker.stops_dir, ID), "w").close()
    polls = threading.Semaphore(0)
    watcher = locker._watcher
    real_to_stop = watcher._to_stop

    def counted():
        polls.release()
        return real_to_stop()

    watcher._to_stop = counted
    holder = start_holder(locker)
    assert os.listdir(locker.stops_dir) == []
    for _ in range(3):  # the watcher looked three times: nothing to see
        assert polls.acquire(timeout=5)
    assert holder.stops == 0
    holder.release.set()
    holder.join(5)


def test_the_watcher_is_started_again_after_it_could_not_start(locker, monkeypatch):
    """Thread creation fails once (EAGAIN): hand-over is off for that hold only;
    the next hold starts the watcher and hand-over works."""
    watcher = locker._watcher
    real_start = threading.Thread.start
    failures = []

    def failing_start(thread: threading.Thread) -> None:
        if thread.name == "tuswsgi-stop-watcher" and not failures:
            failures.append(thread)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", failing_start)
    first = start_holder(locker)
    assert failures and watcher._thread is None
    first.release.set()
    first.join(5)
    holder = start_holder(locker)
    assert watcher._thread is not None and watcher._thread.is_alive()
    with locker.hold(ID, 5.0) as handed_over:
        assert handed_over and holder.stops >= 1


def test_after_a_fork_the_child_starts_its_own_watcher(locker):
    """A watcher thread does not survive fork(), and the parent's may hold the
    watcher's lock at that moment; the child arms its own at its first hold and
    hand-over works there."""
    holder = start_holder(locker)  # the parent's watcher runs, polling
    holder.release.set()
    holder.join(5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hand-over between two of its own threads
        code = 1
        try:
            child_holder = start_holder(locker)
            with locker.hold(ID, 5.0) as handed_over:
                code = 0 if handed_over and child_holder.stops >= 1 else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"\x00"
    os.waitpid(pid, 0)


@pytest.mark.parametrize("error", ["EEXIST", "ESTALE"])
def test_creating_a_lock_file_tolerates_a_racing_host(tmp_path, monkeypatch, error):
    """Some distributed filesystems answer EEXIST (or ESTALE) to the loser of a
    plain O_CREAT race; the file exists, so a second open succeeds."""
    import errno as errno_module
    real_open = os.open
    calls = []

    def racing_open(path, flags, mode=0o777):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(getattr(errno_module, error), error)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", racing_open)
    fd = open_shared(str(tmp_path / "x.lock"), os.O_RDWR)
    os.close(fd)
    assert len(calls) == 2
