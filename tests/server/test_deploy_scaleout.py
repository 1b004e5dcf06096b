"""Scaling out: two independent gunicorn servers (own masters, own ports) share one
upload directory behind an nginx round-robin upstream with no stickiness.

On one machine the shared directory is a local one; across hosts it is a network
file system whose locks work across hosts (see docs/scaling-out.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import OCTET, TUS, assert_writes_traceable, random_file, sha256, sha256_file
from support.deploy import start_production_gunicorn, upload_with_cuts
from support.nginx import start_nginx

pytestmark = pytest.mark.e2e


@pytest.fixture
def pair(tmp_path):
    """Two production gunicorns on one upload directory."""
    shared = tmp_path / "shared-uploads"
    servers = []
    try:
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            servers.append(start_production_gunicorn(workdir, upload_dir=shared, name=name,
                                                     TUSWSGI_BEHIND_PROXY="on",
                                                     TUSWSGI_EXPIRATION="2s",
                                                     TUSWSGI_NETWORK_TIMEOUT="1s",
                                                     TUSWSGI_CLEANUP_INTERVAL="1s"))
        yield servers
    finally:
        for server in servers:
            server.stop()


def patch_lines(log: str) -> int:
    return sum("request method=PATCH path=/files/" in line for line in log.splitlines())


def test_uploads_resume_on_whichever_instance_nginx_picks(pair, tmp_path, monkeypatch):
    nginx = start_nginx(tmp_path, [server.port for server in pair])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(nginx.prefix / "cert.pem"))
    try:
        source = random_file(tmp_path / "source.bin", 10 * 1024 * 1024 + 11)
        path = upload_with_cuts(nginx.https_port, source, cuts=[700_000, 900_000],
                                chunk_size=1024 * 1024, scheme="https", host="localhost")
    finally:
        nginx.server.stop()
    stored = pair[0].upload_dir / path.rsplit("/", 1)[1]
    assert sha256_file(stored) == sha256_file(source)
    counts = [patch_lines(server.log()) for server in pair]
    print(f"PATCH requests served per instance: {counts}")
    assert all(counts), f"round robin did not reach both instances: {counts}"


def test_concurrent_writers_on_different_instances_never_interleave(pair):
    """Six writers, three on each instance, race on one upload.  Each attempt sends
    its own fill byte, so the file is a sequence of runs, each traceable to the
    request that wrote it at the offset it named."""
    piece = 256 * 1024
    total = piece * 24
    urls = [server.url for server in pair]
    location = requests.post(urls[0], headers={**TUS, "Upload-Length": str(total)}, timeout=10)
    upload_id = location.headers["Location"].rsplit("/", 1)[1]
    attempts: dict[int, tuple[int, int]] = {}
    acknowledged: list[tuple[int, int, int]] = []
    instances_acknowledging: set[int] = set()
    lock = threading.Lock()
    errors: list[str] = []

    def writer(seed: int) -> None:
        url = urls[seed % 2] + upload_id
        for attempt in range(40):
            offset = int(requests.head(url, headers=TUS, timeout=30).headers["Upload-Offset"])
            if offset >= total:
                return
            fill = seed * 40 + attempt
            data = bytes([fill]) * min(piece, total - offset)
            with lock:
                attempts[fill] = (offset, len(data))
            response = requests.patch(url, data=data, timeout=30, headers={
                **TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
            if response.status_code == 204:
                with lock:
                    acknowledged.append((offset, int(response.headers["Upload-Offset"]), fill))
                    instances_acknowledging.add(seed % 2)
            elif response.status_code not in (400, 409, 423):
                errors.append(f"{response.status_code} {response.text}")

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    stored = (pair[0].upload_dir / upload_id).read_bytes()
    assert len(stored) == total
    for url in urls:
        assert int(requests.head(url + upload_id, headers=TUS, timeout=10).headers["Upload-Offset"]) == total
    assert instances_acknowledging == {0, 1}, "both instances should have written"
    runs = assert_writes_traceable(stored, attempts, acknowledged)
    print(f"{len(attempts)} attempts, {len(acknowledged)} acknowledged, {runs} runs on disk")


def test_cleanup_runs_on_either_instance_safely(pair, tmp_path: Path):
    """expiration=2s (network_timeout=1s), cleanup_interval=1s on both instances, and `tuswsgi cleanup`
    run from a third process on the same directory: an idle upload expires (410
    everywhere), while an upload written slowly, alternately on both instances,
    is never expired, interrupted or damaged."""
    urls = [server.url for server in pair]
    idle = requests.post(urls[0], headers={**TUS, "Upload-Length": "100"}, timeout=10).headers["Location"]
    idle_id = idle.rsplit("/", 1)[1]
    requests.patch(urls[0] + idle_id, data=b"x" * 10, timeout=10,
                   headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    data = os.urandom(20 * 64 * 1024)
    piece = 64 * 1024
    active = requests.post(urls[1], headers={**TUS, "Upload-Length": str(len(data))}, timeout=10)
    active_id = active.headers["Location"].rsplit("/", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUSWSGI_")}
    env.update(TUSWSGI_UPLOAD_DIR=str(pair[0].upload_dir), TUSWSGI_EXPIRATION="2s",
               TUSWSGI_NETWORK_TIMEOUT="1s")
    cli_runs = []
    offset = 0
    for number in range(20):  # about 5 s, longer than the expiration
        url = urls[number % 2] + active_id
        response = requests.patch(url, data=data[offset:offset + piece], timeout=10,
                                  headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
        assert response.status_code == 204, f"piece {number} on instance {number % 2}: {response.text}"
        offset += piece
        # New uploads arrive on both instances meanwhile; a creation is what
        # triggers an instance's cleanup pass.
        created = requests.post(urls[(number + 1) % 2], headers={**TUS, "Upload-Length": "1"}, timeout=10)
        assert created.status_code == 201
        if number in (12, 19):
            cli_runs.append(subprocess.run([sys.executable, "-m", "tuswsgi.cli", "cleanup"], env=env,
                                           cwd=tmp_path, capture_output=True, text=True, timeout=60))
        time.sleep(0.25)
    assert offset == len(data)
    assert sha256_file(pair[0].upload_dir / active_id) == sha256(data)
    for run in cli_runs:
        assert run.returncode == 0, run.stderr
    for url in urls:
        assert requests.head(url + idle_id, headers=TUS, timeout=10).status_code == 410
        head = requests.head(url + active_id, headers=TUS, timeout=10)
        assert head.headers["Upload-Offset"] == str(len(data))
    expired_by = [server.log().count(f"upload.expired upload={idle_id}") for server in pair]
    cli_expired = sum(run.stdout.count(f"expired: {idle_id}") for run in cli_runs)
    print(f"expired by instance a/b: {expired_by}, by the CLI: {cli_expired}")
    assert sum(expired_by) + cli_expired == 1, "the idle upload must be expired exactly once"
