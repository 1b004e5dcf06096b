"""GET: serving finished uploads safely (Range, ETag, Content-Type/Disposition)."""

from __future__ import annotations

import base64
from email.utils import parsedate_to_datetime

import pytest
from conftest import TUS, create, data_file, patch

CONTENT = bytes(range(256)) * 4  # 1024 bytes, every byte value


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def finished(client, data: bytes = CONTENT, **metadata: str) -> str:
    headers = {"Upload_Metadata": meta(**metadata)} if metadata else {}
    path = create(client, len(data), **headers)
    if data:
        response = patch(client, path, data, 0)
        assert response.headers["Upload-Offset"] == str(len(data))
    return path


def test_get_returns_the_bytes(client, upload_dir):
    path = finished(client)
    response = client.get(path)
    assert response.status_code == 200
    assert response.data == CONTENT == data_file(upload_dir, path).read_bytes()
    assert response.headers["Content-Length"] == str(len(CONTENT))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_get_needs_no_tus_resumable(client):
    path = finished(client, b"plain link")
    response = client.get(path, headers={})
    assert response.status_code == 200
    assert response.data == b"plain link"


def test_get_with_tus_resumable_also_works(client):
    path = finished(client, b"abc")
    assert client.get(path, headers=TUS).data == b"abc"


def test_empty_upload_downloads_as_empty(client):
    path = create(client, 0)
    response = client.get(path)
    assert response.status_code == 200
    assert response.data == b""


@pytest.mark.parametrize(("range_header", "start", "end"), [
    ("bytes=0-0", 0, 0), ("bytes=1-2", 1, 2), ("bytes=1000-", 1000, 1023),
    ("bytes=-24", 1000, 1023), ("bytes=512-5000", 512, 1023),
])
def test_range_request(client, range_header, start, end):
    path = finished(client)
    response = client.get(path, headers={"Range": range_header})
    assert response.status_code == 206
    assert response.data == CONTENT[start:end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(CONTENT)}"
    assert response.headers["Content-Length"] == str(end - start + 1)


