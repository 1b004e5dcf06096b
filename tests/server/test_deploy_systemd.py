"""deploy/tuswsgi.service: systemd accepts it, and its exact ExecStart serves uploads.

There is no systemd running the tests, so the unit's command is run by the test
the way systemd would run it: the unit's own ``Environment=`` variables, a clean
environment otherwise, its ``WorkingDirectory``.  Only absolute paths of the
installed layout are moved under a temporary root (``/etc/tuswsgi`` ->
``<tmp>/etc/tuswsgi``, ...), and the venv's gunicorn stands for
``/opt/tuswsgi/venv/bin/gunicorn``; nothing else in the line is changed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, random_file, require_tool, sha256, sha256_file, wait_for_size
from support.deploy import DEPLOY, SYSTEM_PATH, start_process, upload_with_cuts
from support.rawclient import raw_create, raw_offset, raw_resume, send_partial_patch

from tuswsgi import gunicorn_conf

pytestmark = pytest.mark.e2e

UNIT = DEPLOY / "tuswsgi.service"
VENV_BIN = Path(sys.executable).parent
INSTALLED_GUNICORN = "/opt/tuswsgi/venv/bin/gunicorn"


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


def gunicorn_path() -> str:
    path = VENV_BIN / "gunicorn"
    assert path.is_file(), f"no gunicorn next to {sys.executable}"
    return str(path)


def test_unit_passes_systemd_analyze_verify(tmp_path):
    """``systemd-analyze verify`` checks every directive and that ExecStart's program
    exists and is executable.  /opt/tuswsgi/venv does not exist on a test machine, so
    a copy with only that path pointed at this venv's gunicorn is verified."""
    require_tool("systemd-analyze (Debian package systemd)", shutil.which("systemd-analyze") is not None)
    text = UNIT.read_text()
    assert text.count(INSTALLED_GUNICORN) == 1
    copy = tmp_path / "tuswsgi.service"
    copy.write_text(text.replace(INSTALLED_GUNICORN, gunicorn_path()))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "tuswsgi.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


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


class InstalledLayout:
    """The unit's absolute paths, each moved under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.moves = {INSTALLED_GUNICORN: gunicorn_path()}
        for directory in ("/etc/tuswsgi", "/var/lib/tuswsgi"):
            self.moves[directory] = str(root / directory.lstrip("/"))
            Path(self.moves[directory]).mkdir(parents=True, exist_ok=True)
        # What the install steps in the unit's header do:
        shutil.copy(DEPLOY / "gunicorn.conf.py", root / "etc/tuswsgi/gunicorn.conf.py")
        sample = subprocess.run([str(VENV_BIN / "tuswsgi"), "sample-config"], capture_output=True,
                                text=True, check=True, timeout=60)
        (root / "etc/tuswsgi/tus.ini").write_text(sample.stdout)

    def path(self, value: str) -> str:
        for installed, moved in self.moves.items():
            if value == installed or value.startswith(installed + "/"):
                return moved + value[len(installed):]
        return value


def start_exec_start(layout: InstalledLayout, port: int, log_name: str = "unit.log"):
    unit = parse_unit(UNIT.read_text())
    (exec_start,) = unit["ExecStart"]
    argv = [layout.path(word) for word in shlex.split(exec_start)]
    env = {name: layout.path(value) for name, value in unit_environment(unit).items()}
    env["TUSWSGI_BIND"] = f"127.0.0.1:{port}"
    env["PATH"] = SYSTEM_PATH  # systemd's default
    cwd = Path(layout.path(unit["WorkingDirectory"][0]))
    upload_dir = Path(env["TUSWSGI_UPLOAD_DIR"])
    server = start_process(argv, port, layout.root / log_name, env=env, cwd=cwd,
                           upload_dir=upload_dir)
    return server, argv


def test_exec_start_serves_an_interrupted_upload_and_stops_gracefully(tmp_path):
    layout = InstalledLayout(tmp_path)
    port = free_port()
    server, argv = start_exec_start(layout, port)
    try:
        assert argv[1:] == ["-c", str(tmp_path / "etc/tuswsgi/gunicorn.conf.py"), "tuswsgi:app"]
        source = random_file(tmp_path / "source.bin", 6 * 1024 * 1024 + 5)
        path = upload_with_cuts(port, source, cuts=[1_500_000], chunk_size=4 * 1024 * 1024)
        stored = tmp_path / "var/lib/tuswsgi/uploads" / path.rsplit("/", 1)[1]
        assert sha256_file(stored) == sha256_file(source)

        # systemctl stop: SIGTERM to the master while an upload is half sent.
        data = os.urandom(3_000_000)
        upload = raw_create(port, len(data))
        sock = send_partial_patch(port, upload, 0, data, 1_000_000)
        wait_for_size(tmp_path / "var/lib/tuswsgi/uploads" / upload.rsplit("/", 1)[1], 1_000_000)
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
    server, _ = start_exec_start(layout, port, "unit-restarted.log")
    try:
        assert raw_offset(port, upload) == 1_000_000
        raw_resume(port, upload, data, chunk=1 << 20)
        assert sha256_file(server.upload_dir / upload.rsplit("/", 1)[1]) == sha256(data)
    finally:
        server.stop()
