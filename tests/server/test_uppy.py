"""Uppy (@uppy/core + @uppy/tus, pinned in tests/package.json) in Chromium against a
real gunicorn, with Uppy's own defaults: every file at once (``limit: 20``), the
whole file in one PATCH (``chunkSize: Infinity``), retries after 100 ms, 1 s, 3 s, 5 s.

The page is tests/js/uppy.html with tests/js/uppy-harness.js bundled by esbuild at
test time, served from a second port (another origin, allowed by ``cors_origins``).
Slow and faulty links are loopback proxies in front of gunicorn.  Every case checks
the SHA-256 of the bytes the server stored.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import random_file, settled, sha256_file, start_gunicorn
from support import browser as chromium
from support.browser import SlowProxy, StaticServer, require_browser
from support.faultproxy import FaultProxy
from support.jsclient import uppy_page_files

pytestmark = pytest.mark.e2e
browser, page = chromium.browser, chromium.page  # fixtures

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn allowing the origin of the static server that serves the Uppy page."""
    require_browser()
    static = StaticServer(uppy_page_files(tmp_path_factory.mktemp("uppy-bundle")))
    tmp = tmp_path_factory.mktemp("uppy-server")
    gunicorn = start_gunicorn(tmp, workers=2, threads=8,
                              env={"TUSWSGI_CORS_ORIGINS": static.origin})
    gunicorn.extra["static"] = static
    yield gunicorn
    gunicorn.stop()
    static.close()


def open_uppy(page, server, endpoint: str, **tus_options) -> None:
    page.goto(server.extra["static"].origin + "/uppy.html")
    page.wait_for_function("typeof uppyOpen === 'function'")
    page.evaluate("([endpoint, options]) => uppyOpen(endpoint, options)", [endpoint, tus_options])


def start(page, *files: Path) -> None:
    page.set_input_files("#files", [str(file) for file in files])
    page.evaluate("uppyStart()")


def finished(page) -> dict:
    result = page.evaluate("window.uppyDone")
    assert not result["failed"], result
    return result


def uppy_log(page) -> dict:
    return page.evaluate("window.uppyLog")


def stored(server, url: str) -> Path:
    return server.upload_dir / url.rsplit("/", 1)[1]


def data_files(server) -> set[Path]:
    return set(server.upload_dir.glob("[0-9a-f]" * 32))


def wait_for_stored(server, at_least: int, before: set[Path], timeout: float = 60) -> Path:
    """The data file of the one upload created since ``before`` (the module's server
    keeps earlier tests' uploads), once the server holds ``at_least`` bytes of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in data_files(server) - before:
            if path.stat().st_size >= at_least:
                return path
        time.sleep(0.02)
    raise AssertionError(f"the server did not store {at_least} bytes in {timeout}s")


def test_several_files_at_once(server, page, tmp_path):
    """Uppy starts every file at once; through one slow link their PATCHes overlap."""
    proxy = SlowProxy(server.port, 8_000_000)
    files = [random_file(tmp_path / f"file-{n}.bin", size)
             for n, size in enumerate([3 * MIB, 2 * MIB + 1, 1 * MIB + 7, 123_457])]
    try:
        open_uppy(page, server, f"http://127.0.0.1:{proxy.port}/files/")
        start(page, *files)
        result = finished(page)
    finally:
        proxy.close()
    urls = dict(result["successful"])
    assert sorted(urls) == sorted(file.name for file in files)
    for file in files:
        assert sha256_file(stored(server, urls[file.name])) == sha256_file(file)
    log = uppy_log(page)
    methods = [request[0] for request in log["requests"]]
    assert methods.count("POST") == methods.count("PATCH") == len(files)  # one PATCH each
    assert log["maxInFlight"]["PATCH"] >= 2


def test_pause_then_resume(server, page, tmp_path):
    source = random_file(tmp_path / "paused.bin", 12 * MIB)
    proxy = SlowProxy(server.port, 4_000_000)
    try:
        open_uppy(page, server, f"http://127.0.0.1:{proxy.port}/files/")
        before = data_files(server)
        start(page, source)
        data = wait_for_stored(server, 2 * MIB, before)
        page.evaluate("uppy.pauseAll()")
        paused_at = settled(lambda: data.stat().st_size)  # the cut PATCH's bytes are in
        assert 2 * MIB <= paused_at < source.stat().st_size
        before_resume = len(uppy_log(page)["requests"])
        page.evaluate("uppy.resumeAll()")
        result = finished(page)
    finally:
        proxy.close()
    url = result["successful"][0][1]
    assert sha256_file(stored(server, url)) == sha256_file(source)
    after = uppy_log(page)["requests"][before_resume:]
    assert [request[0] for request in after] == ["HEAD", "PATCH"]
    assert int(after[1][2]) == paused_at  # only the rest was sent


def test_cut_connections_are_retried(server, page, tmp_path):
    """Every connection dies after 2.5 MB; Uppy's retries resume from the server's offset."""
    source = random_file(tmp_path / "flaky.bin", 9 * MIB + 999)
    proxy = FaultProxy(server.port, cut_after=2_500_000)
    try:
        open_uppy(page, server, proxy.url)
        start(page, source)
        result = finished(page)
    finally:
        proxy.close()
    url = result["successful"][0][1]
    assert sha256_file(stored(server, url)) == sha256_file(source)
    assert proxy.cuts >= 3  # the proxy may cut more connections than Uppy saw fail
    requests = uppy_log(page)["requests"]
    patches = [request for request in requests if request[0] == "PATCH"]
    assert len(patches) >= 4 and [int(patch[2]) for patch in patches] == \
        sorted(int(patch[2]) for patch in patches)
    assert int(patches[-1][2]) > 0
    methods = [request[0] for request in requests]
    assert methods[:2] == ["POST", "PATCH"]
    # after each failure the offset is asked for before anything is sent again
    assert methods[2:] == ["HEAD", "PATCH"] * (len(methods[2:]) // 2), methods


def test_reload_resumes_the_upload(server, page, tmp_path):
    """After a reload the same file is found by its fingerprint in localStorage and
    resumed with HEAD and one PATCH of the rest: no new upload is created."""
    source = random_file(tmp_path / "reloaded.bin", 12 * MIB)
    proxy = SlowProxy(server.port, 4_000_000)
    endpoint = f"http://127.0.0.1:{proxy.port}/files/"
    try:
        open_uppy(page, server, endpoint)
        before = data_files(server)
        start(page, source)
        data = wait_for_stored(server, 3 * MIB, before)
        first_url = uppy_log(page)["requests"][1][1]
        page.reload()
        kept = settled(lambda: data.stat().st_size)
        open_uppy(page, server, endpoint)
        start(page, source)
        result = finished(page)
    finally:
        proxy.close()
    url = result["successful"][0][1]
    assert url == first_url
    assert sha256_file(stored(server, url)) == sha256_file(source)
    requests = uppy_log(page)["requests"]
    assert [request[0] for request in requests] == ["HEAD", "PATCH"]
    assert requests[0][1] == url
    assert int(requests[1][2]) == kept > 0
    assert os.listdir(server.upload_dir).count(url.rsplit("/", 1)[1]) == 1
