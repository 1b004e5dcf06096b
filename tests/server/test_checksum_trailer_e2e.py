"""checksum-trailer over real servers: ``Upload-Checksum`` sent as a trailer of a
chunked PATCH, to the production gunicorn (deploy/gunicorn.conf.py) on reused
keep-alive connections, from a raw client and from Node's own HTTP client (neither
tus-js-client nor tuspy can send trailers: tuspy sends each chunk with a
Content-Length and the header form; tus-js-client has no trailer support at all),
and through nginx, which drops request trailers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import subprocess
import time
from typing import Iterator, Optional

import pytest
import requests
from conftest import OCTET, TUS, Server, require_tool
from support.deploy import start_production_gunicorn, start_stock_gunicorn
from support.jsclient import JS
from support.nginx import NGINX, Nginx, start_nginx
from support.rawhttp import RawConnection, RawResponse, request_bytes

pytestmark = pytest.mark.e2e


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def trailer_patch_bytes(path: str, chunks: list[bytes], offset: int,
                        trailers: list[tuple[str, str]], *, announce: bool = True,
                        headers: Optional[dict] = None) -> bytes:
    """A chunked PATCH, head to trailer section, exactly as it goes on the wire."""
    all_headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET,
                   "Transfer-Encoding": "chunked", **(headers or {})}
    if announce:
        all_headers["Trailer"] = "Upload-Checksum"
    head = request_bytes("PATCH", path, all_headers)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n"
    return head + body + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n"


def send_patch(conn: RawConnection, path: str, chunks: list[bytes], offset: int,
               trailers: list[tuple[str, str]], **options) -> RawResponse:
    conn.send(trailer_patch_bytes(path, chunks, offset, trailers, **options), "PATCH")
    return conn.response()


def create(conn: RawConnection, length: int) -> str:
    created = conn.request("POST", "/files/", {**TUS, "Upload-Length": str(length)})
    assert created.status == 201, created.body
    return "/files/" + created.header("location").rsplit("/", 1)[1]


def offset_of(conn: RawConnection, path: str) -> int:
    head = conn.request("HEAD", path, TUS)
    assert head.status == 200
    return int(head.header("upload-offset"))


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    app = start_production_gunicorn(tmp_path)
    yield app
    app.stop()


def test_trailer_checksums_on_one_kept_alive_connection(server):
    """Every answer, then the next request on the same connection parsed from its
    first byte: the trailer section is consumed exactly, whatever the verdict."""
    with RawConnection(server.port) as conn:
        options = conn.request("OPTIONS", "/files/", {})
        assert options.status == 200 and options.body == b""
        assert "checksum-trailer" in options.header("tus-extension").split(",")
        path = create(conn, 11)
        stored = server.upload_dir / path.rsplit("/", 1)[1]

        good = send_patch(conn, path, [b"hel", b"lo "], 0, [("Upload-Checksum", checksum("sha1", b"hello "))])
        assert (good.status, good.header("upload-offset")) == (204, "6")
        assert offset_of(conn, path) == 6

        bad = send_patch(conn, path, [b"world"], 6, [("Upload-Checksum", checksum("sha1", b"w0rld"))])
        assert bad.status == 460 and bad.body.startswith(b"ERR_CHECKSUM_MISMATCH")
        assert not bad.closes
        assert offset_of(conn, path) == 6

        unannounced = send_patch(conn, path, [b"world"], 6,
                                 [("Upload-Checksum", checksum("md5", b"world"))], announce=False)
        assert unannounced.status == 400 and unannounced.body.startswith(b"ERR_TRAILER_NOT_ANNOUNCED")
        assert offset_of(conn, path) == 6

        missing = send_patch(conn, path, [b"world"], 6, [("X-Other", "1")])
        assert missing.status == 400 and missing.body.startswith(b"ERR_TRAILER_MISSING")
        both = send_patch(conn, path, [b"world"], 6, [("Upload-Checksum", checksum("md5", b"world"))],
                          headers={"Upload-Checksum": checksum("md5", b"world")})
        assert both.status == 400 and both.body.startswith(b"ERR_CHECKSUM_TWICE")
        assert offset_of(conn, path) == 6
        assert stored.read_bytes() == b"hello "

        last = send_patch(conn, path, [b"wor", b"ld"], 6,
                          [("Upload-Checksum", checksum("sha256", b"world")), ("X-Trace", "t")])
        assert (last.status, last.header("upload-offset")) == (204, "11")
        assert offset_of(conn, path) == 11
    assert stored.read_bytes() == b"hello world"
    assert not any(p.name.endswith(".pending") for p in server.upload_dir.iterdir())


def test_large_trailer_checked_body_and_a_pipelined_request(server):
    """8 MiB in 64 KiB chunks hashed while it streams, its trailer verified, and a
    HEAD written in the same send as the trailer answered after it."""
    data = os.urandom(8 * 1024 * 1024)
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    with RawConnection(server.port, timeout=60) as conn:
        path = create(conn, len(data))
        wire = trailer_patch_bytes(path, chunks, 0, [("Upload-Checksum", checksum("sha512", data))])
        conn.send(wire + request_bytes("HEAD", path, TUS), "PATCH")
        conn._methods.append("HEAD")
        patched, head = conn.response(), conn.response()
        assert (patched.status, patched.header("upload-offset")) == (204, str(len(data)))
        assert (head.status, head.header("upload-offset")) == (200, str(len(data)))
        assert conn.request("HEAD", path, TUS).status == 200  # still the same connection
    stored = server.upload_dir / path.rsplit("/", 1)[1]
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(data).digest()


def node_trailer_patch(url: str, chunks: list[bytes], offset: int, value: str) -> dict:
    node = os.environ.get("NODE") or "node"
    require_tool("node", subprocess.run(["which", node], capture_output=True).returncode == 0)
    spec = {"url": url, "offset": offset, "checksum": value, "announce": True,
            "chunks": [base64.b64encode(chunk).decode() for chunk in chunks]}
    result = subprocess.run([node, str(JS / "node-trailer.js"), json.dumps(spec)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_node_http_client_sends_the_trailer(server):
    base = f"http://127.0.0.1:{server.port}"
    created = requests.post(base + "/files/", headers={**TUS, "Upload-Length": "10"}, timeout=10)
    url = created.headers["Location"]
    stored = server.upload_dir / url.rsplit("/", 1)[1]
    wrong = node_trailer_patch(url, [b"01234"], 0, checksum("sha1", b"43210"))
    assert wrong["status"] == 460 and wrong["body"].startswith("ERR_CHECKSUM_MISMATCH")
    assert stored.read_bytes() == b""
    right = node_trailer_patch(url, [b"012", b"34"], 0, checksum("sha1", b"01234"))
    assert right["status"] == 204 and right["headers"]["upload-offset"] == "5"
    assert stored.read_bytes() == b"01234"


# -- under gunicorn's own workers ----------------------------------------------------------

@pytest.mark.parametrize("worker", ["gthread", "sync"])
def test_under_gunicorns_own_workers_a_trailer_is_never_seen(tmp_path, worker):
    """gunicorn parses a trailer section and keeps it from the application (PEP 3333
    has no place for it): checksum-trailer is not offered, an announced trailer is
    refused before the body, an unannounced one is not seen, the header form works."""
    server = start_stock_gunicorn(tmp_path, worker)
    try:
        with RawConnection(server.port) as conn:
            extensions = conn.request("OPTIONS", "/files/", {}).header("tus-extension").split(",")
            assert "checksum" in extensions and "checksum-trailer" not in extensions
            path = create(conn, 6)
            announced = send_patch(conn, path, [b"abc"], 0, [("Upload-Checksum", checksum("sha1", b"abc"))])
            assert announced.status == 400 and announced.body.startswith(b"ERR_TRAILER_UNAVAILABLE")
        with RawConnection(server.port) as conn:  # sync closes after each request
            unseen = send_patch(conn, path, [b"abc"], 0, [("Upload-Checksum", checksum("sha1", b"xyz"))],
                                announce=False)
            assert (unseen.status, unseen.header("upload-offset")) == (204, "3")
        with RawConnection(server.port) as conn:
            header = conn.request("PATCH", path, {**TUS, "Upload-Offset": "3", "Content-Type": OCTET,
                                                  "Upload-Checksum": checksum("sha1", b"deX")}, b"def")
            assert header.status == 460
        assert (server.upload_dir / path.rsplit("/", 1)[1]).read_bytes() == b"abc"
    finally:
        server.stop()


# -- behind nginx ---------------------------------------------------------------------------

@pytest.fixture
def stack(tmp_path, request) -> Iterator[tuple[Nginx, Server]]:
    require_tool("nginx (Debian package nginx)", NGINX is not None)
    app = start_production_gunicorn(tmp_path, TUSWSGI_BEHIND_PROXY="on", **request.param)
    try:
        nginx = start_nginx(tmp_path, [app.port])
    except BaseException:
        app.stop()
        raise
    yield nginx, app
    nginx.server.stop()
    app.stop()


def wait_until(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize("stack", [{}], indirect=True)
def test_nginx_drops_request_trailers_and_the_client_is_told(stack):
    """nginx (deploy/nginx.conf, proxy_request_buffering off) forwards the `Trailer`
    header but never the trailer section: a body that arrived whole goes on with a
    Content-Length, a body still arriving is re-chunked without its trailers.  The
    client gets a 400 either way, and the upload is unchanged: never a 204 that
    looks verified."""
    nginx, app = stack
    with RawConnection(nginx.https_port, tls=tls(), timeout=30) as conn:
        path = create(conn, 10)
        stored = app.upload_dir / path.rsplit("/", 1)[1]
        whole = send_patch(conn, path, [b"abc"], 0, [("Upload-Checksum", checksum("sha1", b"abc"))])
        assert whole.status == 400, whole.body  # nginx read it whole: forwarded with Content-Length
        assert whole.body.split(b":")[0] in (b"ERR_TRAILER_UNAVAILABLE", b"ERR_TRAILER_MISSING")
        wire = trailer_patch_bytes(path, [b"abc", b"def"], 0,
                                   [("Upload-Checksum", checksum("sha1", b"abcdef"))])
        split = wire.index(b"3\r\nabc\r\n") + 8
        conn.send(wire[:split], "PATCH")
        # The tentative chunk lands as it arrives: once its first bytes are on disk,
        # nginx is forwarding a body still on its way, re-chunked.
        wait_until(lambda: stored.stat().st_size == 3)
        conn.send_raw(wire[split:])
        trickled = conn.response()
        assert trickled.status == 400 and trickled.body.startswith(b"ERR_TRAILER_MISSING"), trickled.body
        assert stored.read_bytes() == b""
        head = conn.request("HEAD", path, TUS)
        assert head.status == 200 and head.header("upload-offset") == "0"


@pytest.mark.parametrize("stack", [{"TUSWSGI_CHECKSUM_TRAILER": "off"}], indirect=True)
def test_behind_nginx_checksum_trailer_is_turned_off_and_the_header_form_works(stack):
    nginx, app = stack
    with RawConnection(nginx.https_port, tls=tls(), timeout=30) as conn:
        options = conn.request("OPTIONS", "/files/", {})
        extensions = options.header("tus-extension").split(",")
        assert "checksum" in extensions and "checksum-trailer" not in extensions
        path = create(conn, 3)
        ok = conn.request("PATCH", path, {**TUS, "Upload-Offset": "0", "Content-Type": OCTET,
                                          "Upload-Checksum": checksum("sha1", b"abc")}, b"abc")
        assert ok.status == 204
    assert (app.upload_dir / path.rsplit("/", 1)[1]).read_bytes() == b"abc"
