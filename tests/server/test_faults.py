"""Fault injection against a real multi-worker gunicorn: cut, stalled, racing and
killed uploads, a full disk, and shutdown.  Each test prints what it tried and what
it found; each asserts that not one acknowledged byte was lost or corrupted.

Run on its own with ``pytest -m faults -s``.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import OCTET, require_tool, sha256, sha256_file, start_gunicorn, wait_for_size
from support.faultproxy import FaultProxy
from support.rawclient import raw_create, raw_offset, raw_request, raw_resume, read_status, send_partial_patch
from tusclient import client as tus_client
from tusclient.exceptions import TusUploadFailed

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


# -- interruptions -----------------------------------------------------------------

def tuspy_resume(endpoint: str, source: Path, url: str, at_least: int) -> None:
    """Resume with tuspy.  A request cut a moment ago may still be writing when the
    client asks for the offset (the server has not read all it received yet); the
    server then answers 409 and, like any careful client, we ask again."""
    for _ in range(5):
        uploader = tus_client.TusClient(endpoint).uploader(str(source), url=url,
                                                           chunk_size=512 * 1024)
        assert uploader.offset >= at_least
        try:
            uploader.upload()
            return
        except TusUploadFailed as exc:
            assert exc.status_code == 409, exc
            time.sleep(0.1)
    raise AssertionError("tuspy could not resume")


def test_fifty_uploads_cut_at_random_bytes_then_resumed(gunicorn_server, tmp_path):
    rng = random.Random(20261125)
    port = gunicorn_server.port
    mismatches = cuts = 0
    for number in range(50):
        data = rng.randbytes(rng.randint(64 * 1024, 1536 * 1024))
        path = raw_create(port, len(data))
        proxy = FaultProxy(port, cut_after=rng.randint(300, len(data)))
        try:
            raw_request(proxy.port, "PATCH", path, data,
                        {"Upload-Offset": "0", "Content-Type": OCTET}, timeout=10)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            cuts += proxy.cuts
            proxy.close()
        # The server may still be reading what the proxy forwarded before the cut, so
        # the file can grow after this HEAD; it must always be a prefix of the data.
        kept = raw_offset(port, path)
        on_disk = (gunicorn_server.upload_dir / path.rsplit("/", 1)[1]).read_bytes()
        assert len(on_disk) >= kept
        assert on_disk == data[:len(on_disk)], f"upload {number}: bytes on disk differ"
        if number % 2:
            source = tmp_path / f"u{number}.bin"
            source.write_bytes(data)
            tuspy_resume(gunicorn_server.url, source, f"http://127.0.0.1:{port}{path}", kept)
        else:
            raw_resume(port, path, data, chunk=1 << 20)
        stored = gunicorn_server.upload_dir / path.rsplit("/", 1)[1]
        mismatches += sha256_file(stored) != sha256(data)
    print(f"50 uploads, {cuts} cut connections, resumed by tuspy and raw clients: "
          f"{mismatches} mismatches")
    assert cuts >= 45
    assert mismatches == 0


def test_stalled_patch_is_handed_over_to_head_within_two_seconds(gunicorn_server):
    port = gunicorn_server.port
    data = os.urandom(2_000_000)
    path = raw_create(port, len(data))
    stalled = send_partial_patch(port, path, 0, data, 700_000)
    wait_for_size(gunicorn_server.upload_dir / path.rsplit("/", 1)[1], 700_000)
    started = time.monotonic()
    offset = raw_offset(port, path)
    elapsed = time.monotonic() - started
    status, reply = read_status(stalled, 5)
    stalled.close()
    print(f"HEAD answered in {elapsed:.3f}s with offset {offset}; stalled PATCH got {status}")
    assert elapsed < 2
    assert offset == 700_000
    assert status == 400 and b"ERR_UPLOAD_INTERRUPTED" in reply
    raw_resume(port, path, data, chunk=1 << 20)
    assert sha256_file(gunicorn_server.upload_dir / path.rsplit("/", 1)[1]) == sha256(data)


def test_stalled_patch_is_handed_over_to_a_new_patch(gunicorn_server):
    port = gunicorn_server.port
    data = os.urandom(1_000_000)
    path = raw_create(port, len(data))
    stalled = send_partial_patch(port, path, 0, data, 300_000)
    wait_for_size(gunicorn_server.upload_dir / path.rsplit("/", 1)[1], 300_000)
    response = raw_request(port, "PATCH", path, data[300_000:],
                           {"Upload-Offset": "300000", "Content-Type": OCTET})
    assert response.status == 204
    stalled.close()
    assert (gunicorn_server.upload_dir / path.rsplit("/", 1)[1]).read_bytes() == data


def test_silent_client_is_cut_after_network_timeout(gunicorn_factory):
    server = gunicorn_factory(env={"TUSWSGI_NETWORK_TIMEOUT": "1s"})
    data = os.urandom(500_000)
    path = raw_create(server.port, len(data))
    started = time.monotonic()
    stalled = send_partial_patch(server.port, path, 0, data, 123_456)
    status, reply = read_status(stalled, 10)
    elapsed = time.monotonic() - started
    stalled.close()
    print(f"silent client cut after {elapsed:.2f}s with {status}")
    assert status == 408 and b"ERR_REQUEST_TIMEOUT" in reply
    assert 0.9 <= elapsed < 5
    assert raw_offset(server.port, path) == 123_456
    assert (server.upload_dir / path.rsplit("/", 1)[1]).read_bytes() == data[:123_456]


def test_slow_but_steady_client_is_never_cut(gunicorn_factory):
    server = gunicorn_factory(env={"TUSWSGI_NETWORK_TIMEOUT": "1s"})
    data = os.urandom(120)
    path = raw_create(server.port, len(data))
    sock = send_partial_patch(server.port, path, 0, data, 0)
    started = time.monotonic()
    for position in range(0, len(data), 10):  # 10 bytes every 0.3 s for 3.6 s
        time.sleep(0.3)
        sock.sendall(data[position:position + 10])
    status, _ = read_status(sock, 5)
    sock.close()
    assert time.monotonic() - started > 3
    assert status == 204
    assert (server.upload_dir / path.rsplit("/", 1)[1]).read_bytes() == data


# -- crashes -----------------------------------------------------------------------

def worker_pids(master_pid: int) -> list[int]:
    output = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True)
    return [int(pid) for pid in output.stdout.split()]


@pytest.mark.slow
def test_kill_9_workers_during_concurrent_uploads(gunicorn_factory):
    server = gunicorn_factory(workers=3, threads=8)
    rng = random.Random(7)
    uploads = [(raw_create(server.port, size), rng.randbytes(size))
               for size in (rng.randint(6 << 20, 12 << 20) for _ in range(24))]
    failures: list[int] = []
    done = threading.Event()
    kills = 0

    def run(path: str, data: bytes) -> None:
        failures.append(raw_resume(server.port, path, data, chunk=128 * 1024, attempts=5000))

    def killer() -> None:
        nonlocal kills
        while not done.wait(rng.uniform(0.05, 0.25)):
            pids = worker_pids(server.proc.pid)
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1

    threads = [threading.Thread(target=run, args=upload) for upload in uploads]
    kill_thread = threading.Thread(target=killer)
    kill_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    kill_thread.join()
    mismatches = 0
    for path, data in uploads:
        stored = server.upload_dir / path.rsplit("/", 1)[1]
        mismatches += sha256_file(stored) != sha256(data)
        assert raw_offset(server.port, path) == stored.stat().st_size
    print(f"{len(uploads)} uploads, {kills} workers killed, {sum(failures)} failed requests "
          f"retried, {mismatches} mismatches")
    assert kills >= 5
    assert mismatches == 0


@pytest.mark.slow
def test_kill_9_whole_server_then_restart(tmp_path):
    rng = random.Random(11)
    server = start_gunicorn(tmp_path, workers=2, threads=8, name="first")
    uploads = [(raw_create(server.port, size), rng.randbytes(size))
               for size in (rng.randint(1 << 20, 3 << 20) for _ in range(8))]
    sockets = []
    for path, data in uploads:  # every upload is mid-request when the server dies
        sent = rng.randint(1, len(data) - 1)
        sockets.append(send_partial_patch(server.port, path, 0, data, sent))
        wait_for_size(server.upload_dir / path.rsplit("/", 1)[1], sent)
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    for sock in sockets:
        sock.close()
    restarted = start_gunicorn(tmp_path, workers=2, threads=8, name="second",
                               upload_dir=server.upload_dir)
    try:
        mismatches = 0
        for path, data in uploads:
            stored = restarted.upload_dir / path.rsplit("/", 1)[1]
            kept = raw_offset(restarted.port, path)
            assert kept == stored.stat().st_size
            assert stored.read_bytes() == data[:kept]
            raw_resume(restarted.port, path, data, chunk=1 << 20)
            mismatches += sha256_file(stored) != sha256(data)
        print(f"{len(uploads)} uploads survived kill -9 of the whole server: "
              f"{mismatches} mismatches")
        assert mismatches == 0
    finally:
        restarted.stop()


# -- shutdown ----------------------------------------------------------------------

def test_sigterm_answers_running_patch_with_503_and_keeps_bytes(tmp_path):
    server = start_gunicorn(tmp_path, workers=2, threads=4, name="first",
                            args=("--graceful-timeout", "30"))
    data = os.urandom(800_000)
    path = raw_create(server.port, len(data))
    stalled = send_partial_patch(server.port, path, 0, data, 250_000)
    wait_for_size(server.upload_dir / path.rsplit("/", 1)[1], 250_000)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    status, reply = read_status(stalled, 10)
    elapsed = time.monotonic() - started
    stalled.close()
    server.proc.wait(timeout=30)
    print(f"SIGTERM: running PATCH answered {status} after {elapsed:.2f}s")
    assert status == 503 and b"ERR_SERVER_SHUTDOWN" in reply
    assert elapsed < 5
    restarted = start_gunicorn(tmp_path, workers=2, threads=4, name="second",
                               upload_dir=server.upload_dir)
    try:
        assert raw_offset(restarted.port, path) == 250_000
        raw_resume(restarted.port, path, data, chunk=1 << 20)
        assert (restarted.upload_dir / path.rsplit("/", 1)[1]).read_bytes() == data
    finally:
        restarted.stop()


def test_sigterm_answers_every_running_body_within_half_a_second(tmp_path):
    """Six bodies running, three silent and three still sending steadily: SIGTERM
    answers each 503 with Retry-After within 0.5 s, every byte stored kept."""
    server = start_gunicorn(tmp_path, workers=2, threads=8, args=("--graceful-timeout", "30"))
    data = os.urandom(4_000_000)
    bodies = []
    for number in range(6):
        path = raw_create(server.port, len(data))
        bodies.append((path, send_partial_patch(server.port, path, 0, data, 100_000), number % 2 == 0))
    stop = threading.Event()

    def keep_sending(sock: socket.socket) -> None:
        for start in range(100_000, len(data), 10_000):
            if stop.wait(0.01):
                return
            try:
                sock.sendall(data[start:start + 10_000])
            except OSError:
                return
    senders = [threading.Thread(target=keep_sending, args=(sock,), daemon=True)
               for _, sock, steady in bodies if steady]
    for sender in senders:
        sender.start()
    try:
        for path, _, _ in bodies:
            wait_for_size(server.upload_dir / path.rsplit("/", 1)[1], 100_000)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        answers = [read_status(sock, 10) for _, sock, _ in bodies]
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        for _, sock, _ in bodies:
            sock.close()
        server.stop()
    print(f"SIGTERM: {len(bodies)} running bodies answered within {elapsed:.2f} s")
    assert all(status == 503 and b"ERR_SERVER_SHUTDOWN" in reply and b"Retry-After: 1" in reply
               for status, reply in answers), answers
    assert elapsed < 0.5
    for path, _, _ in bodies:
        stored = (server.upload_dir / path.rsplit("/", 1)[1]).read_bytes()
        assert len(stored) >= 100_000 and stored == data[:len(stored)]


# -- disk full ---------------------------------------------------------------------

@pytest.fixture
def small_disk_of(tmp_path: Path):
    """Mount a tmpfs of the given size (``"8m"``) and return its mount point."""
    mounted = []

    def mount(size: str) -> Path:
        mount_point = tmp_path / f"small-{len(mounted)}"
        mount_point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                                capture_output=True, text=True)
        require_tool("a tmpfs mount (needs root)", result.returncode == 0)
        mounted.append(mount_point)
        return mount_point
    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def small_disk(small_disk_of):
    return small_disk_of("8m")


def test_disk_full_is_507_consistent_and_resumable(gunicorn_factory, small_disk):
    server = gunicorn_factory(upload_dir=small_disk / "uploads")
    port = server.port
    first = os.urandom(5 << 20)
    first_path = raw_create(port, len(first))
    raw_resume(port, first_path, first, chunk=8 << 20)
    second = os.urandom(5 << 20)
    second_path = raw_create(port, len(second))
    response = raw_request(port, "PATCH", second_path, second,
                           {"Upload-Offset": "0", "Content-Type": OCTET})
    assert response.status == 507
    stored = server.upload_dir / second_path.rsplit("/", 1)[1]
    kept = raw_offset(port, second_path)
    print(f"disk full: 507 after {kept} of {len(second)} bytes")
    assert kept == stored.stat().st_size < len(second)
    assert stored.read_bytes() == second[:kept]
    assert raw_request(port, "GET", first_path).status == 200  # other uploads still served
    assert raw_request(port, "DELETE", first_path).status == 204  # space comes back
    raw_resume(port, second_path, second, chunk=1 << 20)
    assert sha256_file(stored) == sha256(second)


def test_the_disk_reserve_lets_running_uploads_finish(gunicorn_factory, small_disk_of):
    """16 MiB, 4 MiB of it kept for running uploads (disk_reserve = 4M): a finished
    upload of 4 MiB, three running ones of 5 MiB with 3 MiB each.  Below the
    reserve new uploads are refused (507 ERR_DISK_RESERVE, nothing created) while
    the running ones go on until the disk is full (507 with Upload-Offset); once the
    finished upload is deleted, each resumes from the offset its 507 gave and
    finishes with the right SHA-256."""
    mib = 1 << 20
    server = gunicorn_factory(upload_dir=small_disk_of("16m") / "uploads",
                              env={"TUSWSGI_DISK_RESERVE": "4M"})
    port = server.port
    done = os.urandom(4 * mib)
    done_path = raw_create(port, len(done))
    raw_resume(port, done_path, done, chunk=8 * mib)
    running = {raw_create(port, 5 * mib): os.urandom(5 * mib) for _ in range(3)}
    for path, data in running.items():
        answer = raw_request(port, "PATCH", path, data[:3 * mib],
                             {"Upload-Offset": "0", "Content-Type": OCTET})
        assert answer.status == 204, answer.status

    def refused_creation() -> None:
        before = sorted(os.listdir(server.upload_dir))
        answer = raw_request(port, "POST", "/files/", headers={"Upload-Length": "10"})
        assert answer.status == 507 and answer.getheader("Location") is None
        assert sorted(os.listdir(server.upload_dir)) == before

    refused_creation()
    offsets = {}
    for path, data in running.items():
        answer = raw_request(port, "PATCH", path, data[3 * mib:], {"Upload-Offset": str(3 * mib),
                                                                   "Content-Type": OCTET})
        offsets[path] = int(answer.getheader("Upload-Offset"))
        stored = server.upload_dir / path.rsplit("/", 1)[1]
        assert stored.read_bytes() == data[:offsets[path]]
        assert answer.status == (204 if offsets[path] == len(data) else 507), answer.status
    print(f"disk full: running uploads at {sorted(offsets.values())} of {5 * mib} bytes")
    assert sum(offset < 5 * mib for offset in offsets.values()) >= 2  # the disk is full of them
    refused_creation()
    assert raw_request(port, "DELETE", done_path).status == 204
    for path, data in running.items():
        if offsets[path] < len(data):
            answer = raw_request(port, "PATCH", path, data[offsets[path]:],
                                 {"Upload-Offset": str(offsets[path]), "Content-Type": OCTET})
            assert answer.status == 204, answer.status
        assert sha256_file(server.upload_dir / path.rsplit("/", 1)[1]) == sha256(data)
    refused_creation()  # what is left is under the reserve still

