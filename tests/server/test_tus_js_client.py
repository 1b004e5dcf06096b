"""Interoperability with tus-js-client (pinned in tests/package.json), in Node and in Chromium.

Node cases run tests/js/node-client.js; browser cases load tus-js-client's own
dist/tus.min.js into a page.  The page and script come from a small second HTTP
server on another port, which is also the cross-origin (CORS) case.  Every case
checks the bytes in the server's upload directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from conftest import TUS, listening_socket, port_of, sha256_file, start_gunicorn
from support import browser as chromium
from support.browser import StaticServer, require_browser
from support.jsclient import harness_files, methods, node_client, require_node, stored

pytestmark = pytest.mark.e2e
browser, page = chromium.browser, chromium.page  # fixtures

MIB = 1024 * 1024



@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("js-source") / "payload.bin"
    path.write_bytes(os.urandom(6 * MIB + 12345))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gunicorn for the module, allowing CORS only from the static server's origin.
    The static server also passes /files/ on to gunicorn: the same-origin case."""
    listener = listening_socket()
    static = StaticServer({}, proxy_port=port_of(listener))
    tmp = tmp_path_factory.mktemp("js-server")
    gunicorn = start_gunicorn(tmp, workers=2, threads=4, listener=listener,
                              env={"TUSWSGI_CORS_ORIGINS": static.origin})
    gunicorn.extra["static"] = static
    yield gunicorn
    gunicorn.stop()
    static.close()





# -- Node ---------------------------------------------------------------------------

def test_node_plain_upload(server, source):
    result = node_client("upload", server, source)
    assert sha256_file(stored(server, result["url"])) == sha256_file(source)
    assert methods(result) == ["POST"] + ["PATCH"] * 7  # 1 MiB chunks
    assert all(request[2]["Tus-Resumable"] == "1.0.0" for request in result["requests"])


def test_node_upload_data_during_creation(server, source):
    result = node_client("upload", server, source, options={"uploadDataDuringCreation": True})
    assert sha256_file(stored(server, result["url"])) == sha256_file(source)
    post = result["requests"][0]
    assert post[0] == "POST"
    assert post[2]["Content-Type"] == "application/offset+octet-stream"
    assert methods(result) == ["POST"] + ["PATCH"] * 6


def test_node_parallel_uploads_concatenate(server, source):
    result = node_client("upload", server, source, options={"parallelUploads": 4})
    assert sha256_file(stored(server, result["url"])) == sha256_file(source)
    concat = [request[2].get("Upload-Concat", "") for request in result["requests"]
              if request[0] == "POST"]
    assert concat.count("partial") == 4
    assert [value for value in concat if value.startswith("final;")]
    head = requests.head(result["url"], headers=TUS, timeout=10)
    assert head.headers["Upload-Concat"].startswith("final;")


def test_node_override_patch_method(server, source):
    result = node_client("upload", server, source, options={"overridePatchMethod": True})
    assert sha256_file(stored(server, result["url"])) == sha256_file(source)
    assert "PATCH" not in methods(result)
    overridden = [request for request in result["requests"]
                  if request[2].get("X-HTTP-Method-Override") == "PATCH"]
    assert len(overridden) == 7 and all(request[0] == "POST" for request in overridden)


