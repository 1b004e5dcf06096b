"""The IETF draft "Resumable Uploads for HTTP" (interop versions 3 to 9), in-process.

Every protocol case runs once per interop version; what differs between versions
(completion header name and polarity, append status, Content-Type on PATCH,
``expires``/``max-age``) comes from the small helpers below, so a test reads as
the draft's rule it checks.  Known server bugs are strict xfails that name them.
"""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

import pytest
from conftest import OCTET, TUS, b64, create, data_file, patch
from support import hookfns
from support.ietfheaders import completion, draft, path_of, problem
from werkzeug.test import Client

from tuswsgi import cli

VERSIONS = list(range(3, 10))
PARTIAL = "application/partial-upload"
PROBLEM = "https://iana.org/assignments/http-problem-types#"


# -- the per-version vocabulary ----------------------------------------------------------


def is_complete(version: int, response) -> bool:
    """The completion state a response announces (the header must be there)."""
    if version == 3:
        assert "Upload-Complete" not in response.headers
        return {"?0": True, "?1": False}[response.headers["Upload-Incomplete"]]
    assert "Upload-Incomplete" not in response.headers
    return {"?1": True, "?0": False}[response.headers["Upload-Complete"]]


def append_headers(version: int, offset: int, complete: bool) -> dict[str, str]:
    headers = draft(version, Upload_Offset=str(offset), **completion(version, complete))
    if version >= 6:
        headers["Content-Type"] = PARTIAL
    return headers


def append_status(version: int, complete: bool) -> int:
    """201 for interop 3-6; from 7 an incomplete append is 204, the completing one 200."""
    if version <= 6:
        return 201
    return 200 if complete else 204


def limits(response) -> dict[str, int]:
    """``Upload-Limit`` parsed as the sf-dictionary of integers it is."""
    items = {}
    for member in response.headers["Upload-Limit"].split(","):
        key, _, value = member.strip().partition("=")
        items[key] = int(value)
    return items


def uploads(upload_dir) -> list[str]:
    return sorted(name for name in os.listdir(upload_dir) if "." not in name) \
        if upload_dir.exists() else []


def draft_create(client: Client, version: int, body: bytes = b"", complete: bool = False,
                 **headers: str):
    response = client.post("/files/", data=body,
                           headers=draft(version, **completion(version, complete), **headers))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response


def draft_append(client: Client, version: int, path: str, body: bytes, offset: int,
                 complete: bool, **headers: str):
    return client.patch(path, data=body,
                        headers={**append_headers(version, offset, complete), **headers})


def head(client: Client, version: int, path: str, **headers: str):
    return client.head(path, headers=draft(version, **headers))


# -- creation ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_creation_with_the_whole_body(client, upload_dir, version):
    body = os.urandom(5000)
    response = draft_create(client, version, body, complete=True)
    assert response.headers["Location"].startswith("http://localhost/files/")
    assert response.headers["Upload-Offset"] == "5000"
    assert response.headers["Upload-Length"] == "5000"
    assert is_complete(version, response)
    assert response.headers["Upload-Draft-Interop-Version"] == str(version)
    assert data_file(upload_dir, path_of(response)).read_bytes() == body


@pytest.mark.parametrize("version", VERSIONS)
def test_creation_of_part_then_appends(client, upload_dir, version):
    body = os.urandom(3000)
    response = draft_create(client, version, body[:1000], complete=False)
    path = path_of(response)
    assert response.headers["Upload-Offset"] == "1000"
    assert not is_complete(version, response)
    assert "Upload-Length" not in response.headers  # not known yet

    middle = draft_append(client, version, path, body[1000:2000], 1000, complete=False)
    assert middle.status_code == append_status(version, complete=False), middle.get_data()
    assert middle.headers["Upload-Offset"] == "2000"
    assert not is_complete(version, middle)

    last = draft_append(client, version, path, body[2000:], 2000, complete=True)
    assert last.status_code == append_status(version, complete=True), last.get_data()
    assert last.headers["Upload-Offset"] == "3000"
    assert last.headers["Upload-Length"] == "3000"
    assert is_complete(version, last)
    assert data_file(upload_dir, path).read_bytes() == body


