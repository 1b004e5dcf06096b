"""What a client of the final RFC gets (no version header at all), and the interop-9
details other implementers' conformance suite checks: invalid uploads, problem types,
creation digests, HEAD carrying request-only headers.  In-process; the same rules
over real gunicorn are in tests/server/test_judges_e2e.py."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from support.ietfheaders import draft, path_of, problem
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tuswsgi.ietf import interop_version

PARTIAL = "application/partial-upload"
PROBLEM = "https://iana.org/assignments/http-problem-types#"


def uploads(upload_dir) -> list[str]:
    return sorted(os.listdir(upload_dir)) if upload_dir.exists() else []


def rfc_create(client, body: bytes = b"", complete: bool = False, **headers: str):
    """A creation as the final RFC's client sends it: no version header."""
    headers = {"Upload-Complete": "?1" if complete else "?0",
               **{k.replace("_", "-"): v for k, v in headers.items()}}
    return client.post("/files/", data=body, headers=headers)


def rfc_append(client, path: str, body: bytes, offset: int, complete: bool, **headers: str):
    headers = {"Upload-Offset": str(offset), "Upload-Complete": "?1" if complete else "?0",
               "Content-Type": PARTIAL, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return client.patch(path, data=body, headers=headers)


def sf_digest(algorithm: str, data: bytes) -> str:
    digest = hashlib.new(algorithm.replace("-", ""), data).digest()
    return f"{algorithm}=:{base64.b64encode(digest).decode()}:"


# -- a whole upload, as a final-RFC client does it ---------------------------------------

def test_final_rfc_client_uploads_resumes_and_downloads(client, upload_dir):
    created = rfc_create(client, b"hello ", Upload_Length="11")
    assert created.status_code == 201
    assert created.headers["Upload-Complete"] == "?0"
    path = path_of(created)
    state = client.head(path)
    assert state.status_code == 204
    assert (state.headers["Upload-Offset"], state.headers["Upload-Complete"],
            state.headers["Upload-Length"]) == ("6", "?0", "11")
    assert state.headers["Cache-Control"] == "no-store"
    assert "min-size=0" in state.headers["Upload-Limit"]
    last = rfc_append(client, path, b"world", 6, complete=True)
    assert last.status_code == 200 and last.headers["Upload-Complete"] == "?1"
    assert data_file(upload_dir, path).read_bytes() == b"hello world"
    assert client.head(path).headers["Upload-Complete"] == "?1"
    download = client.get(path)  # a browser's link to the finished upload
    assert download.status_code == 200 and download.data == b"hello world"
    assert download.headers["Upload-Complete"] == "?1"


def test_final_rfc_get_of_an_unfinished_upload_is_offset_retrieval(client):
    path = path_of(rfc_create(client, b"abc", Upload_Length="9"))
    response = client.get(path)
    assert response.status_code == 204 and response.data == b""
    assert (response.headers["Upload-Offset"], response.headers["Upload-Complete"]) == ("3", "?0")


def test_final_rfc_cancellation_then_every_request_is_gone(client, upload_dir):
    path = path_of(rfc_create(client, b"abc"))
    assert client.delete(path).status_code == 204
    assert not data_file(upload_dir, path).exists()
    assert client.head(path).status_code == 410
    append = rfc_append(client, path, b"def", 3, complete=False)
    assert append.status_code == 410
    assert problem(append)["code"] == "ERR_UPLOAD_GONE"
    assert client.get(path).status_code == 410
    assert not data_file(upload_dir, path).exists()


def test_final_rfc_append_needs_the_partial_upload_type(client, upload_dir):
    """A PATCH naming no protocol and no media type is the draft's: 415 with the
    draft's answer, the upload unchanged."""
    path = path_of(rfc_create(client, b"abc"))
    response = client.patch(path, data=b"def", headers={"Upload-Offset": "3"})
    assert response.status_code == 415
    assert problem(response)["code"] == "ERR_INVALID_PARTIAL_UPLOAD_TYPE"
    assert data_file(upload_dir, path).read_bytes() == b"abc"


@pytest.mark.parametrize("method", ["HEAD", "DELETE", "GET"])
def test_final_rfc_request_for_an_unknown_upload_is_404(client, method):
    assert client.open("/files/" + "0" * 32, method=method).status_code == 404


# -- what is not the final RFC's ----------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},                                              # names nothing: the ambiguous POST
    {"Upload-Length": "3"},                          # a tus creation without its version
    {"Upload-Length": "3", "Content-Type": OCTET},
    {"Upload-Defer-Length": "1"},
    {"Upload-Concat": "partial", "Upload-Length": "3"},
])
def test_post_naming_no_protocol_is_412_and_creates_nothing(client, upload_dir, headers):
    """The drafts create an upload only with Upload-Complete; without it, a POST is
    a tus creation that forgot Tus-Resumable, which tus answers with 412."""
    response = client.post("/files/", data=b"abc" if "Content-Type" in headers else b"",
                           headers=headers)
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.get_data(as_text=True).startswith("ERR_UNSUPPORTED_VERSION")
    assert uploads(upload_dir) == []


