"""Expiration: Upload-Expires, 410 for expired uploads, cleanup and tombstones."""

from __future__ import annotations

import json
import os
import re
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from werkzeug.test import Client

HOUR = 3600
RFC9110_DATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|"
                          r"Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT")


def info_path(upload_dir: Path, path: str) -> Path:
    return data_file(upload_dir, path).with_name(data_file(upload_dir, path).name + ".info")


def age(upload_dir: Path, path: str, seconds: float) -> None:
    """Pretend the upload was created and last written ``seconds`` ago."""
    info = info_path(upload_dir, path)
    record = json.loads(info.read_text())
    record["created"] -= seconds
    if record.get("gone_since"):
        record["gone_since"] -= seconds
    info.write_text(json.dumps(record))
    data = data_file(upload_dir, path)
    if data.exists():
        stat = data.stat()
        os.utime(data, (stat.st_atime - seconds, stat.st_mtime - seconds))


def expires_at(response) -> float:
    value = response.headers["Upload-Expires"]
    assert RFC9110_DATE.fullmatch(value), value
    return parsedate_to_datetime(value).timestamp()


@pytest.fixture
def app(make_app):
    return make_app(expiration="1h", gone_retention="2h", cleanup_interval="0")


@pytest.fixture
def client(app):
    return Client(app)


def test_upload_expires_on_post_patch_head(client):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "10"})
    assert abs(expires_at(response) - (time.time() + HOUR)) < 5
    path = "/files/" + response.headers["Location"].rsplit("/", 1)[1]
    response = patch(client, path, b"abc", 0)
    assert response.status_code == 204
    assert abs(expires_at(response) - (time.time() + HOUR)) < 5
    head = client.head(path, headers=TUS)
    assert abs(expires_at(head) - (time.time() + HOUR)) < 5


def test_creation_with_upload_reports_expires(client):
    response = client.post("/files/", data=b"abc", headers={
        **TUS, "Upload-Length": "10", "Content-Type": OCTET})
    assert response.headers["Upload-Offset"] == "3"
    assert abs(expires_at(response) - (time.time() + HOUR)) < 5


