"""Faults injected at the system-call level into a real gunicorn worker (strace
``-e inject=``), on the upload's own files only (``-P``).

For each: the client gets the right status, the offset never counts bytes that
are not durably there, and a resume finishes with the right SHA-256.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import pytest
import requests
from conftest import OCTET, TUS, Server, require_tool, sha256, start_gunicorn
from support.jsclient import node_client, stored

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

STRACE = shutil.which("strace")


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    require_tool("strace (Debian package strace)", STRACE is not None)
    running = start_gunicorn(tmp_path, workers=1, threads=4)
    yield running
    running.stop()


@pytest.fixture
def fsync_server(tmp_path) -> Iterator[Server]:
    require_tool("strace (Debian package strace)", STRACE is not None)
    running = start_gunicorn(tmp_path, workers=1, threads=4, env={"TUSWSGI_FSYNC": "always"})
    yield running
    running.stop()


def worker_pid(server: Server, timeout: float = 20) -> int:
    """The one worker's pid, once it has booted (the port answers before it has)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = re.findall(r"Booting worker with pid: (\d+)", server.log())
        if pids:
            assert len(pids) == 1, server.log()
            return int(pids[0])
        time.sleep(0.05)
    raise AssertionError(server.log())


@contextmanager
def injected(server: Server, *faults: str, path: Optional[Path] = None) -> Iterator[None]:
    """strace attached to the worker (all its threads), failing the syscalls in
    ``faults`` (``SYSCALL:error=ERRNO:when=N``), on ``path`` only when given."""
    syscalls = sorted({fault.split(":", 1)[0] for fault in faults})
    command = [STRACE, "-f", "-p", str(worker_pid(server)), "-o", os.devnull,
               "-e", "trace=" + ",".join(syscalls)]
    command += [arg for fault in faults for arg in ("-e", "inject=" + fault)]
    if path is not None:
        command += ["-P", str(path)]
    tracer = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        line = tracer.stderr.readline()
        assert "attached" in line, line
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=10)


