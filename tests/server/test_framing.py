"""Request framing on reused connections, against real gunicorn (tuswsgi's worker)
and real nginx with pooled upstream connections.

Every early answer (the server answers before reading the body) must leave the
connection either drained and reusable, or closed cleanly after a response the
client can read.  Whatever the client sends, the next request on the connection
is parsed from its first byte: nothing is smuggled, nothing is captured, and no
other upload changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
import requests
from conftest import ROOT, TUS, require_tool, start_gunicorn
from support.deploy import start_production_gunicorn
from support.nginx import NGINX, Nginx, make_certificate, start_nginx
from support.rawhttp import OCTET, RawConnection, RawResponse, request_bytes

pytestmark = pytest.mark.e2e

SIZES = [0, 10, 60 * 1024, 1024 * 1024, 8 * 1024 * 1024]
#: A remainder the worker reads to keep the connection (tuswsgi.server.framing.DRAIN_BYTES).
KEPT = 256 * 1024
MAX_SIZE = 64 * 1024 * 1024
SERVER_ENV = {"TUSWSGI_MAX_SIZE": str(MAX_SIZE), "TUSWSGI_HOOKS_PYTHON": "support.framinghooks:deny",
              "TUSWSGI_HOOKS_ENABLED": "pre-access", "PYTHONPATH": str(ROOT / "tests")}


@dataclass
class World:
    """Uploads the cases aim at, and the victim every check reads."""

    port: int
    upload_dir: Path
    victim: str        # 1000 bytes long, 100 received: never changes
    target: str        # MAX_SIZE long, 40 received: the cases' upload
    small: str         # 5 bytes long, nothing received
    gone: str          # terminated
    final: str         # a final concatenation
    victim_sha: str = ""
    target_sha: str = ""

    def snapshot(self) -> tuple[str, str]:
        return (sha256_of(self.upload_dir / self.victim), sha256_of(self.upload_dir / self.target))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upload_id(response: requests.Response) -> str:
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def make_world(base: str, port: int, upload_dir: Path) -> World:
    def create(length: Optional[int], **headers: str) -> str:
        extra = {"Upload-Length": str(length)} if length is not None else {}
        return upload_id(requests.post(base, headers={**TUS, **extra, **headers}, timeout=10))

    def fill(upload: str, data: bytes) -> None:
        answer = requests.patch(base + upload, data=data, timeout=10,
                                headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
        assert answer.status_code == 204, answer.text

    victim, target, small = create(1000), create(MAX_SIZE), create(5)
    fill(victim, os.urandom(100))
    fill(target, os.urandom(40))
    gone = create(10)
    assert requests.delete(base + gone, headers=TUS, timeout=10).status_code == 204
    part = create(3, **{"Upload-Concat": "partial"})
    fill(part, b"abc")
    final = upload_id(requests.post(base, timeout=10, headers={
        **TUS, "Upload-Concat": f"final;/files/{part}"}))
    world = World(port, upload_dir, victim, target, small, gone, final)
    world.victim_sha, world.target_sha = world.snapshot()
    return world


# -- the early-answer paths ---------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A request the server answers with ``status``; ``reads_body`` when it reads
    the whole body before answering, ``reads_chunked`` when it reads part of a
    chunked one (to the limit it enforces); the others answer before reading any."""

    name: str
    method: str
    path: Callable[[World], str]
    headers: Callable[[World], dict]
    status: int
    min_size: int = 0
    reads_body: bool = False
    reads_chunked: bool = False


def _patch(offset: int = 40, **extra: str) -> Callable[[World], dict]:
    return lambda world: {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET, **extra}


def _target(world: World) -> str:
    return f"/files/{world.target}"


