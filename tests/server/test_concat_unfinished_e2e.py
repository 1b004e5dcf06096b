"""concatenation-unfinished under concurrency, over a real gunicorn with several
workers: 20 final uploads over shared and unshared partial uploads, the finals
created while their parts are still being sent, every part sent in parallel in
random order and random pieces, each request served by whichever worker takes
it.  Every final must hold exactly its parts' bytes (SHA-256), be finished once
(one ``upload.finished``, one ``post-finish``), and no lock order may deadlock
(finals share parts).  The same workload across two
hosts on one MooseFS volume: tests/server/test_multihost_moosefs.py."""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from typing import Iterator

import pytest
import requests
from conftest import TUS, Server, start_gunicorn
from support import concatload
from support.hookreceiver import HookReceiver

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("CONCAT_SEED", "20"))


@pytest.fixture
def receiver() -> Iterator[HookReceiver]:
    hooks = HookReceiver()
    yield hooks
    hooks.close()


@pytest.fixture
def server(tmp_path, receiver) -> Iterator[Server]:
    # 32 threads: 16 may read bodies at once, more than the 12 client threads ever send.
    app = start_gunicorn(tmp_path, workers=4, threads=32, env={
        "TUSWSGI_HOOKS_HTTP": receiver.url, "TUSWSGI_HOOKS_ENABLED": "post-finish"})
    yield app
    app.stop()


def test_twenty_finals_over_shared_parts_sent_in_parallel(server, receiver):
    rng = random.Random(SEED)
    work = concatload.plan(rng, finals=20, shared=6)
    sender = concatload.Sender([f"http://127.0.0.1:{server.port}"], SEED)
    concatload.run(work, sender, rng)
    concatload.check_finals(work, sender, server.upload_dir)

    log = server.log()
    workers = set(re.findall(r"\[(\d+)\] \[INFO\] request method=PATCH", log))
    assert len(workers) >= 2, "the parts' bytes all went through one worker"
    concatload.finished_once(work, [log])
    final_ids = {path.rsplit("/", 1)[1] for path in work.finals}
    wait_until(lambda: final_ids <= posted_finishes(receiver))
    counts = Counter(call["event"]["Event"]["Upload"]["ID"] for call in receiver.of_type("post-finish"))
    assert {final: counts[final] for final in final_ids} == {final: 1 for final in final_ids}


def posted_finishes(receiver: HookReceiver) -> set[str]:
    return {call["event"]["Event"]["Upload"]["ID"] for call in receiver.of_type("post-finish")}


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_deleting_a_part_ends_its_unfinished_final_in_every_worker(server):
    """DELETE of a part while its final waits: 204, and from then on the final
    answers 410 whichever worker is asked."""
    base = f"http://127.0.0.1:{server.port}"
    sender = concatload.Sender([base], SEED)
    first, second = concatload.Part(os.urandom(1000)), concatload.Part(os.urandom(2000))
    for part in (first, second):
        sender.create_part(part)
    sender.send_piece(first, 1000)
    final = sender.create_final([first, second])
    session = requests.Session()
    assert session.head(base + final, headers=TUS, timeout=30).headers["Upload-Offset"] == "1000"
    assert session.delete(base + second.path, headers=TUS, timeout=30).status_code == 204
    for _ in range(8):  # fresh connections land on different workers
        assert requests.head(base + final, headers=TUS, timeout=30).status_code == 410
    assert not (server.upload_dir / final.rsplit("/", 1)[1]).exists()
