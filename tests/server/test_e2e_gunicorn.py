"""End to end against a real gunicorn, with the real tus client (tuspy)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pytest
import requests
from conftest import (
    OCTET,
    TUS,
    Server,
    assert_writes_traceable,
    listening_socket,
    port_of,
    random_file,
    sha256_file,
    wait_for_port,
    wait_for_size,
)
from support.deploy import upload_with_cuts

pytestmark = pytest.mark.e2e


def test_zero_config_gunicorn_serves_an_interrupted_200mb_upload(tmp_path):
    """README promise: `gunicorn tuswsgi:app` with no configuration, files in ./uploads."""
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    listener = listening_socket()
    port = port_of(listener)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUSWSGI_")}
    with listener, open(tmp_path / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"fd://{listener.fileno()}",
                                 "tuswsgi:app"], cwd=workdir, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(listener.fileno(),))
    server = Server(proc, port, workdir / "uploads", tmp_path / "gunicorn.log")
    try:
        wait_for_port(port, proc)
        source = random_file(tmp_path / "big.bin", 200 * 1024 * 1024)
        path = upload_with_cuts(port, source, cuts=[37_000_123, 51_000_777],
                                chunk_size=64 * 1024 * 1024)
        url = f"http://127.0.0.1:{port}{path}"
        upload_id = url.rsplit("/", 1)[1]
        stored = workdir / "uploads" / upload_id
        assert sha256_file(stored) == sha256_file(source)
        head = requests.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == str(source.stat().st_size)
    finally:
        server.stop()


def test_tuspy_resumes_after_cut_connections_multiworker(gunicorn_server, tmp_path):
    source = random_file(tmp_path / "src.bin", 12 * 1024 * 1024 + 4321)
    url = upload_with_cuts(gunicorn_server.port, source, cuts=[1_000_001, 3_333_333, 2_000_000],
                           chunk_size=4 * 1024 * 1024)
    stored = gunicorn_server.upload_dir / url.rsplit("/", 1)[1]
    assert sha256_file(stored) == sha256_file(source)


def test_cut_mid_patch_keeps_received_bytes(gunicorn_server):
    """Every byte that reached the server before the connection died is kept: the
    client sends exactly 250,000 of 1,000,000 body bytes and closes its socket."""
    response = requests.post(gunicorn_server.url, headers={**TUS, "Upload-Length": "1000000"})
    url = response.headers["Location"]
    path = urlsplit(url).path
    payload = os.urandom(1_000_000)
    sock = socket.create_connection(("127.0.0.1", gunicorn_server.port))
    sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: test\r\nTus-Resumable: 1.0.0\r\n"
                  f"Upload-Offset: 0\r\nContent-Type: {OCTET}\r\n"
                  f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload[:250_000])
    sock.close()
    stored = gunicorn_server.upload_dir / path.rsplit("/", 1)[1]
    wait_for_size(stored, 1)  # the PATCH holds the upload: the HEAD below takes it over
    offset = int(requests.head(url, headers=TUS).headers["Upload-Offset"])
    assert offset == 250_000  # the hand-over let the bytes still on their way land first
    assert stored.read_bytes() == payload[:offset]
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET}
    assert requests.patch(url, data=payload[offset:], headers=headers).status_code == 204
    assert stored.read_bytes() == payload


def test_concurrent_patches_from_many_workers_never_interleave(gunicorn_server):
    """Racing writers on one upload: every byte on disk was written at the offset its
    request named, and every acknowledged chunk is on disk exactly.

    Each attempt sends one distinct fill byte, so the file is a sequence of runs and
    each run can be traced back to the request that wrote it.
    """
    piece = 256 * 1024
    total = piece * 24
    url = requests.post(gunicorn_server.url, headers={**TUS, "Upload-Length": str(total)}).headers["Location"]
    attempts: dict[int, tuple[int, int]] = {}  # fill byte -> (offset, length)
    acknowledged: list[tuple[int, int, int]] = []  # (offset, new offset, fill byte)
    lock = threading.Lock()

    def writer(seed: int) -> None:
        session = requests  # a fresh connection per request: gunicorn closes a connection
        # after an error response whose body it would have to drain
        for attempt in range(40):
            offset = int(session.head(url, headers=TUS).headers["Upload-Offset"])
            if offset >= total:
                return
            fill = seed * 40 + attempt
            data = bytes([fill]) * min(piece, total - offset)
            with lock:
                attempts[fill] = (offset, len(data))
            response = session.patch(url, data=data, headers={
                **TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
            if response.status_code == 204:
                with lock:
                    acknowledged.append((offset, int(response.headers["Upload-Offset"]), fill))
            else:
                assert response.status_code in (400, 409, 423), response.text

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = (gunicorn_server.upload_dir / url.rsplit("/", 1)[1]).read_bytes()
    assert len(stored) == total
    assert int(requests.head(url, headers=TUS).headers["Upload-Offset"]) == total
    assert acknowledged, "no PATCH succeeded"
    runs = assert_writes_traceable(stored, attempts, acknowledged)
    print(f"{len(attempts)} attempts, {len(acknowledged)} acknowledged, {runs} runs on disk")
