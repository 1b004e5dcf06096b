"""tuswsgi under gunicorn's own workers, run the common way (``gunicorn -k gthread
-w 2 --threads 8 tuswsgi:app``, none of tuswsgi's settings): a silent client never
holds an upload longer than ``network_timeout``, and a hand-over reaches a stalled
holder within a second, using only what those workers publish to the application
(the connection's socket in the WSGI environ)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import sha256, sha256_file, wait_for_size
from support.deploy import start_stock_gunicorn
from support.rawclient import raw_create, raw_offset, raw_resume, read_status, send_partial_patch

pytestmark = pytest.mark.e2e

WORKERS = ["gthread", "sync"]
SENT = 256 * 1024


@pytest.fixture(params=WORKERS)
def stock(request, tmp_path):
    server = start_stock_gunicorn(tmp_path, request.param, TUSWSGI_NETWORK_TIMEOUT="2s")
    yield server
    server.stop()


def test_a_stalled_patch_is_handed_over_to_a_head_within_two_seconds(stock):
    """256 KiB, then silence without a close (a phone that lost its network)."""
    data = os.urandom(1_000_000)
    path = raw_create(stock.port, len(data))
    stalled = send_partial_patch(stock.port, path, 0, data, SENT)
    try:
        wait_for_size(stock.upload_dir / Path(path).name, SENT)
        started = time.monotonic()
        offset = raw_offset(stock.port, path)
        elapsed = time.monotonic() - started
    finally:
        stalled.close()
    assert offset == SENT
    assert elapsed < 2, f"HEAD answered after {elapsed:.2f} s"
    raw_resume(stock.port, path, data, chunk=1 << 20)
    assert sha256_file(stock.upload_dir / Path(path).name) == sha256(data)


def test_a_silent_client_is_cut_at_the_network_timeout_and_keeps_its_bytes(stock):
    data = os.urandom(500_000)
    path = raw_create(stock.port, len(data))
    stalled = send_partial_patch(stock.port, path, 0, data, SENT)
    started = time.monotonic()
    try:
        status, reply = read_status(stalled, 15)
    finally:
        stalled.close()
    elapsed = time.monotonic() - started
    assert status == 408 and b"ERR_REQUEST_TIMEOUT" in reply
    assert 1.5 <= elapsed < 5, elapsed
    assert raw_offset(stock.port, path) == SENT
    assert (stock.upload_dir / Path(path).name).read_bytes() == data[:SENT]
