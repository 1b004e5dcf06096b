"""The built-in upload page in a real Chromium against a real gunicorn (issue #6).

Each test drives the page as a person would (file picker, drop, buttons, reload)
and checks the bytes that arrived on disk.  Mid-upload screenshots go to
tests/artifacts/.  Uploads that must be caught half-way are slowed down with
DevTools network emulation; nothing else about the browser is faked.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import requests
from conftest import TUS, sha256_file
from support import browser as chromium
from support.browser import SlowProxy, screenshot

pytestmark = pytest.mark.e2e
browser, page = chromium.browser, chromium.page  # fixtures

BIG = 50 * 1000 * 1000
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("source") / "big.bin"
    with open(path, "wb") as handle:
        for _ in range(BIG // 1_000_000):
            handle.write(os.urandom(1_000_000))
    return path


@pytest.fixture
def slow_server(gunicorn_factory):
    """gunicorn behind a proxy that lets 20 MB/s through: the 50 MB upload takes a few
    seconds however fast the machine is, so the test can act part-way."""
    server = gunicorn_factory(workers=2, threads=4)
    proxy = SlowProxy(server.port, 20_000_000)
    yield server, f"http://127.0.0.1:{proxy.port}/"
    proxy.close()


@pytest.fixture
def log(page):
    """Everything the page sends and every script error, in order."""
    entries = {"requests": [], "errors": []}
    page.on("request", lambda request: entries["requests"].append(
        (request.method, request.url, dict(request.headers))))
    page.on("pageerror", lambda error: entries["errors"].append(str(error)))
    page.on("console", lambda message: entries["errors"].append(message.text)
            if "Content Security Policy" in message.text else None)
    return entries


def tus_requests(log: dict, start: int = 0) -> list[tuple[str, str, dict]]:
    return [entry for entry in log["requests"][start:] if entry[0] in ("POST", "PATCH", "HEAD", "DELETE")]


def open_page(page, url: str, chunk_mib: float | None = None) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    if chunk_mib is not None:
        page.get_by_text("Settings").click()
        page.get_by_label("Chunk size (MiB)").fill(str(chunk_mib))


def wait_for_progress(page, at_least: float) -> None:
    page.wait_for_function(
        "min => { const bar = document.querySelector('.upload-bar'); return bar && bar.value >= min; }",
        arg=at_least, polling=50, timeout=60_000)


def wait_finished(page, name: str, timeout: float = 90_000) -> str:
    link = page.locator("#finished-list a", has_text=name).first
    link.wait_for(timeout=timeout)
    return link.get_attribute("href")


def wait_for_requests_done(server, method: str, count: int, timeout: float = 30) -> None:
    """Wait until the server has logged ``count`` finished ``method`` requests."""
    deadline = time.monotonic() + timeout
    while server.log().count(f"request method={method} ") < count:
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.05)


def wait_for_stored(server, at_least: int, timeout: float = 60) -> Path:
    """The one upload's data file, once the server holds ``at_least`` bytes of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in server.upload_dir.glob("[0-9a-f]" * 32):
            if path.stat().st_size >= at_least:
                return path
        time.sleep(0.02)
    raise AssertionError(f"the server did not store {at_least} bytes in {timeout}s")


def data_path(server, url: str) -> Path:
    return server.upload_dir / url.rsplit("/", 1)[1]


def server_offset(url: str) -> int:
    response = requests.head(url, headers=TUS, timeout=10)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def test_uploads_a_50mb_file_with_checksums_and_lists_a_download_link(gunicorn_factory, page, log,
                                                                      big_file):
    server = gunicorn_factory(workers=2, threads=4)
    open_page(page, f"http://127.0.0.1:{server.port}/")
    page.set_input_files("#file-input", str(big_file))
    url = wait_finished(page, "big.bin")

    assert sha256_file(data_path(server, url)) == sha256_file(big_file)
    sent = tus_requests(log)
    post = [entry for entry in sent if entry[0] == "POST"]
    assert len(post) == 1
    headers = post[0][2]
    assert headers["tus-resumable"] == "1.0.0"
    assert headers["upload-length"] == str(BIG)
    # creation-with-upload: the first chunk (8 MiB by default) rides on the POST
    assert headers["content-type"] == "application/offset+octet-stream"
    assert headers["upload-checksum"].startswith("sha256 ")
    patches = [entry for entry in sent if entry[0] == "PATCH"]
    assert [int(entry[2]["upload-offset"]) for entry in patches] == list(range(8 * MIB, BIG, 8 * MIB))
    assert all(entry[2]["upload-checksum"].startswith("sha256 ") for entry in patches)
    assert all(entry[2]["tus-resumable"] == "1.0.0" for entry in patches)
    # the finished list links to GET on the upload URL, and survives a reload
    assert url == patches[0][1]
    download = requests.get(url, timeout=30)
    assert hashlib.sha256(download.content).hexdigest() == sha256_file(big_file)
    page.reload()
    assert wait_finished(page, "big.bin") == url
    assert not log["errors"]


