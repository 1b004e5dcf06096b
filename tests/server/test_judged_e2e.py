"""What other people's test suites check, over the production gunicorn
(``gunicorn -c deploy/gunicorn.conf.py tuswsgi:app``, as they were run), each
case on one kept-alive connection so every answer is also checked to leave the
connection exact: tus 1.0.0's details (OPTIONS, 409, 460, the nine extensions),
a client of the final IETF RFC (no version header at all), and interop 9.
checksum-trailer: tests/server/test_checksum_trailer_e2e.py; concatenation-unfinished
under load: tests/server/test_concat_unfinished_e2e.py."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Iterator

import pytest
from conftest import OCTET, TUS, Server
from support.deploy import start_production_gunicorn
from support.rawhttp import RawConnection

pytestmark = pytest.mark.e2e

PARTIAL = "application/partial-upload"
PROBLEM = "https://iana.org/assignments/http-problem-types#"
EXTENSIONS = {"creation", "creation-with-upload", "creation-defer-length", "termination",
              "checksum", "checksum-trailer", "expiration", "concatenation",
              "concatenation-unfinished"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    app = start_production_gunicorn(tmp_path_factory.mktemp("judged"))
    yield app
    app.stop()


@pytest.fixture
def conn(server) -> Iterator[RawConnection]:
    with RawConnection(server.port) as connection:
        yield connection


def path_of(response) -> str:
    return "/files/" + response.header("location").rsplit("/", 1)[1]


def stored(server: Server, path: str) -> bytes:
    return (server.upload_dir / path.rsplit("/", 1)[1]).read_bytes()


# -- tus 1.0.0 -----------------------------------------------------------------------------

def test_options_is_200_empty_with_all_nine_extensions(conn):
    for target in ("/files/", "/files/" + "0" * 32):
        response = conn.request("OPTIONS", target, {})
        assert response.status == 200 and response.body == b""
        assert response.header("content-length") == "0"
        assert set(response.header("tus-extension").split(",")) == EXTENSIONS
        assert not response.closes


def test_409_carries_the_offset_to_resume_from(conn, server):
    path = path_of(conn.request("POST", "/files/", {**TUS, "Upload-Length": "6"}))
    conn.request("PATCH", path, {**TUS, "Upload-Offset": "0", "Content-Type": OCTET}, b"abc")
    conflict = conn.request("PATCH", path, {**TUS, "Upload-Offset": "1", "Content-Type": OCTET}, b"bc")
    assert conflict.status == 409 and conflict.header("upload-offset") == "3"
    resumed = conn.request("PATCH", path, {**TUS, "Upload-Offset": conflict.header("upload-offset"),
                                           "Content-Type": OCTET}, b"def")
    assert resumed.status == 204 and stored(server, path) == b"abcdef"


@pytest.mark.parametrize("digest", [b"x" * 21, b"x" * 19])
def test_sha1_of_the_wrong_length_is_460(conn, server, digest):
    path = path_of(conn.request("POST", "/files/", {**TUS, "Upload-Length": "3"}))
    value = "sha1 " + base64.b64encode(digest).decode()
    response = conn.request("PATCH", path, {**TUS, "Upload-Offset": "0", "Content-Type": OCTET,
                                            "Upload-Checksum": value}, b"abc")
    assert response.status == 460 and response.body.startswith(b"ERR_CHECKSUM_MISMATCH")
    assert conn.request("HEAD", path, TUS).header("upload-offset") == "0"
    assert stored(server, path) == b""


def test_unfinished_concatenation_on_one_connection(conn, server):
    parts = [path_of(conn.request("POST", "/files/", {**TUS, "Upload-Length": "3",
                                                      "Upload-Concat": "partial"})) for _ in range(2)]
    created = conn.request("POST", "/files/", {**TUS, "Upload-Concat": "final;" + " ".join(parts)})
    assert created.status == 201
    final = path_of(created)
    for part, data in zip(reversed(parts), (b"def", b"abc"), strict=True):
        head = conn.request("HEAD", final, TUS)
        assert (head.header("upload-offset"), head.header("upload-length")) == ("0", "6")
        conn.request("PATCH", part, {**TUS, "Upload-Offset": "0", "Content-Type": OCTET}, data)
    head = conn.request("HEAD", final, TUS)
    assert (head.header("upload-offset"), head.header("upload-length")) == ("6", "6")
    assert conn.request("GET", final, {}).body == b"abcdef"
    assert stored(server, final) == b"abcdef"


def test_delete_answers_410_afterwards(conn):
    """tus-js-client's end-to-end specs expect 404 here (tusd's answer); the
    termination extension allows either, and 410 tells a client the URL was real."""
    path = path_of(conn.request("POST", "/files/", {**TUS, "Upload-Length": "3"}))
    assert conn.request("DELETE", path, TUS).status == 204
    assert conn.request("HEAD", path, TUS).status == 410


# -- a client of the final RFC: no version header ------------------------------------------

def test_final_rfc_client_on_one_connection(conn, server):
    created = conn.request("POST", "/files/", {"Upload-Complete": "?0", "Upload-Length": "10"}, b"hello")
    assert created.status == 201 and created.header("upload-complete") == "?0"
    path = path_of(created)
    head = conn.request("HEAD", path, {})
    assert head.status == 204
    assert (head.header("upload-offset"), head.header("upload-complete"), head.header("upload-length"),
            head.header("cache-control")) == ("5", "?0", "10", "no-store")
    retrieval = conn.request("GET", path, {})
    assert retrieval.status == 204 and retrieval.header("upload-offset") == "5"
    done = conn.request("PATCH", path, {"Upload-Offset": "5", "Upload-Complete": "?1",
                                        "Content-Type": PARTIAL}, b"world")
    assert done.status == 200 and done.header("upload-complete") == "?1"
    download = conn.request("GET", path, {})
    assert download.status == 200 and download.body == b"helloworld"
    assert download.header("upload-complete") == "?1"
    assert conn.request("DELETE", path, {}).status == 204
    assert conn.request("HEAD", path, {}).status == 410
    gone = conn.request("PATCH", path, {"Upload-Offset": "10", "Upload-Complete": "?1",
                                        "Content-Type": PARTIAL}, b"!")
    assert gone.status == 410
    assert not (server.upload_dir / path.rsplit("/", 1)[1]).exists()


def test_post_naming_no_protocol_is_412_and_the_connection_goes_on(conn):
    response = conn.request("POST", "/files/", {"Upload-Length": "3"})
    assert response.status == 412 and response.header("tus-version") == "1.0.0"
    assert conn.request("OPTIONS", "/files/", {}).status == 200


def test_head_carrying_request_only_headers_is_answered(conn):
    path = path_of(conn.request("POST", "/files/", {"Upload-Complete": "?0"}, b"abc"))
    for headers in ({"Upload-Offset": "7"}, {"Upload-Complete": "?1"},
                    {"Upload-Draft-Interop-Version": "9", "Upload-Offset": "7"}):
        response = conn.request("HEAD", path, headers)
        assert response.status == 204 and response.header("upload-offset") == "3"


# -- interop 9 -----------------------------------------------------------------------------

def test_append_past_the_length_invalidates_in_9(conn, server):
    draft = {"Upload-Draft-Interop-Version": "9"}
    path = path_of(conn.request("POST", "/files/", {**draft, "Upload-Complete": "?0",
                                                    "Upload-Length": "4"}, b"ab"))
    response = conn.request("PATCH", path, {**draft, "Upload-Offset": "2", "Upload-Complete": "?0",
                                            "Content-Type": PARTIAL}, b"cde")
    assert response.status == 400
    assert json.loads(response.body)["type"] == PROBLEM + "inconsistent-upload-length"
    assert conn.request("HEAD", path, draft).status == 410
    assert not (server.upload_dir / path.rsplit("/", 1)[1]).exists()


def test_length_changed_by_a_later_request_is_inconsistent_upload_length(conn):
    draft = {"Upload-Draft-Interop-Version": "9"}
    path = path_of(conn.request("POST", "/files/", {**draft, "Upload-Complete": "?0",
                                                    "Upload-Length": "10"}, b"ab"))
    response = conn.request("PATCH", path, {**draft, "Upload-Offset": "2", "Upload-Complete": "?0",
                                            "Upload-Length": "11", "Content-Type": PARTIAL}, b"c")
    assert response.status == 400
    assert json.loads(response.body)["type"] == PROBLEM + "inconsistent-upload-length"
    assert conn.request("HEAD", path, draft).header("upload-offset") == "2"


@pytest.mark.parametrize("field", ["Content-Digest", "Repr-Digest"])
def test_creation_digest_mismatch_leaves_nothing(conn, server, field):
    before = sorted(p.name for p in server.upload_dir.iterdir())
    wrong = "sha-256=:" + base64.b64encode(hashlib.sha256(b"other").digest()).decode() + ":"
    response = conn.request("POST", "/files/", {"Upload-Draft-Interop-Version": "9",
                                                "Upload-Complete": "?1", field: wrong}, b"hello")
    assert response.status == 400
    assert json.loads(response.body)["type"] == PROBLEM + "digest-mismatched-values"
    assert response.header("location") is None
    assert sorted(p.name for p in server.upload_dir.iterdir()) == before
    right = "sha-256=:" + base64.b64encode(hashlib.sha256(b"hello").digest()).decode() + ":"
    created = conn.request("POST", "/files/", {"Upload-Complete": "?1", field: right}, b"hello")
    assert created.status == 201
    assert stored(server, path_of(created)) == b"hello"