CASES = [
    Case("patch-409-offset", "PATCH", _target, _patch(0), 409),
    Case("patch-404", "PATCH", lambda w: "/files/" + "0" * 32, _patch(0), 404),
    Case("patch-410", "PATCH", lambda w: f"/files/{w.gone}", _patch(0), 410),
    Case("patch-403-final", "PATCH", lambda w: f"/files/{w.final}", _patch(0), 403),
    Case("patch-413-length", "PATCH", lambda w: f"/files/{w.small}", _patch(0), 413, min_size=6,
         reads_chunked=True),
    Case("patch-400-length-set", "PATCH", _target, _patch(40, **{"Upload-Length": "5"}), 400),
    Case("patch-415", "PATCH", _target, lambda w: {**TUS, "Upload-Offset": "40",
                                                   "Content-Type": "text/plain"}, 415),
    Case("patch-400-bad-offset", "PATCH", _target, _patch(40, **{"Upload-Offset": "4x"}), 400),
    Case("patch-412-version", "PATCH", _target,
         lambda w: {"Upload-Offset": "40", "Content-Type": OCTET}, 412),
    Case("patch-403-hook", "PATCH", _target, _patch(40, **{"X-Deny": "1"}), 403),
    Case("patch-460-checksum", "PATCH", _target,
         _patch(40, **{"Upload-Checksum": "sha1 " + "A" * 27 + "="}), 460, min_size=1, reads_body=True),
    Case("ietf-409-offset", "PATCH", _target, lambda w: {
        "Upload-Draft-Interop-Version": "8", "Upload-Offset": "0", "Upload-Complete": "?0",
        "Content-Type": "application/partial-upload"}, 409),
    Case("post-415", "POST", lambda w: "/files/", lambda w: {
        **TUS, "Upload-Length": "100", "Content-Type": "text/plain"}, 415, min_size=1),
    Case("post-413-length", "POST", lambda w: "/files/", lambda w: {
        **TUS, "Upload-Length": "5", "Content-Type": OCTET}, 413, min_size=6, reads_chunked=True),
    Case("post-413-max-size", "POST", lambda w: "/files/", lambda w: {
        **TUS, "Upload-Length": str(MAX_SIZE + 1), "Content-Type": OCTET}, 413),
    Case("post-403-hook", "POST", lambda w: "/files/", lambda w: {
        **TUS, "Upload-Length": "100", "X-Deny": "1"}, 403),
]

MATRIX = [(case, size, chunked, expect)
          for case, size, chunked, expect in itertools.product(CASES, SIZES, (False, True), (False, True))
          if size >= case.min_size]


def matrix_id(item) -> str:
    case, size, chunked, expect = item
    return f"{case.name}-{size}-{'chunked' if chunked else 'length'}{'-expect' if expect else ''}"


def keeps_connection(case: Case, size: int, chunked: bool, expect: bool) -> bool:
    """The documented policy: a body read to its end, or a rest of at most 256 KiB
    that the client sends without waiting for 100 Continue, keeps the connection."""
    if case.reads_body or (size == 0 and not chunked):
        return True  # nothing left to read (a chunked body of no bytes still has framing)
    continued = not expect or (chunked and case.reads_chunked)  # the client sent it all
    return continued and size <= KEPT


def send_case(conn: RawConnection, world: World, case: Case, size: int, chunked: bool,
              expect: bool) -> RawResponse:
    """Send the request as a client does: all at once, or, with Expect, the head
    first and the body only after 100 Continue."""
    headers = case.headers(world)
    if expect:
        headers["Expect"] = "100-continue"
    body = os.urandom(size)
    wire = request_bytes(case.method, case.path(world), headers, body, chunked=chunked,
                         content_length=None if chunked else size)
    if not expect or (size == 0 and not chunked):
        conn.send(wire, case.method)
        return conn.response()
    head, rest = wire.split(b"\r\n\r\n", 1)
    conn.send(head + b"\r\n\r\n", case.method)
    first = conn.response(interim=True)
    if first.status != 100:
        return first
    conn.send_raw(rest)
    return conn.response()


