"""tuswsgi mounted under /uploads in a real Flask app and a real Django project, with
werkzeug's DispatcherMiddleware, served by gunicorn with tuswsgi's worker.

Each site's pre-access hook (tests/embed/) reads the framework's own session from the
upload request's cookies: a logged-in user uploads (with tuspy and with tus-js-client
in Node), a stranger gets 403, and another user cannot touch someone else's upload.
The framework's own pages keep working beside the endpoint.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys

import pytest
import requests
from conftest import ROOT, TUS, random_file, require_tool, sha256_file, start_gunicorn
from support.jsclient import node_client, stored
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

pytestmark = pytest.mark.e2e

APPS = {"flask": "embed.flask_site:application", "django": "embed.django_site.wsgi:application"}
DJANGO_SETUP = """
import django
django.setup()
from django.core.management import call_command
from django.contrib.auth.models import User
call_command("migrate", verbosity=0)
for name in ("alice", "bob"):
    User.objects.create_user(name, password=name + "-pw")
"""


@pytest.fixture(scope="module", params=sorted(APPS))
def site(request, tmp_path_factory):
    framework = request.param
    require_tool(f"{framework} (pip install -e '.[test]')", importlib.util.find_spec(framework) is not None)
    tmp = tmp_path_factory.mktemp(framework)
    path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "EMBED_SECRET_KEY": secrets.token_hex(32),
           "EMBED_DATABASE": str(tmp / "site.sqlite3")}
    if framework == "django":
        subprocess.run([sys.executable, "-c", DJANGO_SETUP], cwd=tmp, check=True, timeout=120,
                       env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "embed.django_site.settings"})
    server = start_gunicorn(tmp, workers=2, threads=4, env=env, app=APPS[framework])
    server.base_path = "/uploads/files/"
    yield server
    server.stop()


def site_url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def log_in(server, user: str) -> str:
    """Log in through the framework's own view; return the Cookie header it set."""
    browser = requests.Session()
    response = browser.post(site_url(server, "/login"), data={"user": user, "password": user + "-pw"},
                            timeout=10)
    assert response.status_code == 200, response.text
    assert response.text == f"logged in as {user}\n"
    return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


def test_the_frameworks_own_routes_keep_working(site):
    assert requests.get(site_url(site, "/"), timeout=10).text == "hello stranger\n"
    cookie = log_in(site, "alice")
    assert requests.get(site_url(site, "/"), headers={"Cookie": cookie}, timeout=10).text == \
        "hello alice\n"
    missing = requests.get(site_url(site, "/no-such-page"), timeout=10)
    assert missing.status_code == 404 and "ERR_" not in missing.text  # the framework's 404
    discovery = requests.options(site.url, timeout=10)
    assert discovery.status_code == 200 and discovery.headers["Tus-Version"] == "1.0.0"


def test_a_logged_in_user_uploads_with_tuspy(site, tmp_path):
    cookie = log_in(site, "alice")
    source = random_file(tmp_path / "alice.bin", 300_000)
    uploader = tus_client.TusClient(site.url, headers={"Cookie": cookie}).uploader(
        str(source), chunk_size=100_000, metadata={"filename": "alice.bin"})
    uploader.upload()
    assert uploader.url.startswith(site_url(site, "/uploads/files/"))  # Location has the prefix
    assert sha256_file(stored(site, uploader.url)) == sha256_file(source)
    mine = requests.head(uploader.url, headers={**TUS, "Cookie": cookie}, timeout=10)
    assert (mine.status_code, mine.headers["Upload-Offset"]) == (200, "300000")
    theirs = requests.head(uploader.url, headers={**TUS, "Cookie": log_in(site, "bob")}, timeout=10)
    assert theirs.status_code == 403


def test_a_logged_in_user_uploads_with_tus_js_client(site, tmp_path):
    cookie = log_in(site, "bob")
    source = random_file(tmp_path / "bob.bin", 2 * 1024 * 1024 + 17)
    result = node_client("upload", site, source, options={"headers": {"Cookie": cookie}})
    assert result["url"].startswith(site_url(site, "/uploads/files/"))
    assert sha256_file(stored(site, result["url"])) == sha256_file(source)


@pytest.mark.parametrize("cookie", [None, "session=forged; sessionid=forged"])
def test_a_stranger_gets_403(site, tmp_path, cookie):
    before = set(os.listdir(site.upload_dir)) if site.upload_dir.exists() else set()
    headers = {"Cookie": cookie} if cookie else {}
    response = requests.post(site.url, headers={**TUS, **headers, "Upload-Length": "5"}, timeout=10)
    assert response.status_code == 403
    assert response.text.startswith("ERR_ACCESS_DENIED")
    uploader = tus_client.TusClient(site.url, headers=headers).uploader(
        str(random_file(tmp_path / "stranger.bin", 1000)))
    with pytest.raises(TusCommunicationError) as refused:
        uploader.upload()
    assert refused.value.status_code == 403
    assert (set(os.listdir(site.upload_dir)) if site.upload_dir.exists() else set()) == before
