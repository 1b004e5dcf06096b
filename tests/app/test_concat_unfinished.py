"""concatenation-unfinished: a final upload over partial uploads still being sent is
created at once and completes itself when the last of them does.  In-process; over
several gunicorn workers, in parallel: tests/server/test_concat_unfinished_e2e.py."""

from __future__ import annotations

import errno
import os
import time

import pytest
from conftest import TUS, create, data_file, patch
from support import hookfns
from werkzeug.test import Client

from tuswsgi.retry import Retrier


def partial(client, length=None, data: bytes = b"") -> str:
    headers = {"Upload_Concat": "partial"}
    path = create(client, length, **headers) if length is not None else \
        create(client, Upload_Defer_Length="1", **headers)
    if data:
        assert patch(client, path, data, 0).status_code == 204
    return path


def post_final(client, paths, **headers):
    return client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(paths),
                                           **{k.replace("_", "-"): v for k, v in headers.items()}})


def final_of(client, paths) -> str:
    response = post_final(client, paths)
    assert response.status_code == 201, response.get_data(as_text=True)
    return "/files/" + response.headers["Location"].rsplit("/", 1)[1]


def state(client, path) -> tuple:
    head = client.head(path, headers=TUS)
    assert head.status_code == 200, head.status_code
    return head.headers["Upload-Offset"], head.headers.get("Upload-Length")


def links(upload_dir) -> list[str]:
    root = upload_dir / ".finals"
    return sorted(f"{d.name}/{f.name}" for d in root.iterdir() for f in d.iterdir()) \
        if root.exists() else []


@pytest.fixture
def hooked(make_app):
    hookfns.reset()
    app = make_app(hooks_python="support.hookfns:record")
    yield app, Client(app)
    app.service.hooks.drain()


def finishes(app, final_path: str) -> int:
    app.service.hooks.drain()
    final_id = final_path.rsplit("/", 1)[1]
    return sum(1 for e in hookfns.of_type("post-finish") if e["Event"]["Upload"]["ID"] == final_id)


def test_final_over_unfinished_parts_grows_as_they_finish(hooked, upload_dir):
    app, client = hooked
    a, b, c = partial(client, 5, b"he"), partial(client, 1), partial(client, 5)
    final = final_of(client, [a, b, c])
    head = client.head(final, headers=TUS)
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == ("0", "11")
    assert head.headers["Upload-Concat"] == "final;" + " ".join("http://localhost" + p
                                                                for p in (a, b, c))
    assert patch(client, b, b" ", 0).status_code == 204  # b finishes, but a is still open
    assert state(client, final) == ("0", "11")
    assert patch(client, a, b"llo", 2).status_code == 204  # a finishes: a and b are copied
    assert state(client, final) == ("6", "11")
    assert data_file(upload_dir, final).read_bytes() == b"hello "
    assert client.get(final).status_code == 204  # not finished: offset retrieval, no bytes
    assert finishes(app, final) == 0
    assert patch(client, c, b"world", 0).status_code == 204  # the last part: the final finishes
    assert state(client, final) == ("11", "11")
    assert client.get(final).data == b"hello world"
    assert finishes(app, final) == 1
    assert links(upload_dir) == []


def test_final_completes_when_its_last_part_does(hooked, upload_dir):
    app, client = hooked
    a, b = partial(client, 3), partial(client, 3)
    final = final_of(client, [a, b])
    assert client.get(final, headers=TUS).status_code == 404  # not finished: no download
    patch(client, b, b"def", 0)
    assert state(client, final) == ("0", "6")
    patch(client, a, b"abc", 0)
    assert state(client, final) == ("6", "6")
    assert client.get(final, headers=TUS).data == b"abcdef"
    assert finishes(app, final) == 1
    client.head(final, headers=TUS)
    patch(client, a, b"", 3)  # more requests on a finished part: no second finish
    assert finishes(app, final) == 1
    assert links(upload_dir) == []


