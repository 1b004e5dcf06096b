"""deploy/nginx.conf: the real nginx terminating TLS in front of the production
gunicorn (TUSWSGI_BEHIND_PROXY=on), with a self-signed certificate.

The site file is included unchanged except for what a test machine must move:
its listen ports (free ports on 127.0.0.1), its certificate paths and the
upstream's port.  nginx itself runs from a temporary prefix.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from typing import Iterator

import pytest
import requests
from conftest import OCTET, TUS, Server, random_file, require_tool, sha256, sha256_file
from support.deploy import start_production_gunicorn, upload_with_cuts
from support.nginx import NGINX, Nginx, start_nginx

pytestmark = pytest.mark.e2e

@pytest.fixture
def stack(tmp_path, monkeypatch) -> Iterator[tuple[Nginx, Server]]:
    """nginx (TLS) -> gunicorn with deploy/gunicorn.conf.py, behind_proxy on."""
    require_tool("nginx (Debian package nginx)", NGINX is not None)
    app = start_production_gunicorn(tmp_path, TUSWSGI_BEHIND_PROXY="on")
    try:
        nginx = start_nginx(tmp_path, [app.port])
    except BaseException:
        app.stop()
        raise
    # requests (and so tuspy) verify the server against our self-signed certificate.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(nginx.prefix / "cert.pem"))
    yield nginx, app
    nginx.server.stop()
    app.stop()


def test_full_upload_over_https_with_public_location(stack, tmp_path):
    nginx, app = stack
    created = requests.post(nginx.public + "/files/", headers={**TUS, "Upload-Length": "5"}, timeout=10)
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.startswith(nginx.public + "/files/"), location
    done = requests.patch(location, data=b"hello", timeout=10,
                          headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    assert done.status_code == 204
    assert (app.upload_dir / location.rsplit("/", 1)[1]).read_bytes() == b"hello"

    source = random_file(tmp_path / "whole.bin", 9 * 1024 * 1024 + 3)
    path = upload_with_cuts(nginx.https_port, source, cuts=[], chunk_size=4 * 1024 * 1024,
                            scheme="https", host="localhost")
    assert sha256_file(app.upload_dir / path.rsplit("/", 1)[1]) == sha256_file(source)
    # Plain http is redirected to https, keeping the method and body (308).
    redirect = requests.post(f"http://127.0.0.1:{nginx.http_port}/files/", allow_redirects=False,
                             headers={**TUS, "Upload-Length": "1"}, timeout=10)
    assert redirect.status_code == 308
    assert redirect.headers["Location"].startswith("https://")


def test_resume_after_cut_connections_over_https(stack, tmp_path):
    """FaultProxy cuts the TLS connection between the client and nginx; tuspy
    resumes; every Location is the public https URL of the connection used."""
    nginx, app = stack
    source = random_file(tmp_path / "cut.bin", 12 * 1024 * 1024 + 999)
    path = upload_with_cuts(nginx.https_port, source, cuts=[2_000_003, 3_500_000],
                            chunk_size=4 * 1024 * 1024, scheme="https", host="localhost")
    assert sha256_file(app.upload_dir / path.rsplit("/", 1)[1]) == sha256_file(source)
    assert "[alert]" not in nginx.error_log()


def test_bodies_stream_through_unbuffered(stack):
    """proxy_request_buffering off: gunicorn stores bytes while the client is still
    sending, so a cut upload keeps them.  (Buffered, nginx would hold the whole body
    in its temp files and gunicorn would see nothing of a cut request.)"""
    nginx, app = stack
    data = os.urandom(4_000_000)
    created = requests.post(nginx.public + "/files/", headers={**TUS, "Upload-Length": str(len(data))},
                            timeout=10)
    upload = created.headers["Location"]
    path = "/files/" + upload.rsplit("/", 1)[1]
    context = ssl.create_default_context(cafile=str(nginx.prefix / "cert.pem"))
    raw = socket.create_connection(("127.0.0.1", nginx.https_port))
    sock = context.wrap_socket(raw, server_hostname="localhost")
    head = (f"PATCH {path} HTTP/1.1\r\nHost: localhost:{nginx.https_port}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: 0\r\nContent-Type: {OCTET}\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    sock.sendall(head + data[:1_500_000])
    stored = app.upload_dir / upload.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not stored.exists() or stored.stat().st_size < 1_400_000):
        time.sleep(0.05)
    assert stored.stat().st_size >= 1_400_000, "gunicorn got nothing while the body was being sent"
    sock.close()  # the client vanishes
    deadline = time.monotonic() + 10
    offset = None
    while time.monotonic() < deadline:
        offset = int(requests.head(upload, headers=TUS, timeout=10).headers["Upload-Offset"])
        if offset == stored.stat().st_size:
            break
        time.sleep(0.1)
    assert offset and 1_400_000 <= offset <= 1_500_000
    rest = requests.patch(upload, data=data[offset:], timeout=30,
                          headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
    assert rest.status_code == 204, rest.text
    assert sha256_file(stored) == sha256(data)


def test_http2_upload(stack):
    """Browsers speak HTTP/2 to nginx; bodies still stream to gunicorn (HTTP/1.1)."""
    require_tool("curl", shutil.which("curl") is not None)
    nginx, app = stack
    created = requests.post(nginx.public + "/files/", headers={**TUS, "Upload-Length": "1000000"},
                            timeout=10)
    upload = created.headers["Location"]
    body = app.upload_dir.parent / "h2.bin"
    data = os.urandom(1_000_000)
    body.write_bytes(data)
    result = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(nginx.prefix / "cert.pem"), "-X", "PATCH",
         "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0", "-H", f"Content-Type: {OCTET}",
         "--data-binary", f"@{body}", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", upload],
        capture_output=True, text=True, timeout=60)
    assert result.stdout == "2 204", result.stdout + result.stderr
    assert sha256_file(app.upload_dir / upload.rsplit("/", 1)[1]) == sha256(data)
