"""The rules of an append, decided from plain values: no I/O, no HTTP, no clock.

Where every upload rule meets (offsets, final uploads, deferred and declared
lengths, ``Upload-Complete``, ``max_size``, ``max_append_size``), one pure
function says how many bytes the request may add and what the upload's length
becomes, or refuses with the error code a client is told.  The service then only
writes.  Tested as a table, like :mod:`tuswsgi.protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .errors import TusError

#: The room of an upload with neither a length nor a ``max_size``.
UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class Limits:
    """The server's size limits; 0 means none."""

    max_size: int = 0
    max_append_size: int = 0


@dataclass(frozen=True)
class Upload:
    """What the plan needs to know of the upload."""

    offset: int
    length: Optional[int]
    is_final: bool = False


@dataclass(frozen=True)
class Append:
    """What the request asks: bytes at ``offset``; ``body_length`` is ``None`` for
    a chunked body; ``declared_length`` a length sent now; ``complete`` that this
    body ends the upload (the IETF draft's ``Upload-Complete: ?1``)."""

    offset: int
    body_length: Optional[int]
    declared_length: Optional[int] = None
    complete: bool = False


@dataclass(frozen=True)
class AppendPlan:
    """``limit``: the most bytes the request may add; ``length``: the upload's
    length once the body is accepted (``None`` while still deferred);
    ``overflow``: the code refusing a chunked body that goes past ``limit``."""

    limit: int
    length: Optional[int]
    overflow: str


def plan_append(upload: Upload, append: Append, limits: Limits) -> AppendPlan:
    """Decide an append, or raise the :class:`TusError` that refuses it."""
    if upload.is_final:
        raise TusError("ERR_UPLOAD_IS_FINAL")
    if append.offset != upload.offset:
        raise TusError("ERR_MISMATCHED_OFFSET", f"upload is at {upload.offset}, request says "
                       f"{append.offset}", expected_offset=upload.offset, provided_offset=append.offset)
    length = upload.length
    if append.declared_length is not None:
        length = settle_length(upload, append.declared_length, limits)
    if append.complete and append.body_length is not None:
        final = append.offset + append.body_length
        if length is not None and final != length:
            raise TusError("ERR_INCONSISTENT_LENGTH", f"length is {length}, body ends at {final}")
        length = settle_length(upload, final, limits)
    room = room_left(upload.offset, length, limits)
    cap = limits.max_append_size
    if cap and append.body_length is not None and append.body_length > cap:
        raise TusError("ERR_APPEND_TOO_LARGE", f"{append.body_length} bytes sent, {cap} allowed")
    if append.body_length is not None and append.body_length > room:
        raise TusError("ERR_SIZE_EXCEEDED" if length is not None else "ERR_MAX_SIZE_EXCEEDED",
                       f"{append.body_length} bytes sent, {room} allowed")
    limit = min(room, cap) if cap else room
    return AppendPlan(limit, length, "ERR_APPEND_TOO_LARGE" if cap and limit == cap else "ERR_SIZE_EXCEEDED")


def settle_length(upload: Upload, length: int, limits: Limits) -> int:
    """A length the request gives the upload: it may not change a known one, fall
    short of the bytes received, or pass ``max_size``."""
    if upload.length is not None:
        if length != upload.length:
            raise TusError("ERR_LENGTH_ALREADY_SET")
        return length
    if length < upload.offset:
        raise TusError("ERR_LENGTH_TOO_SMALL", f"{upload.offset} bytes already received")
    check_size(length, limits)
    return length


def check_parts(part_ids: Sequence[str], most: int) -> None:
    """A final names each partial once, and at most ``most`` of them (0: any
    number): a short request must not make the server copy one part over and over."""
    if most and len(part_ids) > most:
        raise TusError("ERR_CONCAT_TOO_MANY_PARTS", f"{len(part_ids)} named, at most {most}")
    seen: set[str] = set()
    for part_id in part_ids:
        if part_id in seen:
            raise TusError("ERR_CONCAT_REPEATED_PART", f"{part_id[:40]!r} is named twice")
        seen.add(part_id)


def check_size(length: Optional[int], limits: Limits) -> None:
    if length is not None and limits.max_size and length > limits.max_size:
        raise TusError("ERR_MAX_SIZE_EXCEEDED", f"limit {limits.max_size} bytes")


def room_left(offset: int, length: Optional[int], limits: Limits) -> int:
    if length is not None:
        return length - offset
    if limits.max_size:
        return limits.max_size - offset
    return UNBOUNDED