def test_finished_upload_has_no_expires(client, upload_dir):
    path = create(client, 3)
    response = patch(client, path, b"abc", 0)
    assert response.headers["Upload-Offset"] == "3"
    assert "Upload-Expires" not in response.headers
    assert "Upload-Expires" not in client.head(path, headers=TUS).headers
    response = client.post("/files/", data=b"xyz", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 201
    assert "Upload-Expires" not in response.headers
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_expiration_extension_advertised(client, make_app):
    assert "expiration" in client.options("/files/").headers["Tus-Extension"]
    off = Client(make_app(expiration="0"))
    assert "expiration" not in off.options("/files/").headers["Tus-Extension"]
    response = off.post("/files/", headers={**TUS, "Upload-Length": "10"})
    assert "Upload-Expires" not in response.headers


def test_expiry_counts_from_the_last_received_byte(client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    age(upload_dir, path, 0.9 * HOUR)
    head = client.head(path, headers=TUS)
    assert head.status_code == 200
    assert abs(expires_at(head) - (time.time() + 0.1 * HOUR)) < 5


def test_patch_pushes_expiry_forward(client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    age(upload_dir, path, 0.9 * HOUR)
    response = patch(client, path, b"def", 3)
    assert response.status_code == 204
    head = client.head(path, headers=TUS)
    assert abs(expires_at(head) - (time.time() + HOUR)) < 5
    assert abs(expires_at(response) - expires_at(head)) < 5


def test_expired_upload_is_410(client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    age(upload_dir, path, 2 * HOUR)
    head = client.head(path, headers=TUS)
    assert head.status_code == 410
    assert "Upload-Offset" not in head.headers
    response = patch(client, path, b"def", 3)
    assert response.status_code == 410
    assert response.data.startswith(b"ERR_UPLOAD_GONE")
    assert client.get(path).status_code == 410
    # nothing was appended and nothing deleted yet
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_cleanup_expires_then_forgets(app, client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    upload_id = path.rsplit("/", 1)[1]
    age(upload_dir, path, 2 * HOUR)

    assert app.service.cleanup() == [(upload_id, "expired")]
    assert not data_file(upload_dir, path).exists()
    record = json.loads(info_path(upload_dir, path).read_text())
    assert record["gone_since"] is not None
    assert client.head(path, headers=TUS).status_code == 410
    assert patch(client, path, b"def", 3).status_code == 410
    assert not data_file(upload_dir, path).exists()

    # Within gone_retention, the tombstone stays.
    assert app.service.cleanup() == []
    assert info_path(upload_dir, path).exists()

    age(upload_dir, path, 3 * HOUR)
    assert app.service.cleanup() == [(upload_id, "forgotten")]
    assert not info_path(upload_dir, path).exists()
    assert not any(p.name.startswith(upload_id) for p in upload_dir.iterdir())
    head = client.head(path, headers=TUS)
    assert head.status_code == 404


def test_terminated_upload_is_forgotten_after_retention(app, client, upload_dir):
    path = create(client, 10)
    assert client.delete(path, headers=TUS).status_code == 204
    assert app.service.cleanup() == []
    assert client.head(path, headers=TUS).status_code == 410
    age(upload_dir, path, 3 * HOUR)
    assert app.service.cleanup() == [(path.rsplit("/", 1)[1], "forgotten")]
    assert client.head(path, headers=TUS).status_code == 404


def test_cleanup_never_touches_finished_uploads(app, client, upload_dir):
    path = create(client, 3)
    patch(client, path, b"abc", 0)
    age(upload_dir, path, 1000 * HOUR)
    assert app.service.cleanup() == []
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert client.get(path).data == b"abc"


def test_cleanup_skips_an_upload_whose_lock_is_held(app, client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    upload_id = path.rsplit("/", 1)[1]
    age(upload_dir, path, 2 * HOUR)
    with app.service.locker.hold(upload_id, 0):
        assert app.service.cleanup() == []
        assert data_file(upload_dir, path).read_bytes() == b"abc"
        record = json.loads(info_path(upload_dir, path).read_text())
        assert record["gone_since"] is None
    assert app.service.cleanup() == [(upload_id, "expired")]
    assert not data_file(upload_dir, path).exists()


def test_cleanup_leaves_fresh_uploads(app, client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    age(upload_dir, path, 0.5 * HOUR)
    assert app.service.cleanup() == []
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_dry_run_changes_nothing(app, client, upload_dir):
    expired = create(client, 10)
    patch(client, expired, b"abc", 0)
    age(upload_dir, expired, 2 * HOUR)
    gone = create(client, 10)
    client.delete(gone, headers=TUS)
    age(upload_dir, gone, 3 * HOUR)

    def snapshot():
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in upload_dir.iterdir()}

    before = snapshot()
    actions = app.service.cleanup(dry_run=True)
    assert sorted(actions) == sorted([(expired.rsplit("/", 1)[1], "expired"),
                                      (gone.rsplit("/", 1)[1], "forgotten")])
    assert snapshot() == before
    assert app.service.cleanup(dry_run=True) == actions


def test_cleanup_ignores_stray_files(app, client, upload_dir):
    path = create(client, 10)
    (upload_dir / "README.txt").write_text("not an upload")
    (upload_dir / "bad id.info").write_text("{}")
    age(upload_dir, path, 2 * HOUR)
    assert app.service.cleanup() == [(path.rsplit("/", 1)[1], "expired")]
    assert (upload_dir / "README.txt").read_text() == "not an upload"
    assert (upload_dir / "bad id.info").exists()


def test_expiration_zero_never_expires(make_app, upload_dir):
    app = make_app(expiration="0")
    client = Client(app)
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    age(upload_dir, path, 10000 * HOUR)
    assert client.head(path, headers=TUS).headers["Upload-Offset"] == "3"
    assert app.service.cleanup() == []
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_tiny_expiration_in_real_time(make_app, upload_dir, clock):
    app = make_app(expiration="2s", network_timeout="1s", gone_retention="1h")
    client = Client(app)
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    clock.advance(2.2)
    assert client.head(path, headers=TUS).status_code == 410
    assert app.service.cleanup() == [(path.rsplit("/", 1)[1], "expired")]
    assert not data_file(upload_dir, path).exists()


def test_cleanup_removes_files_a_crash_left_behind_but_not_fresh_ones(app, upload_dir):
    """A data file whose .info was never written (crash during creation) and a
    temporary .info go after an hour untouched; younger ones may be in progress."""
    path = create(Client(app), 5)
    live = data_file(upload_dir, path)
    old_orphan = upload_dir / ("a" * 32)
    young_orphan = upload_dir / ("b" * 32)
    old_temp = upload_dir / ("c" * 32 + ".info.tmp-1234abcd")
    for leftover in (old_orphan, young_orphan, old_temp):
        leftover.write_bytes(b"x")
    hour_ago = time.time() - 3700
    for leftover in (old_orphan, old_temp):
        os.utime(leftover, (hour_ago, hour_ago))
    assert sorted(name for name, action in app.service.cleanup(dry_run=True)
                  if action == "leftover") == sorted([old_orphan.name, old_temp.name])
    assert old_orphan.exists()
    app.service.cleanup()
    assert not old_orphan.exists() and not old_temp.exists()
    assert young_orphan.exists() and live.exists()
