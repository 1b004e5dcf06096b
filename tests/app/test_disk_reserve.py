"""A nearly full disk: new uploads wait below ``disk_reserve`` so that running ones
can finish, and every 507 of an append says where the upload stands.

The file system is the test's: ``DiskSpace.of`` answers what each test sets.
"""

from __future__ import annotations

import os

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from support.ietfheaders import completion, draft
from werkzeug.test import Client

from tuswsgi.space import DiskSpace
from tuswsgi.store import StorageFull

MIB = 1 << 20


@pytest.fixture
def disk(monkeypatch):
    """The upload directory's file system: 100 MiB, 10,000 inodes; tests set ``free``."""
    state = {"space": DiskSpace(free=50 * MIB, total=100 * MIB, free_inodes=5000, total_inodes=10000)}
    monkeypatch.setattr(DiskSpace, "of", classmethod(lambda cls, directory: state["space"]))

    def set_free(free: int, free_inodes: int = 5000) -> None:
        state["space"] = DiskSpace(free, 100 * MIB, free_inodes, 10000)
    return set_free


def uploads(upload_dir) -> list[str]:
    return sorted(os.listdir(upload_dir)) if upload_dir.exists() else []


@pytest.mark.parametrize(("reserve", "free", "free_inodes", "refused"), [
    ("5%", 6 * MIB, 5000, False),
    ("5%", 4 * MIB, 5000, True),
    ("5%", 50 * MIB, 400, True),  # 5 % of the inodes too: empty uploads run out of those
    ("5M", 6 * MIB, 10, False),   # a size keeps bytes only
    ("5M", 4 * MIB, 5000, True),
    ("0", 0, 0, False),
])
def test_creation_waits_below_the_reserve(make_app, upload_dir, disk, reserve, free, free_inodes, refused):
    client = Client(make_app(disk_reserve=reserve))
    create(client, 1)  # the directory exists, with one upload
    before = uploads(upload_dir)
    disk(free, free_inodes)
    response = client.post("/files/", data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    if not refused:
        assert response.status_code == 201
        return
    assert response.status_code == 507
    assert response.get_data(as_text=True).startswith(
        "ERR_DISK_RESERVE: the disk is nearly full: new uploads are refused so that the uploads "
        "already running can finish")
    assert uploads(upload_dir) == before


def test_running_uploads_go_on_below_the_reserve(make_app, upload_dir, disk):
    client = Client(make_app(disk_reserve="5%"))
    path = create(client, 6)
    disk(1 * MIB)
    assert patch(client, path, b"abc", 0).status_code == 204
    assert client.head(path, headers=TUS).status_code == 200
    assert patch(client, path, b"def", 3).status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"


def test_a_final_that_would_copy_into_the_reserve_is_refused(make_app, upload_dir, disk):
    client = Client(make_app(disk_reserve="5M"))
    parts = []
    for _ in range(2):
        part = create(client, MIB, Upload_Concat="partial")
        assert patch(client, part, b"x" * MIB, 0).status_code == 204
        parts.append(part)
    disk(6 * MIB)  # above the reserve, but not after copying 2 MiB
    before = uploads(upload_dir)
    response = client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)})
    assert response.status_code == 507
    assert response.get_data(as_text=True).startswith("ERR_DISK_RESERVE")
    assert uploads(upload_dir) == before
    disk(8 * MIB)
    assert client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)}
                       ).status_code == 201


def test_an_ietf_creation_waits_below_the_reserve_too(make_app, upload_dir, disk):
    client = Client(make_app(disk_reserve="5%"))
    disk(1 * MIB)
    response = client.post("/files/", data=b"abc", headers={**draft(6), **completion(6, True)})
    assert response.status_code == 507
    assert response.get_json()["code"] == "ERR_DISK_RESERVE"
    assert uploads(upload_dir) == []


class FillsUp:
    """``store.append`` that stores ``room`` bytes of the body, then finds the disk full."""

    def __init__(self, store, room: int) -> None:
        self.store, self.room = store, room
        self.append = store.append
        store.append = self

    def __call__(self, info, source, limit, verify=None):
        self.append(info, source, min(limit, self.room), verify)
        raise StorageFull("No space left on device")


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_every_507_of_an_append_says_where_the_upload_stands(make_app, upload_dir, protocol):
    app = make_app()
    client = Client(app)
    path = create(client, 10)
    assert patch(client, path, b"ab", 0).status_code == 204
    FillsUp(app.service.store, 3)
    if protocol == "tus":
        response = patch(client, path, b"cdefgh", 2)
    else:
        response = client.patch(path, data=b"cdefgh", headers={
            **draft(6, Upload_Offset="2"), **completion(6, False),
            "Content-Type": "application/partial-upload"})
    assert response.status_code == 507
    assert response.headers["Upload-Offset"] == "5"
    assert data_file(upload_dir, path).read_bytes() == b"abcde"


def test_a_507_of_a_creation_with_a_body_says_where_and_which(make_app, upload_dir):
    app = make_app()
    client = Client(app)
    FillsUp(app.service.store, 2)
    response = client.post("/files/", data=b"abcdef", headers={
        **TUS, "Upload-Length": "6", "Content-Type": OCTET})
    assert response.status_code == 507
    assert response.headers["Upload-Offset"] == "2"
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"ab"  # kept
