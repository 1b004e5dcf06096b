"""FileStore: uploads as plain files; knows nothing about HTTP.

For an upload ``<id>`` the directory holds:

- ``<id>``          the data received so far; its size *is* the offset, so after a
                    crash the offset can never claim bytes that are not on disk;
- ``<id>.info``     JSON description, replaced atomically (temp + fsync + rename),
                    never rewritten while bytes are appended;
- ``<id>.pending``  present only while a chunk that still has to be verified
                    (checksum) is being written; it holds the offset to fall back to;
- ``<id>.lock`` and ``.stops/<id>``  owned by :mod:`tuswsgi.locking`;
- ``.finals/<part id>/<final id>``  an empty file while a final upload still
                    needs the bytes of a partial one (concatenation-unfinished),
                    so whoever finishes the part, in any worker or host, finds
                    the finals to assemble, and whoever terminates it, the finals
                    that can no longer complete.

A terminated or expired upload keeps its ``.info`` as a tombstone (data removed)
for ``gone_retention`` seconds, so clients are told 410 rather than 404.
IDs are checked against :data:`UPLOAD_ID` before any path is built.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from threading import Lock
from typing import Any, Callable, Iterator, Optional, Protocol

from .upload import UPLOAD_ID, UploadId, UploadInfo, check_upload_id

log = logging.getLogger("tuswsgi")

BLOCK_SIZE = 1 << 20
FINALS_DIR = ".finals"
#: Opens of a ``.info`` that a shared filesystem answers ESTALE (replaced elsewhere).
_STALE_RETRIES = 5
_INFO_CACHE_SIZE = 4096


class StoreError(Exception):
    """Base of the store's errors."""


class UploadNotFound(StoreError):
    pass


class UploadGone(StoreError):
    """The upload was terminated or expired; its tombstone still exists."""


class OffsetMismatch(StoreError):
    def __init__(self, actual: int) -> None:
        super().__init__(f"upload is at offset {actual}")
        self.actual = actual


class StorageFull(StoreError):
    """The disk has no room; the upload was truncated to what was fully written."""


class ChunkRefused(StoreError):
    """A tentative chunk was refused by its ``verify``; it was removed again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StorageFailed(StoreError):
    """An I/O error other than a full disk; the upload was truncated likewise."""


class Readable(Protocol):
    def read(self, size: int) -> bytes: ...


class _InfoCache:
    """Parsed ``.info`` records per worker, keyed by the file's identity, so a HEAD
    or PATCH costs a ``stat`` instead of a read and a JSON parse."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[tuple, dict]] = OrderedDict()
        self._lock = Lock()

    def get(self, path: str, key: tuple) -> Optional[dict]:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None or entry[0] != key:
                return None
            self._entries.move_to_end(path)
            return entry[1]

    def put(self, path: str, key: tuple, record: dict) -> None:
        with self._lock:
            self._entries[path] = (key, record)
            self._entries.move_to_end(path)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