def test_pause_at_a_third_and_resume_by_keyboard(slow_server, page, log, big_file):
    server, page_url = slow_server
    open_page(page, page_url, chunk_mib=2)
    page.set_input_files("#file-input", str(big_file))
    progress = page.get_by_role("progressbar", name="big.bin")
    progress.wait_for()
    wait_for_progress(page, BIG / 3)
    pause = page.get_by_role("button", name="Pause big.bin")
    pause.focus()
    page.keyboard.press("Enter")
    page.get_by_text("Paused", exact=True).wait_for()
    paused_at = len(log["requests"])
    url = next(entry[1] for entry in tus_requests(log) if entry[0] == "PATCH")
    sent = sum(entry[0] == "PATCH" for entry in tus_requests(log))
    wait_for_requests_done(server, "PATCH", sent)  # the aborted one, too, has ended
    offset = server_offset(url)
    time.sleep(0.7)  # a window in which nothing may arrive
    assert server_offset(url) == offset, "the server still receives data while paused"
    assert BIG * 0.1 < offset < BIG * 0.9  # about a third (what the client sent may run ahead)
    assert not [entry for entry in tus_requests(log, paused_at) if entry[0] == "PATCH"]
    screenshot(page, "upload-page-paused.png")

    resume = page.get_by_role("button", name="Resume big.bin")
    resume.focus()
    page.keyboard.press(" ")
    page.get_by_text("Uploading", exact=True).wait_for()
    screenshot(page, "upload-page-uploading.png")
    wait_finished(page, "big.bin")
    after = tus_requests(log, paused_at)
    assert after[0][:2] == ("HEAD", url)
    assert after[1][0] == "PATCH" and int(after[1][2]["upload-offset"]) == offset
    assert sha256_file(data_path(server, url)) == sha256_file(big_file)
    assert not log["errors"]


def test_reload_mid_upload_resumes_with_head(slow_server, page, log, big_file):
    server, page_url = slow_server
    open_page(page, page_url, chunk_mib=2)
    page.set_input_files("#file-input", str(big_file))
    wait_for_progress(page, BIG * 0.3)
    url = next(entry[1] for entry in tus_requests(log) if entry[0] == "PATCH")

    page.reload()
    page.wait_for_selector("body[data-ready]")
    # the page remembers the unfinished upload and asks the server how far it got
    page.locator("#unfinished-list li", has_text="big.bin").wait_for()
    screenshot(page, "upload-page-after-reload.png")
    reloaded_at = len(log["requests"])
    page.set_input_files("#file-input", str(big_file))
    assert wait_finished(page, "big.bin") == url

    after = tus_requests(log, reloaded_at)
    assert "POST" not in [entry[0] for entry in after]
    first_patch = next(i for i, entry in enumerate(after) if entry[0] == "PATCH")
    assert ("HEAD", url) in [entry[:2] for entry in after[:first_patch]]
    assert int(after[first_patch][2]["upload-offset"]) > 0
    assert sha256_file(data_path(server, url)) == sha256_file(big_file)
    assert not page.locator("#unfinished-list li").count()
    assert not log["errors"]


def test_cancel_deletes_the_upload(slow_server, page, log, big_file):
    server, page_url = slow_server
    open_page(page, page_url, chunk_mib=2)
    page.set_input_files("#file-input", str(big_file))
    wait_for_progress(page, BIG * 0.15)
    url = next(entry[1] for entry in tus_requests(log) if entry[0] == "PATCH")
    assert data_path(server, url).exists()

    page.get_by_role("button", name="Cancel big.bin").click()
    page.get_by_text("Nothing is uploading.").wait_for()
    assert ("DELETE", url) in [entry[:2] for entry in tus_requests(log)]
    assert not data_path(server, url).exists()
    assert requests.head(url, headers=TUS, timeout=10).status_code in (404, 410)
    stored = page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('tuswsgi-upload:'))")
    assert stored == []
    assert not page.locator("#finished-list li").count()
    assert not log["errors"]


