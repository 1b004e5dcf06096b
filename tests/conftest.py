"""Shared fixtures: an in-process app with werkzeug's test client, and real servers.

Tests that need a tool that is not installed skip locally, naming the tool; under
``CI=true`` they fail instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import pytest
from werkzeug.test import Client

from tuswsgi import TusApp
from tuswsgi.config import load_config

ROOT = Path(__file__).resolve().parent.parent
TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"


def require_tool(name: str, available: bool) -> None:
    """Skip locally when ``name`` is missing; fail under CI=true."""
    if available:
        return
    message = f"{name} is not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must install it: see .ci/run)")
    pytest.skip(message)


def sha256_file(path: os.PathLike | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(value: Union[str, bytes]) -> str:
    """Base64 of text (UTF-8) or bytes, as Upload-Metadata carries it."""
    data = value.encode() if isinstance(value, str) else value
    return base64.b64encode(data).decode("ascii")


def random_file(path: Path, size: int) -> Path:
    """A file of ``size`` random bytes, written in bounded blocks."""
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            handle.write(block)
            remaining -= len(block)
    return path


def assert_writes_traceable(stored: bytes, attempts: dict, acknowledged: list) -> int:
    """Check racing writers left no interleaved or misplaced bytes; return the runs.

    Each attempt wrote one distinct fill byte (``attempts[fill] = (offset, length)``),
    so the file is a sequence of runs, each of which must start at the offset its
    request named; every acknowledged ``(start, end, fill)`` must be on disk exactly.
    """
    for start, end, fill in acknowledged:
        assert stored[start:end] == bytes([fill]) * (end - start), f"chunk at {start} overwritten"
    position = runs = 0
    while position < len(stored):
        fill = stored[position]
        end = position
        while end < len(stored) and stored[end] == fill:
            end += 1
        offset, length = attempts[fill]
        assert offset == position, f"bytes of a request for offset {offset} landed at {position}"
        assert end - position <= length
        position, runs = end, runs + 1
    return runs


# -- in-process -----------------------------------------------------------------

@pytest.fixture
def upload_dir(tmp_path: Path) -> Path:
    return tmp_path / "uploads"


@pytest.fixture
def make_app(upload_dir: Path):
    """Build an app on the test's upload directory, with keyword overrides."""
    def factory(**overrides):
        overrides.setdefault("upload_dir", str(upload_dir))
        overrides.setdefault("upload_page", "off")  # protocol tests own every path
        return TusApp(load_config(None, environ={}, **overrides))
    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app) -> Client:
    return Client(app)


class Clock:
    """The wall clock of an in-process test, moved forward at will."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """``time.time()`` that a test advances instead of sleeping (expiry, max-age)."""
    fake = Clock()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + fake.offset)
    return fake


def create(client: Client, length: Optional[int] = None, **headers) -> str:
    """POST a new upload and return its path (``/files/<id>``)."""
    all_headers = dict(TUS)
    if length is not None:
        all_headers["Upload-Length"] = str(length)
    all_headers.update({k.replace("_", "-"): v for k, v in headers.items()})
    response = client.post("/files/", headers=all_headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return "/files/" + response.headers["Location"].rsplit("/", 1)[1]


def patch(client: Client, path: str, data: bytes, offset: int, **headers):
    all_headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET}
    all_headers.update({k.replace("_", "-"): v for k, v in headers.items()})
    return client.patch(path, data=data, headers=all_headers)


def data_file(upload_dir: Path, path: str) -> Path:
    return upload_dir / path.rsplit("/", 1)[1]


def settled(read: Callable[[], int], quiet: float = 1.0, timeout: float = 15) -> int:
    """Poll ``read`` (an offset) until it has not changed for ``quiet`` seconds.

    After a client's connection is cut, the server may still be storing what it
    received (its request may not even hold the lock yet); a resuming client that
    asks too early is told a smaller offset and later gets a 409.  Tests that check
    the kept bytes wait for the server to settle first.
    """
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = read()
        if current != value:
            value, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return value
    raise AssertionError(f"offset still changing after {timeout}s")


def wait_for_size(path: Path, at_least: int, timeout: float = 15) -> None:
    """Wait until the server holds ``at_least`` bytes of an upload (its data file's
    size is the offset): what a test acts on, rather than a guess of how long."""
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_size < at_least:
        size = path.stat().st_size if path.exists() else None
        assert time.monotonic() < deadline, f"{path.name} holds {size} bytes, not {at_least}"
        time.sleep(0.01)


# -- real servers ---------------------------------------------------------------

def free_port() -> int:
    """A port nobody listens on *now*: only for servers that must bind it
    themselves (nginx, Apache); gunicorn gets a socket bound here (listening_socket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_socket() -> socket.socket:
    """A loopback socket already bound and listening, to hand to gunicorn as
    ``--bind fd://N``: no other process can take its port in between."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def port_of(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def wait_for_port(port: int, proc: Optional[subprocess.Popen] = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


@dataclass
class Server:
    """A running server process and what a test needs to reach it."""

    proc: subprocess.Popen
    port: int
    upload_dir: Path
    log_path: Path
    base_path: str = "/files/"
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gunicorn(tmp_path: Path, *, workers: int = 3, threads: int = 8,
                   env: Optional[dict] = None, args: tuple = (), name: str = "gunicorn",
                   upload_dir: Optional[Path] = None, listener: Optional[socket.socket] = None,
                   app: str = "tuswsgi:app") -> Server:
    """gunicorn with tuswsgi's worker and settings (tuswsgi.gunicorn_conf) serving
    ``app`` (tuswsgi itself, or an application that embeds it), on ``listener``
    (a new listening_socket() by default)."""
    listener = listener or listening_socket()
    port = port_of(listener)
    upload_dir = upload_dir or tmp_path / "uploads"
    log_path = tmp_path / f"{name}-{port}.log"
    full_env = {**os.environ, "TUSWSGI_UPLOAD_DIR": str(upload_dir), **(env or {})}
    full_env.pop("TUSWSGI_CONFIG", None)
    command = [sys.executable, "-m", "gunicorn", "-c", "python:tuswsgi.gunicorn_conf", "-w", str(workers),
               "--threads", str(threads), "-b", f"fd://{listener.fileno()}", "--graceful-timeout", "5",
               *args, app]
    with listener, open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=tmp_path, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(listener.fileno(),))
    server = Server(proc, port, upload_dir, log_path)
    try:
        wait_for_port(port, proc)
    except RuntimeError:
        server.stop()
        raise RuntimeError(server.log()) from None
    return server


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[Server]:
    """A real ``gunicorn -k gthread`` with 3 workers on a free port."""
    server = start_gunicorn(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def gunicorn_factory(tmp_path: Path):
    """Start gunicorn servers with custom settings; all are stopped at the end."""
    servers: list[Server] = []

    def factory(**kwargs) -> Server:
        server = start_gunicorn(tmp_path, **kwargs)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


def which(name: str) -> Optional[str]:
    return shutil.which(name)
