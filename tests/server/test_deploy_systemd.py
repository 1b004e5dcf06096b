"""deploy/tuswsgi.service, installed as docs/deploying.md ("systemd") says: systemd
accepts it, and its exact ExecStart serves uploads from the installed wheel.

The recipe runs as written (a wheel built from a copy of the checkout, a fresh venv,
the files installed), with the absolute paths of the installed layout moved under a
temporary root (``/opt/tuswsgi`` -> ``<tmp>/opt/tuswsgi``, ...) and without the steps
that need a system user and a running systemd.  There is no systemd running the
tests, so the unit's command is run the way systemd would run it: the unit's own
``Environment=`` variables, a clean environment otherwise, its ``WorkingDirectory``;
nothing else in the line is changed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port, random_file, require_tool, sha256, sha256_file, wait_for_size
from support.deploy import (
    DEPLOY,
    SYSTEM_PATH,
    Recipe,
    assert_installed_from_wheel,
    start_process,
    upload_with_cuts,
)
from support.rawclient import raw_create, raw_offset, raw_resume, send_partial_patch

from tuswsgi import gunicorn_conf

pytestmark = pytest.mark.e2e

UNIT = DEPLOY / "tuswsgi.service"
INSTALLED_UNIT = "/etc/systemd/system/tuswsgi.service"
#: What the recipe installs, and where systemd keeps the service's state.
MOVED = ["/opt/tuswsgi", "/etc/tuswsgi", "/etc/systemd/system", "/var/lib/tuswsgi"]
#: Steps a test machine cannot take: it has no system user to spare and runs no systemd.
NOT_HERE = ["useradd", "systemctl", "journalctl"]


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
    (exec_start,) = parse_unit(text)["ExecStart"]
    program = shlex.split(exec_start)[0]
    copy = tmp_path / "tuswsgi.service"
    copy.write_text(text.replace(f"ExecStart={program}", f"ExecStart={installed.path(program)}"))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "tuswsgi.service" in line]
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


def start_exec_start(installed: Recipe, port: int, log_name: str = "unit.log"):
    """The installed unit's ExecStart, as systemd starts it."""
    unit = parse_unit(Path(installed.path(INSTALLED_UNIT)).read_text())
    (exec_start,) = unit["ExecStart"]
    argv = [installed.path(word) for word in shlex.split(exec_start)]
    env = {name: installed.path(value) for name, value in unit_environment(unit).items()}
    env["TUSWSGI_BIND"] = f"127.0.0.1:{port}"
    env["PATH"] = SYSTEM_PATH  # systemd's default
    cwd = Path(installed.path(unit["WorkingDirectory"][0]))
    cwd.mkdir(parents=True, exist_ok=True)  # StateDirectory=: systemd creates it
    upload_dir = Path(env["TUSWSGI_UPLOAD_DIR"])
    server = start_process(argv, port, installed.root / log_name, env=env, cwd=cwd,
                           upload_dir=upload_dir)
    return server, argv


def test_exec_start_serves_an_interrupted_upload_and_stops_gracefully(installed, tmp_path):
    port = free_port()
    server, argv = start_exec_start(installed, port)
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
    server, _ = start_exec_start(installed, port, "unit-restarted.log")
    try:
        assert raw_offset(port, upload) == 1_000_000
        raw_resume(port, upload, data, chunk=1 << 20)
        assert sha256_file(server.upload_dir / upload.rsplit("/", 1)[1]) == sha256(data)
    finally:
        server.stop()
