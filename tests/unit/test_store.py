"""FileStore unit tests: files on disk are the truth."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest

from tuswsgi import store as store_module
from tuswsgi.store import (
    FINALS_DIR,
    FileStore,
    OffsetMismatch,
    StorageFailed,
    StorageFull,
    UploadGone,
    UploadNotFound,
)
from tuswsgi.upload import InvalidUploadId, UploadInfo, check_upload_id, new_upload_id


@pytest.fixture
def store(tmp_path):
    return FileStore(str(tmp_path / "store"), expiration=3600, gone_retention=60)


def new(store: FileStore, length=10, **kwargs) -> UploadInfo:
    return store.create(UploadInfo(id=new_upload_id(), length=length, **kwargs))


def files(store: FileStore) -> set[str]:
    return set(os.listdir(store.directory))


def data(store: FileStore, info: UploadInfo) -> bytes:
    with open(store.path(info.id), "rb") as handle:
        return handle.read()


class Chunks:
    """A source returning the given chunks, then raising ``error`` if given."""

    def __init__(self, *chunks: bytes, error: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.error = error

    def read(self, size: int) -> bytes:
        if self.chunks:
            chunk = self.chunks.pop(0)
            assert len(chunk) <= size
            return chunk
        if self.error is not None:
            raise self.error
        return b""


# -- create / get -------------------------------------------------------------------

def test_create_makes_empty_data_and_info(store):
    info = new(store, 10, metadata=[("filename", "YS50eHQ=")])
    assert files(store) == {info.id, info.id + ".info"}
    assert data(store, info) == b""
    assert info.offset == 0 and info.created > 0
    got = store.get(info.id)
    assert got.length == 10 and got.offset == 0
    assert got.metadata == [("filename", "YS50eHQ=")]
    assert got.expires == pytest.approx(info.created + 3600, abs=2)


def test_info_is_json_without_absolute_paths(store, tmp_path):
    info = new(store, 10, metadata=[("k", None)])
    text = Path(store.path(info.id, ".info")).read_text(encoding="utf-8")
    record = json.loads(text)
    assert record["id"] == info.id
    assert record["length"] == 10
    assert str(tmp_path) not in text
    assert store.directory not in text
    assert "/" not in text.replace("\\/", "")  # no path of any kind


def test_create_refuses_an_existing_id(store):
    info = new(store)
    with pytest.raises(FileExistsError):
        store.create(UploadInfo(id=info.id, length=5))
    assert store.get(info.id).length == 10


def test_get_unknown_is_not_found(store):
    with pytest.raises(UploadNotFound):
        store.get(new_upload_id())


def test_offset_is_data_file_size(store):
    info = new(store, 100)
    with open(store.path(info.id), "ab") as handle:
        handle.write(b"x" * 42)
    assert store.get(info.id).offset == 42
    assert store.inspect(info.id).offset == 42


# -- append ---------------------------------------------------------------------------

def test_append_writes_and_moves_offset(store):
    info = new(store, 10)
    assert store.append(info, io.BytesIO(b"hello"), 10) == 5
    assert info.offset == 5
    assert store.append(info, io.BytesIO(b"world!!!"), 5) == 5  # limit respected
    assert info.offset == 10
    assert data(store, info) == b"helloworld"
    got = store.get(info.id)
    assert got.offset == 10 and got.is_complete and got.expires is None


def test_append_with_stale_offset_is_mismatch(store):
    info = new(store, 10)
    store.append(info, io.BytesIO(b"abc"), 10)
    stale = UploadInfo(id=info.id, length=10, offset=0)
    with pytest.raises(OffsetMismatch) as error:
        store.append(stale, io.BytesIO(b"XYZ"), 10)
    assert error.value.actual == 3
    assert data(store, info) == b"abc"


def test_append_with_passing_verify_keeps_chunk(store):
    info = new(store, 10)
    calls = []
    store.append(info, io.BytesIO(b"abc"), 10, verify=lambda: calls.append(data(store, info)))
    assert calls == [b"abc"]
    assert data(store, info) == b"abc"
    assert not os.path.exists(store.path(info.id, ".pending"))


def test_append_with_failing_verify_removes_chunk_and_pending(store):
    info = new(store, 10)
    store.append(info, io.BytesIO(b"abc"), 10)
    seen = {}

    def verify():
        seen["pending"] = Path(store.path(info.id, ".pending")).read_text()
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError):
        store.append(info, io.BytesIO(b"defg"), 7, verify=verify)
    assert seen["pending"] == "3"
    assert data(store, info) == b"abc"
    assert info.offset == 3
    assert files(store) == {info.id, info.id + ".info"}


def test_append_with_verify_and_failing_source_removes_chunk(store):
    info = new(store, 10)
    with pytest.raises(ConnectionError):
        store.append(info, Chunks(b"ab", error=ConnectionError()), 10, verify=lambda: None)
    assert data(store, info) == b""
    assert not os.path.exists(store.path(info.id, ".pending"))


def test_source_failing_midway_keeps_received_bytes(store):
    info = new(store, 10)
    with pytest.raises(ConnectionError):
        store.append(info, Chunks(b"abc", b"de", error=ConnectionError("gone")), 10)
    assert data(store, info) == b"abcde"
    assert store.get(info.id).offset == 5
    assert not os.path.exists(store.path(info.id, ".pending"))


def test_recover_undoes_a_crashed_tentative_chunk(store):
    info = new(store, 10)
    store.append(info, io.BytesIO(b"abc"), 10)
    # A writer crashed after writing an unverified chunk.
    with open(store.path(info.id), "ab") as handle:
        handle.write(b"UNVERIFIED")
    with open(store.path(info.id, ".pending"), "w") as handle:
        handle.write("3")
    store.recover(info.id)
    assert data(store, info) == b"abc"
    assert not os.path.exists(store.path(info.id, ".pending"))
    assert store.get(info.id).offset == 3


def test_recover_without_pending_changes_nothing(store):
    info = new(store, 10)
    store.append(info, io.BytesIO(b"abc"), 10)
    store.recover(info.id)
    assert data(store, info) == b"abc"


def test_recover_with_garbage_pending_keeps_data_and_removes_it(store):
    info = new(store, 10)
    store.append(info, io.BytesIO(b"abc"), 10)
    with open(store.path(info.id, ".pending"), "w") as handle:
        handle.write("not a number")
    store.recover(info.id)
    assert data(store, info) == b"abc"
    assert not os.path.exists(store.path(info.id, ".pending"))


class FakeDisk:
    """Wraps os.write: real writes of at most ``step`` bytes until ``budget``
    bytes are written, then one partial write that fails with ``error``."""

    def __init__(self, monkeypatch, budget: int, step: int = 4, errno_: int = errno.ENOSPC,
                 torn: int = 2) -> None:
        self.real = os.write
        self.budget = budget
        self.step = step
        self.errno = errno_
        self.torn = torn
        monkeypatch.setattr(os, "write", self)

    def __call__(self, fd, buffer):
        view = memoryview(buffer)
        if self.budget <= 0:
            # A failing write that left some bytes on disk before failing.
            self.real(fd, view[:self.torn])
            raise OSError(self.errno, os.strerror(self.errno))
        count = self.real(fd, view[:min(self.step, self.budget)])
        self.budget -= count
        return count


@pytest.mark.parametrize(("errno_", "error"), [
    (errno.ENOSPC, StorageFull), (errno.EDQUOT, StorageFull), (errno.EIO, StorageFailed),
])
def test_write_error_truncates_to_last_complete_write(store, monkeypatch, errno_, error):
    info = new(store, 100)
    store.append(info, io.BytesIO(b"0123"), 100)
    FakeDisk(monkeypatch, budget=10, errno_=errno_)
    with pytest.raises(error):
        store.append(info, Chunks(b"abcdefgh", b"ijklmnop"), 96)
    monkeypatch.undo()
    # 4 old bytes + the 10 bytes whose writes completed; the torn 2 are gone.
    assert data(store, info) == b"0123abcdefghij"
    assert store.get(info.id).offset == 14


def test_write_error_with_verify_keeps_nothing(store, monkeypatch):
    info = new(store, 100)
    store.append(info, io.BytesIO(b"0123"), 100)
    FakeDisk(monkeypatch, budget=6)
    with pytest.raises(StorageFull):
        store.append(info, Chunks(b"abcdefgh"), 96, verify=lambda: None)
    monkeypatch.undo()
    assert data(store, info) == b"0123"
    assert not os.path.exists(store.path(info.id, ".pending"))


# -- truncate / declare / terminate / forget ------------------------------------------

def test_truncate(store):
    info = new(store, 10)
    store.append(info, io.BytesIO(b"abcdef"), 10)
    store.truncate(info, 2)
    assert info.offset == 2
    assert data(store, info) == b"ab"
    assert store.get(info.id).offset == 2


def test_declare_length(store):
    info = new(store, None)
    assert store.get(info.id).is_deferred
    store.declare_length(info, 7)
    assert store.get(info.id).length == 7
    assert json.loads(Path(store.path(info.id, ".info")).read_text())["length"] == 7


def test_terminate_leaves_a_tombstone(store):
    info = new(store, 10)
    store.append(info, io.BytesIO(b"abc"), 10)
    open(store.path(info.id, ".pending"), "w").close()
    store.terminate(info.id)
    assert files(store) == {info.id + ".info"}
    with pytest.raises(UploadGone):
        store.get(info.id)
    tomb = store.inspect(info.id)
    assert tomb.is_gone and tomb.gone_since > 0
    assert store.is_forgettable(tomb, tomb.gone_since + 61)
    assert not store.is_forgettable(tomb, tomb.gone_since + 1)


def test_forget_removes_every_trace(store):
    info = new(store, 10)
    keep = new(store, 10)
    for suffix in (".pending", ".lock"):
        open(store.path(info.id, suffix), "w").close()
    store.forget(info.id)
    assert files(store) == {keep.id, keep.id + ".info"}
    with pytest.raises(UploadNotFound):
        store.get(info.id)
    store.forget(info.id)  # idempotent


def test_expired_upload_is_gone_for_get_but_visible_to_inspect(tmp_path):
    store = FileStore(str(tmp_path / "s"), expiration=1)
    info = store.create(UploadInfo(id=new_upload_id(), length=10, created=1000.0))
    os.utime(store.path(info.id), (1000, 1000))
    with pytest.raises(UploadGone):
        store.get(info.id)
    inspected = store.inspect(info.id)
    assert store.is_expired(inspected, 2000)
    assert os.path.exists(store.path(info.id))


def test_iter_ids_lists_only_uploads(store):
    a, b = new(store), new(store)
    for name in ("junk.txt", "bad id.info", ".hidden.info", a.id + ".info.tmp-1234"):
        open(os.path.join(store.directory, name), "w").close()
    assert sorted(store.iter_ids()) == sorted([a.id, b.id])


def test_append_part_copies_whole_parts_in_order(store):
    first, second = new(store, 3, concat="partial"), new(store, 4, concat="partial")
    store.append(first, io.BytesIO(b"abc"), 3)
    store.append(second, io.BytesIO(b"defg"), 4)
    final = new(store, 7, concat="final", parts=[first.id, second.id, first.id])
    final.length = 10
    for part in (second, first, first):
        store.append_part(final, part.id, part.length)
    assert data(store, final) == b"defgabcabc"
    assert final.offset == 10 and store.get(final.id).offset == 10
    assert not os.path.exists(store.path(final.id, ".pending"))


def test_append_part_is_all_or_nothing(store):
    part = new(store, 4, concat="partial")
    store.append(part, io.BytesIO(b"defg"), 4)
    final = new(store, None, concat="final", parts=[part.id])
    with pytest.raises(StorageFailed):  # the part holds fewer bytes than claimed
        store.append_part(final, part.id, 5)
    assert data(store, final) == b"" and final.offset == 0
    assert not os.path.exists(store.path(final.id, ".pending"))
    store.terminate(part.id)
    with pytest.raises(FileNotFoundError):
        store.append_part(final, part.id, 4)
    assert data(store, final) == b""
    stale = UploadInfo(id=final.id, length=None, offset=3)
    with pytest.raises(OffsetMismatch):
        store.append_part(stale, part.id, 4)


def test_a_crash_in_the_middle_of_a_part_copy_is_undone(store):
    final = new(store, None, concat="final")
    with open(store.path(final.id), "ab") as handle:
        handle.write(b"half a part")
    with open(store.path(final.id, ".pending"), "w") as handle:
        handle.write("0")
    store.recover(final.id)
    assert store.get(final.id).offset == 0


def test_links_from_parts_to_the_finals_waiting(store):
    a, b, f1, f2 = new_upload_id(), new_upload_id(), new_upload_id(), new_upload_id()
    assert store.finals_waiting_for(a) == []
    store.link_final(a, f1)
    store.link_final(a, f2)
    store.link_final(a, f2)  # idempotent
    store.link_final(b, f1)
    assert store.finals_waiting_for(a) == sorted([f1, f2])
    store.unlink_final(a, f1)
    assert store.finals_waiting_for(a) == [f2]
    store.unlink_final(a, f2)
    store.unlink_final(a, f2)  # idempotent
    assert store.finals_waiting_for(a) == []
    assert not os.path.exists(os.path.join(store.directory, FINALS_DIR, a))  # no empty directory
    assert store.finals_waiting_for(b) == [f1]
    assert sorted(store.iter_ids()) == []  # links are not uploads


def test_forget_removes_a_parts_links(store):
    part = new(store, 3, concat="partial")
    store.link_final(part.id, new_upload_id())
    store.forget(part.id)
    assert store.finals_waiting_for(part.id) == []
    assert os.listdir(os.path.join(store.directory, FINALS_DIR)) == []


# -- IDs --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    "", ".", "..", "../x", "a/b", "/etc/passwd", "a\\b", "a\x00b", "\x00", "a.info", "a b",
    "-leading", "_leading", "x" * 129, "é", "a\n", "١٢٣",
])
def test_check_upload_id_rejects(bad, store):
    with pytest.raises(InvalidUploadId):
        check_upload_id(bad)
    with pytest.raises(InvalidUploadId):
        store.path(bad)
    with pytest.raises(InvalidUploadId):
        store.get(bad)


@pytest.mark.parametrize("good", ["a", "0" * 32, "A-b_c", "x" * 128, new_upload_id()])
def test_check_upload_id_accepts(good):
    assert check_upload_id(good) == good


def test_generated_ids_are_valid_and_unique():
    ids = {new_upload_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(store_module.UPLOAD_ID.fullmatch(i) and len(i) == 32 for i in ids)


def test_estale_on_info_is_retried(store, monkeypatch):
    """Another host replaced the .info a moment ago: its old handle is stale."""
    import errno as errno_module
    info = new(store, 10)
    real_open = os.open
    failures = []

    def stale_once(path, flags, *args):
        if path.endswith(".info") and not failures:
            failures.append(path)
            raise OSError(errno_module.ESTALE, "Stale file handle")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", stale_once)
    assert store.get(info.id).length == 10
    assert failures


def test_small_files_are_closed_before_they_are_renamed_into_place(store, monkeypatch):
    """NFS and FUSE clients send a file's bytes at close: a rename before it lets
    another host open the new name and read nothing (seen on MooseFS)."""
    info = new(store, 10)
    real_replace = os.replace
    seen = []

    def replace(source, target):
        open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                      if os.path.exists(f"/proc/self/fd/{fd}")}
        seen.append((os.path.realpath(source) in open_files, os.path.getsize(source)))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    store.mark_finished(info)
    assert seen and all(not still_open and size > 0 for still_open, size in seen)
    assert store.get(info.id).finished
