"""deploy/tuswsgi.service and tuswsgi.socket, installed as docs/deploying.md
("systemd") says.

Debian's systemd runs the recipe as written (:func:`under_systemd`, in namespaces
of its own: ``support/systemd.py``), and ``systemctl restart`` meets running
uploads.  The other tests run the recipe with the absolute paths of the installed
layout moved under a temporary root (``/opt/tuswsgi`` -> ``<tmp>/opt/tuswsgi``,
...) and without the steps that need a system user and systemd: they check the
units with ``systemd-analyze`` and run the unit's command the way systemd would
run it: the unit's own ``Environment=`` variables, a clean environment otherwise,
its ``WorkingDirectory``; nothing else in the line is changed.
"""

from __future__ import annotations

import http.client
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from conftest import random_file, require_tool, sha256, sha256_file, wait_for_size
from support.deploy import (
    DEPLOY,
    SYSTEM_PATH,
    Recipe,
    assert_installed_from_wheel,
    start_socket_activated,
    upload_with_cuts,
)
from support.rawclient import raw_create, raw_offset, raw_resume, send_partial_patch
from support.systemd import SYSTEMD, Systemd

from tuswsgi import gunicorn_conf

pytestmark = pytest.mark.e2e

UNIT = DEPLOY / "tuswsgi.service"
SOCKET_UNIT = DEPLOY / "tuswsgi.socket"
INSTALLED_UNIT = "/etc/systemd/system/tuswsgi.service"
INSTALLED_SOCKET = "/etc/systemd/system/tuswsgi.socket"
#: What the recipe installs, and where systemd keeps the service's state.
MOVED = ["/opt/tuswsgi", "/etc/tuswsgi", "/etc/systemd/system", "/var/lib/tuswsgi"]
#: Steps that need a system user and a running systemd (the moved recipe has neither).
NOT_HERE = ["useradd", "systemctl", "journalctl"]
#: A Debian host's python3, which ``python3 -m venv`` gives the unit's venv.
SYSTEM_PYTHON = "/usr/bin/python3"
#: tuswsgi.socket's ListenStream= port.
UNIT_PORT = 8000


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Recipe:
    recipe = Recipe("systemd", tmp_path_factory.mktemp("recipe"), moved=MOVED, skip=NOT_HERE)
    Path(recipe.path("/etc/systemd/system")).mkdir(parents=True)  # there on any systemd host
    recipe.run(recipe.steps)
    return recipe