def test_node_abort_then_resume_from_stored_fingerprint(server, source, tmp_path):
    storage = tmp_path / "tus-urls.json"
    storage.write_text("{}")
    options = {"chunkSize": 256 * 1024}
    first = node_client("abort", server, source, storage=str(storage), stopAt=2 * MIB, options=options)
    url = first["url"]
    assert first["stoppedAt"] >= 2 * MIB
    assert url in storage.read_text()  # FileUrlStorage keeps the URL under the fingerprint
    offset = int(requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"])
    assert 0 < offset < source.stat().st_size

    second = node_client("resume", server, source, storage=str(storage), options=options)
    assert second["previous"] == 1
    assert second["url"] == url
    assert second["requests"][0][:2] == ["HEAD", url]
    assert second["requests"][1][0] == "PATCH"
    assert int(second["requests"][1][2]["Upload-Offset"]) == offset
    assert "POST" not in methods(second)
    assert sha256_file(stored(server, url)) == sha256_file(source)


def test_node_terminate(server, source):
    result = node_client("terminate", server, source, stopAt=1 * MIB, options={"chunkSize": 256 * 1024})
    url = result["url"]
    assert methods(result)[-1] == "DELETE"
    assert not stored(server, url).exists()
    assert requests.head(url, headers=TUS, timeout=10).status_code in (404, 410)


# -- Chromium --------------------------------------------------------------------------

def open_harness(page, server) -> StaticServer:
    """The harness page and tus.min.js, from the static server's origin."""
    require_browser()
    require_node()
    static: StaticServer = server.extra["static"]
    static.files.update(harness_files(""))
    page.goto(static.origin + "/harness.html")
    page.wait_for_function("typeof tus !== 'undefined' && typeof runUpload === 'function'")
    return static


def browser_upload(page, endpoint: str, file: Path, **options) -> dict:
    page.set_input_files("#file", str(file))
    return page.evaluate("([endpoint, options]) => runUpload(endpoint, options)", [endpoint, options])


def stored_via_proxy(server, static: StaticServer, url: str) -> Path:
    """Through the static server's proxy the upload URLs carry its origin."""
    assert url.startswith(static.origin + "/files/"), url
    return server.upload_dir / url.rsplit("/", 1)[1]


def test_browser_plain_upload(server, source, page):
    static = open_harness(page, server)
    result = browser_upload(page, static.origin + "/files/", source)
    assert sha256_file(stored_via_proxy(server, static, result["url"])) == sha256_file(source)
    assert [request[0] for request in result["requests"]] == ["POST"] + ["PATCH"] * 4  # 2 MiB chunks


def test_browser_parallel_uploads(server, source, page):
    static = open_harness(page, server)
    result = browser_upload(page, static.origin + "/files/", source, parallelUploads=4)
    assert sha256_file(stored_via_proxy(server, static, result["url"])) == sha256_file(source)
    concat = [request[2] for request in result["requests"] if request[0] == "POST"]
    assert concat.count("partial") == 4 and concat[-1].startswith("final;")


def test_browser_cors_from_another_origin(server, source, page):
    open_harness(page, server)
    assert page.evaluate("location.origin") != f"http://127.0.0.1:{server.port}"
    responses: list = []
    page.on("response", lambda response: responses.append(response))
    result = browser_upload(page, server.url, source, uploadDataDuringCreation=True)
    assert sha256_file(stored(server, result["url"])) == sha256_file(source)
    static_origin = server.extra["static"].origin
    tus_responses = [r for r in responses if r.url.startswith(server.url)]
    assert {r.request.method for r in tus_responses} >= {"POST", "PATCH"}
    for response in tus_responses:
        assert response.request.all_headers().get("origin") == static_origin
        assert response.headers.get("access-control-allow-origin") == static_origin


def test_browser_cors_refuses_an_origin_not_allowed(server, source, page):
    """The same page from an origin that is not in cors_origins cannot upload."""
    require_browser()
    require_node()
    static = StaticServer(harness_files(""))
    try:
        page.goto(static.origin + "/harness.html")
        page.wait_for_function("typeof runUpload === 'function'")
        before = set(os.listdir(server.upload_dir)) if server.upload_dir.exists() else set()
        page.set_input_files("#file", str(source))
        with pytest.raises(Exception, match="tus: failed to create upload"):
            page.evaluate("([endpoint]) => runUpload(endpoint, {retryDelays: null})", [server.url])
    finally:
        static.close()
    # The preflight is refused, so the browser never sends the POST: nothing is created.
    assert set(os.listdir(server.upload_dir)) == before