def test_final_length_appears_once_every_parts_length_is_known(client, upload_dir):
    a = partial(client, 3, b"abc")
    deferred = partial(client, None, b"de")
    final = final_of(client, [a, deferred])
    offset, length = state(client, final)
    assert (offset, length) == ("3", None)
    assert "Upload-Defer-Length" not in client.head(final, headers=TUS).headers
    # the deferred part learns its length (and finishes, as it is then complete)
    assert patch(client, deferred, b"f", 2, Upload_Length="3").status_code == 204
    assert state(client, final) == ("6", "6")
    assert data_file(upload_dir, final).read_bytes() == b"abcdef"


def test_deferred_part_declaring_its_length_without_finishing(client):
    a, deferred = partial(client, 2), partial(client, None, b"x")
    final = final_of(client, [a, deferred])
    patch(client, deferred, b"", 1, Upload_Length="4")
    assert state(client, final) == ("0", "6")


def test_two_finals_sharing_a_part(hooked, upload_dir):
    app, client = hooked
    a, b, c = partial(client, 2), partial(client, 3), partial(client, 1)
    one = final_of(client, [a, b])
    two = final_of(client, [c, b])
    patch(client, b, b"BBB", 0)
    patch(client, c, b"c", 0)
    assert data_file(upload_dir, two).read_bytes() == b"cBBB"
    assert state(client, one) == ("0", "5")
    patch(client, a, b"aa", 0)
    assert data_file(upload_dir, one).read_bytes() == b"aaBBB"
    assert (finishes(app, one), finishes(app, two)) == (1, 1)
    assert links(upload_dir) == []


def test_final_over_finished_parts_is_finished_at_once(hooked):
    app, client = hooked
    response = post_final(client, [partial(client, 2, b"ab"), partial(client, 1, b"c")])
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "3"
    final = "/files/" + response.headers["Location"].rsplit("/", 1)[1]
    assert finishes(app, final) == 1


def test_patch_on_an_unfinished_final_is_403(client, upload_dir):
    final = final_of(client, [partial(client, 2)])
    response = patch(client, final, b"ab", 0)
    assert response.status_code == 403
    assert data_file(upload_dir, final).read_bytes() == b""


# -- termination ----------------------------------------------------------------------------

def test_deleting_a_part_the_final_waits_for_ends_the_final(hooked, upload_dir):
    """Termination answers 204 (the extension's MUST); the final can then never
    complete, so it is terminated too and answers 410 from then on."""
    app, client = hooked
    a, b = partial(client, 2, b"ab"), partial(client, 2)
    final = final_of(client, [a, b])
    assert state(client, final) == ("2", "4")
    assert client.delete(b, headers=TUS).status_code == 204
    assert client.head(final, headers=TUS).status_code == 410
    assert not data_file(upload_dir, final).exists()
    assert patch(client, b, b"cd", 0).status_code == 410
    assert client.head(a, headers=TUS).status_code == 200  # the other part is untouched
    app.service.hooks.drain()
    assert final.rsplit("/", 1)[1] in {e["Event"]["Upload"]["ID"]
                                       for e in hookfns.of_type("post-terminate")}
    assert links(upload_dir) == []


def test_deleting_a_part_already_copied_keeps_the_final(client, upload_dir):
    a, b = partial(client, 2, b"ab"), partial(client, 2)
    final = final_of(client, [a, b])
    assert client.delete(a, headers=TUS).status_code == 204  # its bytes are in the final
    patch(client, b, b"cd", 0)
    assert state(client, final) == ("4", "4")
    assert client.get(final).data == b"abcd"


def test_deleting_the_final_lets_go_of_its_parts(client, upload_dir):
    a, b = partial(client, 2), partial(client, 2)
    final = final_of(client, [a, b])
    assert links(upload_dir) != []
    assert client.delete(final, headers=TUS).status_code == 204
    assert links(upload_dir) == []
    patch(client, a, b"ab", 0)
    assert client.head(final, headers=TUS).status_code == 410
    assert state(client, a) == ("2", "2")


