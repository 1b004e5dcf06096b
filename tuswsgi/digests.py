"""``Content-Digest`` and ``Repr-Digest`` (RFC 9530) as the IETF draft's requests
carry them: parsing and checking, with no I/O.

A field is a structured-field Dictionary of byte sequences, ``sha-256=:<base64>:``.
tuswsgi verifies the two algorithms RFC 9530 does not deprecate; other keys are
ignored while one it knows is there, and refused when none is (400, with the
problem type of draft-ietf-httpapi-digest-fields-problem-types).  A value of the
wrong length for its algorithm cannot be a digest at all: refused likewise.
"""

from __future__ import annotations

import base64
import binascii
import re

from .errors import TusError

#: RFC 9530 algorithm keys → (hashlib name, digest size in bytes).
ALGORITHMS = {"sha-256": ("sha256", 32), "sha-512": ("sha512", 64)}
#: What ``Want-Content-Digest`` / ``Want-Repr-Digest`` say this server verifies.
WANTED = "sha-256=10, sha-512=5"

_KEY = re.compile(r"[a-z*][a-z0-9_.*-]{0,63}")
_BYTES = re.compile(r":([A-Za-z0-9+/]*={0,2}):")


def parse_digests(field: str, value: str) -> list[tuple[str, bytes]]:
    """``field``'s digests this server can verify, as ``[(hashlib name, digest)]``."""
    members = [_member(field, item) for item in value.split(",")]
    known = [(ALGORITHMS[key][0], digest) for key, digest in members if key in ALGORITHMS]
    if not known:
        raise TusError("ERR_UNSUPPORTED_DIGEST", f"{field} names none of {', '.join(ALGORITHMS)}",
                       headers=[(f"Want-{field}", WANTED)])
    for key, digest in members:
        if key in ALGORITHMS and len(digest) != ALGORITHMS[key][1]:
            raise TusError("ERR_INVALID_DIGEST", f"a {key} digest in {field} has "
                           f"{ALGORITHMS[key][1]} bytes, not {len(digest)}")
    return known


def _member(field: str, item: str) -> tuple[str, bytes]:
    """One ``key=:base64:`` member; parameters (``;...``) are allowed and ignored."""
    key, equals, rest = item.strip().partition("=")
    value = rest.split(";", 1)[0].strip()
    match = _BYTES.fullmatch(value)
    if not equals or not _KEY.fullmatch(key) or match is None:
        raise TusError("ERR_MALFORMED_DIGEST", f"{field}: {item.strip()[:60]!r}")
    try:
        return key, base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise TusError("ERR_MALFORMED_DIGEST", f"{field}: {key} is not base64") from None
