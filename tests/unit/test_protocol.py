"""Header parsing as plain tables: no app, no I/O."""

import base64
import hashlib
import zlib
from contextlib import contextmanager

import pytest
from conftest import b64

from tuswsgi.errors import ERRORS, TusError
from tuswsgi.protocol import (
    check_version,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_uint,
    serialize_metadata,
)

ALL = ("md5", "sha1", "sha256", "sha512", "crc32")




@contextmanager
def raises(code: str):
    """Expect a TusError with ``code``; its HTTP status is the one in the table."""
    with pytest.raises(TusError) as info:
        yield info
    assert info.value.error_code == code
    assert info.value.code == ERRORS[code][0]


# -- parse_uint ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("1", 1), ("007", 7), ("1024", 1024), ("9" * 18, int("9" * 18)),
    (str(2**63 - 1), 2**63 - 1),
])
def test_parse_uint_accepts_plain_decimals(text, expected):
    assert parse_uint(text, "ERR_INVALID_LENGTH") == expected


def test_parse_uint_absent_is_none():
    assert parse_uint(None, "ERR_INVALID_LENGTH") is None


@pytest.mark.parametrize("text", [
    "", " ", "-1", "+1", " 1", "1 ", "1e3", "0x10", "1.5", "1,000", "abc", "9" * 30,
    "\u0661",  # ARABIC-INDIC DIGIT ONE: a Unicode digit, not an ASCII one
    "1\n",
])
@pytest.mark.parametrize("code", ["ERR_INVALID_LENGTH", "ERR_INVALID_OFFSET"])
def test_parse_uint_rejects_with_the_given_code(text, code):
    with raises(code):
        parse_uint(text, code)


# -- parse_metadata -------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    ("filename d29ybGQucGRm", [("filename", "d29ybGQucGRm")]),
    ("filename d29ybGQucGRm,is_confidential",
     [("filename", "d29ybGQucGRm"), ("is_confidential", None)]),
    ("a YQ==,b YmI=,c Y2Nj", [("a", "YQ=="), ("b", "YmI="), ("c", "Y2Nj")]),
    ("key", [("key", None)]),
    ("empty ", [("empty", None)]),           # trailing space: still key-only
    ("a YQ==, b YmI=", [("a", "YQ=="), ("b", "YmI=")]),  # space after the comma
    ("k!#$%&'*+-.^_`|~ YQ==", [("k!#$%&'*+-.^_`|~", "YQ==")]),
    ("Name YQ==,name YQ==", [("Name", "YQ=="), ("name", "YQ==")]),  # keys are case-sensitive
])
def test_parse_metadata_valid(header, expected):
    assert parse_metadata(header, 16384) == expected


@pytest.mark.parametrize("header", [None, "", "   "])
def test_parse_metadata_empty_header_is_no_metadata(header):
    assert parse_metadata(header, 16384) == []


@pytest.mark.parametrize("header", [
    "a YQ==,a YmI=",          # duplicate key
    "a,a",                    # duplicate key-only
    "a YQ==,,b YmI=",         # empty pair
    "a YQ==,",                # trailing comma
    ",a YQ==",                # leading comma
    "a  YQ==",                # two spaces
    "a YQ== extra",           # three parts
    "a YQ",                   # base64 without padding
    "a YQ=",                  # wrong padding
    "a Y===",                 # too much padding
    "a !!!!",                 # not base64 at all
    "a-b\tc YQ==",            # tab inside the key
    "k\u00e9y YQ==",          # non-ASCII key
    "a dmFs dWU=",            # space inside the value
    "a dmFs_dWU=",            # URL-safe alphabet is not base64
])
def test_parse_metadata_invalid(header):
    with raises("ERR_INVALID_METADATA"):
        parse_metadata(header, 16384)


def test_parse_metadata_size_cap():
    value = "k " + b64(b"x" * 60)
    assert parse_metadata(value, len(value)) == [("k", b64(b"x" * 60))]
    with raises("ERR_METADATA_TOO_LARGE"):
        parse_metadata(value, len(value) - 1)


def test_parse_metadata_zero_cap_means_no_limit():
    value = "k " + b64(b"x" * 30000)
    assert parse_metadata(value, 0) == [("k", b64(b"x" * 30000))]


@pytest.mark.parametrize("pairs", [
    [],
    [("a", None)],
    [("filename", b64("résumé.pdf".encode())), ("private", None), ("type", b64(b"text/plain"))],
    [("z", "YQ=="), ("a", "YmI=")],  # order is kept
])
def test_serialize_metadata_round_trip(pairs):
    text = serialize_metadata(pairs)
    assert parse_metadata(text, 16384) == pairs
    assert serialize_metadata(parse_metadata(text, 16384)) == text


def test_serialize_metadata_format():
    assert serialize_metadata([("a", "YQ=="), ("b", None), ("c", "Yw==")]) == "a YQ==,b,c Yw=="