def check_victim(conn: RawConnection, world: World) -> None:
    answer = conn.request("HEAD", f"/files/{world.victim}", TUS)
    assert answer.status == 200 and answer.header("upload-offset") == "100", answer


def run_case(conn_factory: Callable[[], RawConnection], world: World, item) -> None:
    case, size, chunked, expect = item
    with conn_factory() as conn:
        check_victim(conn, world)  # a connection that already carried a request
        answer = send_case(conn, world, case, size, chunked, expect)
        assert answer.status == case.status, (answer.status, answer.body[:200])
        keep = keeps_connection(case, size, chunked, expect)
        assert answer.closes == (not keep), answer.headers
        if keep:
            check_victim(conn, world)
        else:
            assert conn.closed_by_server(), "no clean close after Connection: close"
    with conn_factory() as conn:
        check_victim(conn, world)
    assert world.snapshot() == (world.victim_sha, world.target_sha)


# -- real gunicorn ------------------------------------------------------------------

@pytest.fixture(scope="module")
def direct(tmp_path_factory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("framing")
    server = start_gunicorn(tmp, workers=2, threads=8, env=SERVER_ENV)
    try:
        yield make_world(server.url, server.port, server.upload_dir)
    finally:
        server.stop()


@pytest.mark.parametrize("item", MATRIX, ids=matrix_id)
def test_early_answer_leaves_the_connection_exact(direct, item):
    run_case(lambda: RawConnection(direct.port), direct, item)


@pytest.fixture(scope="module")
def direct_tls(direct, tmp_path_factory) -> Iterator[tuple[World, ssl.SSLContext]]:
    """gunicorn serving TLS itself (a self-signed certificate), on the same uploads."""
    tmp = tmp_path_factory.mktemp("framing-tls")
    cert, key = make_certificate(tmp)
    server = start_gunicorn(tmp, workers=2, threads=8, env=SERVER_ENV, upload_dir=direct.upload_dir,
                            args=("--certfile", str(cert), "--keyfile", str(key)))
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    try:
        yield dataclasses.replace(direct, port=server.port), context
    finally:
        server.stop()


@pytest.mark.parametrize("item", MATRIX, ids=matrix_id)
def test_over_tls_at_gunicorn_every_early_answer_leaves_the_connection_exact(direct_tls, item):
    world, context = direct_tls
    run_case(lambda: RawConnection(world.port, tls=context), world, item)


def test_pipelined_requests_are_answered_in_order(direct):
    """Four requests in one write: an early 409 with a body, a PATCH that appends,
    a HEAD and an OPTIONS; each is answered, in order, and the append is exact."""
    fresh = upload_id(requests.post(f"http://127.0.0.1:{direct.port}/files/", timeout=10,
                                    headers={**TUS, "Upload-Length": "20"}))
    wire = (request_bytes("PATCH", f"/files/{direct.target}", _patch(0)(direct), b"x" * 10)
            + request_bytes("PATCH", f"/files/{fresh}", _patch(0)(direct), b"0123456789")
            + request_bytes("HEAD", f"/files/{fresh}", TUS)
            + request_bytes("OPTIONS", "/files/", {}))
    with RawConnection(direct.port) as conn:
        conn.sock.sendall(wire)
        conn._methods += ["PATCH", "PATCH", "HEAD", "OPTIONS"]
        answers = [conn.response() for _ in range(4)]
        assert [a.status for a in answers] == [409, 204, 200, 200]
        assert answers[1].header("upload-offset") == "10"
        assert answers[2].header("upload-offset") == "10"
        check_victim(conn, direct)
    assert (direct.upload_dir / fresh).read_bytes() == b"0123456789"


def hidden_delete(upload: str) -> bytes:
    return request_bytes("DELETE", f"/files/{upload}", TUS)


@pytest.mark.parametrize("case", [c for c in CASES if not c.reads_body and c.min_size <= 10],
                         ids=lambda c: c.name)
@pytest.mark.parametrize("shift", [0, 1, 10, 63, 64, 1000])
def test_a_hidden_request_never_runs(direct, case, shift):
    """The body is a request, and the next request carries another one ``shift``
    bytes into a header: a server that loses its place by any amount would run one
    of the hidden DELETEs.  Each must stay body or header text."""
    sacrifice = upload_id(requests.post(f"http://127.0.0.1:{direct.port}/files/", timeout=10,
                                        headers={**TUS, "Upload-Length": "10"}))
    hidden = hidden_delete(sacrifice)
    body = b"p" * shift + hidden + b"q" * 16
    headers = case.headers(direct)
    pad = "x" * shift
    with RawConnection(direct.port) as conn:
        conn.send(request_bytes(case.method, case.path(direct), headers, body))
        first = conn.response()
        assert first.status == case.status
        if not first.closes:
            follow = {**TUS, "X-Pad": pad + hidden.decode("latin-1").replace("\r\n", " ")}
            answer = conn.request("HEAD", f"/files/{direct.victim}", follow)
            assert answer.status == 200 and answer.header("upload-offset") == "100"
    answer = requests.head(f"http://127.0.0.1:{direct.port}/files/{sacrifice}", headers=TUS, timeout=10)
    assert answer.status_code == 200, "a hidden DELETE ran"


def test_a_body_cut_short_closes_and_keeps_its_bytes(direct):
    """A body that ends early (the client half-closes) is not a new request: its
    bytes are kept and nothing after them is parsed."""
    fresh = upload_id(requests.post(f"http://127.0.0.1:{direct.port}/files/", timeout=10,
                                    headers={**TUS, "Upload-Length": "1000"}))
    hidden = hidden_delete(direct.victim)
    with RawConnection(direct.port) as conn:
        head = request_bytes("PATCH", f"/files/{fresh}", _patch(0)(direct), content_length=1000)
        conn.send(head + hidden)
        conn.sock.shutdown(1)  # SHUT_WR: the client is gone mid-body
        answer = conn.response()
        assert answer.status == 400 and "ERR_CLIENT_GONE" in answer.body.decode()
    assert (direct.upload_dir / fresh).read_bytes() == hidden
    assert requests.head(f"http://127.0.0.1:{direct.port}/files/{direct.victim}", headers=TUS,
                         timeout=10).status_code == 200


def test_malformed_chunked_body_is_refused_and_closes(direct):
    """Broken chunk framing: a stable 400, the chunks before it kept, and the
    connection closed (where the next request starts is unknown)."""
    fresh = upload_id(requests.post(f"http://127.0.0.1:{direct.port}/files/", timeout=10,
                                    headers={**TUS, "Upload-Length": "100"}))
    with RawConnection(direct.port) as conn:
        head = request_bytes("PATCH", f"/files/{fresh}", _patch(0)(direct), b"", chunked=True)
        head = head[: -len(b"0\r\n\r\n")]
        conn.send(head + b"5\r\nhello\r\nzz\r\n" + hidden_delete(direct.victim))
        answer = conn.response()
        assert answer.status == 400 and answer.body.startswith(b"ERR_MALFORMED_BODY"), answer.body
        assert answer.closes and conn.closed_by_server()
    assert (direct.upload_dir / fresh).read_bytes() == b"hello"


# -- through nginx, with pooled upstream connections -------------------------------

@pytest.fixture(scope="module")
def proxied(tmp_path_factory) -> Iterator[tuple[World, Nginx]]:
    require_tool("nginx (Debian package nginx)", NGINX is not None)
    tmp = tmp_path_factory.mktemp("framing-nginx")
    app = start_production_gunicorn(tmp, TUSWSGI_BEHIND_PROXY="on", **SERVER_ENV)
    try:
        nginx = start_nginx(tmp, [app.port])
    except BaseException:
        app.stop()
        raise
    try:
        yield make_world(f"http://127.0.0.1:{app.port}/files/", nginx.https_port, app.upload_dir), nginx
    finally:
        nginx.server.stop()
        app.stop()


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


NGINX_MATRIX = [(case, size, chunked, False) for case, size, chunked, _ in MATRIX if not _]


@pytest.mark.parametrize("item", NGINX_MATRIX, ids=matrix_id)
def test_behind_nginx_every_early_answer_keeps_its_status(proxied, item):
    """nginx forwards each body as it arrives on a pooled upstream connection; the
    client must get the server's own status (never a 502 from a reset), and the
    pooled connection must carry the next client's request unchanged."""
    world, nginx = proxied
    case, size, chunked, _ = item
    context = tls_context()
    with RawConnection(nginx.https_port, tls=context) as conn:
        answer = send_case(conn, world, case, size, chunked, False)
        assert answer.status == case.status, (answer.status, answer.body[:200])
    with RawConnection(nginx.https_port, tls=context) as conn:
        check_victim(conn, world)
    assert world.snapshot() == (world.victim_sha, world.target_sha)
    assert "upstream prematurely closed" not in nginx.error_log()


def test_hostile_client_never_changes_delays_or_captures_another_clients_requests(proxied):
    """Two clients share nginx's pool of upstream connections.  The hostile one
    sends nothing but early-error requests with bodies of every size, some of them
    smuggling payloads; the other uploads with a secret in its Authorization header.
    Every answer the honest client gets is exact, none times out, its files are
    byte-exact, and its secret is in no file the hostile client could download."""
    world, nginx = proxied
    secret = "Bearer VICTIM-" + os.urandom(8).hex()
    stop = threading.Event()
    context = tls_context()

    def hostile() -> int:
        sent = 0
        shapes = itertools.cycle([(c, s) for c in CASES if not c.reads_body for s in SIZES[:4]
                                  if s >= c.min_size])
        while not stop.is_set():
            case, size = next(shapes)
            with RawConnection(nginx.https_port, tls=context) as conn:
                for _ in range(3):  # reuse the connection while nginx keeps it
                    try:
                        answer = send_case(conn, world, case, size, False, False)
                    except (ConnectionError, OSError):
                        break
                    assert answer.status == case.status
                    sent += 1
                    if answer.closes:
                        break
        return sent

    def honest(round_number: int) -> None:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        session.verify = str(nginx.prefix / "cert.pem")
        base = nginx.public + "/files/"
        headers = {**TUS, "Authorization": secret}
        data = os.urandom(300_000)
        created = session.post(base, headers={**headers, "Upload-Length": str(len(data))}, timeout=5)
        assert created.status_code == 201
        url = created.headers["Location"]
        offset = 0
        for piece in (data[:100_000], data[100_000:250_000], data[250_000:]):
            answer = session.patch(url, data=piece, timeout=5, headers={
                **headers, "Upload-Offset": str(offset), "Content-Type": OCTET})
            assert answer.status_code == 204, (answer.status_code, answer.text)
            offset += len(piece)
            assert answer.headers["Upload-Offset"] == str(offset)
            head = session.head(url, headers=headers, timeout=5)
            assert head.status_code == 200 and head.headers["Upload-Offset"] == str(offset)
        stored = world.upload_dir / url.rsplit("/", 1)[1]
        assert stored.read_bytes() == data

    with ThreadPoolExecutor(3) as pool:
        attackers = [pool.submit(hostile), pool.submit(hostile)]
        try:
            for round_number in range(30):
                honest(round_number)
        finally:
            stop.set()
        assert sum(future.result() for future in attackers) > 30
    marker = secret.encode()
    for path in world.upload_dir.iterdir():
        if path.is_file():
            assert marker not in path.read_bytes(), f"{path.name} holds another client's request"
    assert world.snapshot() == (world.victim_sha, world.target_sha)