def test_other_paths_several_files_dropped_on_a_phone_screen(gunicorn_factory, browser, tmp_path):
    """Page at /upload/, endpoint at /api/tus/: relative assets and data-endpoint still work;
    several files at once, by picker and by drag and drop; no sideways scrolling at 360 px."""
    server = gunicorn_factory(workers=2, threads=4, env={"TUSWSGI_UPLOAD_PAGE_PATH": "/upload/",
                                                        "TUSWSGI_BASE_PATH": "/api/tus/"})
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text)
                if "Content Security Policy" in message.text else None)
        open_page(page, f"http://127.0.0.1:{server.port}/upload/")
        files = []
        for index, size in enumerate((0, 1, 300_000, 3 * MIB + 7)):
            path = tmp_path / f"file {index} é.bin"
            path.write_bytes(os.urandom(size))
            files.append(path)
        page.set_input_files("#file-input", [str(path) for path in files])
        dropped = b"dropped on the page\n" * 1000
        transfer = page.evaluate_handle(
            """text => { const t = new DataTransfer();
                         t.items.add(new File([text], 'dropped.txt', {type: 'text/plain'})); return t; }""",
            dropped.decode())
        page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})

        for path in files:
            url = wait_finished(page, path.name)
            assert url.startswith(f"http://127.0.0.1:{server.port}/api/tus/")
            assert sha256_file(data_path(server, url)) == sha256_file(path)
        url = wait_finished(page, "dropped.txt")
        assert data_path(server, url).read_bytes() == dropped
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        screenshot(page, "upload-page-phone.png")
        assert not errors
    finally:
        context.close()


def test_retries_after_cut_connections_and_server_errors(gunicorn_factory, page, log, tmp_path):
    """A flaky link (every connection cut after 2.5 MB), one PATCH answered 503 and one
    failing at the network level: the page backs off, asks HEAD where the upload stands
    after each of its failures, and finishes with the right bytes."""
    from support.faultproxy import FaultProxy

    server = gunicorn_factory(workers=2, threads=4)
    proxy = FaultProxy(server.port, cut_after=2_500_000)
    source = tmp_path / "flaky.bin"
    source.write_bytes(os.urandom(9 * MIB + 999))
    failures: list[str] = []

    def sabotage(route) -> None:
        if route.request.method != "PATCH" or len(failures) >= 2:
            route.continue_()
        elif not failures:
            failures.append("503")
            route.fulfill(status=503, body="busy")
        else:
            failures.append("network")
            route.abort("connectionreset")

    try:
        open_page(page, f"http://127.0.0.1:{proxy.port}/", chunk_mib=1)
        page.route("**/files/*", sabotage)
        page.set_input_files("#file-input", str(source))
        url = wait_finished(page, "flaky.bin")
    finally:
        proxy.close()
    assert sha256_file(data_path(server, url)) == sha256_file(source)
    assert failures == ["503", "network"]
    assert proxy.cuts >= 2
    sent = [(entry[0], entry[2].get("upload-offset")) for entry in tus_requests(log)]
    patches = [i for i, entry in enumerate(sent) if entry[0] == "PATCH"]
    # after each failed PATCH (the first two) the page re-reads the offset before sending more
    for failed in patches[:2]:
        assert sent[failed + 1][0] == "HEAD", sent
    assert not log["errors"]


def test_a_newer_request_taking_over_makes_the_page_resume_not_fail(gunicorn_factory, page, log,
                                                                   big_file):
    """A HEAD from elsewhere takes the upload over mid-PATCH: the page's PATCH is
    answered 400 ERR_UPLOAD_INTERRUPTED, the chunks before it are kept, and the page
    re-reads the offset and carries on instead of giving up.

    16 MiB chunks through a 4 MB/s link take 4 s each, so the PATCH is still
    sending when the hand-over's drain (2 s) ends, whatever the machine's speed.
    The HEAD goes out once the server holds the first chunk (its data file, not
    the page's progress bar, which runs ahead of the server)."""
    server = gunicorn_factory(workers=2, threads=4)
    proxy = SlowProxy(server.port, 4_000_000)
    answers = []
    page.on("response", lambda response: answers.append((response.request.method, response.status)))
    try:
        open_page(page, f"http://127.0.0.1:{proxy.port}/", chunk_mib=16)
        page.set_input_files("#file-input", str(big_file))
        stored = wait_for_stored(server, 16 * MIB + 1)
        taken_over = server_offset(f"{server.url}{stored.name}")  # the page's PATCH is stopped
        assert wait_finished(page, "big.bin").endswith("/" + stored.name)
    finally:
        proxy.close()
    assert ("PATCH", 400) in answers, answers
    assert taken_over >= 16 * MIB  # whole chunks; the interrupted one is checksummed, so undone
    assert sha256_file(stored) == sha256_file(big_file)
    assert not log["errors"]
