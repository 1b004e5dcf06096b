"""concatenation-unfinished under concurrency, over a real gunicorn with several
workers: 20 final uploads over shared and unshared partial uploads, the finals
created while their parts are still being sent, every part sent in parallel in
random order and random pieces, each request served by whichever worker takes
it.  Every final must hold exactly its parts' bytes (SHA-256), be finished once
(one ``upload.finished``, one ``post-finish``), and no lock order may deadlock
(two finals share parts, and one final names a part twice)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import pytest
import requests
from conftest import OCTET, TUS, Server, start_gunicorn
from support.hookreceiver import HookReceiver

pytestmark = pytest.mark.e2e

FINALS = 20
SHARED = 6
SEED = int(os.environ.get("CONCAT_SEED", "20"))


@dataclass
class Part:
    data: bytes
    deferred: bool = False
    url: str = ""
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[HookReceiver]:
    hooks = HookReceiver()
    yield hooks
    hooks.close()


@pytest.fixture
def server(tmp_path, receiver) -> Iterator[Server]:
    app = start_gunicorn(tmp_path, workers=4, threads=16, env={
        "TUSWSGI_HOOKS_HTTP": receiver.url, "TUSWSGI_HOOKS_ENABLED": "post-finish",
        "TUSWSGI_LOCK_TIMEOUT": "5s"})
    yield app
    app.stop()


def create_part(session: requests.Session, base: str, part: Part) -> None:
    length = {"Upload-Defer-Length": "1"} if part.deferred else {"Upload-Length": str(len(part.data))}
    response = session.post(base, headers={**TUS, "Upload-Concat": "partial", **length}, timeout=30)
    assert response.status_code == 201, response.text
    part.url = response.headers["Location"]


def send_piece(session: requests.Session, part: Part, size: int) -> None:
    """The next ``size`` bytes of ``part`` (the last piece of a deferred part names its length)."""
    with part.lock:  # one request per part at a time, as a client sends them
        piece = part.data[part.sent:part.sent + size]
        headers = {**TUS, "Upload-Offset": str(part.sent), "Content-Type": OCTET}
        if part.deferred and part.sent + len(piece) == len(part.data):
            headers["Upload-Length"] = str(len(part.data))
        response = session.patch(part.url, data=piece, headers=headers, timeout=60)
        assert response.status_code == 204, (response.status_code, response.text)
        part.sent += len(piece)
        assert response.headers["Upload-Offset"] == str(part.sent)


def pieces(rng: random.Random, part: Part) -> list[int]:
    """Random piece sizes for what is left of ``part`` (at least one piece)."""
    left, sizes = len(part.data) - part.sent, []
    while left > 0 or not sizes:
        size = min(left, rng.randint(1, 96 * 1024))
        sizes.append(size)
        left -= size
    return sizes


def test_twenty_finals_over_shared_parts_sent_in_parallel(server, receiver):
    rng = random.Random(SEED)
    base = server.url
    shared = [Part(os.urandom(rng.randint(1, 200_000))) for _ in range(SHARED)]
    own = [[Part(os.urandom(rng.randint(0, 120_000)), deferred=rng.random() < 0.15)
            for _ in range(rng.randint(1, 2))] for _ in range(FINALS)]
    layouts: list[list[Part]] = []
    for index in range(FINALS):
        chosen = rng.sample(shared, rng.randint(1, 3)) + own[index]
        if index % 5 == 0:
            chosen.append(chosen[0])  # the same part twice in one final
        rng.shuffle(chosen)
        layouts.append(chosen)
    parts = shared + [part for group in own for part in group]
    session = requests.Session()
    for part in parts:
        create_part(session, base, part)
    for part in rng.sample(parts, len(parts) // 3):  # some parts are well on their way...
        send_piece(session, part, rng.randint(0, len(part.data)))
    for part in rng.sample(parts, 3):  # ...and a few are finished before any final exists
        send_piece(session, part, len(part.data) - part.sent)

    # Finals are created in parallel, while the parts' bytes arrive in parallel.
    work = [(part, size) for part in parts for size in pieces(rng, part)]
    rng.shuffle(work)
    sessions = threading.local()

    def thread_session() -> requests.Session:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        return sessions.session

    def create_final(layout: list[Part]) -> str:
        response = thread_session().post(base, timeout=60, headers={
            **TUS, "Upload-Concat": "final;" + " ".join(part.url for part in layout)})
        assert response.status_code == 201, response.text
        return response.headers["Location"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        final_futures = [pool.submit(create_final, layout) for layout in layouts]
        piece_futures = [pool.submit(lambda p=part, s=size: send_piece(thread_session(), p, s))
                         for part, size in work]
        finals = [future.result(timeout=300) for future in final_futures]
        for future in piece_futures:
            future.result(timeout=300)
    assert all(part.sent == len(part.data) for part in parts)

    for url, layout in zip(finals, layouts):
        expected = b"".join(part.data for part in layout)
        head = session.head(url, headers=TUS, timeout=30)
        assert head.status_code == 200
        assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(expected))
        stored = server.upload_dir / url.rsplit("/", 1)[1]
        assert sha(stored.read_bytes()) == sha(expected), url
        download = session.get(url, timeout=60)
        assert download.status_code == 200 and sha(download.content) == sha(expected)
    assert not (server.upload_dir / ".finals").exists() or \
        not any((server.upload_dir / ".finals").iterdir())
    assert not list(server.upload_dir.glob("*.pending"))

    log = server.log()
    workers = set(re.findall(r"\[(\d+)\] \[INFO\] request method=PATCH", log))
    assert len(workers) >= 2, "the parts' bytes all went through one worker"
    final_ids = {url.rsplit("/", 1)[1] for url in finals}
    finished = Counter(re.findall(r"upload\.finished upload=(\w+)", log))
    assert {final: finished[final] for final in final_ids} == {final: 1 for final in final_ids}
    wait_until(lambda: final_ids <= posted_finishes(receiver))
    counts = Counter(call["event"]["Event"]["Upload"]["ID"] for call in receiver.of_type("post-finish"))
    assert {final: counts[final] for final in final_ids} == {final: 1 for final in final_ids}


def posted_finishes(receiver: HookReceiver) -> set[str]:
    return {call["event"]["Event"]["Upload"]["ID"] for call in receiver.of_type("post-finish")}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_deleting_a_part_ends_its_unfinished_final_across_workers(server):
    """DELETE of a part (in one worker) while its final waits (assembled in others):
    204, and from then on the final answers 410 in every worker."""
    base = server.url
    session = requests.Session()
    first, second = Part(os.urandom(1000)), Part(os.urandom(2000))
    for part in (first, second):
        create_part(session, base, part)
    send_piece(session, first, 1000)
    final = session.post(base, headers={**TUS, "Upload-Concat": f"final;{first.url} {second.url}"},
                         timeout=30).headers["Location"]
    assert session.head(final, headers=TUS, timeout=30).headers["Upload-Offset"] == "1000"
    assert session.delete(second.url, headers=TUS, timeout=30).status_code == 204
    for _ in range(8):  # fresh connections land on different workers
        assert requests.head(final, headers=TUS, timeout=30).status_code == 410
    assert not (server.upload_dir / final.rsplit("/", 1)[1]).exists()