def test_expired_part_ends_the_final(make_app, upload_dir, clock):
    client = Client(make_app(expiration="1h"))
    a, b = partial(client, 2, b"ab"), partial(client, 2)
    final = final_of(client, [a, b])
    clock.advance(7200)
    assert client.head(final, headers=TUS).status_code == 410
    assert client.head(b, headers=TUS).status_code == 410


def test_a_final_does_not_expire_while_its_parts_are_alive(make_app, upload_dir, clock):
    """An unfinished final waits for its parts however long they take; they expire
    on their own when they stop receiving bytes (and take the final with them)."""
    app = make_app(expiration="1h")
    client = Client(app)
    a = partial(client, 4)
    final = final_of(client, [a])
    assert "Upload-Expires" not in client.head(final, headers=TUS).headers
    clock.advance(7200)
    now = time.time()
    os.utime(data_file(upload_dir, a), (now, now))  # the part received a byte just now
    assert [action for _, action in app.service.cleanup()] == []
    assert state(client, final) == ("0", "4")
    patch(client, a, b"abcd", 0)
    assert state(client, final) == ("4", "4")


def test_cleanup_assembles_a_final_a_crash_left_behind(make_app, upload_dir):
    """A worker that finished a part and died before assembling the final: the next
    HEAD, or the cleanup pass, assembles it."""
    app = make_app()
    client = Client(app)
    a = partial(client, 2)
    final = final_of(client, [a])
    part_id = a.rsplit("/", 1)[1]
    (upload_dir / ".finals" / part_id / final.rsplit("/", 1)[1]).unlink()  # as if never linked
    patch(client, a, b"ab", 0)
    assert data_file(upload_dir, final).read_bytes() == b""
    app.service.cleanup()
    assert data_file(upload_dir, final).read_bytes() == b"ab"
    assert state(client, final) == ("2", "2")


def test_a_part_copy_cut_by_a_crash_is_undone_and_redone(client, upload_dir):
    a, b = partial(client, 3, b"abc"), partial(client, 2)
    final = final_of(client, [a, b])
    target = data_file(upload_dir, final)
    with open(target, "ab") as handle:  # half of b copied, then the worker died
        handle.write(b"d")
    (upload_dir / (final.rsplit("/", 1)[1] + ".pending")).write_text("3")
    assert state(client, final) == ("3", "5")
    patch(client, b, b"de", 0)
    assert target.read_bytes() == b"abcde"


# -- refused finals create nothing -----------------------------------------------------------

def test_final_over_a_gone_part_is_refused(client, upload_dir):
    a = partial(client, 2)
    client.delete(a, headers=TUS)
    before = sorted(p.name for p in upload_dir.iterdir())
    response = post_final(client, [a])
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_INVALID_CONCAT")
    assert sorted(p.name for p in upload_dir.iterdir()) == before


def test_known_lengths_over_max_size_are_refused(make_app, upload_dir):
    client = Client(make_app(max_size="4"))
    parts = [partial(client, 3), partial(client, 2)]
    response = post_final(client, parts)
    assert response.status_code == 413
    assert links(upload_dir) == []


def test_deferred_lengths_over_max_size_end_the_final(make_app, upload_dir):
    client = Client(make_app(max_size="4"))
    a, deferred = partial(client, 3, b"abc"), partial(client, None)
    final = final_of(client, [a, deferred])
    assert patch(client, deferred, b"de", 0, Upload_Length="2").status_code == 204
    assert client.head(final, headers=TUS).status_code == 410