# -- parse_concat -----------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    (None, (None, [])),
    ("partial", ("partial", [])),
    ("final;/files/a /files/b", ("final", ["/files/a", "/files/b"])),
    ("final;http://x/files/a", ("final", ["http://x/files/a"])),
    ("final; /files/a   /files/b ", ("final", ["/files/a", "/files/b"])),
])
def test_parse_concat_valid(header, expected):
    assert parse_concat(header) == expected


@pytest.mark.parametrize("header", [
    "", "final", "final;", "final; ", "Partial", "partial;", "partial;/files/a", "foo",
    "final,/files/a", "FINAL;/files/a",
])
def test_parse_concat_invalid(header):
    with raises("ERR_INVALID_CONCAT"):
        parse_concat(header)


# -- parse_checksum ---------------------------------------------------------------

DATA = b"hello tus"
DIGESTS = {
    "md5": hashlib.md5(DATA).digest(),
    "sha1": hashlib.sha1(DATA).digest(),
    "sha256": hashlib.sha256(DATA).digest(),
    "sha512": hashlib.sha512(DATA).digest(),
    "crc32": zlib.crc32(DATA).to_bytes(4, "big"),
}


@pytest.mark.parametrize("algorithm", ALL)
def test_parse_checksum_each_algorithm(algorithm):
    digest = DIGESTS[algorithm]
    assert parse_checksum(f"{algorithm} {b64(digest)}", ALL) == (algorithm, digest)


def test_parse_checksum_crc32_is_four_big_endian_bytes():
    value = zlib.crc32(DATA)
    _, digest = parse_checksum("crc32 " + b64(value.to_bytes(4, "big")), ALL)
    assert int.from_bytes(digest, "big") == value
    # Little-endian bytes still parse (same length): the mismatch is found on the data.
    assert parse_checksum("crc32 " + b64(value.to_bytes(4, "little")), ALL)[1] != digest


def test_parse_checksum_absent_is_none():
    assert parse_checksum(None, ALL) is None


def test_parse_checksum_algorithm_is_case_insensitive():
    assert parse_checksum("SHA1 " + b64(DIGESTS["sha1"]), ALL) == ("sha1", DIGESTS["sha1"])


@pytest.mark.parametrize("algorithm", ALL)
@pytest.mark.parametrize("size_delta", [-1, 1])
def test_parse_checksum_wrong_digest_length(algorithm, size_delta):
    """Well-formed, but no body can match it: a mismatch (460), not a malformed header."""
    digest = DIGESTS[algorithm]
    wrong = digest[:-1] if size_delta < 0 else digest + b"\0"
    with raises("ERR_CHECKSUM_MISMATCH"):
        parse_checksum(f"{algorithm} {b64(wrong)}", ALL)


@pytest.mark.parametrize("value", [
    "sha1",                                   # no digest
    "sha1 ",                                  # empty digest
    "sha1 !!!!",                              # not base64
    "sha1 " + b64(DIGESTS["sha1"]).rstrip("="),  # padding missing
    "sha1 " + b64(DIGESTS["sha1"])[:10] + " " + b64(DIGESTS["sha1"])[10:],  # inner space
    "md5 " + base64.urlsafe_b64encode(b"\xfb" * 16).decode(),  # URL-safe alphabet
])
def test_parse_checksum_malformed(value):
    with raises("ERR_INVALID_CHECKSUM"):
        parse_checksum(value, ALL)


@pytest.mark.parametrize("value", [
    "sha3 " + b64(b"x" * 32), "crc64 " + b64(b"x" * 8), "sha224 " + b64(b"x" * 28),
    "", " ", b64(DIGESTS["sha1"]),
])
def test_parse_checksum_unknown_algorithm(value):
    with raises("ERR_UNSUPPORTED_CHECKSUM"):
        parse_checksum(value, ALL)


def test_parse_checksum_only_allowed_algorithms():
    with raises("ERR_UNSUPPORTED_CHECKSUM"):
        parse_checksum("md5 " + b64(DIGESTS["md5"]), ("sha1",))
    assert parse_checksum("sha1 " + b64(DIGESTS["sha1"]), ("sha1",))[0] == "sha1"


# -- check_version ----------------------------------------------------------------

def test_check_version_accepts_1_0_0():
    assert check_version("1.0.0") is None


@pytest.mark.parametrize("value", [None, "", "1.0", "0.2.2", "1.0.1", "2.0.0", "1.0.0 ,0.2.2"])
def test_check_version_rejects_with_tus_version(value):
    with pytest.raises(TusError) as info:
        check_version(value)
    assert info.value.error_code == "ERR_UNSUPPORTED_VERSION"
    assert info.value.code == 412
    assert ("Tus-Version", "1.0.0") in info.value.get_headers()