def create(server: Server, length: int) -> str:
    answer = requests.post(server.url, headers={**TUS, "Upload-Length": str(length)}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.headers["Location"]


def patch(url: str, offset: int, data: bytes, **headers: str) -> requests.Response:
    return requests.patch(url, data=data, timeout=10, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": OCTET, **headers})


def offset_of(url: str) -> int:
    answer = requests.head(url, headers=TUS, timeout=10)
    assert answer.status_code == 200, answer.status_code
    return int(answer.headers["Upload-Offset"])


def resume(url: str, data: bytes) -> None:
    offset = offset_of(url)
    answer = patch(url, offset, data[offset:])
    assert answer.status_code == 204, answer.text
    assert answer.headers["Upload-Offset"] == str(len(data))


def data_file(server: Server, url: str) -> Path:
    return server.upload_dir / url.rsplit("/", 1)[1]


def test_a_refused_chunk_whose_undo_fails_is_never_counted(server):
    """A checksum mismatch whose ftruncate fails with EIO: the client is told 460,
    ``.pending`` stays, and the next request cuts the chunk before it reports."""
    data = os.urandom(1000)
    url = create(server, len(data))
    assert patch(url, 0, data[:100]).status_code == 204
    stored = data_file(server, url)
    with injected(server, "ftruncate:error=EIO:when=1", path=stored):
        answer = patch(url, 100, b"x" * 200, **{"Upload-Checksum": "sha1 " + "A" * 27 + "="})
    assert answer.status_code == 460, answer.text
    assert stored.stat().st_size == 300 and stored.with_suffix(".pending").exists()
    assert offset_of(url) == 100
    assert stored.stat().st_size == 100 and not stored.with_suffix(".pending").exists()
    resume(url, data)
    assert sha256(stored.read_bytes()) == sha256(data)


def test_disk_full_whose_cleanup_fails_still_answers_507(server):
    """ENOSPC mid-body, then the cut back to the last complete write fails too:
    still 507, and the bytes that were written count (they are on disk)."""
    data = os.urandom(3 * 1024 * 1024)
    url = create(server, len(data))
    stored = data_file(server, url)
    with injected(server, "write:error=ENOSPC:when=2", "ftruncate:error=EIO", path=stored):
        answer = patch(url, 0, data)
    assert answer.status_code == 507, answer.text
    kept = offset_of(url)
    assert stored.read_bytes() == data[:kept]
    resume(url, data)
    assert sha256(stored.read_bytes()) == sha256(data)


def test_fsync_failure_rolls_the_offset_back_to_what_is_durable(fsync_server):
    """``fsync = always``: an acknowledged request is on disk.  When its fsync fails
    the request's bytes are cut off again and the client is told 500."""
    server = fsync_server
    data = os.urandom(200_000)
    url = create(server, len(data))
    assert patch(url, 0, data[:50_000]).status_code == 204
    stored = data_file(server, url)
    with injected(server, "fsync:error=EIO:when=1", path=stored):
        answer = patch(url, 50_000, data[50_000:120_000])
    assert answer.status_code == 500 and answer.text.startswith("ERR_STORAGE"), answer.text
    assert offset_of(url) == 50_000 and stored.stat().st_size == 50_000
    resume(url, data)
    assert sha256(stored.read_bytes()) == sha256(data)


def test_delete_whose_tombstone_cannot_be_written_answers_204(server):
    """The data is gone, so the DELETE succeeded: 204, not 500 or 507.  Without its
    tombstone the upload answers 404 rather than 410.  (The tombstone's rename is
    the DELETE's only one; strace's -P does not match rename's paths.)"""
    url = create(server, 10)
    with injected(server, "rename:error=ENOSPC"):
        answer = requests.delete(url, headers=TUS, timeout=10)
    assert answer.status_code == 204, answer.text
    assert not data_file(server, url).exists()
    assert requests.head(url, headers=TUS, timeout=10).status_code == 404


def test_a_finish_that_cannot_be_recorded_still_answers_success(server):
    """The last bytes arrive but marking the upload finished fails (the disk is
    full): the bytes are stored, so the PATCH answers 204 with the whole offset.
    The finish is recorded once the disk takes it (by the background retry or the
    next HEAD, whichever comes first), once."""
    data = os.urandom(5000)
    url = create(server, len(data))
    info = data_file(server, url).with_suffix(".info")
    with injected(server, "rename:error=ENOSPC"):  # the PATCH's only rename: the finish
        answer = patch(url, 0, data)
        assert answer.status_code == 204, answer.text
        assert answer.headers["Upload-Offset"] == str(len(data))
        assert not json.loads(info.read_text())["finished"]
    assert offset_of(url) == len(data)
    assert json.loads(info.read_text())["finished"]
    finished = [line for line in server.log().splitlines() if "upload.finished" in line]
    assert len(finished) == 1, finished


def test_tus_js_client_reports_success_when_the_finish_cannot_be_recorded(server, tmp_path):
    """Every rename in the worker fails with ENOSPC while tus-js-client uploads, so
    the finished .info of its last PATCH cannot be written.  tus-js-client, allowed
    no retry at all, reports success; the file's SHA-256 is right; and with no
    request from anyone the upload ends up finished, post-finish logged once."""
    source = tmp_path / "upload.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    with injected(server, "rename:error=ENOSPC"):
        result = node_client("upload", server, source, options={"retryDelays": None})
        info = stored(server, result["url"]).with_suffix(".info")
        assert not json.loads(info.read_text())["finished"]
    assert [request[0] for request in result["requests"]] == ["POST", "PATCH", "PATCH", "PATCH", "PATCH"]
    assert all(request[3] in (201, 204) for request in result["requests"]), result["requests"]
    assert sha256(stored(server, result["url"]).read_bytes()) == sha256(source.read_bytes())
    deadline = time.monotonic() + 40
    while not json.loads(info.read_text())["finished"]:  # the worker's background retry
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.1)
    log = server.log()
    assert log.count("upload.finish_deferred") == 1, log[-3000:]
    assert log.count("upload.finished") == 1, log[-3000:]


def test_running_out_of_descriptors_in_accept_does_not_kill_the_worker(server):
    """accept4 fails with EMFILE three times: the worker pauses accepting, keeps
    running, and answers the waiting client."""
    pid = worker_pid(server)
    url = create(server, 10)
    with injected(server, "accept4:error=EMFILE:when=1..3"):
        assert requests.head(url, headers=TUS, timeout=10).status_code == 200
    assert worker_pid(server) == pid
    assert "accept failed" in server.log()
