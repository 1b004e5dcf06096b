"""A concurrent concatenation workload: final uploads over shared and unshared
partial uploads, created while the parts' bytes arrive in parallel, in random
pieces and order, each request sent to a random one of several servers (workers
of one gunicorn, or hosts on one shared file system)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from conftest import OCTET, TUS


@dataclass
class Part:
    data: bytes
    deferred: bool = False
    path: str = ""
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Workload:
    parts: list[Part]
    layouts: list[list[Part]]  # each final's parts, in order
    finals: list[str] = field(default_factory=list)  # their paths, once created

    def expected(self, index: int) -> bytes:
        return b"".join(part.data for part in self.layouts[index])


def plan(rng: random.Random, finals: int, shared: int, max_part: int = 200_000) -> Workload:
    """``finals`` layouts of 1 to 3 shared parts and 1 or 2 of their own (some of
    deferred length, some empty), shuffled (a final names each part once)."""
    common = [Part(os.urandom(rng.randint(1, max_part))) for _ in range(shared)]
    layouts, parts = [], list(common)
    for _ in range(finals):
        own = [Part(os.urandom(rng.randint(0, max_part // 2)), deferred=rng.random() < 0.15)
               for _ in range(rng.randint(1, 2))]
        parts += own
        chosen = rng.sample(common, rng.randint(1, min(3, shared))) + own
        rng.shuffle(chosen)
        layouts.append(chosen)
    return Workload(parts, layouts)


class Sender:
    """Requests spread over ``bases`` (``http://host:port``), one session per thread."""

    def __init__(self, bases: list[str], seed: int) -> None:
        self.bases = bases
        self._local = threading.local()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def base(self) -> str:
        with self._rng_lock:
            return self._rng.choice(self.bases)

    def create_part(self, part: Part) -> None:
        length = {"Upload-Defer-Length": "1"} if part.deferred else {"Upload-Length": str(len(part.data))}
        response = self._session().post(self.base() + "/files/", timeout=60,
                                        headers={**TUS, "Upload-Concat": "partial", **length})
        assert response.status_code == 201, response.text
        part.path = "/files/" + response.headers["Location"].rsplit("/", 1)[1]

    def send_piece(self, part: Part, size: int) -> None:
        """The next ``size`` bytes (the last piece of a deferred part names its length)."""
        with part.lock:  # one request per part at a time, as a client sends them
            piece = part.data[part.sent:part.sent + size]
            headers = {**TUS, "Upload-Offset": str(part.sent), "Content-Type": OCTET}
            if part.deferred and part.sent + len(piece) == len(part.data):
                headers["Upload-Length"] = str(len(part.data))
            response = self._session().patch(self.base() + part.path, data=piece, headers=headers,
                                             timeout=120)
            assert response.status_code == 204, (response.status_code, response.text)
            part.sent += len(piece)
            assert response.headers["Upload-Offset"] == str(part.sent)

    def create_final(self, layout: list[Part]) -> str:
        response = self._session().post(self.base() + "/files/", timeout=120, headers={
            **TUS, "Upload-Concat": "final;" + " ".join(part.path for part in layout)})
        assert response.status_code == 201, response.text
        return "/files/" + response.headers["Location"].rsplit("/", 1)[1]


def pieces(rng: random.Random, part: Part) -> list[int]:
    """Random piece sizes for what is left of ``part`` (at least one piece)."""
    left, sizes = len(part.data) - part.sent, []
    while left > 0 or not sizes:
        size = min(left, rng.randint(1, 96 * 1024))
        sizes.append(size)
        left -= size
    return sizes


def run(work: Workload, sender: Sender, rng: random.Random, threads: int = 12) -> None:
    """Create the parts, start some and finish a few, then create the finals while
    every remaining piece is sent, all in parallel."""
    for part in work.parts:
        sender.create_part(part)
    for part in rng.sample(work.parts, len(work.parts) // 3):  # some well on their way...
        sender.send_piece(part, rng.randint(0, len(part.data)))
    for part in rng.sample(work.parts, 3):  # ...a few finished before any final exists
        sender.send_piece(part, len(part.data) - part.sent)
    jobs = [(part, size) for part in work.parts for size in pieces(rng, part)]
    rng.shuffle(jobs)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        final_futures = [pool.submit(sender.create_final, layout) for layout in work.layouts]
        piece_futures = [pool.submit(sender.send_piece, part, size) for part, size in jobs]
        work.finals = [future.result(timeout=600) for future in final_futures]
        for future in piece_futures:
            future.result(timeout=600)
    assert all(part.sent == len(part.data) for part in work.parts)


def check_finals(work: Workload, sender: Sender, upload_dir: Path) -> None:
    """Every final complete, holding exactly its parts' bytes, as every server sees it;
    no link or tentative copy left behind."""
    session = requests.Session()
    for index, path in enumerate(work.finals):
        expected = work.expected(index)
        for base in sender.bases:
            head = session.head(base + path, headers=TUS, timeout=60)
            assert head.status_code == 200
            assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(expected))
        assert sha(read(upload_dir / path.rsplit("/", 1)[1])) == sha(expected), path
        download = session.get(sender.base() + path, timeout=120)
        assert download.status_code == 200 and sha(download.content) == sha(expected)
    links = upload_dir / ".finals"
    assert not links.exists() or not any(links.iterdir())
    assert not list(upload_dir.glob("*.pending"))


def finished_once(work: Workload, logs: list[str]) -> None:
    """One ``upload.finished`` per final, over every server's log."""
    ids = {path.rsplit("/", 1)[1] for path in work.finals}
    counts = Counter(re.findall(r"upload\.finished upload=(\w+)", "\n".join(logs)))
    assert {final: counts[final] for final in ids} == {final: 1 for final in ids}


def read(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