@pytest.mark.parametrize("version", VERSIONS)
def test_creation_without_body_then_appends(client, upload_dir, version):
    """tus-js-client's default: an empty creation that announces the length."""
    response = draft_create(client, version, complete=False, Upload_Length="6")
    path = path_of(response)
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "6"
    assert draft_append(client, version, path, b"abc", 0, False).status_code == \
        append_status(version, False)
    last = draft_append(client, version, path, b"def", 3, True)
    assert last.status_code == append_status(version, True)
    assert is_complete(version, last)
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"


@pytest.mark.parametrize("version", [3, 4, 5])
def test_early_versions_append_without_content_type(client, upload_dir, version):
    path = path_of(draft_create(client, version, b"ab"))
    response = client.patch(path, data=b"cd", headers=draft(
        version, Upload_Offset="2", **completion(version, True)))
    assert response.status_code == 201
    assert data_file(upload_dir, path).read_bytes() == b"abcd"


@pytest.mark.parametrize("version", [3, 4, 5, 6])
def test_append_without_completion_header_is_the_last_part_before_7(client, upload_dir, version):
    path = path_of(draft_create(client, version, b"ab"))
    headers = append_headers(version, 2, True)
    headers.pop("Upload-Incomplete" if version == 3 else "Upload-Complete")
    response = client.patch(path, data=b"cd", headers=headers)
    assert response.status_code == 201
    assert is_complete(version, response)
    assert response.headers["Upload-Length"] == "4"


@pytest.mark.parametrize("version", [7, 8, 9])
def test_append_must_name_completion_from_7(client, upload_dir, version):
    path = path_of(draft_create(client, version, b"ab"))
    headers = append_headers(version, 2, True)
    del headers["Upload-Complete"]
    response = client.patch(path, data=b"cd", headers=headers)
    assert response.status_code == 400
    assert problem(response)["code"] == "ERR_INVALID_UPLOAD_COMPLETE"
    assert data_file(upload_dir, path).read_bytes() == b"ab"