def parse_unit(text: str) -> dict[str, list[str]]:
    """``Key`` -> every value it is given in the unit (sections flattened)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key.strip(), []).append(value.strip())
    return values


def unit_environment(unit: dict[str, list[str]]) -> dict[str, str]:
    env = {}
    for assignment in unit.get("Environment", []):
        for word in shlex.split(assignment):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def test_unit_passes_systemd_analyze_verify(installed, tmp_path):
    """``systemd-analyze verify`` checks every directive and that ExecStart's program
    exists and is executable: on a copy of the installed unit whose ExecStart names the
    moved venv's gunicorn."""
    require_tool("systemd-analyze (Debian package systemd)", shutil.which("systemd-analyze") is not None)
    text = Path(installed.path(INSTALLED_UNIT)).read_text()
    assert text == UNIT.read_text()
    assert Path(installed.path(INSTALLED_SOCKET)).read_text() == SOCKET_UNIT.read_text()
    (exec_start,) = parse_unit(text)["ExecStart"]
    program = shlex.split(exec_start)[0]
    copy = tmp_path / "tuswsgi.service"
    copy.write_text(text.replace(f"ExecStart={program}", f"ExecStart={installed.path(program)}"))
    shutil.copy(SOCKET_UNIT, tmp_path / "tuswsgi.socket")
    result = subprocess.run(["systemd-analyze", "verify", str(copy), str(tmp_path / "tuswsgi.socket")],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "tuswsgi.s" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_the_unit_runs_the_installed_wheel(installed):
    venv = shlex.split(parse_unit(UNIT.read_text())["ExecStart"][0])[0].rsplit("/bin/", 1)[0]
    assert venv == "/opt/tuswsgi/venv"
    assert_installed_from_wheel(installed.venv_python(venv), installed.root)


def test_the_recipe_writes_the_configuration_the_unit_reads(installed):
    env = unit_environment(parse_unit(UNIT.read_text()))
    config = Path(installed.path(env["TUSWSGI_CONFIG"]))
    assert config.read_text().startswith("# tuswsgi configuration.")
    exec_start = shlex.split(parse_unit(UNIT.read_text())["ExecStart"][0])
    assert Path(installed.path(exec_start[2])).read_text() == (DEPLOY / "gunicorn.conf.py").read_text()


def test_unit_settings():
    unit = parse_unit(UNIT.read_text())
    env = unit_environment(unit)
    assert unit["User"] == ["tuswsgi"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"] and unit["ProtectHome"] == ["yes"]
    assert unit["PrivateTmp"] == ["yes"] and unit["Restart"] == ["on-failure"]
    assert env["TUSWSGI_CONFIG"] == "/etc/tuswsgi/tus.ini"
    assert env["TUSWSGI_UPLOAD_DIR"] == "/var/lib/tuswsgi/uploads"
    # The uploads are inside the only writable path.
    assert any(env["TUSWSGI_UPLOAD_DIR"].startswith(path.rstrip("/") + "/")
               for path in " ".join(unit["ReadWritePaths"]).split())
    assert unit["KillSignal"] == ["SIGTERM"]
    assert float(unit["TimeoutStopSec"][0]) > gunicorn_conf.graceful_timeout + 5


def socket_unit_listener() -> socket.socket:
    """What systemd makes of tuswsgi.socket: a listening socket with the unit's
    backlog, on a free loopback port instead of ListenStream's 127.0.0.1:8000."""
    unit = parse_unit(SOCKET_UNIT.read_text())
    assert unit["ListenStream"] == ["127.0.0.1:8000"]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(int(unit["Backlog"][0]))
    return sock


def start_exec_start(installed: Recipe, listener: socket.socket, log_name: str = "unit.log"):
    """The installed unit's ExecStart, as systemd starts it: with its Environment=,
    its WorkingDirectory, and the socket unit's socket."""
    unit = parse_unit(Path(installed.path(INSTALLED_UNIT)).read_text())
    (exec_start,) = unit["ExecStart"]
    argv = [installed.path(word) for word in shlex.split(exec_start)]
    env = {name: installed.path(value) for name, value in unit_environment(unit).items()}
    env["PATH"] = SYSTEM_PATH  # systemd's default
    cwd = Path(installed.path(unit["WorkingDirectory"][0]))
    cwd.mkdir(parents=True, exist_ok=True)  # StateDirectory=: systemd creates it
    upload_dir = Path(env["TUSWSGI_UPLOAD_DIR"])
    server = start_socket_activated(argv, listener, installed.root / log_name, env=env, cwd=cwd,
                                    upload_dir=upload_dir)
    return server, argv


def test_exec_start_serves_an_interrupted_upload_and_stops_gracefully(installed, tmp_path):
    listener = socket_unit_listener()
    port = listener.getsockname()[1]
    server, argv = start_exec_start(installed, listener)
    uploads = Path(installed.path("/var/lib/tuswsgi/uploads"))
    try:
        assert argv[1:] == ["-c", installed.path("/etc/tuswsgi/gunicorn.conf.py"), "tuswsgi:app"]
        source = random_file(tmp_path / "source.bin", 6 * 1024 * 1024 + 5)
        path = upload_with_cuts(port, source, cuts=[1_500_000], chunk_size=4 * 1024 * 1024)
        stored = uploads / path.rsplit("/", 1)[1]
        assert sha256_file(stored) == sha256_file(source)

        # systemctl stop: SIGTERM to the master while an upload is half sent.
        data = os.urandom(3_000_000)
        upload = raw_create(port, len(data))
        sock = send_partial_patch(port, upload, 0, data, 1_000_000)
        wait_for_size(uploads / upload.rsplit("/", 1)[1], 1_000_000)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=float(parse_unit(UNIT.read_text())["TimeoutStopSec"][0]))
        stopped_in = time.monotonic() - started
        sock.close()
    finally:
        server.stop()
    assert stopped_in < gunicorn_conf.graceful_timeout, f"stop took {stopped_in:.1f}s"
    assert "Shutting down" in server.log() or "Handling signal: term" in server.log()

    # Restart=on-failure / systemctl start: the upload resumes where it stopped.
    server, _ = start_exec_start(installed, listener, "unit-restarted.log")
    try:
        assert raw_offset(port, upload) == 1_000_000
        raw_resume(port, upload, data, chunk=1 << 20)
        assert sha256_file(server.upload_dir / upload.rsplit("/", 1)[1]) == sha256(data)
    finally:
        server.stop()
        listener.close()


class Resumer(threading.Thread):
    """A client uploading ``data`` in 512 KiB PATCHes on a kept-alive connection,
    each body sent at about 640 KiB/s, so that the upload is almost always in the
    middle of a body; it resumes as tus clients do: after any failure it asks for
    the offset (a new connection each time) until the server answers, then goes on."""

    PATCH = 512 << 10
    PIECE = 32 << 10

    def __init__(self, port: int, data: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.data = port, data
        self.path = raw_create(port, len(data))
        self.failed_at: list[float] = []
        self.resumed_at: list[float] = []  # when the server told it where to go on
        self.offset = 0

    def run(self) -> None:
        conn = None
        while self.offset < len(self.data):
            chunk = self.data[self.offset:self.offset + self.PATCH]
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                conn.request("PATCH", self.path, body=self._paced(chunk), headers={
                    "Tus-Resumable": "1.0.0", "Upload-Offset": str(self.offset),
                    "Content-Length": str(len(chunk)), "Content-Type": "application/offset+octet-stream"})
                answer = conn.getresponse()
                answer.read()
                if answer.status != 204:
                    raise ConnectionError(answer.status)
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                self.failed_at.append(time.monotonic())
                self.offset = self._offset_when_served()
                self.resumed_at.append(time.monotonic())
                continue
            self.offset += len(chunk)
        if conn is not None:
            conn.close()

    def _paced(self, chunk: bytes) -> Iterator[bytes]:
        for start in range(0, len(chunk), self.PIECE):
            yield chunk[start:start + self.PIECE]
            time.sleep(0.05)

    def _offset_when_served(self) -> int:
        while True:
            try:
                return raw_offset(self.port, self.path)
            except (OSError, http.client.HTTPException, AssertionError):
                time.sleep(0.05)


@pytest.fixture(scope="module")
def under_systemd(tmp_path_factory) -> Iterator[Systemd]:
    """The recipe with Debian's systemd running it: every line as written (``useradd``
    and ``systemctl`` included) but ``journalctl -f``, which follows for ever (the
    service's lines are on systemd's console, ``Systemd.log``).  ``python3`` is the
    system's, as on a Debian host, so the venv works under the unit's ``ProtectHome``."""
    for tool in ("unshare", "nsenter"):
        require_tool(f"{tool} (Debian package util-linux)", shutil.which(tool) is not None)
    require_tool("systemd (Debian package systemd)", Path(SYSTEMD).exists())
    has_venv = subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip, pip"]).returncode == 0
    require_tool("/usr/bin/python3 with venv and pip (python3-venv, python3-pip)", has_venv)
    with socket.socket() as probe:  # the socket unit's ListenStream=, as the recipe installs it
        assert probe.connect_ex(("127.0.0.1", UNIT_PORT)) != 0, f"port {UNIT_PORT} is taken"
    root = tmp_path_factory.mktemp("systemd")
    systemd = Systemd(root / "systemd")
    private_tmp = set(Path("/tmp").glob("systemd-private-*"))
    try:
        systemd.start()
        recipe = Recipe("systemd", root / "recipe", moved=[], skip=["journalctl"], python=SYSTEM_PYTHON)
        recipe.run(recipe.steps, within=systemd.prefix(recipe.checkout))
        _wait_for_answer(UNIT_PORT, systemd)
        yield systemd
    finally:
        systemd.stop()
    assert set(Path("/tmp").glob("systemd-private-*")) == private_tmp, "PrivateTmp= left its directory"


def _wait_for_answer(port: int, systemd: Systemd, timeout: float = 30) -> float:
    """When the service answers a new client (who may have waited in the socket's queue)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.options(f"http://127.0.0.1:{port}/files/", timeout=5)
            return time.monotonic()
        except requests.RequestException:
            assert time.monotonic() < deadline, systemd.log()[-4000:]


def test_systemd_runs_the_recipe_hardened_from_the_wheel(under_systemd):
    """The unit as installed, its user, its sandbox: the server that answers is the
    wheel's, running as ``tuswsgi`` with no capabilities."""
    show = dict(line.split("=", 1) for line in under_systemd.systemctl(
        "show", "tuswsgi", "-p", "ActiveState,User,MainPID,TriggeredBy,ProtectSystem").splitlines())
    assert show["ActiveState"] == "active" and show["User"] == "tuswsgi", show
    assert show["TriggeredBy"] == "tuswsgi.socket" and show["ProtectSystem"] == "strict", show
    status = Path(f"/proc/{_host_pid(under_systemd, int(show['MainPID']))}/status").read_text()
    assert "CapEff:\t0000000000000000" in status, status
    with open("/proc/self/mountinfo") as ours:
        assert " /opt/tuswsgi" not in ours.read()  # the machine's /opt is untouched


def test_systemctl_restart_refuses_no_one_and_loses_nothing(under_systemd):
    """``systemctl restart tuswsgi`` through the socket unit while 100 uploads run:
    running uploads are answered at once and resume, new clients (one every 20 ms)
    wait in the socket's queue and are all served, and every upload ends whole."""
    port = UNIT_PORT
    before = under_systemd.systemctl("show", "tuswsgi", "-p", "MainPID", "--value").strip()
    clients = [Resumer(port, os.urandom(2 << 20)) for _ in range(100)]
    refused: list[str] = []
    served = [0]
    stop = threading.Event()

    def new_clients() -> None:
        while not stop.wait(0.02):
            try:
                answer = requests.options(f"http://127.0.0.1:{port}/files/", timeout=20)
                served[0] += 1
                if answer.status_code not in (200, 204):
                    refused.append(str(answer.status_code))
            except requests.RequestException as exc:
                refused.append(repr(exc))
    prober = threading.Thread(target=new_clients, daemon=True)
    try:
        for client in clients:
            client.start()
        prober.start()
        while min(client.offset for client in clients) < (512 << 10):
            time.sleep(0.05)
        restarting = time.monotonic()
        under_systemd.systemctl("restart", "tuswsgi")
        restarted_in = time.monotonic() - restarting
        accepting = _wait_for_answer(port, under_systemd)
        for client in clients:
            client.join(120)
        stop.set()
        prober.join(30)
    finally:
        stop.set()
    after = under_systemd.systemctl("show", "tuswsgi", "-p", "MainPID", "--value").strip()
    uploads = under_systemd.path("/var/lib/tuswsgi/uploads")
    late = [client.resumed_at[0] - accepting for client in clients if client.resumed_at]
    interrupted = sum(bool(client.failed_at) for client in clients)
    print(f"systemctl restart: {restarted_in:.2f} s; {interrupted} uploads "
          f"interrupted, resumed at most {max(late, default=0):.2f} s after the new service answered; "
          f"{served[0]} new clients served, {len(refused)} refused")
    assert before != after and after != "0", (before, after)
    assert interrupted >= 90, interrupted  # the restart met running bodies
    assert not refused, refused[:5]
    assert restarted_in < 2, under_systemd.log()[-4000:]
    assert all(client.offset == len(client.data) for client in clients)
    assert all(sha256_file(uploads / Path(c.path).name) == sha256(c.data) for c in clients)
    assert max(late, default=0) < 1


def _host_pid(systemd: Systemd, pid: int) -> int:
    """The machine's number for a process systemd knows as ``pid``."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == str(pid) and len(line.split()) > 2 \
                    and _in_namespace_of(int(status.parent.name), systemd.pid):
                return int(status.parent.name)
    raise AssertionError(f"no process {pid} beside systemd")


def _in_namespace_of(pid: int, other: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{other}/ns/pid")
    except OSError:
        return False