@pytest.mark.parametrize("range_header", ["bytes=1024-", "bytes=5000-6000"])
def test_unsatisfiable_range_is_416(client, range_header):
    path = finished(client)
    response = client.get(path, headers={"Range": range_header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(CONTENT)}"
    assert response.data.startswith(b"ERR_")


def test_unsatisfiable_range_is_never_a_success_nor_500(client):
    """Whatever the status, an unsatisfiable range sends no file bytes."""
    path = finished(client)
    response = client.get(path, headers={"Range": "bytes=5000-6000"})
    assert 400 <= response.status_code < 500
    assert CONTENT[:16] not in response.data


def test_range_with_unknown_unit_is_ignored(client):
    path = finished(client)
    response = client.get(path, headers={"Range": "pages=1-2"})
    assert response.status_code == 200
    assert response.data == CONTENT


def test_etag_and_if_none_match(client):
    path = finished(client)
    first = client.get(path)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    other = client.get(path, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200
    assert other.data == CONTENT


def test_etags_differ_between_uploads(client):
    assert client.get(finished(client)).headers["ETag"] != \
        client.get(finished(client)).headers["ETag"]


def test_last_modified_and_if_modified_since(client, upload_dir):
    path = finished(client)
    response = client.get(path)
    last_modified = parsedate_to_datetime(response.headers["Last-Modified"])
    assert abs(last_modified.timestamp() - data_file(upload_dir, path).stat().st_mtime) < 1
    again = client.get(path, headers={"If-Modified-Since": response.headers["Last-Modified"]})
    assert again.status_code == 304


@pytest.mark.parametrize(("filetype", "expected"), [
    ("image/png", "image/png"), ("video/mp4", "video/mp4"),
    ("application/pdf", "application/pdf"), ("text/plain", "text/plain"),
    ("not a type", "application/octet-stream"),
    ("text/html\r\nX-Evil: 1", "application/octet-stream"),
    ("text/html; charset=utf-8", "application/octet-stream"), ("", "application/octet-stream"),
    ("image/", "application/octet-stream"), ("/png", "application/octet-stream"),
])
def test_content_type_from_filetype(client, filetype, expected):
    path = finished(client, b"x", filetype=filetype)
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == expected
    assert "X-Evil" not in response.headers


def test_no_metadata_means_octet_stream_attachment_named_by_id(client):
    path = finished(client, b"x")
    response = client.get(path)
    assert response.mimetype == "application/octet-stream"
    upload_id = path.rsplit("/", 1)[1]
    assert response.headers["Content-Disposition"] == f"attachment; filename={upload_id}"


@pytest.mark.parametrize(("filetype", "disposition"), [
    ("image/png", "inline"), ("text/plain", "inline"), ("video/mp4", "inline"),
    ("audio/mpeg", "inline"), ("image/jpeg", "inline"),
    ("text/html", "attachment"), ("image/svg+xml", "attachment"),
    ("application/xhtml+xml", "attachment"), ("application/javascript", "attachment"),
    ("text/xml", "attachment"), ("application/pdf", "attachment"),
    ("application/octet-stream", "attachment"),
])
def test_disposition_inline_only_for_harmless_types(client, filetype, disposition):
    path = finished(client, b"x", filename="f.bin", filetype=filetype)
    response = client.get(path)
    assert response.headers["Content-Disposition"].split(";")[0] == disposition


def disposition_params(value: str) -> dict[str, str]:
    from werkzeug.http import parse_options_header
    kind, params = parse_options_header(value)
    return {"kind": kind, **params}


@pytest.mark.parametrize(("name", "ascii_name"), [
    ("report.pdf", "report.pdf"),
    ("my report.pdf", "my report.pdf"),
    ('a"b.txt', "a_b.txt"),
    ("../../etc/passwd", "_.._etc_passwd"),
    ("C:\\Windows\\evil.exe", "C:_Windows_evil.exe"),
    ("a\r\nSet-Cookie: x=1.txt", "aSet-Cookie: x=1.txt"),
    ("tab\there\x00.txt", "tabhere.txt"),
    ("résumé.pdf", "resume.pdf"),
    ("100%;x.txt", "100__x.txt"),
    ("...", "download"),
])
def test_content_disposition_filename_is_safe(client, name, ascii_name):
    path = finished(client, b"x", filename=name)
    response = client.get(path)
    raw = response.headers["Content-Disposition"]
    assert "\r" not in raw and "\n" not in raw and "\x00" not in raw
    assert "Set-Cookie" not in response.headers
    params = disposition_params(raw)
    assert params["kind"] == "attachment"
    fallback = raw.split("filename=", 1)[1].split(";")[0].strip('"')
    assert fallback == ascii_name or params.get("filename") == ascii_name
    assert "/" not in params["filename"] and "\\" not in params["filename"]
    assert all(0x20 <= ord(ch) < 0x7F for ch in raw)


def test_non_ascii_filename_uses_filename_star(client):
    path = finished(client, b"x", filename="résumé 日本.pdf")
    raw = client.get(path).headers["Content-Disposition"]
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.pdf" in raw
    assert all(ord(ch) < 0x80 for ch in raw)
    params = disposition_params(raw)
    # werkzeug decodes filename* and prefers it
    assert params["filename"] == "résumé 日本.pdf"


def test_quote_in_filename_keeps_original_in_filename_star(client):
    path = finished(client, b"x", filename='say "hi".txt')
    raw = client.get(path).headers["Content-Disposition"]
    assert 'filename="say _hi_.txt"' in raw
    assert "filename*=UTF-8''say%20%22hi%22.txt" in raw


def test_name_metadata_is_a_fallback_for_filename(client):
    path = finished(client, b"x", name="other.bin")
    assert "filename=other.bin" in client.get(path).headers["Content-Disposition"]


def test_tus_get_of_unfinished_upload_is_404(client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    response = client.get(path, headers=TUS)
    assert response.status_code == 404
    assert response.data.startswith(b"ERR_UPLOAD_NOT_FINISHED")
    assert b"abc" not in response.data
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_tus_get_of_deferred_upload_is_404(client):
    path = create(client, Upload_Defer_Length="1")
    patch(client, path, b"abc", 0)
    response = client.get(path, headers=TUS)
    assert response.status_code == 404
    assert response.data.startswith(b"ERR_UPLOAD_NOT_FINISHED")


@pytest.mark.parametrize("length", [10, None])
def test_plain_get_of_unfinished_upload_is_offset_retrieval(client, upload_dir, length):
    """A GET naming no protocol is the final RFC's offset retrieval when there is
    nothing to download yet: no content, the upload's state in headers."""
    path = create(client, length) if length else create(client, Upload_Defer_Length="1")
    patch(client, path, b"abc", 0)
    response = client.get(path)
    assert response.status_code == 204
    assert response.data == b""
    assert response.headers["Upload-Offset"] == "3"
    assert response.headers["Upload-Complete"] == "?0"
    assert response.headers.get("Upload-Length") == (str(length) if length else None)
    assert response.headers["Cache-Control"] == "no-store"
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_plain_get_of_finished_upload_downloads_with_the_offset_headers(client):
    path = finished(client, b"hello", filename="a.txt", filetype="text/plain")
    response = client.get(path)
    assert response.status_code == 200
    assert response.data == b"hello"
    assert response.headers["Content-Disposition"] == "inline; filename=a.txt"
    assert (response.headers["Upload-Offset"], response.headers["Upload-Length"],
            response.headers["Upload-Complete"]) == ("5", "5", "?1")
    assert response.headers["Cache-Control"] == "no-cache"  # a download, as before


def test_get_of_unknown_and_terminated_upload(client, upload_dir):
    assert client.get("/files/" + "a" * 32).data.startswith(b"ERR_NOT_FOUND")
    path = finished(client, b"bye")
    assert client.delete(path, headers=TUS).status_code == 204
    response = client.get(path)
    assert response.status_code == 410
    assert response.data.startswith(b"ERR_UPLOAD_GONE")
    assert not data_file(upload_dir, path).exists()


def test_download_off_is_405(make_app, upload_dir):
    from werkzeug.test import Client
    client = Client(make_app(download="off"))
    path = finished(client, b"secret")
    response = client.get(path, headers=TUS)
    assert response.status_code == 405
    assert response.data.startswith(b"ERR_DOWNLOAD_DISABLED")
    assert b"secret" not in response.data
    # A GET naming no protocol is then the draft's offset retrieval, without content.
    response = client.get(path)
    assert response.status_code == 204
    assert response.data == b""
    assert response.headers["Upload-Complete"] == "?1"
    assert data_file(upload_dir, path).read_bytes() == b"secret"


def test_final_concatenation_downloads_all_parts(client):
    parts = []
    for data in (b"hello ", b"world"):
        part = create(client, len(data), Upload_Concat="partial")
        patch(client, part, data, 0)
        parts.append(part)
    response = client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)})
    assert response.status_code == 201
    final = "/files/" + response.headers["Location"].rsplit("/", 1)[1]
    assert client.get(final).data == b"hello world"
