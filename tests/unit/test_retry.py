"""The background retry: again and again, less often, until done or given up."""

from __future__ import annotations

import itertools
import threading
import time

from tuswsgi.retry import Retrier


class Flaky:
    """Fails ``failures`` times, then succeeds; records when it was called."""

    def __init__(self, failures: int, error: bool = False) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []
        self.done = threading.Event()

    def __call__(self) -> bool:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            if self.error:
                raise OSError("disk still full")
            return False
        self.done.set()
        return True


def wait_empty(retrier: Retrier, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while retrier.pending():
        assert time.monotonic() < deadline, retrier.pending()
        time.sleep(0.01)


def test_an_attempt_is_repeated_with_growing_pauses_until_it_succeeds():
    retrier = Retrier(first=0.02, longest=0.08)
    attempt = Flaky(3)
    started = time.monotonic()
    retrier.schedule("a", attempt)
    assert attempt.done.wait(5)
    wait_empty(retrier)
    assert len(attempt.calls) == 4
    pauses = [later - earlier for earlier, later in itertools.pairwise([started, *attempt.calls])]
    assert all(pause >= wanted * 0.9 for pause, wanted in zip(pauses, [0.02, 0.04, 0.08, 0.08], strict=True))


def test_an_exception_counts_as_a_failure():
    retrier = Retrier(first=0.01, longest=0.01)
    attempt = Flaky(2, error=True)
    retrier.schedule("a", attempt)
    assert attempt.done.wait(5)


def test_one_entry_per_key():
    retrier = Retrier(first=0.05)
    first, second = Flaky(0), Flaky(0)
    retrier.schedule("same", first)
    retrier.schedule("same", second)
    assert first.done.wait(5)
    wait_empty(retrier)
    assert second.calls == []


def test_it_gives_up_after_its_time():
    retrier = Retrier(first=0.01, longest=0.01, give_up=0.1)
    attempt = Flaky(10**6)
    retrier.schedule("never", attempt)
    wait_empty(retrier)
    count = len(attempt.calls)
    time.sleep(0.05)
    assert len(attempt.calls) == count and count >= 2