@pytest.mark.parametrize("version", [6, 7, 8, 9])
@pytest.mark.parametrize("content_type", [OCTET, "application/octet-stream", None])
def test_append_needs_partial_upload_content_type_from_6(client, upload_dir, version, content_type):
    path = path_of(draft_create(client, version, b"ab"))
    headers = append_headers(version, 2, True)
    if content_type is None:
        del headers["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    response = client.patch(path, data=b"cd", headers=headers)
    assert 400 <= response.status_code < 500
    assert problem(response)["code"] == "ERR_INVALID_PARTIAL_UPLOAD_TYPE"
    assert data_file(upload_dir, path).read_bytes() == b"ab"
    assert head(client, version, path).headers["Upload-Offset"] == "2"


def test_wrong_content_type_problem_names_only_partial_upload(client):
    path = path_of(draft_create(client, 8, b"ab"))
    headers = {**append_headers(8, 2, True), "Content-Type": "text/plain"}
    title = problem(client.patch(path, data=b"cd", headers=headers))["title"]
    assert "offset+octet-stream" not in title


# -- offset retrieval ----------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_head_reports_the_upload_state(make_app, version):
    client = Client(make_app(max_size="1M", max_append_size="64K"))
    path = path_of(draft_create(client, version, b"x" * 100, Upload_Length="300"))
    response = head(client, version, path)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "100"
    assert not is_complete(version, response)
    assert response.headers["Upload-Length"] == "300"
    assert response.headers["Cache-Control"] == "no-store"
    assert limits(response)["max-size"] == 1024 * 1024
    assert response.get_data() == b""

    draft_append(client, version, path, b"y" * 200, 100, complete=True)
    finished = head(client, version, path)
    assert finished.status_code == 204
    assert finished.headers["Upload-Offset"] == "300"
    assert finished.headers["Upload-Length"] == "300"
    assert is_complete(version, finished)


@pytest.mark.parametrize("version", VERSIONS)
def test_head_without_known_length_omits_it(client, version):
    path = path_of(draft_create(client, version, b"abc"))
    response = head(client, version, path)
    assert response.status_code == 204
    assert "Upload-Length" not in response.headers
    assert response.headers["Upload-Offset"] == "3"


@pytest.mark.parametrize("version", [3, 4, 5, 6])
@pytest.mark.parametrize("header", ["Upload-Offset", "Upload-Complete", "Upload-Incomplete"])
def test_head_carrying_upload_headers_is_400_before_7(client, version, header):
    path = path_of(draft_create(client, version, b"abc"))
    value = "3" if header == "Upload-Offset" else "?0"
    response = client.head(path, headers=draft(version, **{header: value}))
    assert response.status_code == 400


@pytest.mark.parametrize("version", [7, 8, 9])
def test_head_carrying_upload_offset_is_answered_from_7(client, version):
    path = path_of(draft_create(client, version, b"abc"))
    assert head(client, version, path, Upload_Offset="3").status_code == 204


@pytest.mark.parametrize("version", VERSIONS)
def test_head_of_unknown_upload_is_404(client, version):
    assert head(client, version, "/files/" + "0" * 32).status_code == 404


@pytest.mark.parametrize("version", [8, 9])
def test_get_is_offset_retrieval_from_8_and_a_download_before(client, version):
    path = path_of(draft_create(client, version, b"hello", complete=True))
    response = client.get(path, headers=draft(version))
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "5"
    assert response.headers["Upload-Length"] == "5"
    assert is_complete(version, response)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_data() == b""
    for version in range(3, 8):
        download = client.get(path, headers=draft(version))
        assert download.status_code == 200 and download.get_data() == b"hello"


# -- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_offset_mismatch_is_409_with_the_problem(client, upload_dir, version):
    path = path_of(draft_create(client, version, b"abcd"))
    response = draft_append(client, version, path, b"XX", 2, complete=False)
    assert response.status_code == 409
    body = problem(response)
    assert body["type"] == PROBLEM + "mismatching-upload-offset"
    assert body["expected-offset"] == 4
    assert body["provided-offset"] == 2
    assert response.headers["Upload-Offset"] == "4"
    assert not is_complete(version, response)
    assert data_file(upload_dir, path).read_bytes() == b"abcd"
    assert head(client, version, path).headers["Upload-Offset"] == "4"


@pytest.mark.parametrize("version", VERSIONS)
def test_creation_length_disagreeing_with_the_complete_body(client, upload_dir, version):
    response = client.post("/files/", data=b"hello", headers=draft(
        version, Upload_Length="4", **completion(version, True)))
    assert response.status_code == 400
    assert problem(response)["type"] == PROBLEM + "inconsistent-upload-length"
    assert uploads(upload_dir) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_completing_append_disagreeing_with_the_length(client, upload_dir, version):
    path = path_of(draft_create(client, version, b"abc", Upload_Length="6"))
    for body in (b"de", b"defg"):  # ends before, and after, the announced length
        response = draft_append(client, version, path, body, 3, complete=True)
        assert response.status_code == 400
        assert problem(response)["type"] == PROBLEM + "inconsistent-upload-length"
        assert data_file(upload_dir, path).read_bytes() == b"abc"
    state = head(client, version, path)
    assert (state.headers["Upload-Offset"], state.headers["Upload-Length"]) == ("3", "6")
    assert not is_complete(version, state)
    assert draft_append(client, version, path, b"def", 3, complete=True).status_code == \
        append_status(version, True)
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"


def test_creation_body_beyond_its_upload_length_leaves_nothing(client, upload_dir):
    response = client.post("/files/", data=b"hello", headers=draft(
        8, Upload_Length="3", Upload_Complete="?0"))
    assert 400 <= response.status_code < 500
    assert uploads(upload_dir) == []


def test_body_beyond_the_known_length_problem_status_matches_its_type(client, upload_dir):
    path = path_of(draft_create(client, 8, b"abc", Upload_Length="5"))
    response = draft_append(client, 8, path, b"def", 3, complete=False)
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    body = problem(response)
    assert body["type"] == PROBLEM + "inconsistent-upload-length"
    assert response.status_code == body["status"] == 400


@pytest.mark.parametrize("version", range(3, 9))
def test_append_to_a_completed_upload_is_refused(client, upload_dir, version):
    path = path_of(draft_create(client, version, b"done", complete=True))
    for offset, complete in ((4, True), (4, False), (0, True)):
        response = draft_append(client, version, path, b"more", offset, complete)
        assert response.status_code == 400, (offset, complete, response.status)
        assert problem(response)["type"] == PROBLEM + "completed-upload"
        assert data_file(upload_dir, path).read_bytes() == b"done"
    state = head(client, version, path)
    assert state.headers["Upload-Offset"] == "4" and is_complete(version, state)


@pytest.mark.parametrize("version", VERSIONS)
def test_empty_completing_append_at_the_end(client, upload_dir, version):
    """Completing without more bytes; repeated (a client that lost the answer) it is still 2xx."""
    path = path_of(draft_create(client, version, b"abc"))
    for _ in range(2):
        response = draft_append(client, version, path, b"", 3, complete=True)
        assert 200 <= response.status_code < 300, response.get_data()
        assert response.headers["Upload-Offset"] == "3"
        assert response.headers["Upload-Length"] == "3"
        assert is_complete(version, response)
    assert data_file(upload_dir, path).read_bytes() == b"abc"


@pytest.mark.parametrize("version", VERSIONS)
def test_delete_then_head(client, upload_dir, version):
    path = path_of(draft_create(client, version, b"abc"))
    response = client.delete(path, headers=draft(version))
    assert response.status_code == 204
    assert not data_file(upload_dir, path).exists()
    assert head(client, version, path).status_code in (404, 410)
    assert client.head(path, headers=TUS).status_code in (404, 410)
    assert draft_append(client, version, path, b"d", 3, True).status_code in (404, 410)


# -- limits ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_upload_limit_reflects_the_configuration(make_app, version):
    client = Client(make_app(max_size="1M", max_append_size="64K", expiration="1h"))
    response = draft_create(client, version, b"abc")
    found = limits(response)
    assert found["min-size"] == 0
    assert found["max-size"] == 1024 * 1024
    assert found["max-append-size"] == 64 * 1024
    expiry, other = ("expires", "max-age") if version == 6 else ("max-age", "expires")
    assert 3500 < found[expiry] <= 3600
    assert other not in found
    assert limits(head(client, version, path_of(response)))[expiry] <= found[expiry]


def test_upload_limit_without_limits(make_app):
    client = Client(make_app(expiration="0"))
    assert limits(draft_create(client, 8, b"abc")) == {"min-size": 0}


@pytest.mark.parametrize("version", VERSIONS)
def test_append_over_max_append_size_is_413_with_upload_limit(make_app, upload_dir, version):
    client = Client(make_app(max_size="1M", max_append_size="64K"))
    path = path_of(draft_create(client, version, b"abc"))
    response = draft_append(client, version, path, b"x" * (64 * 1024 + 1), 3, complete=False)
    assert response.status_code == 413
    assert limits(response)["max-append-size"] == 64 * 1024
    assert problem(response)["code"] == "ERR_APPEND_TOO_LARGE"
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    ok = draft_append(client, version, path, b"x" * (64 * 1024), 3, complete=False)
    assert ok.status_code == append_status(version, False)


@pytest.mark.parametrize("version", [3, 8])
def test_creation_over_max_size_is_413_with_upload_limit(make_app, upload_dir, version):
    client = Client(make_app(max_size="1M"))
    response = client.post("/files/", headers=draft(
        version, Upload_Length=str(1024 * 1024 + 1), **completion(version, False)))
    assert response.status_code == 413
    assert limits(response)["max-size"] == 1024 * 1024
    assert uploads(upload_dir) == []


@pytest.mark.parametrize("version", [3, 8])
def test_creation_body_over_max_append_size_is_413_with_upload_limit(make_app, version):
    client = Client(make_app(max_append_size="64K"))
    response = client.post("/files/", data=b"x" * (64 * 1024 + 1),
                           headers=draft(version, **completion(version, True)))
    assert response.status_code == 413
    assert limits(response)["max-append-size"] == 64 * 1024


# -- representation metadata ------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_content_type_and_disposition_become_metadata(client, version):
    response = draft_create(client, version, b"%PDF-1.7", complete=True, Content_Type="application/pdf",
                            Content_Disposition='attachment; filename="report.pdf"')
    path = path_of(response)
    tus_head = client.head(path, headers=TUS)
    metadata = dict(item.split(" ") for item in tus_head.headers["Upload-Metadata"].split(","))
    assert metadata == {"filetype": b64("application/pdf"), "filename": b64("report.pdf")}
    download = client.get(path)
    assert download.headers["Content-Type"] == "application/pdf"
    assert 'filename=report.pdf' in download.headers["Content-Disposition"]


def test_disposition_filename_star_utf8(client):
    name = "résumé 2026.txt"
    response = draft_create(client, 8, b"hi", complete=True, Content_Type="text/plain",
                            Content_Disposition=f"inline; filename*=UTF-8''{quote(name)}")
    path = path_of(response)
    metadata = dict(item.split(" ") for item in
                    client.head(path, headers=TUS).headers["Upload-Metadata"].split(","))
    assert base64.b64decode(metadata["filename"]).decode() == name
    disposition = client.get(path).headers["Content-Disposition"]
    assert f"filename*=UTF-8''{quote(name)}" in disposition


def test_partial_upload_content_type_on_creation_is_not_metadata(client):
    """tus-js-client (ietf-draft-05) sends it with uploadDataDuringCreation."""
    path = path_of(draft_create(client, 6, b"hi", complete=True, Content_Type=PARTIAL,
                                Upload_Metadata=f"filename {b64('a.bin')}"))
    metadata = client.head(path, headers=TUS).headers["Upload-Metadata"]
    assert metadata == f"filename {b64('a.bin')}"


# -- classification ---------------------------------------------------------------------------

def test_no_version_but_upload_complete_is_the_latest_draft(client, upload_dir):
    response = client.post("/files/", data=b"abc", headers={"Upload-Complete": "?0"})
    assert response.status_code == 201
    assert response.headers["Upload-Draft-Interop-Version"] == "9"
    assert response.headers["Upload-Complete"] == "?0"
    path = path_of(response)
    last = client.patch(path, data=b"def", headers={
        "Upload-Offset": "3", "Upload-Complete": "?1", "Content-Type": PARTIAL})
    assert last.status_code == 200 and last.headers["Upload-Complete"] == "?1"
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"


def test_no_version_offset_retrieval_is_the_latest_draft(client):
    """A HEAD with neither Tus-Resumable nor an interop version is what a client of
    the final RFC sends: answered with the latest draft's rules (more in
    tests/app/test_final_rfc.py); a draft client's named version is honoured."""
    path = path_of(client.post("/files/", data=b"abc", headers={"Upload-Complete": "?0"}))
    response = client.head(path)
    assert response.status_code == 204
    assert (response.headers["Upload-Offset"], response.headers["Upload-Complete"]) == ("3", "?0")
    response = client.head(path, headers={"Upload-Draft-Interop-Version": "3"})
    assert response.status_code == 204
    assert response.headers["Upload-Incomplete"] == "?1"


@pytest.mark.parametrize("value", ["2", "10", "abc", "", "8.0", "-3"])
@pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH", "DELETE"])
def test_unsupported_interop_versions_are_400(client, upload_dir, value, method):
    existing = path_of(draft_create(client, 8, b"abc"))
    before = uploads(upload_dir)
    target = "/files/" if method == "POST" else existing
    response = client.open(target, method=method, data=b"xyz" if method != "HEAD" else b"",
                           headers={"Upload-Draft-Interop-Version": value, "Upload-Complete": "?1",
                                    "Upload-Offset": "3", "Content-Type": PARTIAL})
    assert response.status_code == 400
    if method != "HEAD":
        assert "ERR_UNSUPPORTED_INTEROP_VERSION" in response.get_data(as_text=True)
    assert uploads(upload_dir) == before
    assert data_file(upload_dir, existing).read_bytes() == b"abc"
    assert head(client, 8, existing).headers["Upload-Offset"] == "3"


def test_options_carries_tus_and_draft_discovery(make_app):
    client = Client(make_app(max_size="1M", max_append_size="64K"))
    for target in ("/files/", "/files/" + "0" * 32):
        for headers in ({}, draft(8), TUS):
            response = client.options(target, headers=headers)
            assert response.status_code in (200, 204)
            assert response.headers["Tus-Version"] == "1.0.0"
            assert "creation" in response.headers["Tus-Extension"].split(",")
            assert response.headers["Tus-Max-Size"] == str(1024 * 1024)
            found = limits(response)
            assert found["min-size"] == 0
            assert found["max-size"] == 1024 * 1024
            assert found["max-append-size"] == 64 * 1024


def test_tus_requests_are_unaffected(client, upload_dir):
    """tus 1.0.0 on the same endpoint, even with draft headers around: Tus-Resumable wins."""
    path = create(client, 6, Upload_Draft_Interop_Version="8", Upload_Complete="?1")
    response = patch(client, path, b"abc", 0, Upload_Draft_Interop_Version="99")
    assert response.status_code == 204
    assert "Upload-Complete" not in response.headers
    state = client.head(path, headers=TUS)
    assert state.status_code == 200
    assert (state.headers["Upload-Offset"], state.headers["Upload-Length"]) == ("3", "6")
    assert patch(client, path, b"def", 3).status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"
    assert client.post("/files/", headers={"Upload-Length": "3"}).status_code == 412
    assert client.delete(path, headers=TUS).status_code == 204


# -- one upload, both protocols ----------------------------------------------------------------

def test_draft_upload_seen_by_tus_and_the_cli(client, upload_dir, monkeypatch, capsys):
    response = draft_create(client, 6, b"abc", Upload_Length="6",
                            Content_Disposition='attachment; filename="six.bin"')
    path = path_of(response)
    upload_id = path.rsplit("/", 1)[1]
    state = client.head(path, headers=TUS)
    assert state.status_code == 200
    assert (state.headers["Upload-Offset"], state.headers["Upload-Length"]) == ("3", "6")
    assert state.headers["Upload-Metadata"] == f"filename {b64('six.bin')}"

    # tus finishes what the draft began, and the draft sees it finished
    assert patch(client, path, b"def", 3).status_code == 204
    assert is_complete(6, head(client, 6, path))

    monkeypatch.setenv("TUSWSGI_UPLOAD_DIR", str(upload_dir))
    monkeypatch.delenv("TUSWSGI_CONFIG", raising=False)
    monkeypatch.chdir(upload_dir)
    assert cli.main(["show", upload_id, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["id"], row["size"], row["received"], row["state"], row["filename"]) == \
        (upload_id, 6, 6, "finished", "six.bin")


def test_deferred_length_draft_upload_seen_by_tus(client):
    path = path_of(draft_create(client, 8, b"abc"))
    state = client.head(path, headers=TUS)
    assert state.headers["Upload-Defer-Length"] == "1"
    assert state.headers["Upload-Offset"] == "3"


@pytest.mark.parametrize("version", [3, 8])
def test_tus_upload_seen_by_the_draft(client, version):
    path = create(client, 4)
    patch(client, path, b"ab", 0)
    state = head(client, version, path)
    assert state.status_code == 204
    assert (state.headers["Upload-Offset"], state.headers["Upload-Length"]) == ("2", "4")
    assert not is_complete(version, state)
    assert draft_append(client, version, path, b"cd", 2, True).status_code == append_status(version, True)
    assert client.head(path, headers=TUS).headers["Upload-Offset"] == "4"


# -- hooks --------------------------------------------------------------------------------------

@pytest.fixture
def hooked(make_app):
    hookfns.reset()
    app = make_app(hooks_python="support.hookfns:record")
    yield app, Client(app)
    app.service.hooks.drain()
    hookfns.reset()


def _settled_types(app) -> list[str]:
    app.service.hooks.drain()
    types = hookfns.types()
    hookfns.reset()
    return types


@pytest.mark.parametrize("version", VERSIONS)
def test_hooks_fire_the_same_events_as_tus(hooked, version):
    app, client = hooked
    # tus: creation with the first part, then the last part
    response = client.post("/files/", data=b"abc", headers={**TUS, "Upload-Length": "6",
                                                            "Content-Type": OCTET})
    tus_path = path_of(response)
    tus_create = _settled_types(app)
    patch(client, tus_path, b"def", 3)
    tus_finish = _settled_types(app)
    client.delete(tus_path, headers=TUS)
    tus_delete = _settled_types(app)

    draft_path = path_of(draft_create(client, version, b"abc", Upload_Length="6"))
    draft_created = _settled_types(app)
    draft_append(client, version, draft_path, b"def", 3, complete=True)
    draft_finish = _settled_types(app)
    client.delete(draft_path, headers=draft(version))
    draft_delete = _settled_types(app)

    assert draft_created == tus_create
    assert sorted(draft_finish) == sorted(tus_finish)
    assert {"pre-finish", "post-finish", "post-receive"} <= set(draft_finish)
    assert draft_delete == tus_delete
    assert "pre-terminate" in draft_delete and "post-terminate" in draft_delete


def test_hook_events_describe_the_draft_request(hooked, upload_dir):
    app, client = hooked
    path = path_of(draft_create(client, 8, b"hello", complete=True, Content_Type="text/plain"))
    app.service.hooks.drain()
    finished = hookfns.of_type("post-finish")
    assert len(finished) == 1
    event = finished[0]["Event"]
    assert event["HTTPRequest"]["Method"] == "POST"
    assert event["HTTPRequest"]["Header"]["Upload-Draft-Interop-Version"] == ["8"]
    assert event["Upload"]["ID"] == path.rsplit("/", 1)[1]
    assert (event["Upload"]["Size"], event["Upload"]["Offset"]) == (5, 5)
    assert event["Upload"]["MetaData"] == {"filetype": "text/plain"}
    assert event["Upload"]["Storage"]["Path"] == str(data_file(upload_dir, path))


def test_pre_create_rejection_creates_nothing(hooked, upload_dir):
    _app, client = hooked
    hookfns.ANSWERS["pre-create"] = {"RejectUpload": True}
    response = client.post("/files/", data=b"abc", headers=draft(8, Upload_Complete="?1"))
    assert response.status_code == 400
    assert uploads(upload_dir) == []


def test_expiry_in_upload_limit_counts_down(make_app, clock):
    client = Client(make_app(expiration="1h"))
    path = path_of(draft_create(client, 8, b"abc"))
    first = limits(head(client, 8, path))["max-age"]
    assert 3599 <= first <= 3600
    clock.advance(600)
    assert first - 601 <= limits(head(client, 8, path))["max-age"] <= first - 599


# -- interop 9: Upload-Complete says who answered --------------------------------------------

def test_409_in_9_says_upload_complete_false_with_the_offset(client, upload_dir):
    path = path_of(draft_create(client, 9, b"abcd"))
    response = draft_append(client, 9, path, b"XX", 2, complete=True)
    assert response.status_code == 409
    assert response.headers["Upload-Complete"] == "?0"
    assert response.headers["Upload-Offset"] == "4"
    assert problem(response)["type"] == PROBLEM + "mismatching-upload-offset"
    # the same for a finished upload: the 409 is the protocol's answer, not the target's
    draft_append(client, 9, path, b"ef", 4, complete=True)
    response = draft_append(client, 9, path, b"abcdef", 0, complete=True)
    assert response.status_code == 409
    assert response.headers["Upload-Complete"] == "?0"
    assert response.headers["Upload-Offset"] == "6"
    assert problem(response)["expected-offset"] == 6
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"


def test_append_to_a_finished_upload_in_9_replays_or_refuses_without_completed_upload(
        client, upload_dir):
    path = path_of(draft_create(client, 9, b"done", complete=True))
    for complete in (True, False):
        response = draft_append(client, 9, path, b"more", 4, complete)
        assert response.status_code == 400
        body = problem(response)
        assert (body["type"], body["code"]) == ("about:blank", "ERR_UPLOAD_COMPLETED")
        assert response.headers["Upload-Complete"] == "?0"
    for _ in range(2):  # the client lost the final response: it gets it again
        replay = draft_append(client, 9, path, b"", 4, complete=True)
        assert replay.status_code == 200
        assert replay.headers["Upload-Complete"] == "?1"
        assert (replay.headers["Upload-Offset"], replay.headers["Upload-Length"]) == ("4", "4")
    assert data_file(upload_dir, path).read_bytes() == b"done"


@pytest.mark.parametrize("case", ["inconsistent-length", "append-too-large", "content-type",
                                  "no-completion", "max-size"])
def test_protocol_errors_on_creation_and_append_say_upload_complete_false_in_9(
        make_app, upload_dir, case):
    client = Client(make_app(max_size="1K", max_append_size="100"))
    path = path_of(draft_create(client, 9, b"abc", Upload_Length="10"))
    before = uploads(upload_dir)
    if case == "inconsistent-length":
        response = draft_append(client, 9, path, b"de", 3, complete=True)
    elif case == "append-too-large":
        response = draft_append(client, 9, path, b"x" * 101, 3, complete=False)
    elif case == "content-type":
        response = draft_append(client, 9, path, b"de", 3, False, **{"Content-Type": OCTET})
    elif case == "no-completion":
        response = client.patch(path, data=b"de", headers={
            **draft(9, Upload_Offset="3"), "Content-Type": PARTIAL})
    else:
        response = client.post("/files/", headers=draft(9, Upload_Complete="?0",
                                                       Upload_Length="1025"))
    assert 400 <= response.status_code < 500
    assert response.headers["Upload-Complete"] == "?0"
    if response.status_code == 413:  # a limit was violated: the limits come with it
        assert limits(response)["max-append-size"] == 100
    assert uploads(upload_dir) == before
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_protocol_errors_before_9_carry_no_completion_header(make_app):
    client = Client(make_app(max_append_size="100"))
    path = path_of(draft_create(client, 8, b"abc"))
    response = draft_append(client, 8, path, b"x" * 101, 3, complete=False)
    assert response.status_code == 413
    assert "Upload-Complete" not in response.headers


@pytest.mark.parametrize("body", [b"", b"x" * 300])
def test_max_append_size_applies_to_creation_in_9_empty_creations_exempt(make_app, upload_dir,
                                                                          body):
    client = Client(make_app(max_size="1M", max_append_size="200"))
    response = client.post("/files/", data=body, headers=draft(
        9, Upload_Complete="?0", Upload_Length="1000"))
    if not body:  # no content: nothing to limit, whatever the announced length
        assert response.status_code == 201
        assert response.headers["Upload-Complete"] == "?0"
        assert limits(response)["max-append-size"] == 200
        return
    assert response.status_code == 413
    assert problem(response)["code"] == "ERR_APPEND_TOO_LARGE"
    assert response.headers["Upload-Complete"] == "?0"
    assert limits(response)["max-append-size"] == 200
    assert uploads(upload_dir) == []


def test_options_in_9_carries_upload_limit_even_without_limits(make_app):
    client = Client(make_app(expiration="0"))
    for target in ("/files/", "/files/" + "0" * 32):
        response = client.options(target, headers=draft(9))
        assert response.status_code == 200
        assert response.headers["Upload-Limit"] == "min-size=0"


def test_incremental_header_is_allowed_and_ignored(make_app, upload_dir):
    client = Client(make_app(cors_origins="https://a.example"))
    preflight = client.options("/files/", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "incremental, upload-complete"})
    assert "incremental" in preflight.headers["Access-Control-Allow-Headers"].lower()
    response = draft_create(client, 9, b"abc", complete=True, Incremental="?1")
    assert response.headers["Upload-Complete"] == "?1"
    assert data_file(upload_dir, path_of(response)).read_bytes() == b"abc"


def test_pre_create_refusal_is_the_targets_early_answer_in_9(hooked, upload_dir):
    """An early 400 from the application carries ?1: the client must not resume."""
    _app, client = hooked
    hookfns.ANSWERS["pre-create"] = {"RejectUpload": True}
    response = client.post("/files/", data=b"abc", headers=draft(9, Upload_Complete="?0",
                                                                 Upload_Length="10"))
    assert response.status_code == 400
    assert response.headers["Upload-Complete"] == "?1"
    assert uploads(upload_dir) == []


def test_pre_finish_refusal_completes_the_upload_in_9(hooked, upload_dir):
    """The application refusing the finished representation answers with ?1, and the
    upload is then complete: more bytes are refused, an empty completing append asks
    the application again and gets the same answer."""
    _app, client = hooked
    hookfns.ANSWERS["pre-finish"] = {"HTTPResponse": {"StatusCode": 422, "Body": "virus found"}}
    path = path_of(draft_create(client, 9, b"abc"))
    response = draft_append(client, 9, path, b"def", 3, complete=True)
    assert (response.status_code, response.get_data()) == (422, b"virus found")
    assert response.headers["Upload-Complete"] == "?1"
    state = head(client, 9, path)
    assert state.headers["Upload-Complete"] == "?1"
    assert (state.headers["Upload-Offset"], state.headers["Upload-Length"]) == ("6", "6")
    refused = draft_append(client, 9, path, b"ghi", 6, complete=True)
    assert refused.status_code == 400
    assert refused.headers["Upload-Complete"] == "?0"
    again = draft_append(client, 9, path, b"", 6, complete=True)
    assert (again.status_code, again.headers["Upload-Complete"]) == (422, "?1")
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"
