"""The IETF resumable-upload draft against a real ``gunicorn -k gthread``: the 104
(Upload Resumption Supported) interim response on the wire, a creation cut mid-body
and resumed from the Location the 104 announced, and a stalled append handed over.

Requests go over raw sockets: ``http.client`` would take a 104 for the final answer.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
from conftest import settled, sha256, sha256_file
from support.ietfheaders import completion, draft

pytestmark = pytest.mark.e2e

PARTIAL = "application/partial-upload"


# -- a raw HTTP/1.1 connection that sees interim responses ------------------------------------

class RawConnection:
    def __init__(self, port: int, timeout: float = 10) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send_head(self, method: str, path: str, headers: dict[str, str]) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response (interim or final): status, headers (lower-case), body."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; got {self.buffer[:200]!r}")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split(" ", 2)[1])
        length = 0 if status < 200 else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def close(self) -> None:
        self.sock.close()


def request(port: int, method: str, path: str, body: bytes = b"", headers=None):
    """One request with ``http.client`` (never used for creations: no 104 elsewhere)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def draft_offset(port: int, version: int, path: str) -> int:
    response, _ = request(port, "HEAD", path, headers=draft(version))
    assert response.status == 204, response.status
    return int(response.getheader("Upload-Offset"))


def stored(server, location: str):
    return server.upload_dir / location.rsplit("/", 1)[1]


# -- 104 Upload Resumption Supported ---------------------------------------------------------------

@pytest.mark.parametrize("version", range(3, 10))
def test_104_comes_before_the_final_201(gunicorn_server, version):
    body = os.urandom(100_000)
    conn = RawConnection(gunicorn_server.port)
    try:
        conn.send_head("POST", "/files/", {**draft(version, **completion(version, True)),
                                           "Content-Length": str(len(body))})
        # nothing of the body is sent yet: the 104 must not wait for it
        status, headers, _ = conn.read_response()
        assert status == 104, (status, headers)
        assert headers["upload-draft-interop-version"] == str(version)
        location = headers["location"]
        assert location.startswith(gunicorn_server.url)
        assert "min-size=0" in headers["upload-limit"]
        conn.send(body)
        status, final, _ = conn.read_response()
    finally:
        conn.close()
    assert status == 201
    assert final["location"] == location
    assert final["upload-offset"] == str(len(body))
    assert sha256_file(stored(gunicorn_server, location)) == sha256(body)


@pytest.mark.parametrize("headers", [
    {"Upload-Complete": "?1"},                                      # the latest draft, no version
    {"Tus-Resumable": "1.0.0", "Upload-Length": "5",                # tus creation-with-upload
     "Content-Type": "application/offset+octet-stream"},
], ids=["no-version", "tus"])
def test_no_104_without_an_interop_version(gunicorn_server, headers):
    conn = RawConnection(gunicorn_server.port)
    try:
        conn.send_head("POST", "/files/", {**headers, "Content-Length": "5"})
        conn.send(b"hello")
        status, final, _ = conn.read_response()
    finally:
        conn.close()
    assert status == 201  # the first thing on the wire is the final answer
    assert sha256_file(stored(gunicorn_server, final["location"])) == sha256(b"hello")


def test_no_104_for_an_unsupported_version(gunicorn_server):
    conn = RawConnection(gunicorn_server.port)
    try:
        conn.send_head("POST", "/files/", {"Upload-Draft-Interop-Version": "10",
                                           "Upload-Complete": "?1", "Content-Length": "5"})
        conn.send(b"hello")
        status, _, body = conn.read_response()
    finally:
        conn.close()
    assert status == 400 and b"ERR_UNSUPPORTED_INTEROP_VERSION" in body


# -- a creation cut mid-body, resumed from the 104's Location -----------------------------------

@pytest.mark.parametrize("version", [3, 6, 8, 9])
def test_creation_cut_mid_body_is_resumed_from_the_104_location(gunicorn_server, version):
    port = gunicorn_server.port
    data = os.urandom(1_500_000)
    sent = 600_000
    conn = RawConnection(port)
    try:
        conn.send_head("POST", "/files/", {**draft(version, **completion(version, True)),
                                           "Content-Length": str(len(data))})
        conn.send(data[:sent])
        status, headers, _ = conn.read_response()
        assert status == 104
        location = headers["location"]
    finally:
        conn.close()  # the client is cut; it never sees a final response
    path = urlsplit(location).path

    # Wait for the server to store what arrived before asking: a HEAD hands the upload
    # over, stopping a request that is still reading (the offset is then smaller).
    data_path = stored(gunicorn_server, location)
    settled(lambda: data_path.stat().st_size if data_path.exists() else 0)
    offset = draft_offset(port, version, path)
    assert offset == sent  # every byte that arrived is kept
    state, _ = request(port, "HEAD", path, headers=draft(version))
    assert state.getheader("Upload-Incomplete" if version == 3 else "Upload-Complete") == \
        ("?1" if version == 3 else "?0")

    headers = {**draft(version, Upload_Offset=str(offset), **completion(version, True))}
    if version >= 6:
        headers["Content-Type"] = PARTIAL
    response, body = request(port, "PATCH", path, data[offset:], headers)
    assert 200 <= response.status < 300, body
    assert response.getheader("Upload-Offset") == str(len(data))

    final, _ = request(port, "HEAD", path, headers=draft(version))
    assert final.getheader("Upload-Length") == str(len(data))
    assert final.getheader("Upload-Incomplete" if version == 3 else "Upload-Complete") == \
        ("?0" if version == 3 else "?1")
    assert sha256_file(stored(gunicorn_server, location)) == sha256(data)


# -- hand-over -------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [8, 9])
def test_stalled_draft_append_is_handed_over_to_a_head_within_two_seconds(gunicorn_server, version):
    port = gunicorn_server.port
    data = os.urandom(2_000_000)
    response, _ = request(port, "POST", "/files/",
                          headers=draft(version, Upload_Complete="?0", Upload_Length=str(len(data))))
    assert response.status == 201
    path = urlsplit(response.getheader("Location")).path

    stalled = RawConnection(port)
    stalled.send_head("PATCH", path, {**draft(version, Upload_Offset="0", Upload_Complete="?1"),
                                      "Content-Type": PARTIAL, "Content-Length": str(len(data))})
    stalled.send(data[:700_000])
    data_path = gunicorn_server.upload_dir / path.rsplit("/", 1)[1]
    try:
        # the PATCH holds the upload and has written what arrived: now it stalls
        settled(lambda: data_path.stat().st_size, quiet=0.3)
        started = time.monotonic()
        offset = draft_offset(port, version, path)
        elapsed = time.monotonic() - started
        status, headers, body = stalled.read_response()
    finally:
        stalled.close()
    print(f"HEAD answered in {elapsed:.3f}s with offset {offset}; stalled PATCH got {status}")
    assert elapsed < 2
    assert offset == 700_000
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "ERR_UPLOAD_INTERRUPTED"
    if version >= 9:  # the protocol's answer, not the target's: resume
        assert headers["upload-complete"] == "?0"

    response, body = request(port, "PATCH", path, data[offset:], {
        **draft(version, Upload_Offset=str(offset), Upload_Complete="?1"), "Content-Type": PARTIAL})
    assert response.status == 200, body
    assert response.getheader("Upload-Complete") == "?1"
    assert sha256_file(gunicorn_server.upload_dir / path.rsplit("/", 1)[1]) == sha256(data)
