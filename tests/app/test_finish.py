"""A finish that cannot be recorded after the last byte was stored.

The client's bytes are on disk, so it is told success (its offset, its pre-finish
headers); the finish is recorded later, by whichever comes first: the background
retry, the next request for the upload, or the cleanup pass (another process,
after a restart). ``post-finish`` is sent once, by that one.
"""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from support import hookfns
from werkzeug.test import Client

from tuswsgi.retry import Retrier

HOOK = "support.hookfns:record"


@pytest.fixture(autouse=True)
def _fresh_hooks():
    hookfns.reset()
    yield
    hookfns.reset()


class FullDisk:
    """``store.mark_finished`` fails with ENOSPC while ``full`` is set."""

    def __init__(self, store) -> None:
        self.full = True
        self.refused = 0
        self._mark = store.mark_finished
        store.mark_finished = self

    def __call__(self, info) -> None:
        if self.full:
            self.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self._mark(info)


def hooked(make_app, first_retry: float = 3600):
    app = make_app(hooks_python=HOOK)
    app.service.retrier = Retrier(first=first_retry, longest=first_retry)
    return app, Client(app), FullDisk(app.service.store)


def record(upload_dir: Path, path: str) -> dict:
    return json.loads(data_file(upload_dir, path).with_suffix(".info").read_text())


def post_finishes(app) -> int:
    app.service.hooks.drain()
    return hookfns.types().count("post-finish")


def wait_until(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


def test_the_last_patch_succeeds_and_the_background_retry_finishes_it(make_app, upload_dir):
    app, client, disk = hooked(make_app, first_retry=0.05)
    hookfns.ANSWERS["pre-finish"] = {"HTTPResponse": {"Header": {"X-Scan": "clean"}}}
    path = create(client, 10)
    assert patch(client, path, b"01234", 0).status_code == 204
    response = patch(client, path, b"56789", 5)
    assert response.status_code == 204, response.get_data(as_text=True)
    assert response.headers["Upload-Offset"] == "10"
    assert response.headers["X-Scan"] == "clean"  # pre-finish passed: its headers are the client's
    assert data_file(upload_dir, path).read_bytes() == b"0123456789"
    assert not record(upload_dir, path)["finished"] and disk.refused >= 1
    disk.full = False
    wait_until(lambda: record(upload_dir, path)["finished"])
    wait_until(lambda: not app.service.retrier.pending())
    assert post_finishes(app) == 1
    assert client.head(path, headers=TUS).headers["Upload-Offset"] == "10"
    assert post_finishes(app) == 1
    assert hookfns.types().count("pre-finish") == 1  # the retry only records


def test_the_next_request_finishes_it_first_and_the_retry_then_does_nothing(make_app, upload_dir):
    app, client, disk = hooked(make_app)
    path = create(client, 3)
    assert patch(client, path, b"abc", 0).status_code == 204
    assert app.service.retrier.pending() == [f"the finish of {path.rsplit('/', 1)[1]}"]
    disk.full = False
    assert client.head(path, headers=TUS).status_code == 200
    assert record(upload_dir, path)["finished"]
    assert app.service._retry_finish(path.rsplit("/", 1)[1], None) is True
    assert post_finishes(app) == 1


def test_the_cleanup_pass_of_another_process_finishes_it_once(make_app, upload_dir):
    """The worker that stored the last byte died before its retry: a cleanup pass
    (in-passing in any worker, or `tuswsgi cleanup`) finishes the upload."""
    _, client, _ = hooked(make_app)
    path = create(client, 3)
    assert patch(client, path, b"abc", 0).status_code == 204
    other = make_app(hooks_python=HOOK)
    upload_id = path.rsplit("/", 1)[1]
    assert other.service.cleanup(dry_run=True) == [(upload_id, "finished")]
    assert not record(upload_dir, path)["finished"]
    assert other.service.cleanup() == [(upload_id, "finished")]
    assert record(upload_dir, path)["finished"]
    assert other.service.cleanup() == []
    assert post_finishes(other) == 1


def test_an_upload_the_application_refused_is_left_to_the_client(make_app, upload_dir):
    """pre-finish said no: the cleanup pass does not ask again; the client's own
    empty PATCH does (and may be accepted then)."""
    app = make_app(hooks_python=HOOK)
    client = Client(app)
    hookfns.ANSWERS["pre-finish"] = {"HTTPResponse": {"StatusCode": 422, "Body": "infected"}}
    path = create(client, 3)
    assert patch(client, path, b"abc", 0).status_code == 422
    assert record(upload_dir, path)["finish_refused"]
    assert app.service.cleanup() == []
    assert hookfns.types().count("pre-finish") == 1
    hookfns.ANSWERS["pre-finish"] = None
    assert patch(client, path, b"", 3).status_code == 204
    assert record(upload_dir, path)["finished"]
    assert post_finishes(app) == 1


@pytest.mark.parametrize("headers", [{"Upload-Length": "0"}, {"Upload-Length": "4", "Content-Type": OCTET}])
def test_an_upload_complete_at_creation_is_created_even_when_its_finish_fails(make_app, upload_dir,
                                                                              headers):
    _, client, disk = hooked(make_app)
    body = b"abcd" if "Content-Type" in headers else b""
    response = client.post("/files/", data=body, headers={**TUS, **headers})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Upload-Offset"] == str(len(body))
    path = "/files/" + response.headers["Location"].rsplit("/", 1)[1]
    assert data_file(upload_dir, path).read_bytes() == body
    disk.full = False
    assert client.head(path, headers=TUS).status_code == 200
    assert record(upload_dir, path)["finished"]


def test_a_length_that_cannot_be_recorded_is_503_and_the_resume_sends_no_byte_again(make_app, upload_dir):
    """A deferred-length upload's last PATCH declares the length: when that cannot
    be written, the bytes stay, the answer is a retryable 503 with the offset, and
    an empty PATCH declaring the length again finishes it."""
    app = make_app()
    client = Client(app)
    path = create(client, Upload_Defer_Length="1")
    assert patch(client, path, b"abc", 0).status_code == 204
    declare = app.service.store.declare_length
    app.service.store.declare_length = lambda info, length: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system"))
    response = patch(client, path, b"def", 3, Upload_Length="6")
    assert response.status_code == 503
    assert response.get_data(as_text=True).startswith("ERR_NOT_RECORDED")
    assert (response.headers["Upload-Offset"], response.headers["Retry-After"]) == ("6", "1")
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"
    app.service.store.declare_length = declare
    head = client.head(path, headers=TUS)
    assert (head.headers["Upload-Offset"], head.headers["Upload-Defer-Length"]) == ("6", "1")
    done = patch(client, path, b"", 6, Upload_Length="6")
    assert done.status_code == 204 and done.headers["Upload-Offset"] == "6"
    assert record(upload_dir, path)["finished"] and record(upload_dir, path)["length"] == 6