@pytest.mark.parametrize("headers", [
    {"Content-Type": OCTET},
    {"Content-Type": OCTET, "Upload-Checksum": "sha1 " + base64.b64encode(b"x" * 20).decode()},
    {"Upload-Checksum": "sha1 " + base64.b64encode(b"x" * 20).decode()},
    {"Upload-Defer-Length": "1"},
])
def test_patch_with_tus_headers_but_no_tus_resumable_is_412(client, upload_dir, headers):
    path = create(client, 6)
    patch(client, path, b"abc", 0)
    response = client.patch(path, data=b"def", headers={"Upload-Offset": "3", **headers})
    assert response.status_code == 412
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_tus_clients_are_served_as_before(client, upload_dir):
    path = create(client, 6)
    assert patch(client, path, b"abc", 0).status_code == 204
    head = client.head(path, headers=TUS)
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "3"
    assert "Upload-Complete" not in head.headers
    assert client.get(path, headers=TUS).status_code == 404  # tus: not finished, no download
    assert client.delete(path, headers=TUS).status_code == 204
    assert client.head(path, headers=TUS).status_code == 410


# -- HEAD carrying request-only headers ----------------------------------------------------

@pytest.mark.parametrize("versioned", [True, False])
@pytest.mark.parametrize("header", ["Upload-Offset", "Upload-Complete", "Upload-Length"])
def test_head_carrying_upload_headers_is_answered_and_they_are_ignored(client, versioned, header):
    """Interop 3-6 said such a HEAD "MUST" be refused; the text that replaced it
    (draft change of 2025-02-18, interop 7) puts no requirement on offset
    retrieval's request fields, so they are ignored, as RFC 9110 ignores fields
    that have no meaning for a request."""
    path = path_of(rfc_create(client, b"abc", Upload_Length="9"))
    value = {"Upload-Offset": "999", "Upload-Complete": "?1", "Upload-Length": "1"}[header]
    headers = {**(draft(9) if versioned else {}), header: value}
    response = client.head(path, headers=headers)
    assert response.status_code == 204
    assert (response.headers["Upload-Offset"], response.headers["Upload-Complete"],
            response.headers["Upload-Length"]) == ("3", "?0", "9")


# -- interop 9: an append past the length makes the upload invalid --------------------------

@pytest.mark.parametrize("versioned", [True, False])
def test_append_past_the_length_invalidates_the_upload_in_9(client, upload_dir, versioned):
    headers = draft(9) if versioned else {}
    path = path_of(client.post("/files/", data=b"abc", headers={
        **headers, "Upload-Complete": "?0", "Upload-Length": "5"}))
    response = client.patch(path, data=b"defg", headers={
        **headers, "Upload-Offset": "3", "Upload-Complete": "?0", "Content-Type": PARTIAL})
    assert response.status_code == 400
    assert problem(response)["type"] == PROBLEM + "inconsistent-upload-length"
    assert response.headers["Upload-Complete"] == "?0"
    # "rejecting any further interaction with it": answered as a cancelled upload
    assert client.head(path, headers=headers).status_code == 410
    again = client.patch(path, data=b"de", headers={
        **headers, "Upload-Offset": "3", "Upload-Complete": "?1", "Content-Type": PARTIAL})
    assert again.status_code == 410
    assert client.head(path, headers=TUS).status_code == 410
    assert not data_file(upload_dir, path).exists()


