"""PATCH: appending at the right offset, and refusing everything else unchanged."""

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from werkzeug.test import Client


def test_patch_appends_and_reports_new_offset(client, upload_dir):
    path = create(client, 11)
    response = patch(client, path, b"hello ", 0)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "6"
    response = patch(client, path, b"world", 6)
    assert response.headers["Upload-Offset"] == "11"
    assert data_file(upload_dir, path).read_bytes() == b"hello world"


def test_offset_mismatch_is_409_and_leaves_data(client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    response = patch(client, path, b"XYZ", 0)
    assert response.status_code == 409
    assert response.get_data(as_text=True).startswith("ERR_MISMATCHED_OFFSET")
    assert response.headers["Upload-Offset"] == "3"  # resume from here, no HEAD needed
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    again = patch(client, path, b"defg", int(response.headers["Upload-Offset"]))
    assert again.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"abcdefg"


@pytest.mark.parametrize("value", ["-1", "1e3", "0x10", "1.5", "", " 1", "+1", "9" * 30, "abc"])
def test_malformed_offset_is_400(client, upload_dir, value):
    path = create(client, 10)
    response = client.patch(path, data=b"abc", headers={**TUS, "Upload-Offset": value,
                                                      "Content-Type": OCTET})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_INVALID_OFFSET")
    assert data_file(upload_dir, path).read_bytes() == b""


def test_missing_offset_is_400(client, upload_dir):
    path = create(client, 10)
    response = client.patch(path, data=b"abc", headers={**TUS, "Content-Type": OCTET})
    assert response.status_code == 400
    assert data_file(upload_dir, path).read_bytes() == b""


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain"])
def test_wrong_content_type_is_415(client, upload_dir, content_type):
    path = create(client, 10)
    headers = {**TUS, "Upload-Offset": "0"}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.patch(path, data=b"abc", headers=headers)
    assert response.status_code == 415
    assert data_file(upload_dir, path).read_bytes() == b""


def test_body_past_length_is_413_and_upload_unchanged(client, upload_dir):
    path = create(client, 5)
    patch(client, path, b"ab", 0)
    response = patch(client, path, b"cdefgh", 2)
    assert response.status_code == 413
    assert data_file(upload_dir, path).read_bytes() == b"ab"
    head = client.head(path, headers=TUS)
    assert head.headers["Upload-Offset"] == "2"


def test_unknown_upload_is_404(client):
    response = patch(client, "/files/" + "0" * 32, b"abc", 0)
    assert response.status_code == 404
    assert "Upload-Offset" not in response.headers


def test_deferred_length_declared_by_zero_byte_patch(client, upload_dir):
    """tuspy declares the length with an empty PATCH carrying Upload-Length."""
    path = create(client, Upload_Defer_Length="1")
    response = patch(client, path, b"", 0, Upload_Length="4")
    assert response.status_code == 204
    head = client.head(path, headers=TUS)
    assert head.headers["Upload-Length"] == "4"
    assert "Upload-Defer-Length" not in head.headers
    assert patch(client, path, b"data", 0).headers["Upload-Offset"] == "4"
    assert data_file(upload_dir, path).read_bytes() == b"data"


def test_chunked_patch(client, upload_dir):
    path = create(client, 8)
    response = client.patch(path, input_stream=__import__("io").BytesIO(b"chunked!"),
                            headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET,
                                     "Transfer-Encoding": "chunked"})
    assert response.status_code == 204, response.get_data(as_text=True)
    assert data_file(upload_dir, path).read_bytes() == b"chunked!"


def test_method_override_on_post(client, upload_dir):
    path = create(client, 3)
    response = client.post(path, data=b"abc", headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_body_over_max_append_size_is_413_and_nothing_is_written(make_app, upload_dir):
    """max_append_size caps one request (proxies that limit bodies), not the upload."""
    client = Client(make_app(max_append_size="4K"))
    assert "max-append-size=4096" in client.options("/files/").headers["Upload-Limit"]
    path = create(client, 10_000)
    response = patch(client, path, b"x" * 5000, 0)
    assert response.status_code == 413
    assert response.get_data(as_text=True).startswith("ERR_APPEND_TOO_LARGE")
    assert data_file(upload_dir, path).read_bytes() == b""
    assert patch(client, path, b"y" * 4096, 0).headers["Upload-Offset"] == "4096"
    assert data_file(upload_dir, path).read_bytes() == b"y" * 4096


def test_a_patch_checks_its_upload_id_once(client, monkeypatch):
    """The dispatcher checks the ID against the pattern; everything after it gets
    a checked UploadId and never builds a path from unchecked text."""
    from tuswsgi import upload as upload_module
    path = create(client, 10)
    real = upload_module.UPLOAD_ID
    checks = []

    class Counting:
        def fullmatch(self, text):
            checks.append(text)
            return real.fullmatch(text)

    monkeypatch.setattr(upload_module, "UPLOAD_ID", Counting())
    assert patch(client, path, b"0123456789", 0).status_code == 204
    assert checks == [path.rsplit("/", 1)[1]]