class FileStore:
    """Uploads in one directory.  Callers hold the upload's lock for every change."""

    def __init__(self, directory: str, *, expiration: float = 0.0,
                 gone_retention: float = 0.0, fsync: str = "none") -> None:
        self.directory = os.path.abspath(directory)
        self.expiration = expiration
        self.gone_retention = gone_retention
        self.fsync = fsync
        self._cache = _InfoCache(_INFO_CACHE_SIZE)
        os.makedirs(self.directory, exist_ok=True)

    # -- paths -------------------------------------------------------------
    def path(self, upload_id: str, suffix: str = "") -> str:
        return os.path.join(self.directory, check_upload_id(upload_id) + suffix)

    # -- reading -----------------------------------------------------------
    def get(self, upload_id: str) -> UploadInfo:
        """The upload, with its current offset; raises UploadNotFound / UploadGone.

        The offset comes from ``fstat`` on a descriptor opened now: on a shared
        filesystem an ``open`` revalidates the file's attributes (NFS's
        close-to-open rule), where a bare ``stat`` may answer from a cache.
        """
        info = self._read_info(upload_id)
        if info.is_gone:
            raise UploadGone(upload_id)
        try:
            fd = os.open(self.path(upload_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UploadNotFound(upload_id) from None
        try:
            self._observe(info, os.fstat(fd))
        finally:
            os.close(fd)
        if info.expires is not None and info.expires <= time.time():
            raise UploadGone(upload_id)
        return info

    def _observe(self, info: UploadInfo, stat: os.stat_result) -> None:
        """Offset and times from the data file: the size is the offset."""
        info.offset = stat.st_size
        info.modified = stat.st_mtime
        info.expires = info.expires_at(self.expiration)

    def exists(self, upload_id: str) -> bool:
        """Whether the upload (or its tombstone) is known: one ``stat``."""
        return os.path.exists(self.path(upload_id, ".info"))

    def _read_info(self, upload_id: str) -> UploadInfo:
        """The ``.info`` record.  A shared filesystem may answer ``ESTALE`` for a
        moment after another host replaced the file: it is opened again."""
        for attempt in range(_STALE_RETRIES):
            try:
                return self._read_info_once(upload_id)
            except OSError as exc:
                if exc.errno != errno.ESTALE or attempt == _STALE_RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("not reached")

    def _read_info_once(self, upload_id: str) -> UploadInfo:
        path = self.path(upload_id, ".info")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UploadNotFound(upload_id) from None
        try:
            stat = os.fstat(fd)
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            record = self._cache.get(path, key)
            if record is None:
                record = json.loads(os.read(fd, stat.st_size + 1))
                self._cache.put(path, key, record)
            return UploadInfo.from_record(record)
        except (ValueError, KeyError):  # emptied by a power loss under fsync = none
            raise UploadNotFound(upload_id) from None
        finally:
            os.close(fd)

    def open_data(self, upload_id: str):
        """The data file opened for reading (binary)."""
        return open(self.path(upload_id), "rb")

    def iter_ids(self) -> Iterator[str]:
        """Every upload ID with an ``.info``, streamed from the directory (no list)."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(".info") and UPLOAD_ID.fullmatch(name[:-5]):
                    yield UploadId(name[:-5])

    def remove_leftovers(self, older_than: float, *, dry_run: bool = False) -> list[str]:
        """Remove files a crash left behind: a data file whose creation never wrote
        its ``.info``, and temporary ``.info`` files; only those untouched for
        ``older_than`` seconds, so a creation in progress is never disturbed."""
        removed = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                orphan = UPLOAD_ID.fullmatch(name) and not os.path.exists(entry.path + ".info")
                if not (orphan or ".info.tmp-" in name):
                    continue
                try:
                    if entry.stat().st_mtime > older_than:
                        continue
                    if not dry_run:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append(name)
        return removed

    # -- writing -----------------------------------------------------------
    def create(self, info: UploadInfo) -> UploadInfo:
        """Create an empty upload.  The data file comes first and the ``.info``
        last, so a crash in between leaves only an orphan the cleanup removes.

        A new ``.info`` is written in place (``O_EXCL``) rather than renamed into
        place: until the write completes it is unreadable JSON, which readers
        take as "no such upload", and nobody else can know the new ID yet.
        """
        data_path = self.path(info.id)
        fd = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        info.created = info.created or time.time()
        info_path = self.path(info.id, ".info")
        try:
            fd = os.open(info_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                self._write_whole(fd, json.dumps(info.to_record()).encode())
            finally:
                os.close(fd)
        except OSError:
            _unlink(info_path)
            _unlink(data_path)
            raise
        info.modified = info.created
        info.expires = info.expires_at(self.expiration)
        return info

    def mark_finished(self, info: UploadInfo) -> None:
        self._record(info, finished=True)

    def mark_refused(self, info: UploadInfo) -> None:
        """The application refused the finished upload (``pre-finish``)."""
        self._record(info, finish_refused=True)

    def declare_length(self, info: UploadInfo, length: int) -> None:
        self._record(info, length=length)

    def _record(self, info: UploadInfo, **changes: Any) -> None:
        """Replace ``.info`` with ``changes``; ``info`` takes them only once they are
        written, so a failed write leaves it saying what the disk says."""
        self._write_info(dataclasses.replace(info, **changes))
        for name, value in changes.items():
            setattr(info, name, value)

    def append(self, info: UploadInfo, source: Readable, limit: int,
               verify: Optional[Callable[[], Optional[str]]] = None) -> int:
        """Append at most ``limit`` bytes read from ``source``; return how many.

        Bytes are kept when ``source`` fails midway (a dropped client): they were
        received.  With ``verify``, the chunk is tentative: ``.pending`` records the
        old offset until ``verify()`` returns ``None``; a reason it returns instead
        (:class:`ChunkRefused`), or any failure, removes the chunk.  A write error
        truncates back to the last complete write.
        """
        fd = os.open(self.path(info.id), os.O_WRONLY | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size != info.offset:
                raise OffsetMismatch(size)
            if verify is None:
                written = self._copy(fd, info.id, source, limit, size)
                self._check_landed(fd, info.id, size, written)
            else:
                written = self._copy_tentative(fd, info.id, source, limit, size, verify)
            self._make_durable(fd, info.id, size, size + written == info.length)
        finally:
            os.close(fd)
        info.offset = size + written
        if written:
            info.modified = time.time()
        info.expires = info.expires_at(self.expiration)
        return written

    def _copy_tentative(self, fd: int, upload_id: str, source: Readable, limit: int, size: int,
                        verify: Callable[[], Optional[str]]) -> int:
        """Copy a chunk that counts only once ``verify`` accepts it."""
        pending = self.path(upload_id, ".pending")
        self._write_small(pending, str(size).encode())
        try:
            written = self._copy(fd, upload_id, source, limit, size)
            self._check_landed(fd, upload_id, size, written)
            refusal = verify()
        except OffsetMismatch:
            raise
        except BaseException:
            self._undo(fd, upload_id, size)
            raise
        if refusal is not None:
            self._undo(fd, upload_id, size)
            raise ChunkRefused(refusal)
        _unlink(pending)
        return written

    def _check_landed(self, fd: int, upload_id: str, size: int, written: int) -> None:
        """Refuse bytes that landed anywhere but at ``size``, the offset checked
        under the lock.

        ``O_APPEND`` writes at what the filesystem takes for the end of the file.
        Where that is not the size ``fstat`` gave (a shared filesystem served a
        stale size; MooseFS keeps a crashed client's unfinished tail past the end
        it reports), the file is now longer than ``size + written``.  Nothing
        acknowledged can lie past ``size`` while we hold the lock on a sound
        filesystem, so the file is cut back to ``size`` and the client is told to
        resend from there (409): never adopt bytes nobody acknowledged.
        """
        actual = os.fstat(fd).st_size
        if actual == size + written:
            return
        if actual > size + written:
            log.error("%s: %d bytes landed past the checked end (%d); cut back to it. If this "
                      "repeats, run `tuswsgi check-shared-dir` on the upload directory",
                      upload_id, actual - size - written, size)
            self._undo(fd, upload_id, size)
            raise OffsetMismatch(size)
        raise StorageFailed(f"data file is {actual} bytes after writing {written} at {size}")

    def _undo(self, fd: int, upload_id: str, size: int) -> None:
        """Cut the data back to ``size``.  When that fails, ``.pending`` says so,
        and the next request (:meth:`recover`) cuts it before reading the offset."""
        pending = self.path(upload_id, ".pending")
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            log.error("cannot cut %s back to %d bytes (%s); the next request will", upload_id, size,
                      exc.strerror)
            try:
                self._write_small(pending, str(size).encode())
            except OSError:
                log.critical("%s may count bytes it must not: cut it back to %d bytes", upload_id, size)
            return
        _unlink(pending)

    def _make_durable(self, fd: int, upload_id: str, size: int, finishing: bool) -> None:
        """fsync per the policy; when it fails, the request's bytes are cut off
        again, so the offset never counts bytes that a crash could lose."""
        if not (self.fsync == "always" or (self.fsync == "finish" and finishing)):
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            self._undo(fd, upload_id, size)
            raise StorageFailed(f"fsync failed: {exc.strerror}") from exc

    def _copy(self, fd: int, upload_id: str, source: Readable, limit: int, base: int) -> int:
        """Copy in bounded blocks.  A block is let go before the next read, which
        for a slow upload is a wait of up to a second: thousands of them would
        otherwise each hold their last block for nothing."""
        written = 0
        while written < limit:
            chunk = source.read(min(BLOCK_SIZE, limit - written))
            if not chunk:
                break
            written += self._write_block(fd, upload_id, chunk, base + written)
            del chunk
        return written

    def _write_block(self, fd: int, upload_id: str, chunk: bytes, at: int) -> int:
        """Write ``chunk`` at the end of the data, which is ``at`` bytes long.  A
        failed write may have left part of its block (a torn write): the data is
        cut back to the last complete write."""
        view = memoryview(chunk)
        done = 0
        try:
            while done < len(view):
                done += os.write(fd, view[done:])
        except OSError as exc:
            self._undo(fd, upload_id, at + done)
            error = StorageFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StorageFailed
            raise error(os.strerror(exc.errno or 0)) from exc
        return done

    def truncate(self, info: UploadInfo, offset: int) -> None:
        """Cut the data back to ``offset`` (a chunk that had to be refused)."""
        os.truncate(self.path(info.id), offset)
        info.offset = offset

    def recover(self, upload_id: str) -> None:
        """Undo a tentative chunk left by a crashed writer.  Call under the lock."""
        pending = self.path(upload_id, ".pending")
        if not os.path.exists(pending):  # the usual case: one stat
            return
        try:
            with open(pending, "rb") as handle:
                offset = int(handle.read() or b"0")
        except FileNotFoundError:
            return
        except ValueError:
            offset = None
        if offset is not None:
            try:
                os.truncate(self.path(upload_id), offset)
            except FileNotFoundError:
                pass
        _unlink(pending)

    # -- final uploads of a concatenation --------------------------------------
    def append_part(self, info: UploadInfo, part_id: str, count: int) -> None:
        """Append the ``count`` bytes of partial upload ``part_id`` to the final upload
        ``info``, all or nothing: ``.pending`` holds the old end until the copy is
        whole, so a crash midway is undone by the next :meth:`recover`.  Raises
        ``FileNotFoundError`` when the part's data is gone."""
        fd = os.open(self.path(info.id), os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            if size != info.offset:
                raise OffsetMismatch(size)
            self._write_small(self.path(info.id, ".pending"), str(size).encode())
            try:
                with self.open_data(part_id) as source:
                    os.lseek(fd, size, os.SEEK_SET)
                    _copy_file(source.fileno(), fd, count)
                self._check_landed(fd, info.id, size, count)
                self._make_durable(fd, info.id, size, size + count == info.length)
            except BaseException:
                self._undo(fd, info.id, size)
                raise
            _unlink(self.path(info.id, ".pending"))
        finally:
            os.close(fd)
        info.offset = size + count
        info.modified = time.time()

    def link_final(self, part_id: str, final_id: str) -> None:
        """Record that final ``final_id`` waits for part ``part_id``'s bytes."""
        directory = os.path.join(self.directory, FINALS_DIR, check_upload_id(part_id))
        for attempt in range(3):  # a racing unlink_final may remove the directory
            os.makedirs(directory, exist_ok=True)
            try:
                _touch(os.path.join(directory, check_upload_id(final_id)))
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def unlink_final(self, part_id: str, final_id: str) -> None:
        """The final no longer waits for the part (it holds its bytes, or is gone)."""
        directory = os.path.join(self.directory, FINALS_DIR, check_upload_id(part_id))
        _unlink(os.path.join(directory, check_upload_id(final_id)))
        try:
            os.rmdir(directory)
        except OSError:  # not empty (another final waits), or already removed
            pass

    def finals_waiting_for(self, part_id: str) -> list[str]:
        """The finals that still need part ``part_id``'s bytes: one ``scandir`` of
        a directory that exists only while some do."""
        directory = os.path.join(self.directory, FINALS_DIR, check_upload_id(part_id))
        try:
            with os.scandir(directory) as entries:
                return sorted(UploadId(e.name) for e in entries if UPLOAD_ID.fullmatch(e.name))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def terminate(self, upload_id: str, *, now: Optional[float] = None) -> None:
        """Remove the data and leave a tombstone ``.info`` (answers 410 for a while).

        The data goes first, so a full disk cannot stop a DELETE that frees it.
        Once it is gone the upload is gone: if the tombstone cannot be written,
        the upload is forgotten at once (404 instead of 410), and that is all.
        """
        info = self._read_info(upload_id)
        _unlink(self.path(upload_id))
        _unlink(self.path(upload_id, ".pending"))
        info.gone_since = now or time.time()
        try:
            self._write_info(info)
        except OSError as exc:
            log.warning("no tombstone for %s (%s): it answers 404 instead of 410",
                        upload_id, exc.strerror)
            _unlink(self.path(upload_id, ".info"))

    def forget(self, upload_id: str) -> None:
        """Remove every trace of an upload whose tombstone has aged out.

        Call with the lock held: removing ``.lock`` is then safe, since any
        request still waiting for it finds no ``.info`` and answers 404."""
        for suffix in ("", ".pending", ".info", ".lock"):
            _unlink(self.path(upload_id, suffix))
        for final_id in self.finals_waiting_for(upload_id):  # none once its finals let go
            self.unlink_final(upload_id, final_id)

    # -- maintenance -------------------------------------------------------
    def inspect(self, upload_id: str) -> UploadInfo:
        """The upload as stored, tombstones and expired uploads included (for tools)."""
        info = self._read_info(upload_id)
        try:
            self._observe(info, os.stat(self.path(upload_id)))
        except FileNotFoundError:
            info.modified = info.gone_since or info.created
            info.expires = info.expires_at(self.expiration)
        return info

    def is_expired(self, info: UploadInfo, now: float) -> bool:
        return info.expires is not None and info.expires <= now

    def is_forgettable(self, info: UploadInfo, now: float) -> bool:
        return info.is_gone and (info.gone_since or 0) + self.gone_retention <= now

    # -- helpers -----------------------------------------------------------
    def _write_info(self, info: UploadInfo) -> None:
        self._write_small(self.path(info.id, ".info"), json.dumps(info.to_record()).encode())

    def _write_whole(self, fd: int, payload: bytes) -> None:
        """``payload`` whole into a small new file (a short write means a full
        disk), made durable as the fsync policy says."""
        if os.write(fd, payload) != len(payload):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.fsync != "none":
            os.fsync(fd)

    def _write_small(self, path: str, payload: bytes) -> None:
        """Write a small file atomically: a reader sees the old or the new, never half.

        The rename makes it atomic against crashes of any process.  Against power
        loss it also takes fsyncs (file, then directory), which cost a journal
        commit each on a disk; they follow the ``fsync`` policy like the data does.
        The file is closed before the rename: NFS and FUSE clients (MooseFS) send
        its bytes at close, so another host that opens the new name in between
        would read an empty file.
        """
        temp = f"{path}.tmp-{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                self._write_whole(fd, payload)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except OSError:
            _unlink(temp)
            raise
        if self.fsync != "none":
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _copy_file(source_fd: int, target_fd: int, count: int) -> None:
    """Kernel-side copy where the platform has one, else bounded reads and writes."""
    remaining = count
    while remaining > 0:
        try:
            done = os.copy_file_range(source_fd, target_fd, min(remaining, 1 << 30))
        except (AttributeError, OSError):
            block = os.read(source_fd, min(remaining, BLOCK_SIZE))
            done = os.write(target_fd, block) if block else 0
        if done == 0:
            raise StorageFailed("part is shorter than its recorded length")
        remaining -= done


def _touch(path: str) -> None:
    """Create an empty file if missing; a shared filesystem may answer ``EEXIST`` or
    ``ESTALE`` to the loser of a creation race, and the file is then there."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ESTALE):
            raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
