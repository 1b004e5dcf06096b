"""Upload operations shared by every protocol front-end.

The tus handlers (and any later front-end, such as the IETF draft) parse their
headers, then call these methods with plain values.  Here live the rules that
do not depend on the wire format: limits, locking and hand-over, offsets,
deferred lengths, checksums, concatenation, expiration, hooks, metrics and
upload event logs, and the translation of store failures into the error table.
No file paths and no header names.
"""

from __future__ import annotations

import errno
import hmac
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional

from .body import BodyInterrupted, BodyMalformed, BodyTimeout, ClientGone, RequestBody
from .config import Config
from .errors import TusError
from .hooks import HookAnswer, HookError, RequestInfo, hooks_from_config
from .locking import LockTimeout, UploadLocker
from .logs import log_event
from .metrics import Metrics
from .protocol import encode_metadata, new_hasher
from .store import (
    UPLOAD_ID,
    ChunkRefused,
    FileStore,
    InvalidUploadId,
    OffsetMismatch,
    StorageFailed,
    StorageFull,
    UploadGone,
    UploadInfo,
    UploadNotFound,
    check_upload_id,
    new_upload_id,
)

log = logging.getLogger("tuswsgi")


@dataclass
class Checksum:
    algorithm: str
    digest: bytes


class UploadService:
    """Store + locks + limits; the one place upload state changes."""

    def __init__(self, config: Config, metrics: Optional[Metrics] = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.hooks = hooks_from_config(config, self.metrics.hook_called)
        self.store = FileStore(config.upload_dir, expiration=config.expiration,
                               gone_retention=config.gone_retention, fsync=config.fsync)
        self.locker = UploadLocker(self.store.directory)
        self._next_sweep = time.monotonic() + min(config.cleanup_interval or 0, 60)
        self._sweep_lock = threading.Lock()

    # -- lookups -----------------------------------------------------------
    def get(self, upload_id: str) -> UploadInfo:
        """The upload, or 404/410.  Does not lock: for reads of settled state."""
        try:
            return self.store.get(check_upload_id(upload_id))
        except (UploadNotFound, InvalidUploadId):
            raise TusError("ERR_NOT_FOUND") from None
        except UploadGone:
            raise TusError("ERR_UPLOAD_GONE") from None

    @contextmanager
    def locked(self, upload_id: str, body: Optional[RequestBody] = None) -> Iterator[UploadInfo]:
        """Hold the upload's lock (taking it over from an older request) and yield it."""
        try:
            known = self.store.exists(check_upload_id(upload_id))
        except InvalidUploadId:
            known = False
        if not known:  # 404 before touching any lock file
            raise TusError("ERR_NOT_FOUND")
        on_stop = body.interrupt if body is not None else None
        try:
            with self.locker.hold(upload_id, self.config.lock_timeout, on_stop) as handed_over:
                if handed_over:
                    self.metrics.lock_event("handover")
                self.store.recover(upload_id)
                yield self.get(upload_id)
        except LockTimeout:
            self.metrics.lock_event("timeout")
            raise TusError("ERR_UPLOAD_LOCKED") from None

    def head(self, upload_id: str, req: Optional[RequestInfo] = None) -> UploadInfo:
        """Current state; an older request still writing is asked to stop first,
        so the offset reported is the one a resume must use.

        An upload whose last bytes arrived but whose finish failed (a hook, or the
        disk, refused it) is finished now, so every complete upload gets its
        ``pre-finish``/``post-finish`` once, whatever went wrong before."""
        with self.locked(upload_id) as info:
            if info.is_complete and not info.finished:
                try:
                    self._finish(info, req)
                except (TusError, OSError) as exc:
                    log.error("finishing %s failed again: %s", upload_id, exc)
            return info

    # -- hooks -------------------------------------------------------------
    def _hook_event(self, event_type: str, info: Optional[UploadInfo],
                    req: Optional[RequestInfo]) -> dict:
        path = self.store.path(info.id) if info is not None and info.id else None
        return self.hooks.event(event_type, info, req, path)

    def _blocking_hook(self, event_type: str, info: Optional[UploadInfo],
                       req: Optional[RequestInfo]) -> HookAnswer:
        if not self.hooks.wants(event_type):
            return HookAnswer()
        try:
            return self.hooks.call(event_type, self._hook_event(event_type, info, req))
        except HookError as exc:
            raise TusError("ERR_HOOK_FAILED", f"{event_type}: {exc}") from None

    def _notify(self, event_type: str, info: UploadInfo, req: Optional[RequestInfo],
                on_answer=None) -> None:
        if self.hooks.wants(event_type):
            self.hooks.notify(event_type, self._hook_event(event_type, info, req), on_answer)

    def authorize(self, req: RequestInfo, upload_id: Optional[str]) -> None:
        """The ``pre-access`` hook, before any body is read: may refuse the request."""
        if not self.hooks.wants("pre-access"):
            return
        info = self.get(upload_id) if upload_id is not None else None
        answer = self._blocking_hook("pre-access", info, req)
        if answer.reject_upload or answer.reject_access or (answer.status or 0) >= 400:
            raise answer.rejection("ERR_ACCESS_DENIED", 403)

    # -- creation ----------------------------------------------------------
    def create(self, *, length: Optional[int], metadata: list, concat: Optional[str] = None,
               body: Optional[RequestBody] = None, checksum: Optional[Checksum] = None,
               complete: bool = False, on_created: Optional[Callable[[UploadInfo], None]] = None,
               req: Optional[RequestInfo] = None) -> UploadInfo:
        """Create an upload, and store ``body`` in it when the request carries one.

        A body refused as a whole (too long, failed checksum) leaves no upload
        behind; a body cut short keeps its bytes, and the error names the upload
        (``error.upload_id``) so the client can be told where to resume.
        ``on_created`` runs between the two, e.g. to send an interim response.
        """
        info = self._create(length, metadata, concat, req)
        if body is None and not complete:
            return info
        if on_created is not None:
            on_created(info)
        try:
            return self.append(info.id, 0, body or RequestBody.empty(), checksum=checksum,
                               complete=complete, req=req)
        except TusError as error:
            if error.error_code in REFUSED_BODY_CODES:
                self.discard(info.id)
            else:
                error.upload_id = info.id
            raise

    def _create(self, length: Optional[int], metadata: list, concat: Optional[str],
                req: Optional[RequestInfo]) -> UploadInfo:
        self.check_size(length)
        info = UploadInfo(id="", length=length, metadata=metadata, concat=concat)
        self._pre_create(info, req)
        try:
            self.store.create(info)
        except FileExistsError:
            raise TusError("ERR_HOOK_FAILED", "pre-create chose an upload ID in use") from None
        except OSError as exc:
            raise storage_error(exc) from None
        self._created(info, req)
        return info

    def _pre_create(self, info: UploadInfo, req: Optional[RequestInfo]) -> None:
        """Run ``pre-create``: it may refuse, or choose the ID and the metadata."""
        answer = self._blocking_hook("pre-create", info, req)
        if answer.reject_upload or (answer.status or 0) >= 400:
            raise answer.rejection("ERR_UPLOAD_REJECTED", 400)
        if answer.change_metadata is not None:
            info.metadata = encode_metadata(answer.change_metadata)
        if answer.change_id is not None and not UPLOAD_ID.fullmatch(answer.change_id):
            raise TusError("ERR_HOOK_FAILED", "pre-create chose an invalid upload ID")
        info.id = answer.change_id or new_upload_id()

    def _created(self, info: UploadInfo, req: Optional[RequestInfo]) -> None:
        self.metrics.upload_event("created")
        log_event("upload.created", upload=info.id, length=info.length, kind=info.concat)
        self._notify("post-create", info, req)
        if info.is_complete:
            self._finish(info, req)

    def _finish(self, info: UploadInfo, req: Optional[RequestInfo]) -> None:
        """``pre-finish`` (may refuse and add response headers), then ``post-finish``."""
        answer = self._blocking_hook("pre-finish", info, req)
        if (answer.status or 0) >= 400:
            raise answer.rejection("ERR_UPLOAD_REJECTED", 400)
        info.hook_headers = answer.headers
        self.store.mark_finished(info)
        self.metrics.upload_event("finished")
        log_event("upload.finished", upload=info.id, length=info.length)
        self._notify("post-finish", info, req)

    def concatenate(self, part_ids: list[str], metadata: list,
                    req: Optional[RequestInfo] = None) -> UploadInfo:
        parts = []
        for part_id in part_ids:
            try:
                part = self.store.get(check_upload_id(part_id))
            except (UploadNotFound, UploadGone, InvalidUploadId):
                raise TusError("ERR_INVALID_CONCAT", f"unknown upload {part_id[:40]!r}") from None
            if part.concat != "partial":
                raise TusError("ERR_INVALID_CONCAT", f"{part_id} is not a partial upload")
            if not part.is_complete:
                raise TusError("ERR_INVALID_CONCAT", f"{part_id} is not finished")
            parts.append(part)
        length = sum(part.length or 0 for part in parts)
        self.check_size(length)
        info = UploadInfo(id="", length=length, metadata=metadata, concat="final",
                          parts=[part.id for part in parts])
        self._pre_create(info, req)
        try:
            self.store.concatenate(info, parts)
        except FileExistsError:
            raise TusError("ERR_HOOK_FAILED", "pre-create chose an upload ID in use") from None
        except OSError as exc:
            self.store.forget(info.id)
            raise storage_error(exc) from None
        self._created(info, req)
        return info

    def check_size(self, length: Optional[int]) -> None:
        if length is not None and self.config.max_size and length > self.config.max_size:
            raise TusError("ERR_MAX_SIZE_EXCEEDED", f"limit {self.config.max_size} bytes")

    def discard(self, upload_id: str) -> None:
        """Remove a just-created upload whose creation body was refused."""
        with self.locker.hold(upload_id, self.config.lock_timeout):
            self.store.forget(upload_id)

    # -- appending ---------------------------------------------------------
    def append(self, upload_id: str, offset: int, body: RequestBody, *,
               declare_length: Optional[int] = None, checksum: Optional[Checksum] = None,
               complete: bool = False, req: Optional[RequestInfo] = None) -> UploadInfo:
        """Append the body at ``offset`` under the upload's lock.

        ``complete`` says the body ends the upload (the IETF draft's
        ``Upload-Complete: ?1``): the length becomes the offset it reaches.
        Fires ``post-receive`` while bytes arrive (its answer can stop the upload),
        and ``pre-finish``/``post-finish`` when this request completes the upload.
        """
        started = time.monotonic()
        with self.locked(upload_id, body) as info, self.metrics.writing():
            start = info.offset
            try:
                self._append_locked(info, offset, body, declare_length, checksum, complete, req)
            finally:
                self.metrics.received(info.offset - start)
                if info.offset != start:
                    self._notify("post-receive", info, req)
            log_event("upload.received", upload=info.id, offset=start, new_offset=info.offset,
                      bytes=info.offset - start, seconds=round(time.monotonic() - started, 3))
            if info.is_complete and not info.finished:
                self._finish(info, req)
            return info

    def _append_locked(self, info: UploadInfo, offset: int, body: RequestBody,
                       declare_length: Optional[int], checksum: Optional[Checksum],
                       complete: bool, req: Optional[RequestInfo]) -> None:
        if info.concat == "final":
            raise TusError("ERR_UPLOAD_IS_FINAL")
        if offset != info.offset:
            raise TusError("ERR_MISMATCHED_OFFSET", f"upload is at {info.offset}, request says {offset}")
        length = info.length
        if declare_length is not None:
            length = self._check_declared_length(info, declare_length)
        if complete and body.length is not None:
            final = offset + body.length
            if length is not None and final != length:
                raise TusError("ERR_INCONSISTENT_LENGTH", f"length is {length}, body ends at {final}")
            length = self._check_declared_length(info, final)
        limit = self._room(info.offset, length)
        cap = self.config.max_append_size
        if cap and body.length is not None and body.length > cap:
            raise TusError("ERR_APPEND_TOO_LARGE", f"{body.length} bytes sent, {cap} allowed")
        if body.length is not None and body.length > limit:
            raise TusError("ERR_SIZE_EXCEEDED" if length is not None else "ERR_MAX_SIZE_EXCEEDED",
                           f"{body.length} bytes sent, {limit} allowed")
        if cap:
            limit = min(limit, cap)
        source, verify = body, None
        if checksum is not None:
            source = _HashingReader(body, checksum.algorithm)
            verify = source.verifier(checksum.digest)
        if self.hooks.wants("post-receive"):
            source = _ProgressReader(source, self.config.hooks_progress_interval,
                                     lambda received: self._progress(info, received, body, req))
        self._write(info, source, limit, verify)
        if body.is_chunked and body.has_more():
            self.store.truncate(info, offset)
            code = "ERR_APPEND_TOO_LARGE" if limit == cap else "ERR_SIZE_EXCEEDED"
            raise TusError(code, f"body is larger than the {limit} bytes allowed")
        if complete and length is None:
            length = self._check_declared_length(info, info.offset)
        if info.length is None and length is not None:
            self.store.declare_length(info, length)  # only once the body was accepted

    def _progress(self, info: UploadInfo, received: int, body: RequestBody,
                  req: Optional[RequestInfo]) -> None:
        """A throttled ``post-receive``; ``StopUpload`` in its answer ends the request."""
        snapshot = UploadInfo(**{**info.__dict__, "offset": info.offset + received})

        def on_answer(answer: HookAnswer) -> None:
            if answer.stop_upload:
                body.interrupt("stopped")
        self._notify("post-receive", snapshot, req, on_answer)

    def _check_declared_length(self, info: UploadInfo, length: int) -> int:
        if info.length is not None:
            if length != info.length:
                raise TusError("ERR_LENGTH_ALREADY_SET")
            return length
        if length < info.offset:
            raise TusError("ERR_LENGTH_TOO_SMALL", f"{info.offset} bytes already received")
        self.check_size(length)
        return length

    def _room(self, offset: int, length: Optional[int]) -> int:
        if length is not None:
            return length - offset
        if self.config.max_size:
            return self.config.max_size - offset
        return 1 << 62

    def _write(self, info: UploadInfo, source, limit: int, verify) -> None:
        start = info.offset
        try:
            self.store.append(info, source, limit, verify)
        except OffsetMismatch as exc:
            raise TusError("ERR_MISMATCHED_OFFSET", f"upload is at {exc.actual}") from None
        except ChunkRefused as exc:
            raise TusError(exc.reason) from None
        except StorageFull:
            raise TusError("ERR_INSUFFICIENT_STORAGE") from None
        except StorageFailed as exc:
            log.error("storage error on %s: %s", info.id, exc)
            raise TusError("ERR_STORAGE") from None
        except BodyInterrupted as exc:
            raise self._cut_short(_INTERRUPTION_CODES[exc.reason], info, start) from None
        except BodyTimeout:
            raise self._cut_short("ERR_REQUEST_TIMEOUT", info, start) from None
        except ClientGone:
            raise self._cut_short("ERR_CLIENT_GONE", info, start) from None
        except BodyMalformed:
            raise self._cut_short("ERR_MALFORMED_BODY", info, start) from None

    def _cut_short(self, code: str, info: UploadInfo, start: int) -> TusError:
        """The error for a body that ended early; every byte that arrived is kept."""
        try:
            info.offset = self.store.get(info.id).offset
        except (UploadNotFound, UploadGone):
            info.offset = start
        log_event("upload.interrupted", upload=info.id, reason=code, offset=start,
                  new_offset=info.offset, bytes=info.offset - start)
        return TusError(code, f"kept {info.offset - start} bytes, upload is at {info.offset}")

    # -- termination and download ------------------------------------------
    def terminate(self, upload_id: str, req: Optional[RequestInfo] = None) -> None:
        with self.locked(upload_id) as info:
            answer = self._blocking_hook("pre-terminate", info, req)
            if answer.reject_termination or (answer.status or 0) >= 400:
                raise answer.rejection("ERR_TERMINATION_REJECTED", 400)
            try:
                self.store.terminate(upload_id)
            except OSError as exc:
                raise storage_error(exc) from None
        self.metrics.upload_event("terminated")
        log_event("upload.terminated", upload=upload_id, offset=info.offset)
        self._notify("post-terminate", info, req)

    def open_download(self, upload_id: str) -> tuple[UploadInfo, BinaryIO]:
        info = self.get(upload_id)
        if not info.is_complete:
            raise TusError("ERR_UPLOAD_NOT_FINISHED")
        return info, self.store.open_data(upload_id)

    # -- expiration ----------------------------------------------------------
    def maybe_sweep(self) -> None:
        """Run a cleanup pass in the background, at most every ``cleanup_interval``;
        called on every request, so it costs one clock read in between."""
        interval = self.config.cleanup_interval
        if not interval or time.monotonic() < self._next_sweep:
            return
        if not self._sweep_lock.acquire(blocking=False):
            return
        self._next_sweep = time.monotonic() + interval
        threading.Thread(target=self._sweep, name="tuswsgi-cleanup", daemon=True).start()

    def _sweep(self) -> None:
        try:
            self.cleanup()
        except Exception:
            log.exception("cleanup pass failed")
        finally:
            self._sweep_lock.release()

    def cleanup(self, *, dry_run: bool = False) -> list[tuple[str, str]]:
        """Expire stale uploads and forget old tombstones; skip any that is being written.

        Returns ``(name, action)`` pairs, action ``expired``, ``forgotten`` or
        ``leftover`` (a file a crash left behind, untouched for an hour).
        """
        now = time.time()
        actions = [(name, "leftover")
                   for name in self.store.remove_leftovers(now - 3600, dry_run=dry_run)]
        for upload_id in self.store.iter_ids():
            try:
                info = self.store.inspect(upload_id)
            except (UploadNotFound, ValueError):
                continue
            if self.store.is_expired(info, now):
                action = "expired"
            elif self.store.is_forgettable(info, now):
                action = "forgotten"
            else:
                continue
            if not dry_run and not self._apply_cleanup(upload_id, action, now):
                continue
            actions.append((upload_id, action))
        return actions

    def _apply_cleanup(self, upload_id: str, action: str, now: float) -> bool:
        try:
            with self.locker.hold(upload_id, 0):
                info = self.store.inspect(upload_id)  # re-check under the lock
                if action == "expired" and self.store.is_expired(info, now):
                    self.store.terminate(upload_id, now=now)
                    self.metrics.upload_event("expired")
                    log_event("upload.expired", upload=upload_id, offset=info.offset)
                    return True
                if action == "forgotten" and self.store.is_forgettable(info, now):
                    self.store.forget(upload_id)
                    return True
                return False
        except (LockTimeout, UploadNotFound):
            return False


#: Errors that refuse a creation body as a whole: no upload is left behind.
REFUSED_BODY_CODES = frozenset({"ERR_SIZE_EXCEEDED", "ERR_MAX_SIZE_EXCEEDED", "ERR_CHECKSUM_MISMATCH",
                                "ERR_APPEND_TOO_LARGE", "ERR_INCONSISTENT_LENGTH"})


def storage_error(exc: OSError) -> TusError:
    """The client's view of a failed file operation: 507 when the disk is full."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TusError("ERR_INSUFFICIENT_STORAGE")
    log.error("storage error: %s", exc)
    return TusError("ERR_STORAGE")


_INTERRUPTION_CODES = {"handover": "ERR_UPLOAD_INTERRUPTED", "shutdown": "ERR_SERVER_SHUTDOWN",
                       "stopped": "ERR_UPLOAD_STOPPED"}


class _ProgressReader:
    """Calls ``report(received)`` at most every ``interval`` seconds while reading."""

    def __init__(self, source, interval: float, report) -> None:
        self._source = source
        self._interval = interval
        self._report = report
        self._received = 0
        self._next = time.monotonic() + interval

    def read(self, size: int) -> bytes:
        data = self._source.read(size)
        self._received += len(data)
        if data and time.monotonic() >= self._next:
            self._next = time.monotonic() + self._interval
            self._report(self._received)
        return data


class _HashingReader:
    """Wraps a body so its bytes are hashed as they stream to disk."""

    def __init__(self, body: RequestBody, algorithm: str) -> None:
        self._body = body
        self._hasher = new_hasher(algorithm)

    def read(self, size: int) -> bytes:
        data = self._body.read(size)
        self._hasher.update(data)
        return data

    def verifier(self, expected: bytes) -> Callable[[], Optional[str]]:
        """The store's ``verify``: the error code that refuses the chunk, or ``None``."""
        def verify() -> Optional[str]:
            if self._body.is_chunked and self._body.has_more():
                return "ERR_SIZE_EXCEEDED"
            if not hmac.compare_digest(self._hasher.digest(), expected):
                return "ERR_CHECKSUM_MISMATCH"
            return None
        return verify
