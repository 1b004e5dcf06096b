"""HEAD: the state a client resumes from, and nothing for IDs that are not uploads."""

import time

import pytest
from conftest import TUS, b64, create, data_file, patch
from werkzeug.http import parse_date
from werkzeug.test import Client


def test_head_of_new_upload(client):
    path = create(client, 10)
    response = client.head(path, headers=TUS)
    assert response.status_code == 200
    assert response.get_data() == b""
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "10"
    assert "Upload-Defer-Length" not in response.headers
    assert "Upload-Metadata" not in response.headers
    assert "Upload-Concat" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def test_head_follows_the_offset(client, upload_dir):
    path = create(client, 10)
    for offset, chunk in ((0, b"abc"), (3, b"defg"), (7, b"hij")):
        assert patch(client, path, chunk, offset).status_code == 204
        head = client.head(path, headers=TUS)
        assert head.headers["Upload-Offset"] == str(offset + len(chunk))
        assert data_file(upload_dir, path).stat().st_size == offset + len(chunk)
    assert data_file(upload_dir, path).read_bytes() == b"abcdefghij"


def test_head_of_deferred_upload(client):
    path = create(client, Upload_Defer_Length="1")
    patch(client, path, b"abc", 0)
    response = client.head(path, headers=TUS)
    assert response.headers["Upload-Offset"] == "3"
    assert response.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def test_head_after_length_is_declared(client):
    path = create(client, Upload_Defer_Length="1")
    patch(client, path, b"abc", 0, Upload_Length="5")
    response = client.head(path, headers=TUS)
    assert response.headers["Upload-Length"] == "5"
    assert "Upload-Defer-Length" not in response.headers
    assert response.headers["Upload-Offset"] == "3"


def test_head_metadata_only_when_present(client):
    plain = create(client, 1)
    assert "Upload-Metadata" not in client.head(plain, headers=TUS).headers
    metadata = "filename " + b64("a.txt") + ",flag"
    with_meta = create(client, 1, Upload_Metadata=metadata)
    assert client.head(with_meta, headers=TUS).headers["Upload-Metadata"] == metadata


def test_upload_expires_for_unfinished_upload(client):
    before = time.time()
    path = create(client, 4)
    response = client.head(path, headers=TUS)
    expires = parse_date(response.headers["Upload-Expires"])
    assert expires is not None
    # Default expiration is 7 days after the last byte; allow for second rounding.
    assert before + 7 * 86400 - 2 <= expires.timestamp() <= time.time() + 7 * 86400 + 2
    assert response.headers["Upload-Expires"].endswith(" GMT")


def test_upload_expires_also_in_patch_response(client):
    path = create(client, 4)
    response = patch(client, path, b"ab", 0)
    assert "Upload-Expires" in response.headers
    response = patch(client, path, b"cd", 2)
    assert "Upload-Expires" not in response.headers


def test_no_upload_expires_for_finished_upload(client):
    path = create(client, 4)
    patch(client, path, b"done", 0)
    response = client.head(path, headers=TUS)
    assert response.headers["Upload-Offset"] == "4"
    assert "Upload-Expires" not in response.headers


def test_no_upload_expires_when_expiration_disabled(make_app):
    client = Client(make_app(expiration="0"))
    path = create(client, 4)
    assert "Upload-Expires" not in client.head(path, headers=TUS).headers


def test_expired_upload_is_gone(make_app, upload_dir, clock):
    client = Client(make_app(expiration="2s", network_timeout="1s"))
    path = create(client, 4)
    patch(client, path, b"ab", 0)
    clock.advance(2.2)
    response = client.head(path, headers=TUS)
    assert response.status_code == 410
    assert "Upload-Offset" not in response.headers


def test_unknown_id_is_404_without_offset(client):
    response = client.head("/files/" + "0" * 32, headers=TUS)
    assert response.status_code == 404
    assert "Upload-Offset" not in response.headers
    assert "Upload-Length" not in response.headers


@pytest.mark.parametrize("path", [
    "/files/..%2f..%2fetc",
    "/files/..%2F..%2Fetc%2Fpasswd",
    "/files/%2e%2e",
    "/files/..",
    "/files/.",
    "/files/%00",
    "/files/abc%00def",
    "/files/abc.info",
    "/files/.info",
    "/files/-abc",
    "/files/_abc",
    "/files/a%20b",
    "/files/%0a",
    "/files/" + "a" * 129,
    "/files/" + "a" * 5000,
    "/files/%C3%A9",
    "/files/a/b",
    "/files//etc",
])
@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE", "GET"])
def test_bad_ids_are_404_never_500(client, upload_dir, path, method):
    response = client.open(path, method=method, data=b"x", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert response.status_code == 404, response.get_data(as_text=True)
    assert "Upload-Offset" not in response.headers
    assert not (upload_dir.parent / "etc").exists()
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize("suffix", [".info", ".lock", ".pending", ".stop", "%2f..%2f", "%00"])
def test_sidecar_names_of_real_upload_are_404(client, upload_dir, suffix):
    path = create(client, 3)
    patch(client, path, b"abc", 0)
    info_before = (upload_dir / (path.rsplit("/", 1)[1] + ".info")).read_bytes()
    for method in ("HEAD", "GET", "DELETE"):
        response = client.open(path + suffix, method=method, headers=TUS)
        assert response.status_code == 404, (method, suffix)
        assert "Upload-Offset" not in response.headers
    assert (upload_dir / (path.rsplit("/", 1)[1] + ".info")).read_bytes() == info_before
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_longest_valid_id_shape_is_plain_404(client):
    response = client.head("/files/" + "a" * 128, headers=TUS)
    assert response.status_code == 404


def test_patch_with_wrong_offset_does_not_declare_length(client):
    path = create(client, Upload_Defer_Length="1")
    patch(client, path, b"ab", 0)
    response = patch(client, path, b"cd", 0, Upload_Length="4")
    assert response.status_code == 409
    head = client.head(path, headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in head.headers


def test_refused_patch_does_not_declare_length(client, upload_dir):
    path = create(client, Upload_Defer_Length="1")
    response = patch(client, path, b"abcde", 0, Upload_Length="2")
    assert response.status_code == 413
    assert data_file(upload_dir, path).read_bytes() == b""
    head = client.head(path, headers=TUS)
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers.get("Upload-Defer-Length") == "1"
    assert "Upload-Length" not in head.headers
    # The client corrects its mistake and can finish the upload.
    assert patch(client, path, b"abcde", 0, Upload_Length="5").status_code == 204
