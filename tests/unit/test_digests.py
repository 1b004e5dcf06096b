"""RFC 9530 digest fields as the draft's requests carry them: a plain table."""

import base64

import pytest

from tuswsgi.digests import parse_digests
from tuswsgi.errors import TusError

S256 = b"\x01" * 32
S512 = b"\x02" * 64


def sf(data: bytes) -> str:
    return ":" + base64.b64encode(data).decode() + ":"


@pytest.mark.parametrize(("value", "expected"), [
    (f"sha-256={sf(S256)}", [("sha256", S256)]),
    (f"sha-512={sf(S512)}", [("sha512", S512)]),
    (f"sha-256={sf(S256)}, sha-512={sf(S512)}", [("sha256", S256), ("sha512", S512)]),
    (f"sha-256={sf(S256)};x=1", [("sha256", S256)]),                  # parameters ignored
    (f"md5={sf(b'x' * 16)}, sha-256={sf(S256)}", [("sha256", S256)]),  # unknown key ignored
    (f"unixsum={sf(b'12')},sha-256={sf(S256)}", [("sha256", S256)]),
])
def test_parse_digests(value, expected):
    assert parse_digests("Content-Digest", value) == expected


@pytest.mark.parametrize(("value", "code"), [
    ("", "ERR_MALFORMED_DIGEST"),
    ("sha-256", "ERR_MALFORMED_DIGEST"),
    ("sha-256=", "ERR_MALFORMED_DIGEST"),
    ("sha-256=abc", "ERR_MALFORMED_DIGEST"),
    ("sha-256=:abc", "ERR_MALFORMED_DIGEST"),
    ("sha-256=:!!!!:", "ERR_MALFORMED_DIGEST"),
    ("sha-256=:abc:", "ERR_MALFORMED_DIGEST"),           # not valid base64 (length)
    ("SHA-256=" + sf(S256), "ERR_MALFORMED_DIGEST"),     # keys are lowercase
    (f"sha-256={sf(S256)},", "ERR_MALFORMED_DIGEST"),
    ("md5=" + sf(b"x" * 16), "ERR_UNSUPPORTED_DIGEST"),
    ("sha=" + sf(b"x" * 20), "ERR_UNSUPPORTED_DIGEST"),
    ("sha-256=" + sf(S256[:-1]), "ERR_INVALID_DIGEST"),
    ("sha-512=" + sf(S256), "ERR_INVALID_DIGEST"),
    (f"sha-256={sf(S256)}, sha-512={sf(b'')}", "ERR_INVALID_DIGEST"),
])
def test_parse_digests_refuses(value, code):
    with pytest.raises(TusError) as info:
        parse_digests("Repr-Digest", value)
    assert info.value.error_code == code
    assert info.value.code == 400


def test_unsupported_names_what_is_wanted():
    with pytest.raises(TusError) as info:
        parse_digests("Repr-Digest", "md5=" + sf(b"x" * 16))
    assert dict(info.value.extra_headers)["Want-Repr-Digest"] == "sha-256=10, sha-512=5"
