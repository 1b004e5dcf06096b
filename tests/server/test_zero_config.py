"""``gunicorn tuswsgi:app`` with no options: from the checkout it gets the production
settings (its ./gunicorn.conf.py); elsewhere gunicorn's sync worker, which tuswsgi
keeps alive through long bodies when the hook is set, and warns about otherwise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import OCTET, ROOT, TUS, Server, listening_socket, port_of, wait_for_port
from support.rawhttp import RawConnection, request_bytes

pytestmark = pytest.mark.e2e


def start(tmp_path: Path, cwd: Path, *args: str) -> Server:
    listener = listening_socket()
    port = port_of(listener)
    upload_dir = tmp_path / "uploads"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUSWSGI_", "GUNICORN_"))}
    env.update(TUSWSGI_UPLOAD_DIR=str(upload_dir), TUSWSGI_BIND=f"fd://{listener.fileno()}")
    log_path = tmp_path / "gunicorn.log"
    with listener, open(log_path, "wb") as log:
        args = tuple(arg.format(bind=env["TUSWSGI_BIND"]) for arg in args)
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", *args, "tuswsgi:app"], cwd=cwd,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(listener.fileno(),))
    server = Server(proc, port, upload_dir, log_path)
    try:
        wait_for_port(port, proc)
        wait_for_log(server, "Booting worker")
    except BaseException:
        server.stop()
        raise
    return server


def wait_for_log(server: Server, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def create(server: Server, length: int) -> str:
    answer = requests.post(server.url, headers={**TUS, "Upload-Length": str(length)}, timeout=10)
    assert answer.status_code == 201, answer.text
    return "/files/" + answer.headers["Location"].rsplit("/", 1)[1]


def slow_patch(server: Server, path: str, data: bytes, seconds: float) -> int:
    """PATCH ``data`` spread over ``seconds`` (the shape of a slow link); the status."""
    pieces = 10
    size = -(-len(data) // pieces)
    with RawConnection(server.port, timeout=30) as conn:
        head = request_bytes("PATCH", path, {**TUS, "Upload-Offset": "0", "Content-Type": OCTET},
                             content_length=len(data))
        conn.send(head)
        for start in range(0, len(data), size):
            conn.send_raw(data[start:start + size])
            time.sleep(seconds / pieces)
        return conn.response().status


def stalled_patch(server: Server, path: str, length: int) -> socket.socket:
    """A PATCH that sends its head and a few bytes, then nothing."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request_bytes("PATCH", path, {**TUS, "Upload-Offset": "0", "Content-Type": OCTET},
                               content_length=length) + b"x" * 100)
    return sock


def test_from_the_checkout_it_serves_many_clients_and_long_uploads(tmp_path):
    """./gunicorn.conf.py gives tuswsgi's worker: 20 stalled uploads do not stop a
    new client, and an upload longer than the worker timeout (2 s) completes."""
    server = start(tmp_path, ROOT, "--timeout", "2")
    try:
        assert "Using worker: TusWorker" in server.log()
        stalled = [stalled_patch(server, create(server, 1000), 1000) for _ in range(20)]
        probe = create(server, 10)
        assert requests.head(server.url + probe.rsplit("/", 1)[1], headers=TUS, timeout=5).status_code == 200
        data = os.urandom(200_000)
        path = create(server, len(data))
        assert slow_patch(server, path, data, seconds=5) == 204
        assert (server.upload_dir / path.rsplit("/", 1)[1]).read_bytes() == data
        for sock in stalled:
            sock.close()
    finally:
        server.stop()
    assert "WORKER TIMEOUT" not in server.log()


def test_a_sync_worker_with_the_hook_is_kept_alive_through_a_long_body(tmp_path):
    """gunicorn's sync worker is killed after ``timeout`` without a check-in; the
    post_worker_init hook of tuswsgi.gunicorn_conf makes bodies check in."""
    server = start(tmp_path, tmp_path, "-k", "sync", "--threads", "1", "-w", "1", "--timeout", "2",
                   "-c", "python:tuswsgi.gunicorn_conf")
    try:
        assert "Using worker: sync" in server.log()
        data = os.urandom(100_000)
        path = create(server, len(data))
        assert slow_patch(server, path, data, seconds=6) == 204
        assert (server.upload_dir / path.rsplit("/", 1)[1]).read_bytes() == data
    finally:
        server.stop()
    assert "WORKER TIMEOUT" not in server.log()


def test_elsewhere_a_plain_sync_worker_is_warned_about_at_boot(tmp_path):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    server = start(tmp_path, workdir, "--bind", "{bind}")
    try:
        wait_for_log(server, "tuswsgi is served by a gunicorn worker other than")
        assert "tuswsgi serve" in server.log()
        assert requests.options(server.url, timeout=10).status_code == 200
    finally:
        server.stop()
