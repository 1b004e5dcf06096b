"""Per-client caps, counted in the upload directory (tuswsgi/quota.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tuswsgi.quota import CLIENTS_DIR, ClientCaps, client_key


@pytest.mark.parametrize(("identity", "address", "key"), [
    ("alice", "192.0.2.7", "identity alice"),
    (None, "192.0.2.7", "address 192.0.2.7"),
    (None, "2001:db8:1:2:3:4:5:6", "address 2001:db8:1:2::/64"),
    (None, "2001:db8:1:2:ffff::1", "address 2001:db8:1:2::/64"),  # the same subscriber
    (None, "::ffff:192.0.2.7", "address 192.0.2.7"),
    (None, "127.0.0.1", None),  # a proxy on this host, or a local tool: nobody
    (None, "::1", None),
    (None, "", None),  # a unix socket
    (None, "not-an-address", "address not-an-address"),
])
def test_client_key(identity, address, key):
    assert client_key(identity, address) == key


def caps(tmp_path, per_minute=0, unfinished=0, live=None) -> ClientCaps:
    live = live if live is not None else set()
    return ClientCaps(str(tmp_path), per_minute=per_minute, unfinished=unfinished,
                      is_unfinished=lambda upload_id: upload_id in live)


def test_creations_a_minute_are_counted_per_client(tmp_path, monkeypatch):
    now = [6000.0 * 60 + 10]
    monkeypatch.setattr(time, "time", lambda: now[0])
    quota = caps(tmp_path, per_minute=3)
    assert [quota.admit("a") for _ in range(3)] == [None] * 3
    refusal = quota.admit("a")
    assert refusal is not None and refusal.code == "ERR_TOO_MANY_CREATIONS"
    assert refusal.retry_after == 50  # the rest of the minute
    assert quota.admit("b") is None  # another client
    now[0] += 50  # the next minute
    assert quota.admit("a") is None


def test_concurrent_creations_never_lose_a_count(tmp_path):
    quota = caps(tmp_path, per_minute=40)
    results = []
    threads = [threading.Thread(target=lambda: results.extend(quota.admit("a") for _ in range(10)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    minute = int(time.time() // 60)
    admitted = sum(result is None for result in results)
    assert admitted in (40, 80)  # 80 only when the minute turned during the test
    if int(time.time() // 60) == minute:
        assert admitted == 40


def test_unfinished_uploads_are_counted_and_finished_ones_forgotten(tmp_path):
    live: set[str] = set()
    quota = caps(tmp_path, unfinished=2, live=live)
    for upload_id in ("u1", "u2"):
        assert quota.admit("a") is None
        quota.created("a", upload_id)
        live.add(upload_id)
    refusal = quota.admit("a")
    assert refusal is not None and refusal.code == "ERR_TOO_MANY_UNFINISHED"
    assert refusal.retry_after is None
    live.discard("u1")  # finished (or expired, or deleted)
    assert quota.admit("a") is None
    folder = tmp_path / CLIENTS_DIR / os.listdir(tmp_path / CLIENTS_DIR)[0]
    assert sorted(os.listdir(folder)) == ["u2"]


def test_the_sweep_leaves_only_what_still_counts(tmp_path, monkeypatch):
    live = {"u2"}
    quota = caps(tmp_path, per_minute=10, unfinished=10, live=live)
    quota.admit("a")
    quota.created("a", "u1")
    quota.admit("b")
    quota.created("b", "u2")
    now = time.time() + 180
    monkeypatch.setattr(time, "time", lambda: now)
    quota.sweep()
    folders = os.listdir(tmp_path / CLIENTS_DIR)
    assert [os.listdir(tmp_path / CLIENTS_DIR / folder) for folder in folders] == [["u2"]]


def test_no_cap_no_files(tmp_path):
    quota = caps(tmp_path)
    assert not quota.enabled
    quota.sweep()
    assert not (tmp_path / CLIENTS_DIR).exists()
