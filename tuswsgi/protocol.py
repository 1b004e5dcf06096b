"""tus 1.0.0 header values: parsing and serialising, with no I/O.

Every function here takes header text and returns Python values, or raises
:class:`~tuswsgi.errors.TusError` with the code that tells the client what was
wrong.  Keeping this pure lets the rules be tested as plain tables.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from typing import Optional, Protocol

from .errors import TusError

TUS_VERSION = "1.0.0"
SUPPORTED_VERSIONS = (TUS_VERSION,)
PATCH_CONTENT_TYPE = "application/offset+octet-stream"

#: At most 19 digits keeps every value below 2**63, the largest file offset.
_UINT = re.compile(r"[0-9]{1,19}")
_METADATA_KEY = re.compile(r"[!-~]+")  # visible ASCII; commas are excluded below
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")

Metadata = list[tuple[str, Optional[str]]]


def parse_uint(value: Optional[str], error_code: str) -> Optional[int]:
    """A plain non-negative decimal integer, or ``None`` when the header is absent."""
    if value is None:
        return None
    if not _UINT.fullmatch(value):
        raise TusError(error_code, f"got {value[:40]!r}")
    return int(value)


def parse_metadata(value: Optional[str], max_size: int) -> Metadata:
    """Parse ``Upload-Metadata`` into ``[(key, base64 value or None), ...]``.

    The base64 text is kept as sent so that HEAD can echo it exactly.
    """
    if value is None or value.strip() == "":
        return []
    if max_size and len(value) > max_size:
        raise TusError("ERR_METADATA_TOO_LARGE", f"{len(value)} bytes, limit {max_size}")
    pairs: Metadata = []
    seen: set[str] = set()
    for item in value.split(","):
        parts = item.strip().split(" ")
        if len(parts) > 2:
            raise TusError("ERR_INVALID_METADATA", "a pair has more than one space")
        key = parts[0]
        if not _METADATA_KEY.fullmatch(key):
            raise TusError("ERR_INVALID_METADATA", "keys must be non-empty visible ASCII")
        if key in seen:
            raise TusError("ERR_INVALID_METADATA", f"key {key!r} appears twice")
        encoded = parts[1] if len(parts) == 2 else None
        if encoded is not None and not _BASE64.fullmatch(encoded):
            raise TusError("ERR_INVALID_METADATA", f"value of {key!r} is not valid base64")
        seen.add(key)
        pairs.append((key, encoded))
    return pairs


def serialize_metadata(pairs: Metadata) -> str:
    return ",".join(key if value is None else f"{key} {value}" for key, value in pairs)


def decode_metadata(pairs: Metadata) -> dict[str, str]:
    """Decoded values as text (invalid UTF-8 replaced), for hooks and file names."""
    return {key: base64.b64decode(value or "").decode("utf-8", "replace") for key, value in pairs}


def encode_metadata(values: dict[str, str]) -> Metadata:
    return [(key, base64.b64encode(text.encode()).decode("ascii")) for key, text in values.items()]


def parse_concat(value: Optional[str]) -> tuple[Optional[str], list[str]]:
    """``Upload-Concat``: ``("partial", [])``, ``("final", [url, ...])`` or ``(None, [])``."""
    if value is None:
        return None, []
    if value == "partial":
        return "partial", []
    kind, _, rest = value.partition(";")
    urls = rest.split()
    if kind != "final" or not urls:
        raise TusError("ERR_INVALID_CONCAT", "expected 'partial' or 'final;<url> <url> ...'")
    return "final", urls


def is_media_type(value: str) -> bool:
    return bool(_MEDIA_TYPE.fullmatch(value))


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    """CRC-32 with the hashlib interface; the digest is 4 bytes, big-endian."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


_DIGEST_SIZES = {"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64, "crc32": 4}


def new_hasher(algorithm: str) -> Hasher:
    return _Crc32() if algorithm == "crc32" else hashlib.new(algorithm)


def parse_checksum(value: Optional[str], allowed: tuple[str, ...]) -> Optional[tuple[str, bytes]]:
    """``Upload-Checksum: <algorithm> <base64 digest>`` → ``(algorithm, digest)``.

    A digest of the wrong length for its algorithm is a 460, not a 400: the
    header is well-formed, and no body can match it (tus's conformance suites
    expect the mismatch)."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in allowed:
        raise TusError("ERR_UNSUPPORTED_CHECKSUM", f"supported: {','.join(allowed)}")
    if not encoded.strip():
        raise TusError("ERR_INVALID_CHECKSUM", "the digest is missing")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TusError("ERR_INVALID_CHECKSUM", "digest is not valid base64") from None
    if len(digest) != _DIGEST_SIZES[algorithm]:  # well-formed, but no body can match it
        raise TusError("ERR_CHECKSUM_MISMATCH",
                       f"a {algorithm} digest has {_DIGEST_SIZES[algorithm]} bytes, not {len(digest)}")
    return algorithm, digest


def check_version(value: Optional[str]) -> None:
    if value not in SUPPORTED_VERSIONS:
        raise TusError("ERR_UNSUPPORTED_VERSION", headers=[("Tus-Version", ",".join(SUPPORTED_VERSIONS))])
