"""Capacity against real gunicorn: every body thread held by a stalled upload.

A worker keeps ``reserved_threads`` for requests without a body and takes new
connections only while it has room, so a resuming client always learns its
offset, a body beyond capacity is refused at once with 503 and Retry-After, and
nothing a held upload sent is lost.
"""

from __future__ import annotations

import os
import socket

import pytest
import requests
from conftest import OCTET, TUS, Server, start_gunicorn, wait_for_size
from support.rawhttp import RawConnection, request_bytes

pytestmark = pytest.mark.e2e

THREADS, RESERVED = 8, 4
BODY_SLOTS = THREADS - RESERVED
SENT = 1000
LENGTH = 5000


@pytest.fixture
def server(tmp_path) -> Server:
    running = start_gunicorn(tmp_path, workers=2, threads=THREADS,
                             env={"TUSWSGI_RESERVED_THREADS": str(RESERVED)})
    yield running
    running.stop()


def create(server: Server, length: int = LENGTH) -> str:
    answer = requests.post(server.url, headers={**TUS, "Upload-Length": str(length)}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.headers["Location"].rsplit("/", 1)[1]


class Stalled:
    """A PATCH that sent its head and the first SENT bytes, then nothing."""

    def __init__(self, server: Server) -> None:
        self.upload = create(server)
        self.data = os.urandom(LENGTH)
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        head = request_bytes("PATCH", f"/files/{self.upload}", {
            **TUS, "Upload-Offset": "0", "Content-Type": OCTET}, content_length=LENGTH)
        self.sock.sendall(head + self.data[:SENT])
        wait_for_size(server.upload_dir / self.upload, SENT)

    def answered(self) -> int:
        """The status the held request was answered with (once it was stopped)."""
        return int(self.sock.recv(65536).split(b" ", 2)[1])

    def resume(self, server: Server) -> None:
        self.sock.close()
        url = server.url + self.upload
        offset = int(requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"])
        assert offset == SENT
        answer = requests.patch(url, data=self.data[offset:], timeout=10, headers={
            **TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
        assert answer.status_code == 204, answer.text
        assert (server.upload_dir / self.upload).read_bytes() == self.data


def patch_status(server: Server) -> requests.Response:
    upload = create(server, 10)
    return requests.patch(server.url + upload, data=b"0123456789", timeout=10, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET})


def test_with_every_body_thread_held_short_requests_are_served_and_bodies_refused(server):
    stalled = [Stalled(server) for _ in range(2 * BODY_SLOTS)]  # both workers full
    try:
        probe = create(server, 10)
        with RawConnection(server.port) as conn:
            answer = conn.request("HEAD", f"/files/{probe}", TUS)
            assert answer.status == 200 and answer.header("upload-offset") == "0"
            options = conn.request("OPTIONS", "/files/", {})
            assert options.status == 200
        refused = patch_status(server)
        assert refused.status_code == 503, refused.text
        assert refused.text.startswith("ERR_SERVER_BUSY")
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.headers["Tus-Resumable"] == "1.0.0"
    finally:
        for upload in stalled:
            upload.resume(server)


def test_a_connection_goes_to_the_worker_with_room(server):
    """One worker full, the other with a free body thread: new uploads are placed
    there and succeed, instead of being refused by the full worker."""
    stalled = [Stalled(server) for _ in range(2 * BODY_SLOTS - 1)]
    try:
        for _ in range(5):
            assert patch_status(server).status_code == 204
    finally:
        for upload in stalled:
            upload.resume(server)


def test_a_resuming_head_takes_over_a_held_upload_even_when_all_are_held(server):
    stalled = [Stalled(server) for _ in range(2 * BODY_SLOTS)]
    try:
        first = stalled.pop(0)
        url = server.url + first.upload
        assert int(requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"]) == SENT
        assert first.answered() == 400  # ERR_UPLOAD_INTERRUPTED: its body thread is free again
        first.resume(server)
    finally:
        for upload in stalled:
            upload.resume(server)
