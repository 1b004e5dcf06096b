"""Cookie-authenticated uploads from another origin, in Chromium, against real gunicorn.

The upload server allows one origin with credentials (``cors_allow_credentials``) and
its pre-access Python hook (tests/support/cookieauth.py) lets in only requests that
carry the session cookie.  The page comes from a second server on another port: the
allowed origin.  A third server is an origin that is not allowed.  Cookies ignore
ports, so the browser holds the session cookie for both and decides by CORS alone.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from conftest import sha256_file, start_gunicorn
from support import browser as chromium
from support import cookieauth
from support.browser import StaticServer, require_browser
from support.hookreceiver import HookReceiver
from support.jsclient import harness_files, require_node, uppy_page_files

pytestmark = pytest.mark.e2e
browser, page = chromium.browser, chromium.page  # fixtures

SESSION = secrets.token_hex(16)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cookie-source") / "report.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 777))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn allowing credentials from ``allowed`` only; ``foreign`` serves the same
    page from an origin that is not in cors_origins.  An HTTP hook with Cookie forwarded
    records what the application would see."""
    require_browser()
    uppy = uppy_page_files(tmp_path_factory.mktemp("uppy-bundle"))
    allowed, foreign, receiver = StaticServer(dict(uppy)), StaticServer(dict(uppy)), HookReceiver()
    tmp = tmp_path_factory.mktemp("cookie-server")
    env = {"TUSWSGI_CORS_ORIGINS": allowed.origin, "TUSWSGI_CORS_ALLOW_CREDENTIALS": "on",
           "TUSWSGI_HOOKS_HTTP": receiver.url, "TUSWSGI_HOOKS_HTTP_FORWARD_HEADERS": "Cookie",
           "TUSWSGI_HOOKS_ENABLED": "pre-access",
           **cookieauth.server_env(SESSION, tmp / "cookies.log")}
    gunicorn = start_gunicorn(tmp, workers=2, threads=4, env=env)
    gunicorn.extra.update(allowed=allowed, foreign=foreign, receiver=receiver)
    yield gunicorn
    gunicorn.stop()
    for other in (allowed, foreign, receiver):
        other.close()


def uploads(server) -> set[str]:
    return set(os.listdir(server.upload_dir)) if server.upload_dir.exists() else set()


def log_in(page, server) -> None:
    """The session cookie an application's login would have set, for the upload host."""
    page.context.add_cookies([{"name": "session", "value": SESSION,
                               "url": f"http://127.0.0.1:{server.port}"}])


def open_tus_harness(page, origin: StaticServer) -> None:
    require_browser()
    require_node()
    origin.files.update(harness_files(""))
    page.goto(origin.origin + "/harness.html")
    page.wait_for_function("typeof tus !== 'undefined' && typeof runUpload === 'function'")


def tus_upload(page, server, file: Path, **options) -> dict:
    page.set_input_files("#file", str(file))
    return page.evaluate("([endpoint, options]) => runUpload(endpoint, options)",
                         [server.url, {"withCredentials": True, **options}])


# -- tus-js-client ---------------------------------------------------------------------------

def test_tus_js_client_uploads_with_the_session_cookie(server, source, page):
    log_in(page, server)
    open_tus_harness(page, server.extra["allowed"])
    responses: list = []
    page.on("response", lambda response: responses.append(response))
    result = tus_upload(page, server, source)
    assert sha256_file(server.upload_dir / result["url"].rsplit("/", 1)[1]) == sha256_file(source)
    ours = [r for r in responses if r.url.startswith(server.url)]
    assert {r.request.method for r in ours} >= {"POST", "PATCH"}
    for response in ours:
        assert response.headers["access-control-allow-origin"] == server.extra["allowed"].origin
        assert response.headers["access-control-allow-credentials"] == "true"
        assert f"session={SESSION}" in response.request.all_headers()["cookie"]
    forwarded = [call["headers"].get("Cookie") for call in server.extra["receiver"].calls]
    assert f"session={SESSION}" in forwarded[-1]  # the HTTP hook got the browser's cookie


def test_tus_js_client_without_the_cookie_gets_403_from_the_hook(server, source, page):
    open_tus_harness(page, server.extra["allowed"])
    before = uploads(server)
    with pytest.raises(Exception, match="response code: 403"):
        tus_upload(page, server, source, retryDelays=None)
    assert uploads(server) == before


def test_tus_js_client_from_an_origin_not_allowed_is_blocked_by_the_browser(server, source, page):
    log_in(page, server)
    open_tus_harness(page, server.extra["foreign"])
    before = uploads(server)
    with pytest.raises(Exception, match="failed to create upload"):
        tus_upload(page, server, source, retryDelays=None)
    # the preflight named no allowed origin, so the browser never sent the POST
    assert uploads(server) == before


# -- Uppy ------------------------------------------------------------------------------------

def uppy_upload(page, server, origin: StaticServer, file: Path, **tus_options) -> dict:
    """Upload ``file`` with Uppy's Tus plugin (``withCredentials``) from ``origin``'s page."""
    page.goto(origin.origin + "/uppy.html")
    page.wait_for_function("typeof uppyOpen === 'function'")
    page.evaluate("([endpoint, options]) => uppyOpen(endpoint, options)",
                  [server.url, {"withCredentials": True, **tus_options}])
    page.set_input_files("#files", str(file))
    page.evaluate("uppyStart()")
    return page.evaluate("window.uppyDone")


def test_uppy_uploads_with_the_session_cookie(server, source, page):
    log_in(page, server)
    result = uppy_upload(page, server, server.extra["allowed"], source)
    assert not result["failed"], result
    url = result["successful"][0][1]
    assert sha256_file(server.upload_dir / url.rsplit("/", 1)[1]) == sha256_file(source)
    forwarded = server.extra["receiver"].calls[-1]["headers"].get("Cookie") or ""
    assert f"session={SESSION}" in forwarded


def test_uppy_without_the_cookie_gets_403_from_the_hook(server, source, page):
    before = uploads(server)
    result = uppy_upload(page, server, server.extra["allowed"], source, retryDelays=None)
    assert not result["successful"]
    events = page.evaluate("window.uppyLog.events")
    assert [event[3] for event in events if event[0] == "error"] == [403]
    assert uploads(server) == before


def test_uppy_from_an_origin_not_allowed_is_blocked_by_the_browser(server, source, page):
    log_in(page, server)
    before = uploads(server)
    result = uppy_upload(page, server, server.extra["foreign"], source, retryDelays=None)
    assert not result["successful"] and result["failed"]
    assert uploads(server) == before
