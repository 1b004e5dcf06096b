"""ThreadPool: what gunicorn's worker needs of its executor, with submits that
never wait for a thread to start."""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from tuswsgi.server.pool import ThreadPool


def test_a_submitted_call_runs_and_its_future_has_the_result():
    pool = ThreadPool(4)
    assert pool.submit(lambda a, b: a + b, 2, 3).result(timeout=5) == 5
    pool.shutdown()


def test_an_exception_is_carried_by_the_future():
    pool = ThreadPool(4)

    def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        pool.submit(fail).result(timeout=5)
    pool.shutdown()


def test_done_callbacks_run_and_idle_threads_are_reused():
    pool = ThreadPool(8)
    done = []
    for i in range(20):
        future = pool.submit(lambda i=i: i)
        future.add_done_callback(lambda f: done.append(f.result()))
        future.result(timeout=5)
        wait_for(lambda: pool._idle == 1)  # the thread is back for the next call
    assert sorted(done) == list(range(20))
    assert pool._threads == 1  # one call at a time: the same thread every time
    pool.shutdown()


def test_at_most_size_threads_and_the_rest_wait_their_turn():
    pool = ThreadPool(3)
    gate = threading.Event()
    running = []
    futures = [pool.submit(lambda i=i: (running.append(i), gate.wait(5))) for i in range(5)]
    time.sleep(0.2)
    assert len(running) == 3 and pool._threads == 3
    gate.set()
    for future in futures:
        future.result(timeout=5)
    assert sorted(running) == list(range(5))
    pool.shutdown()


def test_after_shutdown_the_calls_already_submitted_run_and_every_thread_ends():
    pool = ThreadPool(4)
    futures = [pool.submit(time.sleep, 0.05) for _ in range(6)]
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(print)
    for future in futures:
        future.result(timeout=5)
    wait_for(pool._work.empty)  # each thread took its end marker


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)