@pytest.mark.parametrize("version", [7, 8])
def test_append_past_the_length_before_9_leaves_the_upload_usable(client, upload_dir, version):
    path = path_of(client.post("/files/", data=b"abc", headers=draft(
        version, Upload_Complete="?0", Upload_Length="5")))
    response = client.patch(path, data=b"defg", headers=draft(
        version, Upload_Offset="3", Upload_Complete="?0", Content_Type=PARTIAL))
    assert response.status_code == 400
    assert client.head(path, headers=draft(version)).headers["Upload-Offset"] == "3"
    assert data_file(upload_dir, path).read_bytes() == b"abc"


# -- problem types ---------------------------------------------------------------------------

@pytest.mark.parametrize("versioned", [True, False])
def test_length_disagreeing_with_an_earlier_request_is_inconsistent_upload_length(
        client, upload_dir, versioned):
    headers = draft(9) if versioned else {}
    path = path_of(client.post("/files/", data=b"abc", headers={
        **headers, "Upload-Complete": "?0", "Upload-Length": "10"}))
    for length in ("12", "2"):
        response = client.patch(path, data=b"de", headers={
            **headers, "Upload-Offset": "3", "Upload-Complete": "?0", "Upload-Length": length,
            "Content-Type": PARTIAL})
        assert response.status_code == 400
        assert problem(response)["type"] == PROBLEM + "inconsistent-upload-length"
        assert data_file(upload_dir, path).read_bytes() == b"abc"
    deferred = path_of(client.post("/files/", data=b"abcd", headers={**headers, "Upload-Complete": "?0"}))
    response = client.patch(deferred, data=b"", headers={
        **headers, "Upload-Offset": "4", "Upload-Complete": "?0", "Upload-Length": "2",
        "Content-Type": PARTIAL})
    assert problem(response)["type"] == PROBLEM + "inconsistent-upload-length"
    assert problem(response)["code"] == "ERR_LENGTH_TOO_SMALL"


# -- creation and append digests (RFC 9530) ---------------------------------------------------

