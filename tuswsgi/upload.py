"""An upload as every layer sees it: its ID and its state.  No I/O, no HTTP.

The front-ends read it to answer, the service changes it, the store keeps it; so
it lives apart from all three, and a front-end never imports the store.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional

#: Generated IDs are 32 hex digits; hooks may choose others of this shape.  No dot,
#: so no ID can name a sidecar file, and no slash, so no ID can leave the directory.
UPLOAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class InvalidUploadId(ValueError):
    """Text that is not an upload ID; no path is ever built from it."""


class UploadId(str):
    """An ID that passed :data:`UPLOAD_ID`, so it is checked once per request."""

    __slots__ = ()


def check_upload_id(upload_id: str) -> UploadId:
    if isinstance(upload_id, UploadId):
        return upload_id
    if not UPLOAD_ID.fullmatch(upload_id):
        raise InvalidUploadId(upload_id[:40])
    return UploadId(upload_id)


def new_upload_id() -> UploadId:
    return UploadId(secrets.token_hex(16))


@dataclass
class UploadInfo:
    """What is known about an upload.  ``offset`` and ``modified`` come from the
    data file, everything else from ``.info``."""

    id: str
    length: Optional[int]
    metadata: list[tuple[str, Optional[str]]] = field(default_factory=list)
    created: float = 0.0
    concat: Optional[str] = None  # "partial", "final" or None
    parts: list[str] = field(default_factory=list)
    offset: int = 0
    modified: float = 0.0
    gone_since: Optional[float] = None
    #: Set once the application accepted the finished upload (pre-finish passed).
    finished: bool = False
    #: Set when pre-finish refused it: only a client's request asks again.
    finish_refused: bool = False
    #: When an unfinished upload expires (``expiration`` after its last byte).
    expires: Optional[float] = None

    @property
    def is_deferred(self) -> bool:
        return self.length is None

    @property
    def is_complete(self) -> bool:
        return self.length is not None and self.offset >= self.length

    @property
    def is_gone(self) -> bool:
        return self.gone_since is not None

    def expires_at(self, expiration: float) -> Optional[float]:
        """The one rule for expiry: ``expiration`` seconds after the upload was
        created or last received a byte; finished and gone uploads never expire,
        nor do final uploads of a concatenation: they wait for their parts, which
        expire (and take the final with them) if they stop receiving bytes."""
        if not expiration or self.is_complete or self.is_gone or self.concat == "final":
            return None
        return max(self.created, self.modified) + expiration

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "length": self.length, "metadata": self.metadata,
                "created": self.created, "concat": self.concat, "parts": self.parts,
                "gone_since": self.gone_since, "finished": self.finished,
                "finish_refused": self.finish_refused}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> UploadInfo:
        return cls(id=UploadId(record["id"]), length=record["length"],
                   metadata=[(k, v) for k, v in record["metadata"]],
                   created=record["created"], concat=record.get("concat"),
                   parts=list(record.get("parts") or ()), gone_since=record.get("gone_since"),
                   finished=bool(record.get("finished")),
                   finish_refused=bool(record.get("finish_refused")))
