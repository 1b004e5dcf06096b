"""deploy/gunicorn.conf.py, started for real with the documented production command
``gunicorn -c deploy/gunicorn.conf.py tuswsgi:app``."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import TUS, listening_socket, port_of, random_file, sha256_file
from support.deploy import DEPLOY, production_env, start_process, start_production_gunicorn, upload_with_cuts

pytestmark = pytest.mark.e2e

CONF = DEPLOY / "gunicorn.conf.py"


def start(tmp_path: Path, **extra: str):
    return start_production_gunicorn(tmp_path, **extra)


def test_conf_resolves_to_the_documented_settings(tmp_path):
    printed = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--print-config", "tuswsgi:app"],
        cwd=tmp_path, env=production_env("127.0.0.1:8123", tmp_path / "uploads"), capture_output=True,
        text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    settings = {}
    for line in printed.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            settings[name.strip()] = value.strip()
    assert "TusWorker" in settings["worker_class"]  # the class, with tuswsgi's settings
    assert settings["worker_connections"] == "10000"  # max_connections
    assert settings["workers"] == "2" and settings["threads"] == "8"
    assert settings["bind"] == "['127.0.0.1:8123']"
    assert settings["timeout"] == "120" and settings["graceful_timeout"] == "30"
    assert settings["keepalive"] == "75"
    assert settings["limit_request_field_size"] == "65536"
    assert settings["accesslog"] == "None"  # tuswsgi's own request lines replace it
    assert "upload-offset" in settings["access_log_format"]


def test_production_command_serves_an_interrupted_upload(tmp_path):
    server = start(tmp_path)
    try:
        source = random_file(tmp_path / "source.bin", 24 * 1024 * 1024 + 777)
        path = upload_with_cuts(server.port, source, cuts=[3_000_017, 5_000_001],
                                chunk_size=8 * 1024 * 1024)
        stored = server.upload_dir / path.rsplit("/", 1)[1]
        assert sha256_file(stored) == sha256_file(source)

        # Upload-Metadata well past gunicorn's 8 KiB default header limit is accepted.
        metadata = "filename " + base64.b64encode(b"x" * 11_000).decode()
        response = requests.post(server.url, headers={**TUS, "Upload-Length": "1",
                                                      "Upload-Metadata": metadata}, timeout=10)
        assert response.status_code == 201, response.text

        # The upload page is off unless asked for.
        assert requests.get(f"http://127.0.0.1:{server.port}/", timeout=10).status_code == 404
    finally:
        server.stop()
    log = server.log()
    # tuswsgi's request lines carry the upload fields: status, error code, new offset.
    patch_lines = [line for line in log.splitlines() if "request method=PATCH" in line]
    assert patch_lines, log
    assert any("status=204" in line and "offset=" in line for line in patch_lines), patch_lines
    assert any("upload.received" in line and "bytes=" in line for line in log.splitlines())
    assert "Using worker: TusWorker" in log


@pytest.mark.parametrize("how", ["environment", "config file"])
def test_upload_page_can_be_turned_on(tmp_path, how):
    if how == "environment":
        server = start(tmp_path, TUSWSGI_UPLOAD_PAGE="on")
    else:
        ini = tmp_path / "tus.ini"
        ini.write_text("[tuswsgi]\nupload_page = on\n")
        server = start(tmp_path, TUSWSGI_CONFIG=str(ini))
    try:
        page = requests.get(f"http://127.0.0.1:{server.port}/", timeout=10)
        assert page.status_code == 200
        assert "text/html" in page.headers["Content-Type"]
    finally:
        server.stop()


def test_tuswsgi_serve_is_the_same_production_server(tmp_path):
    """`tuswsgi serve` runs gunicorn with tuswsgi.gunicorn_conf and the production
    defaults, as deploy/gunicorn.conf.py does: tuswsgi's worker, the page off."""
    listener = listening_socket()
    port = port_of(listener)
    env = production_env(f"fd://{listener.fileno()}", tmp_path / "uploads")
    server = start_process([sys.executable, "-m", "tuswsgi.cli", "serve"], port,
                           tmp_path / "serve.log", env=env, cwd=tmp_path,
                           upload_dir=tmp_path / "uploads", listener=listener)
    try:
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 404
        created = requests.post(server.url, headers={**TUS, "Upload-Length": "3"}, timeout=10)
        assert created.status_code == 201
    finally:
        server.stop()
    assert "Using worker: TusWorker" in server.log()