def test_a_part_that_cannot_be_read_now_is_waited_for(client, upload_dir):
    """A shared filesystem may show another host's fresh ``.info`` empty for a moment:
    only a part positively gone (a tombstone, expired, forgotten) ends a final."""
    a, b = partial(client, 2), partial(client, 2, b"cd")
    final = final_of(client, [a, b])
    info = upload_dir / (b.rsplit("/", 1)[1] + ".info")
    saved = info.read_bytes()
    info.write_bytes(b"")
    patch(client, a, b"ab", 0)  # assembles: a is copied, b cannot be read
    assert client.head(final, headers=TUS).status_code == 200
    assert data_file(upload_dir, final).read_bytes() == b"ab"
    info.write_bytes(saved)
    assert state(client, final) == ("4", "4")
    assert data_file(upload_dir, final).read_bytes() == b"abcd"


def test_a_part_refused_by_pre_finish_is_waited_for_until_it_is_accepted(hooked, upload_dir):
    """A part counts once the application accepted it: the final waits while
    pre-finish refuses the part, and is assembled by the HEAD that finishes it."""
    app, client = hooked
    a = partial(client, 2)
    final = final_of(client, [a])
    part_id = a.rsplit("/", 1)[1]
    hookfns.ANSWERS["pre-finish"] = lambda event: (
        {"HTTPResponse": {"StatusCode": 422, "Body": "scanning"}}
        if event["Event"]["Upload"]["ID"] == part_id else None)
    assert patch(client, a, b"ab", 0).status_code == 422
    assert data_file(upload_dir, final).read_bytes() == b""
    hookfns.ANSWERS.pop("pre-finish")
    assert client.head(a, headers=TUS).status_code == 200  # finishes the part, at last
    assert data_file(upload_dir, final).read_bytes() == b"ab"
    assert finishes(app, final) == 1


@pytest.mark.parametrize(("sent", "offset"), [(b"abcd", 6), (b"ab", 2)])
def test_post_create_of_a_final_sees_what_it_holds(hooked, sent, offset):
    """post-create comes once the parts that were finished are copied: a final over
    finished parts is whole in it (as before concatenation-unfinished), one over
    unfinished parts holds its finished leading run."""
    app, client = hooked
    a, b = partial(client, 2, b"ab"), partial(client, 4, sent)
    final = final_of(client, [a, b])
    app.service.hooks.drain()
    final_id = final.rsplit("/", 1)[1]
    created = [e for e in hookfns.of_type("post-create") if e["Event"]["Upload"]["ID"] == final_id]
    assert [e["Event"]["Upload"]["Offset"] for e in created] == [offset]
    assert finishes(app, final) == (1 if offset == 6 else 0)


# -- a part whose finish is recorded later (tests/app/test_finish.py) --------------------------

class _FullDisk:
    """``store.mark_finished`` fails with ENOSPC for ``upload_id`` while ``full``."""

    def __init__(self, store, upload_id: str) -> None:
        self.full, self.upload_id = True, upload_id
        self._mark = store.mark_finished
        store.mark_finished = self

    def __call__(self, info) -> None:
        if self.full and info.id == self.upload_id:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._mark(info)


@pytest.mark.parametrize("finisher", ["retry", "cleanup"])
def test_a_part_finished_later_assembles_its_finals(make_app, upload_dir, finisher):
    """The part's last PATCH succeeds while its finish cannot be recorded; the final
    waits (the part is not accepted yet), and is assembled by whichever records
    the part's finish: the background retry, or another process's cleanup pass."""
    app = make_app()
    app.service.retrier = Retrier(first=3600, longest=3600)
    client = Client(app)
    a = partial(client, 2)
    final = final_of(client, [a])
    disk = _FullDisk(app.service.store, a.rsplit("/", 1)[1])
    assert patch(client, a, b"ab", 0).status_code == 204
    assert data_file(upload_dir, final).read_bytes() == b""
    disk.full = False
    if finisher == "retry":
        assert app.service._retry_finish(a.rsplit("/", 1)[1], None) is True
    else:
        assert (a.rsplit("/", 1)[1], "finished") in make_app().service.cleanup()
    assert data_file(upload_dir, final).read_bytes() == b"ab"
    assert state(client, final) == ("2", "2")