@pytest.mark.parametrize("field", ["Content-Digest", "Repr-Digest"])
@pytest.mark.parametrize("algorithm", ["sha-256", "sha-512"])
@pytest.mark.parametrize("versioned", [True, False])
def test_creation_with_a_matching_digest_is_created(client, upload_dir, field, algorithm, versioned):
    headers = {**(draft(9) if versioned else {}), field: sf_digest(algorithm, b"hello")}
    response = rfc_create(client, b"hello", complete=True, **headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert data_file(upload_dir, path_of(response)).read_bytes() == b"hello"


@pytest.mark.parametrize("field", ["Content-Digest", "Repr-Digest"])
@pytest.mark.parametrize("versioned", [True, False])
def test_creation_with_a_mismatching_digest_is_refused_and_leaves_nothing(
        client, upload_dir, field, versioned):
    headers = {**(draft(9) if versioned else {}), field: sf_digest("sha-256", b"other")}
    response = rfc_create(client, b"hello", complete=True, **headers)
    assert response.status_code == 400
    body = problem(response)
    assert body["type"] == PROBLEM + "digest-mismatched-values"
    assert body["code"] == "ERR_DIGEST_MISMATCH"
    assert "Location" not in response.headers
    assert uploads(upload_dir) == []


def test_content_digest_of_an_incomplete_creation_is_verified(client, upload_dir):
    response = rfc_create(client, b"abc", Content_Digest=sf_digest("sha-256", b"abd"))
    assert response.status_code == 400
    assert uploads(upload_dir) == []
    response = rfc_create(client, b"abc", Content_Digest=sf_digest("sha-256", b"abc"))
    assert response.status_code == 201


def test_repr_digest_of_a_part_is_checked_for_form_only(client, upload_dir):
    """It describes the whole representation, which this request does not carry."""
    response = rfc_create(client, b"abc", Upload_Length="6",
                          Repr_Digest=sf_digest("sha-256", b"abcdef"))
    assert response.status_code == 201
    path = path_of(response)
    response = rfc_append(client, path, b"def", 3, complete=True,
                          Repr_Digest=sf_digest("sha-256", b"abcdef"))
    assert response.status_code == 200
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"


def test_append_with_a_mismatching_content_digest_keeps_the_upload(client, upload_dir):
    path = path_of(rfc_create(client, b"abc"))
    response = rfc_append(client, path, b"def", 3, complete=False,
                          Content_Digest=sf_digest("sha-512", b"xyz"))
    assert response.status_code == 400
    assert problem(response)["type"] == PROBLEM + "digest-mismatched-values"
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert client.head(path).headers["Upload-Offset"] == "3"
    ok = rfc_append(client, path, b"def", 3, complete=True,
                    Content_Digest=sf_digest("sha-512", b"def"))
    assert ok.status_code == 200
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"


def test_several_digests_must_all_match(client, upload_dir):
    both = f"{sf_digest('sha-256', b'hello')}, {sf_digest('sha-512', b'hellO')}"
    response = rfc_create(client, b"hello", complete=True, Content_Digest=both)
    assert problem(response)["code"] == "ERR_DIGEST_MISMATCH"
    response = rfc_create(client, b"hello", complete=True, Content_Digest=sf_digest("sha-256", b"hello"),
                          Repr_Digest=sf_digest("sha-512", b"other"))
    assert problem(response)["code"] == "ERR_DIGEST_MISMATCH"
    assert uploads(upload_dir) == []


@pytest.mark.parametrize(("value", "code", "kind"), [
    ("md5=:" + base64.b64encode(b"x" * 16).decode() + ":", "ERR_UNSUPPORTED_DIGEST",
     "digest-unsupported-algorithms"),
    ("sha-256=:" + base64.b64encode(b"x" * 31).decode() + ":", "ERR_INVALID_DIGEST",
     "digest-invalid-values"),
    ("sha-256=abc", "ERR_MALFORMED_DIGEST", None),
    ("sha-256=:!!!:", "ERR_MALFORMED_DIGEST", None),
    ("SHA-256=:" + base64.b64encode(b"x" * 32).decode() + ":", "ERR_MALFORMED_DIGEST", None),
    ("", "ERR_MALFORMED_DIGEST", None),
])
def test_unusable_digest_is_400_and_creates_nothing(client, upload_dir, value, code, kind):
    response = rfc_create(client, b"hello", complete=True, Content_Digest=value)
    assert response.status_code == 400
    body = problem(response)
    assert body["code"] == code
    assert body["type"] == (PROBLEM + kind if kind else "about:blank")
    if code == "ERR_UNSUPPORTED_DIGEST":
        assert "sha-256" in response.headers["Want-Content-Digest"]
    assert uploads(upload_dir) == []


def test_unknown_algorithm_beside_a_known_one_is_ignored(client, upload_dir):
    value = f"md5=:{base64.b64encode(b'x' * 16).decode()}:, {sf_digest('sha-256', b'hi')}"
    response = rfc_create(client, b"hi", complete=True, Content_Digest=value)
    assert response.status_code == 201


# -- the classification rules as a table ------------------------------------------------------

@pytest.mark.parametrize(("method", "headers", "expected"), [
    ("HEAD", {"Tus-Resumable": "1.0.0", "Upload-Draft-Interop-Version": "8"}, None),  # rule 2
    ("HEAD", {"Tus-Resumable": "0.2.2"}, None),
    ("HEAD", {"Upload-Draft-Interop-Version": "5"}, 5),                                 # rule 3
    ("POST", {"Upload-Complete": "?0"}, 9),                                             # rule 4
    ("POST", {"Upload-Incomplete": "?1"}, 9),
    ("PATCH", {"Content-Type": PARTIAL}, 9),
    ("PATCH", {"Content-Type": OCTET}, None),                                           # rule 5
    ("POST", {"Upload-Defer-Length": "1"}, None),
    ("POST", {"Upload-Concat": "partial"}, None),
    ("HEAD", {"Upload-Checksum": "sha1 x"}, None),
    ("HEAD", {}, 9), ("PATCH", {}, 9), ("DELETE", {}, 9), ("GET", {}, 9),              # rule 6
    ("HEAD", {"Upload-Metadata": "a YQ=="}, 9),
    ("POST", {}, None), ("POST", {"Upload-Length": "3"}, None),                         # rule 7
])
def test_classification(method, headers, expected):
    request = Request(EnvironBuilder(method=method, headers=headers).get_environ())
    assert interop_version(request, method) == expected
