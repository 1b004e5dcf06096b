"""Real-browser helpers: Chromium driven by Playwright, and a tiny static HTTP server.

Chromium is Debian's (``/usr/bin/chromium``); Playwright never downloads a browser
here.  Without Playwright or Chromium the tests skip locally, naming what is
missing, and fail under ``CI=true`` (see ``.ci/install.d/browser.sh``).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from conftest import ROOT, require_tool

CHROMIUM = os.environ.get("TUSWSGI_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"
NODE_MODULES = ROOT / "tests" / "node_modules"


def require_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
        have_playwright = True
    except ImportError:
        have_playwright = False
    require_tool("playwright (pip install playwright)", have_playwright)
    require_tool(f"chromium ({CHROMIUM})", os.access(CHROMIUM, os.X_OK) or bool(shutil.which(CHROMIUM)))


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One Chromium per test module; each test gets its own context (fresh localStorage)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" on reload
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    """Save a screenshot to tests/artifacts/ (gitignored) for a human to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


class SlowProxy:
    """A loopback TCP proxy that forwards what clients send at a limited rate (shared by
    all connections, like one slow link), so a test can act mid-upload.  Responses pass
    at full speed.  The page is loaded through it too, so it stays one origin."""

    def __init__(self, target_port: int, bytes_per_second: float) -> None:
        self.target_port = target_port
        self.rate = bytes_per_second
        self._lock = threading.Lock()
        self._next = 0.0
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pace(self, size: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + size / self.rate
            delay = self._next - now
        if delay > 0:
            time.sleep(delay)

    def _pipe(self, source: socket.socket, target: socket.socket, paced: bool) -> None:
        try:
            while True:
                data = source.recv(32768)
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                if paced:
                    self._pace(len(data))
                target.sendall(data)
        except OSError:
            for sock in (source, target):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass


class StaticServer:
    """Serve a fixed set of files from a second origin (another port).

    With ``proxy_port``, requests under ``proxy_prefix`` are passed on to that port
    (a reverse proxy keeping the Host header), so a page from this server can reach
    the tus server from its own origin."""

    def __init__(self, files: dict[str, tuple[bytes, str]], proxy_port: int | None = None,
                 proxy_prefix: str = "/files/") -> None:
        self.files = files
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                path = self.path.split("?", 1)[0]
                if proxy_port is not None and path.startswith(proxy_prefix):
                    self.forward(proxy_port)
                    return
                entry = outer.files.get(path) if self.command in ("GET", "HEAD") else None
                if entry is None:
                    self.send_error(404)
                    return
                body, content_type = entry
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def forward(self, port: int) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() not in ("connection", "keep-alive")}
                upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status)
                    for name, value in response.getheaders():
                        if name.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                                "content-length", "date", "server"):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_HEAD = do_POST = do_PATCH = do_DELETE = do_OPTIONS = handle_one

            def log_message(self, format: str, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
