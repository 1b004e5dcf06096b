"""Upload operations shared by every protocol front-end.

A front-end (tus 1.0.0, the IETF draft) reads its headers into one
:class:`UploadRequest` and hands it over whole.  Here live the rules that do not
depend on the wire format: limits (decided by :mod:`tuswsgi.plan`), locking and
hand-over, checksums, concatenation, expiration, hooks, metrics and upload event
logs, and the translation of store failures into the error table.  No file paths
and no header names; an operation returns an :class:`Outcome`, the upload plus
the response headers a hook asked for.
"""

from __future__ import annotations

import dataclasses
import errno
import hmac
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator, Optional, Protocol

from .body import BodyInterrupted, BodyMalformed, BodyTimeout, BodyTooSlow, ClientGone, RequestBody
from .concat import Part, plan_final
from .config import Config
from .errors import TusError
from .hooks import HookAnswer, HookError, RequestInfo, hooks_from_config
from .locking import LockTimeout, UploadLocker
from .logs import log_event
from .metrics import Metrics
from .plan import Append, AppendPlan, Limits, Upload, check_parts, check_size, plan_append, settle_length
from .protocol import encode_metadata, new_hasher
from .quota import ClientCaps, client_key
from .retry import Retrier
from .space import DiskSpace
from .store import (
    ChunkRefused,
    FileStore,
    OffsetMismatch,
    StorageFailed,
    StorageFull,
    StoreError,
    UploadGone,
    UploadNotFound,
)
from .upload import UPLOAD_ID, InvalidUploadId, UploadId, UploadInfo, check_upload_id, new_upload_id

log = logging.getLogger("tuswsgi")


@dataclass(frozen=True)
class Checksum:
    """A digest the received bytes must have; ``mismatch`` is the error code when
    they do not (tus: 460 ``ERR_CHECKSUM_MISMATCH``; the draft: a 400)."""

    algorithm: str
    digest: bytes
    mismatch: str = "ERR_CHECKSUM_MISMATCH"


@dataclass(frozen=True)
class LateChecksum:
    """A checksum that arrives after the body (tus's checksum-trailer).

    While it is unknown, the body is hashed with each of ``algorithms``; once the
    body ended, ``read()`` returns it (``None``: none came) or raises the
    :class:`TusError` that refuses the chunk.  With no ``algorithms`` none was
    announced, and ``read()`` only refuses one that came anyway.
    """

    algorithms: tuple[str, ...]
    read: Callable[[], Optional[Checksum]]


@dataclass(frozen=True)
class UploadRequest:
    """What a front-end read from one request, in the service's terms.

    ``offset``: where the body goes (appends); ``length``: the upload's length,
    given at creation or declared now; ``complete``: the body ends the upload (the
    IETF draft's ``Upload-Complete: ?1``); ``checksums``: digests the body must
    have, and ``late_checksum`` one that follows it; ``hook``: what hooks see of
    the request.
    """

    body: Optional[RequestBody] = None
    offset: int = 0
    length: Optional[int] = None
    complete: bool = False
    checksums: tuple[Checksum, ...] = ()
    late_checksum: Optional[LateChecksum] = None
    metadata: list[tuple[str, Optional[str]]] = field(default_factory=list)
    concat: Optional[str] = None
    hook: Optional[RequestInfo] = None


@dataclass(frozen=True)
class Assembly:
    """What assembling a final did: ``headers`` from its ``pre-finish``; whether
    nothing is left to wait for (``complete``); else the part it is ``waiting_for``."""

    headers: dict[str, str] = field(default_factory=dict)
    complete: bool = False
    waiting_for: Optional[str] = None


@dataclass
class Outcome:
    """An upload after an operation, and headers a ``pre-finish`` hook added."""

    info: UploadInfo
    headers: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    def read(self, size: int) -> bytes: ...


