"""deploy/gunicorn.conf.py, installed and started as docs/deploying.md ("gunicorn") says:
a wheel built from a copy of the checkout, in a fresh venv under /srv/tuswsgi (moved
under a temporary directory), then ``cd /srv/tuswsgi && venv/bin/gunicorn -c
gunicorn.conf.py tuswsgi:app``."""

from __future__ import annotations

import base64
import subprocess

import pytest
import requests
from conftest import TUS, listening_socket, port_of, random_file, sha256_file
from support.deploy import Recipe, assert_installed_from_wheel, start_process, upload_with_cuts

pytestmark = pytest.mark.e2e

SRV = "/srv/tuswsgi"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Recipe:
    """Every step of the recipe but the last, which starts the server."""
    recipe = Recipe("gunicorn", tmp_path_factory.mktemp("recipe"), moved=[SRV])
    recipe.run(recipe.steps[:-1])
    return recipe


def serving_env(recipe: Recipe, bind: str, **extra: str) -> dict[str, str]:
    """The recipe's environment plus the listen address and a small worker layout for a
    2-core test machine."""
    return {**recipe.env, "TUSWSGI_BIND": bind, "TUSWSGI_WORKERS": "2", "TUSWSGI_THREADS": "8", **extra}


def start(recipe: Recipe, name: str, **extra: str):
    """The recipe's last step: the production command."""
    cwd, argv = recipe.command(recipe.steps[-1])
    assert argv == ["venv/bin/gunicorn", "-c", "gunicorn.conf.py", "tuswsgi:app"]
    listener = listening_socket()
    port = port_of(listener)
    return start_process(argv, port, recipe.root / f"{name}-{port}.log", cwd=cwd, listener=listener,
                         env=serving_env(recipe, f"fd://{listener.fileno()}", **extra),
                         upload_dir=cwd / "uploads")


def test_the_server_imports_the_installed_wheel(installed):
    cwd, _ = installed.command(installed.steps[-1])
    assert_installed_from_wheel(installed.venv_python(f"{SRV}/venv"), cwd)


def test_conf_resolves_to_the_documented_settings(installed):
    cwd, argv = installed.command(installed.steps[-1])
    printed = subprocess.run([*argv[:-1], "--print-config", argv[-1]], cwd=cwd, capture_output=True,
                             env=serving_env(installed, "127.0.0.1:8123"), text=True, timeout=60)
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


def test_production_command_serves_an_interrupted_upload(installed, tmp_path):
    server = start(installed, "production")
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
def test_upload_page_can_be_turned_on(installed, tmp_path, how):
    if how == "environment":
        server = start(installed, "page-env", TUSWSGI_UPLOAD_PAGE="on")
    else:
        ini = tmp_path / "tus.ini"
        ini.write_text("[tuswsgi]\nupload_page = on\n")
        server = start(installed, "page-ini", TUSWSGI_CONFIG=str(ini))
    try:
        page = requests.get(f"http://127.0.0.1:{server.port}/", timeout=10)
        assert page.status_code == 200
        assert "text/html" in page.headers["Content-Type"]
        script = requests.get(f"http://127.0.0.1:{server.port}/static/app.js", timeout=10)
        assert script.status_code == 200, "the wheel lacks the page's assets"
    finally:
        server.stop()


def test_tuswsgi_serve_is_the_same_production_server(installed):
    """`tuswsgi serve` runs gunicorn with tuswsgi.gunicorn_conf and the production
    defaults, as deploy/gunicorn.conf.py does: tuswsgi's worker, the page off."""
    cwd, _ = installed.command(installed.steps[-1])
    listener = listening_socket()
    port = port_of(listener)
    server = start_process(["venv/bin/tuswsgi", "serve"], port, installed.root / "serve.log", cwd=cwd,
                           env=serving_env(installed, f"fd://{listener.fileno()}"),
                           upload_dir=cwd / "uploads", listener=listener)
    try:
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 404
        created = requests.post(server.url, headers={**TUS, "Upload-Length": "3"}, timeout=10)
        assert created.status_code == 201
    finally:
        server.stop()
    assert "Using worker: TusWorker" in server.log()