class UploadService:
    """Store + locks + limits; the one place upload state changes."""

    def __init__(self, config: Config, metrics: Optional[Metrics] = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.hooks = hooks_from_config(config, self.metrics.hook_called)
        self.store = FileStore(config.upload_dir, expiration=config.expiration,
                               gone_retention=config.gone_retention, fsync=config.fsync)
        self.locker = UploadLocker(self.store.directory)
        #: Finishes whose recording failed after the last byte was stored.
        self.retrier = Retrier()
        self.caps = ClientCaps(self.store.directory, per_minute=config.client_creation_rate,
                               unfinished=config.client_max_unfinished,
                               is_unfinished=self._unfinished_for_caps)
        self.limits = Limits(config.max_size, config.max_append_size)
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
            checked = check_upload_id(upload_id)
        except InvalidUploadId:
            raise TusError("ERR_NOT_FOUND") from None
        if not self.store.exists(checked):  # 404 before touching any lock file
            raise TusError("ERR_NOT_FOUND")
        on_stop = body.interrupt if body is not None else None
        try:
            with self.locker.hold(checked, self.config.lock_timeout, on_stop) as handed_over:
                if handed_over:
                    self.metrics.lock_event("handover")
                self.store.recover(checked)
                yield self.get(checked)
        except LockTimeout:
            self.metrics.lock_event("timeout")
            raise TusError("ERR_UPLOAD_LOCKED") from None

    def head(self, upload_id: str, req: UploadRequest) -> UploadInfo:
        """Current state; an older request still writing is asked to stop first,
        so the offset reported is the one a resume must use.

        An upload whose last bytes arrived but whose finish failed (a hook, or the
        disk, refused it) is finished now, so every complete upload gets its
        ``pre-finish``/``post-finish`` once, whatever went wrong before."""
        finishing = False
        with self.locked(upload_id) as info:
            if info.concat == "final":
                self._assemble_for_head(info, req.hook)
            elif info.is_complete and not info.finished:
                finishing = True
                try:
                    self._finish(info, req.hook)
                except (TusError, OSError) as exc:
                    log.error("finishing %s failed again: %s", upload_id, exc)
        if finishing and info.concat == "partial" and info.finished:
            self._assemble_waiting(info.id, req.hook)
        return info

    def _assemble_for_head(self, info: UploadInfo, hook: Optional[RequestInfo]) -> None:
        """A final's offset is what it holds: assemble first (a worker that finished
        a part may have died before it did), and answer 410 if it can never complete."""
        try:
            self._assemble_locked(info, hook)
        except TusError as exc:
            if exc.error_code == "ERR_UPLOAD_GONE":
                raise
            log.error("assembling %s failed: %s", info.id, exc)
        except OSError as exc:
            log.error("assembling %s failed: %s", info.id, exc)

    # -- hooks -------------------------------------------------------------
    def _hook_event(self, event_type: str, info: Optional[UploadInfo],
                    hook: Optional[RequestInfo]) -> dict:
        path = self.store.path(info.id) if info is not None and info.id else None
        return self.hooks.event(event_type, info, hook, path)

    def _blocking_hook(self, event_type: str, info: Optional[UploadInfo],
                       hook: Optional[RequestInfo]) -> HookAnswer:
        if not self.hooks.wants(event_type):
            return HookAnswer()
        try:
            return self.hooks.call(event_type, self._hook_event(event_type, info, hook))
        except HookError as exc:
            raise TusError("ERR_HOOK_FAILED", f"{event_type}: {exc}") from None

    def _notify(self, event_type: str, info: UploadInfo, hook: Optional[RequestInfo],
                on_answer: Optional[Callable[[HookAnswer], None]] = None) -> None:
        if self.hooks.wants(event_type):
            self.hooks.notify(event_type, self._hook_event(event_type, info, hook), on_answer)

    def authorize(self, hook: RequestInfo, upload_id: Optional[str]) -> None:
        """The ``pre-access`` hook, before any body is read: may refuse the request."""
        if not self.hooks.wants("pre-access"):
            return
        info = self.get(upload_id) if upload_id is not None else None
        answer = self._blocking_hook("pre-access", info, hook)
        if answer.reject_upload or answer.reject_access or (answer.status or 0) >= 400:
            raise answer.rejection("ERR_ACCESS_DENIED", 403)
        hook.identity = answer.identity or hook.identity

    # -- creation ----------------------------------------------------------
    def create(self, req: UploadRequest,
               on_created: Optional[Callable[[UploadInfo], None]] = None) -> Outcome:
        """Create an upload, and store the request's body in it when there is one.

        A body refused as a whole (too long, failed checksum) leaves no upload
        behind; a body cut short keeps its bytes, and the error names the upload
        (``error.upload_id``) so the client can be told where to resume.
        ``on_created`` runs between the two, e.g. to send an interim response.
        """
        info = self._create(req)
        if req.body is None and not req.complete:
            return Outcome(info)
        if on_created is not None:
            on_created(info)
        append = dataclasses.replace(req, offset=0, length=None, body=req.body or RequestBody.empty())
        try:
            return self.append(info.id, append)
        except TusError as error:
            if error.error_code in REFUSED_BODY_CODES:
                self.discard(info.id)
            else:
                error.upload_id = info.id
            raise

    def _create(self, req: UploadRequest) -> UploadInfo:
        check_size(req.length, self.limits)
        self._check_reserve()
        client = self._admit(req.hook)
        info = UploadInfo(id="", length=req.length, metadata=req.metadata, concat=req.concat)
        self._pre_create(info, req.hook)
        try:
            self.store.create(info)
        except FileExistsError:
            raise TusError("ERR_HOOK_FAILED", "pre-create chose an upload ID in use") from None
        except OSError as exc:
            raise storage_error(exc) from None
        if client is not None:
            self.caps.created(client, info.id)
        self._created(info, req.hook)
        return info

    def _admit(self, hook: Optional[RequestInfo]) -> Optional[str]:
        """Count a creation against its client's caps, or refuse it (429); return
        the client's key (``None``: not counted)."""
        if not self.caps.enabled or hook is None:
            return None
        client = client_key(hook.identity, hook.address)
        if client is None:
            return None
        try:
            refusal = self.caps.admit(client)
        except OSError as exc:
            raise storage_error(exc) from None
        if refusal is not None:
            log_event("upload.refused", logging.WARNING, client=client, reason=refusal.code)
            retry = [("Retry-After", str(refusal.retry_after))] if refusal.retry_after else []
            raise TusError(refusal.code, refusal.detail, retry)
        return client

    @property
    def counts_clients(self) -> bool:
        """Whether creations need to know their client (the front door builds a
        :class:`RequestInfo` for them even without hooks)."""
        return self.caps.enabled

    def _unfinished_for_caps(self, upload_id: str) -> bool:
        """Whether an upload still counts against its client: neither complete,
        expired nor gone."""
        try:
            info = self.store.inspect(check_upload_id(upload_id))
        except (UploadNotFound, ValueError, OSError, InvalidUploadId):
            return False
        return not (info.is_complete or info.is_gone or self.store.is_expired(info, time.time()))

    def _pre_create(self, info: UploadInfo, hook: Optional[RequestInfo]) -> None:
        """Run ``pre-create``: it may refuse, or choose the ID and the metadata."""
        answer = self._blocking_hook("pre-create", info, hook)
        if answer.reject_upload or (answer.status or 0) >= 400:
            raise answer.rejection("ERR_UPLOAD_REJECTED", 400)
        if answer.change_metadata is not None:
            info.metadata = encode_metadata(answer.change_metadata)
        if answer.change_id is not None and not UPLOAD_ID.fullmatch(answer.change_id):
            raise TusError("ERR_HOOK_FAILED", "pre-create chose an invalid upload ID")
        info.id = UploadId(answer.change_id) if answer.change_id else new_upload_id()

    def _created(self, info: UploadInfo, hook: Optional[RequestInfo]) -> dict[str, str]:
        self._announce(info, hook)
        return self._finish_stored(info, hook) if info.is_complete else {}

    def _announce(self, info: UploadInfo, hook: Optional[RequestInfo]) -> None:
        self.metrics.upload_event("created")
        log_event("upload.created", upload=info.id, length=info.length, kind=info.concat)
        self._notify("post-create", info, hook)

    # -- finishing -----------------------------------------------------------
    def _finish(self, info: UploadInfo, hook: Optional[RequestInfo]) -> dict[str, str]:
        """``pre-finish`` (may refuse, and add response headers), then the finish is
        recorded and ``post-finish`` sent; returns the headers."""
        headers = self._pre_finish(info, hook)
        self._record_finish(info, hook)
        return headers

    def _finish_stored(self, info: UploadInfo, hook: Optional[RequestInfo]) -> dict[str, str]:
        """Finish an upload whose last byte this request stored.

        The bytes are safe on disk, so a failure to *record* the finish (``.info``
        cannot be replaced: a full or read-only disk) must not make the client give
        up on them: the request succeeds, and the finish is retried in the
        background, by the next request for the upload and by the cleanup pass,
        whichever comes first; ``post-finish`` is sent once, by that one."""
        headers = self._pre_finish(info, hook)
        try:
            self._record_finish(info, hook)
        except OSError as exc:
            log_event("upload.finish_deferred", logging.WARNING, upload=info.id, error=exc.strerror)
            self.retrier.schedule(f"the finish of {info.id}",
                                  lambda: self._retry_finish(UploadId(info.id), hook))
        return headers

    def _pre_finish(self, info: UploadInfo, hook: Optional[RequestInfo]) -> dict[str, str]:
        """``pre-finish``: its headers, or its refusal (remembered, so that only a
        client's request asks the application again)."""
        answer = self._blocking_hook("pre-finish", info, hook)
        if (answer.status or 0) >= 400:
            try:
                self.store.mark_refused(info)
            except OSError as exc:
                log.warning("cannot record that %s was refused: %s", info.id, exc.strerror)
            raise answer.rejection("ERR_UPLOAD_REJECTED", 400)
        return answer.headers

    def _record_finish(self, info: UploadInfo, hook: Optional[RequestInfo]) -> None:
        """Mark the upload finished, then ``post-finish``.  Call under the lock, with
        ``info`` read under it: that makes ``post-finish`` happen once."""
        try:
            self.store.mark_finished(info)
        except OSError:
            if not self._finished_on_disk(info.id):
                raise
            info.finished = True  # the new .info is in place; only a later step failed
        self.metrics.upload_event("finished")
        log_event("upload.finished", upload=info.id, length=info.length)
        self._notify("post-finish", info, hook)

    def _finished_on_disk(self, upload_id: str) -> bool:
        """Whether ``.info`` says finished, whatever the write that failed said."""
        try:
            return self.store.inspect(upload_id).finished
        except (OSError, UploadNotFound, ValueError):
            return False

    def _retry_finish(self, upload_id: UploadId, hook: Optional[RequestInfo]) -> bool:
        """One background attempt at recording a finish (``pre-finish`` passed);
        done once the upload is finished, by this or by any request, or gone."""
        try:
            with self.locker.hold(upload_id, 0):
                info = self.store.get(upload_id)
                finishing = info.is_complete and not info.finished
                if finishing:
                    self._record_finish(info, hook)
        except (UploadNotFound, UploadGone):
            return True
        except LockTimeout:
            return False  # a request holds it: it finishes the upload itself if it can
        except OSError as exc:
            log.warning("finishing %s failed again: %s", upload_id, exc.strerror)
            return False
        if finishing and info.concat == "partial":  # finals wait for it
            self._assemble_waiting(upload_id, hook)
        return True

    def _is_unfinished(self, info: UploadInfo) -> bool:
        """Complete, but its finish was never recorded nor refused."""
        return info.is_complete and not (info.finished or info.finish_refused or info.is_gone)

    # -- concatenation -------------------------------------------------------
    def concatenate(self, part_ids: list[str], req: UploadRequest) -> Outcome:
        """A final upload of ``part_ids``, in order, created at once even while parts
        are unfinished (concatenation-unfinished): it assembles itself as they
        finish, and is finished (``post-finish``, once) with the last of them."""
        check_parts(part_ids, self.config.max_concat_parts)
        self._admit(req.hook)
        parts = [self._part(part_id) for part_id in part_ids]
        known = [part.length for part in parts if part.length is not None]
        check_size(sum(known), self.limits)  # what is known must fit already
        self._check_reserve(sum(known))
        info = UploadInfo(id="", length=sum(known) if len(known) == len(parts) else None,
                          metadata=req.metadata, concat="final", parts=[part.id for part in parts])
        self._pre_create(info, req.hook)
        try:
            self.store.create(info)
            if not all(part.finished for part in parts):
                for part_id in dict.fromkeys(info.parts):
                    self.store.link_final(part_id, info.id)
        except FileExistsError:
            raise TusError("ERR_HOOK_FAILED", "pre-create chose an upload ID in use") from None
        except OSError as exc:
            self._forget_final(info)
            raise storage_error(exc) from None
        try:
            with self.locked(info.id) as current:
                assembly = self._assemble_locked(current, req.hook, created=True, finish=False)
                self._announce(current, req.hook)  # post-create sees what it holds already
                headers = self._finish_stored(current, req.hook) if assembly.complete else {}
        except TusError as error:
            if error.error_code != "ERR_UPLOAD_LOCKED":
                raise
            self._announce(info, req.hook)
            return Outcome(self.get(info.id))  # a part's request is assembling it already
        return Outcome(current, headers)

    def _check_reserve(self, needed: int = 0) -> None:
        """New uploads wait while the disk is below ``disk_reserve`` (after storing
        the ``needed`` bytes a final copies at once), so that the uploads already
        running can finish: an append is never refused for the reserve."""
        reserve = self.config.disk_reserve
        if not reserve:
            return
        try:
            refusal = reserve.refusal(DiskSpace.of(self.store.directory), needed)
        except OSError as exc:
            raise storage_error(exc) from None
        if refusal is not None:  # the request's log line names the code
            raise TusError("ERR_DISK_RESERVE", refusal)

    def _part(self, part_id: str) -> UploadInfo:
        """A partial upload, finished or not, for a concatenation."""
        try:
            part = self.store.get(check_upload_id(part_id))
        except (UploadNotFound, UploadGone, InvalidUploadId):
            raise TusError("ERR_INVALID_CONCAT", f"unknown upload {part_id[:40]!r}") from None
        if part.concat != "partial":
            raise TusError("ERR_INVALID_CONCAT", f"{part_id} is not a partial upload")
        return part

    def _part_state(self, part_id: str) -> Part:
        """A part as the assembly rule sees it, read without its lock: a finished
        part's bytes never change (a finish is recorded after its last chunk was
        accepted); a terminated one keeps its length in its tombstone.  Only a part
        positively gone ends a final: one whose ``.info`` is there but cannot be
        read now (a shared filesystem between two hosts' writes) is waited for."""
        try:
            part = self.store.inspect(check_upload_id(part_id))
        except (UploadNotFound, InvalidUploadId):
            return Part(None, False, gone=not self.store.exists(part_id))
        gone = part.is_gone or self.store.is_expired(part, time.time())
        return Part(part.length, part.finished, gone)

    def _assemble_locked(self, info: UploadInfo, hook: Optional[RequestInfo], *,
                         created: bool = False, finish: bool = True) -> Assembly:
        """Copy into the final what its finished parts hold, declare its length once
        known, and (with ``finish``) finish it when no part is left to wait for.
        Call with its lock.  A final that can no longer complete is terminated
        (410), or, in the request that creates it, refused (400) and removed."""
        if info.finished or info.is_gone:
            return Assembly()
        states = [self._part_state(part_id) for part_id in info.parts]
        try:
            step = plan_final(info.offset, states)
        except ValueError as exc:  # a copied part cannot be read now: another time
            log.warning("final upload %s not assembled now: %s", info.id, exc)
            return Assembly()
        if step.broken:
            self._give_up_final(info, created)
        for index in step.ready:
            self._copy_part(info, info.parts[index], states[index].length or 0, created)
        copied = step.copied + len(step.ready)
        for part_id in set(info.parts[:copied]) - set(info.parts[copied:]):
            self.store.unlink_final(part_id, info.id)
        if info.length is None and step.length is not None:
            self._declare_final_length(info, step.length, created)
        if not step.completes(len(info.parts)):
            return Assembly(waiting_for=info.parts[copied])
        return Assembly(self._finish_stored(info, hook) if finish else {}, complete=True)

    def _copy_part(self, info: UploadInfo, part_id: str, length: int, created: bool) -> None:
        try:
            self.store.append_part(info, part_id, length)
        except FileNotFoundError:  # terminated after it was read
            self._give_up_final(info, created)
        except OSError as exc:
            raise storage_error(exc) from None

    def _declare_final_length(self, info: UploadInfo, length: int, created: bool) -> None:
        """The length, once every part's is known; past ``max_size`` the final can
        never be accepted."""
        try:
            check_size(length, self.limits)
        except TusError:
            if created:
                raise
            log.error("final upload %s would be %d bytes, over max_size: terminated", info.id, length)
            self._end_final(info, "too-large")
            raise TusError("ERR_UPLOAD_GONE") from None
        self.store.declare_length(info, length)

    def _give_up_final(self, info: UploadInfo, created: bool) -> None:
        """A part the final still needs is gone: the final can never complete."""
        if created:
            self._forget_final(info)
            raise TusError("ERR_INVALID_CONCAT", "a part was terminated meanwhile")
        self._end_final(info, "part-gone")
        raise TusError("ERR_UPLOAD_GONE", "a part it needs was terminated")

    def _end_final(self, info: UploadInfo, reason: str) -> None:
        """Terminate a final that cannot complete (call with its lock)."""
        self._release_parts(info)
        self.store.terminate(info.id)
        self.metrics.upload_event("terminated")
        log_event("upload.terminated", upload=info.id, offset=info.offset, reason=reason)
        self._notify("post-terminate", info, None)

    def _forget_final(self, info: UploadInfo) -> None:
        """Remove every trace of a final its creation request could not complete."""
        self._release_parts(info)
        self.store.forget(info.id)

    def _release_parts(self, info: UploadInfo) -> None:
        for part_id in dict.fromkeys(info.parts):
            self.store.unlink_final(part_id, info.id)

    def _assemble_waiting(self, part_id: str, hook: Optional[RequestInfo]) -> None:
        """Assemble every final waiting for ``part_id``, which just finished.  Never
        fails the request that finished it: a final it cannot assemble now (locked,
        gone, storage) is assembled by whoever holds it, or at its next ``HEAD``."""
        for final_id in self.store.finals_waiting_for(part_id):
            self.assemble(final_id, hook)

    def assemble(self, final_id: str, hook: Optional[RequestInfo] = None) -> None:
        """Assemble one final as far as its parts allow, quietly.

        After letting go of the final's lock, the part it still waits for is looked
        at once more: if that part finished meanwhile, its own request may have
        given up waiting for the lock (``lock_timeout``), so this one goes on."""
        waiting_for: Optional[str] = None
        while True:
            try:
                with self.locked(final_id) as info:
                    waiting_for = self._assemble_locked(info, hook).waiting_for
            except (TusError, OSError) as exc:
                log.info("final upload %s not assembled now: %s", final_id, exc)
                return
            if waiting_for is None or not self._part_state(waiting_for).finished:
                return

    def _cancel_finals_waiting_for(self, part_id: str) -> None:
        """A part was terminated or expired: the finals still waiting for its bytes
        can never complete, and are terminated too (410)."""
        for final_id in self.store.finals_waiting_for(part_id):
            try:
                with self.locked(final_id) as info:
                    if not (info.finished or info.is_gone):
                        self._end_final(info, "part-gone")
            except (TusError, OSError) as exc:  # gone already, or an assembly holds it
                log.info("final upload %s not cancelled now: %s", final_id, exc)
            self.store.unlink_final(part_id, final_id)

    def check_size(self, length: Optional[int]) -> None:
        check_size(length, self.limits)

    def discard(self, upload_id: str) -> None:
        """Remove a just-created upload whose creation body was refused."""
        with self.locker.hold(check_upload_id(upload_id), self.config.lock_timeout):
            self.store.forget(upload_id)

    # -- appending ---------------------------------------------------------
    def append(self, upload_id: str, req: UploadRequest) -> Outcome:
        """Append the request's body at ``req.offset`` under the upload's lock.

        Fires ``post-receive`` while bytes arrive (its answer can stop the upload),
        and ``pre-finish``/``post-finish`` when this request completes the upload.
        A storage failure (507 included) says where the upload stands, so the
        client resumes from there without asking.
        """
        try:
            return self._append(upload_id, req)
        except OSError as exc:
            raise self._at_offset(storage_error(exc), upload_id) from None
        except TusError as error:
            if error.code == 507 or error.error_code == "ERR_STORAGE":
                self._at_offset(error, upload_id)
            raise

    def _at_offset(self, error: TusError, upload_id: str) -> TusError:
        """``error`` saying where the upload now stands, as read from the disk."""
        if error.offset is None:
            try:
                error.offset = self.store.get(check_upload_id(upload_id)).offset
            except (StoreError, InvalidUploadId, OSError):
                pass
        return error

    def _append(self, upload_id: str, req: UploadRequest) -> Outcome:
        body = req.body or RequestBody.empty()
        started = time.monotonic()
        with self.locked(upload_id, body) as info, self.metrics.writing():
            start = info.offset
            try:
                self._append_locked(info, body, req)
            finally:
                self.metrics.received(info.offset - start)
                if info.offset != start:
                    self._notify("post-receive", info, req.hook)
            log_event("upload.received", upload=info.id, offset=start, new_offset=info.offset,
                      bytes=info.offset - start, seconds=round(time.monotonic() - started, 3))
            finishing = info.is_complete and not info.finished
            headers = self._finish_stored(info, req.hook) if finishing else {}
        if finishing and info.concat == "partial" and info.finished:  # finals wait for it
            self._assemble_waiting(info.id, req.hook)
        return Outcome(info, headers)

    def _append_locked(self, info: UploadInfo, body: RequestBody, req: UploadRequest) -> None:
        upload = Upload(info.offset, info.length, is_final=info.concat == "final")
        plan = plan_append(upload, Append(req.offset, body.length, req.length, req.complete), self.limits)
        source, verify = self._source(info, body, req, plan)
        self._write(info, source, plan.limit, verify, req.offset)
        if body.is_chunked and body.has_more():
            self.store.truncate(info, req.offset)
            raise TusError(plan.overflow, f"body is larger than the {plan.limit} bytes allowed")
        if verify is None and req.late_checksum is not None:
            self._refuse_unannounced(info, req.late_checksum, req.offset)
        length = plan.length
        if req.complete and length is None:  # a chunked body that ends the upload
            length = settle_length(upload, info.offset, self.limits)
        if info.length is None and length is not None:
            self._declare_length(info, length)  # only once the body was accepted

    def _declare_length(self, info: UploadInfo, length: int) -> None:
        """Record a length the request declared.  When that fails the bytes are
        kept all the same: the client is told to come back (503), and its resume
        declares the length again without sending a byte."""
        try:
            self.store.declare_length(info, length)
        except OSError as exc:
            log.error("cannot record the length of %s: %s", info.id, exc.strerror)
            raise TusError("ERR_NOT_RECORDED", f"upload is at {info.offset}",
                           [("Retry-After", str(SHUTDOWN_RETRY_AFTER))], offset=info.offset) from None

    def _refuse_unannounced(self, info: UploadInfo, late: LateChecksum, start: int) -> None:
        """A checksum that followed a body nobody hashed (it was not announced) is
        refused, and the chunk with it: the client must not think it verified."""
        try:
            late.read()
        except TusError:
            self.store.truncate(info, start)
            raise

    def _source(self, info: UploadInfo, body: RequestBody, req: UploadRequest,
                plan: AppendPlan) -> tuple[Source, Optional[Callable[[], Optional[str]]]]:
        """What the store copies from: the body, hashed for its checksums, reported
        to ``post-receive`` hooks; and the checksums' verdict for the store."""
        source: Source = body
        verify = None
        late = req.late_checksum
        algorithms = {checksum.algorithm for checksum in req.checksums}
        algorithms.update(late.algorithms if late is not None else ())
        if algorithms:
            hashing = _HashingReader(body, algorithms)
            source, verify = hashing, hashing.verifier(req.checksums, late, plan.overflow)
        if self.hooks.wants("post-receive"):
            source = _ProgressReader(source, self.config.hooks_progress_interval,
                                     lambda received: self._progress(info, received, body, req.hook))
        return source, verify

    def _progress(self, info: UploadInfo, received: int, body: RequestBody,
                  hook: Optional[RequestInfo]) -> None:
        """A throttled ``post-receive``; ``StopUpload`` in its answer ends the request."""
        snapshot = dataclasses.replace(info, offset=info.offset + received)

        def on_answer(answer: HookAnswer) -> None:
            if answer.stop_upload:
                body.interrupt("stopped")
        self._notify("post-receive", snapshot, hook, on_answer)

    def _write(self, info: UploadInfo, source: Source, limit: int,
               verify: Optional[Callable[[], Optional[str]]], offset: int) -> None:
        start = info.offset
        try:
            self.store.append(info, source, limit, verify)
        except OffsetMismatch as exc:
            raise TusError("ERR_MISMATCHED_OFFSET", f"upload is at {exc.actual}",
                           expected_offset=exc.actual, provided_offset=offset) from None
        except ChunkRefused as exc:
            raise TusError(exc.reason) from None
        except StorageFull:
            raise TusError("ERR_INSUFFICIENT_STORAGE") from None
        except StorageFailed as exc:
            log.error("storage error on %s: %s", info.id, exc)
            raise TusError("ERR_STORAGE") from None
        except BodyInterrupted as exc:
            raise self._cut_short(_INTERRUPTION_CODES[exc.reason], info, start) from None
        except BodyTooSlow:
            raise self._cut_short("ERR_BODY_TOO_SLOW", info, start) from None
        except BodyTimeout:
            raise self._cut_short("ERR_REQUEST_TIMEOUT", info, start) from None
        except ClientGone:
            raise self._cut_short("ERR_CLIENT_GONE", info, start) from None
        except BodyMalformed:
            raise self._cut_short("ERR_MALFORMED_BODY", info, start) from None

    def _cut_short(self, code: str, info: UploadInfo, start: int) -> TusError:
        """The error for a body that ended early; every byte that arrived is kept.
        A shutdown says when to come back (the restarted server)."""
        try:
            info.offset = self.store.get(info.id).offset
        except (UploadNotFound, UploadGone):
            info.offset = start
        log_event("upload.interrupted", upload=info.id, reason=code, offset=start,
                  new_offset=info.offset, bytes=info.offset - start)
        retry = [("Retry-After", str(SHUTDOWN_RETRY_AFTER))] if code == "ERR_SERVER_SHUTDOWN" else []
        return TusError(code, f"kept {info.offset - start} bytes, upload is at {info.offset}", retry)

    # -- termination and download ------------------------------------------
    def terminate(self, upload_id: str, req: UploadRequest) -> None:
        with self.locked(upload_id) as info:
            answer = self._blocking_hook("pre-terminate", info, req.hook)
            if answer.reject_termination or (answer.status or 0) >= 400:
                raise answer.rejection("ERR_TERMINATION_REJECTED", 400)
            try:
                self.store.terminate(info.id)
            except OSError as exc:
                raise storage_error(exc) from None
            if info.concat == "final":
                self._release_parts(info)
        self.metrics.upload_event("terminated")
        log_event("upload.terminated", upload=upload_id, offset=info.offset)
        self._notify("post-terminate", info, req.hook)
        self._cancel_finals_waiting_for(info.id)

    def invalidate(self, upload_id: str) -> None:
        """Deactivate an upload a request tried to take past its length (the IETF
        draft's rule from interop 9): it answers as a terminated one from now on.
        No hook can refuse it, as none can refuse an expiry."""
        with self.locked(upload_id) as info:
            try:
                self.store.terminate(info.id)
            except OSError as exc:
                raise storage_error(exc) from None
        self.metrics.upload_event("invalidated")
        log_event("upload.invalidated", upload=upload_id, offset=info.offset)
        self._cancel_finals_waiting_for(info.id)

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

        Returns ``(name, action)`` pairs, action ``expired``, ``forgotten``,
        ``finished`` (complete, but its finish was never recorded: the disk failed
        at the time, or the process died) or ``leftover`` (a file a crash left
        behind, untouched for an hour).
        """
        now = time.time()
        actions = [(name, "leftover")
                   for name in self.store.remove_leftovers(now - 3600, dry_run=dry_run)]
        if not dry_run:
            self.caps.sweep()
        for upload_id in self.store.iter_ids():
            try:
                info = self.store.inspect(upload_id)
            except (UploadNotFound, ValueError):
                continue
            if self.store.is_expired(info, now):
                action = "expired"
            elif self.store.is_forgettable(info, now):
                action = "forgotten"
            elif self._is_unfinished(info):
                action = "finished"
            else:
                if not dry_run and info.concat == "final" and not (info.finished or info.is_gone):
                    self.assemble(upload_id)  # catch up after a crash; ends one whose parts are gone
                continue
            if not dry_run and not self._apply_cleanup(upload_id, action, now):
                continue
            actions.append((upload_id, action))
        return actions

    def _apply_cleanup(self, upload_id: str, action: str, now: float) -> bool:
        try:
            with self.locker.hold(upload_id, 0):
                info = self.store.inspect(upload_id)  # re-check under the lock
                if not self._cleanup_locked(info, action, now):
                    return False
        except (LockTimeout, UploadNotFound):
            return False
        # After letting go, one lock at a time: finals waiting for this part.
        if action == "finished" and info.concat == "partial":
            self._assemble_waiting(upload_id, None)
        elif action == "expired":
            self._cancel_finals_waiting_for(upload_id)
        return True

    def _cleanup_locked(self, info: UploadInfo, action: str, now: float) -> bool:
        """Apply one cleanup action to ``info``, read again under its lock."""
        if action == "forgotten":
            if not self.store.is_forgettable(info, now):
                return False
            self.store.forget(info.id)
            return True
        if action == "finished":
            return self._is_unfinished(info) and self._finish_quietly(info)
        if not self.store.is_expired(info, now):
            return False
        self.store.terminate(info.id, now=now)
        self.metrics.upload_event("expired")
        log_event("upload.expired", upload=info.id, offset=info.offset)
        return True

    def _finish_quietly(self, info: UploadInfo) -> bool:
        """Finish an upload no request is waiting for; a failure is only logged."""
        try:
            self._finish(info, None)
            return True
        except (TusError, OSError) as exc:
            log.warning("finishing %s in the cleanup pass failed: %s", info.id, exc)
            return False


#: Errors that refuse a creation body as a whole: no upload is left behind.
REFUSED_BODY_CODES = frozenset({"ERR_SIZE_EXCEEDED", "ERR_MAX_SIZE_EXCEEDED", "ERR_CHECKSUM_MISMATCH",
                                "ERR_APPEND_TOO_LARGE", "ERR_INCONSISTENT_LENGTH",
                                "ERR_DIGEST_MISMATCH", "ERR_CHECKSUM_TWICE",
                                "ERR_TRAILER_NOT_ANNOUNCED", "ERR_TRAILER_MISSING",
                                "ERR_INVALID_CHECKSUM", "ERR_UNSUPPORTED_CHECKSUM"})


def storage_error(exc: OSError) -> TusError:
    """The client's view of a failed file operation: 507 when the disk is full."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TusError("ERR_INSUFFICIENT_STORAGE")
    log.error("storage error: %s", exc)
    return TusError("ERR_STORAGE")


#: Seconds a client cut by a shutdown is told to wait: a restart takes about that.
SHUTDOWN_RETRY_AFTER = 1

_INTERRUPTION_CODES = {"handover": "ERR_UPLOAD_INTERRUPTED", "shutdown": "ERR_SERVER_SHUTDOWN",
                       "stopped": "ERR_UPLOAD_STOPPED"}


class _ProgressReader:
    """Calls ``report(received)`` at most every ``interval`` seconds while reading."""

    def __init__(self, source: Source, interval: float, report: Callable[[int], None]) -> None:
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
    """Wraps a body so its bytes are hashed as they stream to disk, once per
    algorithm however many digests name it."""

    def __init__(self, body: RequestBody, algorithms: Iterable[str]) -> None:
        self._body = body
        self._hashers = {algorithm: new_hasher(algorithm) for algorithm in algorithms}

    def read(self, size: int) -> bytes:
        data = self._body.read(size)
        for hasher in self._hashers.values():
            hasher.update(data)
        return data

    def verifier(self, expected: Iterable[Checksum], late: Optional[LateChecksum],
                 overflow: str) -> Callable[[], Optional[str]]:
        """The store's ``verify``: the error code that refuses the chunk, or ``None``
        (a late checksum that cannot be used raises its own refusal)."""
        def verify() -> Optional[str]:
            if self._body.is_chunked and self._body.has_more():
                return overflow
            arrived = late.read() if late is not None else None
            for checksum in [*expected, *([arrived] if arrived else [])]:
                hasher = self._hashers.get(checksum.algorithm)
                if hasher is None or not hmac.compare_digest(hasher.digest(), checksum.digest):
                    return checksum.mismatch
            return None
        return verify
