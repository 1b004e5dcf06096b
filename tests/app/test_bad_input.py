"""Hostile requests: never a 500, always a 4xx ``ERR_`` answer, and nothing changes.

Requests are built as raw WSGI environs so header values can hold any byte a real
server can hand over (PEP 3333: latin-1 strings, so invalid UTF-8 arrives as-is).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from conftest import OCTET, TUS, b64, create, patch
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

UTF8_GARBAGE = "\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc"  # invalid UTF-8 bytes
LATIN1 = "caf\xe9 \xe0 la cr\xe8me"
HUGE = "9" * 100_000
BIG_HEADER = "x" * 1_000_000


class Response:
    def __init__(self, status: str, headers, body: bytes) -> None:
        self.status_code = int(status.split()[0])
        self.headers = headers
        self.data = body


def send(app, method: str, path: str, headers: dict, body: bytes = b"",
         extra_environ: dict | None = None) -> Response:
    environ = EnvironBuilder(method="GET", path="/").get_environ()
    environ["REQUEST_METHOD"] = method
    environ["PATH_INFO"] = path
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("CONTENT_TYPE", None)
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    environ.update(extra_environ or {})
    app_iter, status, response_headers = run_wsgi_app(app, environ, buffered=True)
    return Response(status, response_headers, b"".join(app_iter))


@pytest.fixture
def world(make_app, upload_dir):
    """An app, an unfinished upload holding b"hello" of 10, a finished one and a partial."""
    app = make_app(max_size="1M")
    client = Client(app)
    unfinished = create(client, 10)
    assert patch(client, unfinished, b"hello", 0).status_code == 204
    finished = create(client, 5)
    assert patch(client, finished, b"done!", 0).status_code == 204
    part = create(client, 5, Upload_Concat="partial")
    return {"app": app, "client": client, "upload": unfinished, "finished": finished,
            "partial": part, "dir": upload_dir}


def snapshot(upload_dir: Path) -> dict[str, bytes]:
    """Every file that carries state (lock and stop files are bookkeeping)."""
    return {p.name: p.read_bytes() for p in sorted(upload_dir.iterdir())
            if p.is_file() and not p.name.endswith(".lock")}


def assert_unchanged(world, before) -> None:
    assert snapshot(world["dir"]) == before
    head = world["client"].head(world["upload"], headers=TUS)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "5"
    assert head.headers["Upload-Length"] == "10"
    assert (world["dir"] / world["upload"].rsplit("/", 1)[1]).read_bytes() == b"hello"


def assert_error(response: Response, method: str, status=None) -> None:
    assert response.status_code != 500
    assert 400 <= response.status_code < 500, (response.status_code, response.data)
    if status is not None:
        assert response.status_code == status, response.data
    if method != "HEAD":
        assert response.data.startswith(b"ERR_"), response.data
        assert b"Traceback" not in response.data


BASE = {
    "POST": {**TUS, "Upload-Length": "10"},
    "PATCH": {**TUS, "Upload-Offset": "5", "Content-Type": OCTET},
    "HEAD": dict(TUS),
    "DELETE": dict(TUS),
    "GET": {},
    "OPTIONS": {},
}
BODY = {"PATCH": b"XYZ"}




def resolve(world, target: str) -> str:
    ids = {name: world[name].rsplit("/", 1)[1] for name in ("upload", "finished", "partial")}
    if target == "collection":
        return "/files/"
    if target in ids:
        return "/files/" + ids[target]
    return target.format(**ids)


# (label, method, target, headers, body or None for the default, expected status or None)
CASES: list[tuple] = []

for version in [UTF8_GARBAGE, LATIN1, "1.0.0\x00", " 1.0.0", "1.0.0 ", "1.0", "0.2.2",
                "", HUGE, "1.0.0, 1.0.0", None]:
    for method, target in [("POST", "collection"), ("PATCH", "upload"), ("HEAD", "upload"),
                           ("DELETE", "upload"), ("DELETE", "finished")]:
        if version is None and method in ("HEAD", "DELETE"):
            continue  # naming no protocol, they are the final RFC's (tests/app/test_ietf.py)
        CASES.append(("tus-resumable", method, target, {"Tus-Resumable": version}, None, 412))

BAD_PATHS = ["/files/\x00", "/files/abc\x00def", "/files/{upload}\x00", "/files/..", "/files/.",
             "/files/%00", "/files/" + UTF8_GARBAGE, "/files/" + "a" * 10_000,
             "/files/{upload}/extra", "/files/{upload}.info", "/files/{upload}.lock",
             "/files/{upload}.pending", "/files//{upload}", "/files/../{upload}",
             "/files/\xc3\xa9", "/files/{upload}\n", "/files/ {upload}", "/{upload}",
             "/files/-{upload}", "/\x00", "/" + "x" * 10_000, ""]
for path in BAD_PATHS:
    for method in ("PATCH", "HEAD", "DELETE", "GET", "POST"):
        CASES.append(("path", method, path, {}, None, None))

for weird in ["PUT", "PROPFIND", "TRACE", "CONNECT", "FOO", "GET\x00", "M" * 1000, "PATCH ",
              UTF8_GARBAGE, "BREW"]:
    for target in ("collection", "upload", "finished"):
        CASES.append(("method", weird, target, {**TUS, "Upload-Offset": "5",
                                                "Content-Type": OCTET}, b"XYZ", 405))

for override in [UTF8_GARBAGE, "PATCH\x00", "", "   ", "OPTIONS", "TRACE", "PATCH, DELETE",
                 "x" * 10_000, "PUT", "CONNECT"]:
    CASES.append(("override", "POST", "upload",
                  {"X-HTTP-Method-Override": override, "Upload-Offset": "5",
                   "Content-Type": OCTET}, b"XYZ", 400))
for override in ["GET", "DELETE", "HEAD", "PATCH"]:
    CASES.append(("override-on-collection", "POST", "collection",
                  {"X-HTTP-Method-Override": override}, None, 405))

for concat in ["", "partial ", "PARTIAL", "final", "final;", "final; ", "Final;/files/{partial}",
               "final;/files/../etc/passwd", "final;/files/{upload}", "final;/files/{finished}",
               "final;/files/{partial}", "final;/files/{upload}.info", "final;/files/x/y",
               UTF8_GARBAGE, "final;" + UTF8_GARBAGE, "final;javascript:alert(1)",
               "final;" + " ".join(["/files/{finished}"] * 5000), "final;/files/" + "a" * 200,
               "final;http://other.example/elsewhere/{upload}", "final;\x00", "partial;x",
               "final;file:///etc/passwd", "final;%2e%2e"]:
    CASES.append(("concat", "POST", "collection", {"Upload-Concat": concat,
                                                   "Upload-Length": None}, None, 400))

for length in ["abc", "-1", "1e3", "99999999999999999999", " 3", "0x3", "3, 3", "+3",
               UTF8_GARBAGE, HUGE, "3\x00"]:
    CASES.append(("content-length", "PATCH", "upload", {"Content-Length": length}, b"XYZ", 400))
    CASES.append(("content-length", "POST", "collection",
                  {"Content-Length": length, "Content-Type": OCTET}, b"XYZ", 400))
CASES.append(("content-length-too-big", "PATCH", "upload",
              {"Content-Length": "9999999999999999999"}, b"XYZ", 413))

WRONG_MD5 = b64(hashlib.md5(b"not it").digest())
for checksum in ["md5", "md5 ", "md5 !!!!", "rot13 abcd", UTF8_GARBAGE, "md5 " + WRONG_MD5 + "=",
                 "crc32 " + LATIN1, "md5\x00" + WRONG_MD5]:
    CASES.append(("checksum", "PATCH", "upload", {"Upload-Checksum": checksum}, b"XYZ", 400))
    CASES.append(("checksum", "POST", "collection",
                  {"Upload-Checksum": checksum, "Content-Type": OCTET}, b"XYZ", 400))
# Well-formed digests of the wrong length for their algorithm cannot match: 460.
for checksum in ["sha1 " + b64(b"short"), "sha256 " + "A" * 100_000, "sha512 " + WRONG_MD5]:
    CASES.append(("checksum-length", "PATCH", "upload", {"Upload-Checksum": checksum}, b"XYZ", 460))
    CASES.append(("checksum-length", "POST", "collection",
                  {"Upload-Checksum": checksum, "Content-Type": OCTET}, b"XYZ", 460))
for checksum in ["md5 " + WRONG_MD5, "MD5 " + WRONG_MD5, "crc32 " + b64(b"\0\0\0\0")]:
    CASES.append(("checksum-mismatch", "PATCH", "upload", {"Upload-Checksum": checksum},
                  b"XYZ", 460))

for offset in ["-1", "99999999999999999999", HUGE, UTF8_GARBAGE, "5\x00", "", "0", "4", "6",
               "9999999999999999999", "5.0", "0005 ", None]:
    CASES.append(("upload-offset", "PATCH", "upload", {"Upload-Offset": offset}, b"XYZ", None))

for length in ["-1", "1e3", "99999999999999999999", UTF8_GARBAGE, "", HUGE, "9999999999999999999",
               "2000000"]:
    CASES.append(("upload-length", "POST", "collection", {"Upload-Length": length}, None, None))
for length in ["-1", "2", "11", UTF8_GARBAGE, "0", HUGE]:
    CASES.append(("upload-length", "PATCH", "upload", {"Upload-Length": length}, b"XYZ", 400))
for defer in ["0", "2", "true", UTF8_GARBAGE, ""]:
    CASES.append(("defer", "POST", "collection",
                  {"Upload-Length": None, "Upload-Defer-Length": defer}, None, 400))
CASES.append(("length-and-defer", "POST", "collection", {"Upload-Defer-Length": "1"}, None, 400))
CASES.append(("no-length", "POST", "collection", {"Upload-Length": None}, None, 400))

for metadata in [UTF8_GARBAGE, "key value-not-b64!", "a b c", "k YQ==,k YQ==", "\xe9 dmFs",
                 ",,,", "k  YQ==", "k YQ", BIG_HEADER, "filename " + "A" * 20_000, "k\x00 YQ==",
                 "k " + LATIN1]:
    CASES.append(("metadata", "POST", "collection", {"Upload-Metadata": metadata}, None, 400))

for content_type in [UTF8_GARBAGE, "application/offset+octet-stream-x", "text/plain",
                     "application/octet-stream", "", "multipart/form-data; boundary=x"]:
    CASES.append(("content-type", "PATCH", "upload", {"Content-Type": content_type}, b"XYZ", 415))

CASES.append(("patch-final", "PATCH", "finished", {"Upload-Offset": "5"}, b"more", 413))
# A tus GET of an unfinished upload (a plain one is the draft's offset retrieval).
CASES.append(("download-unfinished", "GET", "upload", dict(TUS), None, 404))
CASES.append(("download-unfinished-range", "GET", "upload", {**TUS, "Range": "bytes=0-1"}, None, 404))
for rng in ["bytes=99999999999999999999999-", "bytes=5-", "bytes=10-20"]:
    CASES.append(("range", "GET", "finished", {"Range": rng}, None, None))


def case_id(case) -> str:
    label, method, target, headers, _, _ = case
    value = next(iter(headers.values()), "") if headers else target
    text = repr(value)[:24] if value is not None else "absent"
    return f"{label}-{method[:8]!r}-{target[:12]!r}-{text}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_hostile_request(world, case):
    _label, method, target, headers, body, status = case
    before = snapshot(world["dir"])
    base_method = method if method in BASE else "PATCH"
    all_headers = {**BASE[base_method], **headers}
    body = BODY.get(method, b"") if body is None else body
    path = resolve(world, target)
    response = send(world["app"], method, path, all_headers, body)
    assert_error(response, method, status)
    assert_unchanged(world, before)
    assert b"done!" not in response.data or method == "GET"


@pytest.mark.parametrize("url", ["http://[::1", "http://[zz]/files/x", "https://a]/files/x"])
def test_concat_with_unparsable_url_is_400(world, url):
    before = snapshot(world["dir"])
    response = send(world["app"], "POST", "/files/", {**TUS, "Upload-Concat": "final;" + url})
    assert_error(response, "POST", 400)
    assert_unchanged(world, before)


GARBAGE_HEADERS = {
    "Upload-Offset": UTF8_GARBAGE, "Upload-Length": "-5", "Upload-Defer-Length": "yes",
    "Upload-Metadata": "\xff\xfe", "Upload-Concat": "final;" + UTF8_GARBAGE,
    "Upload-Checksum": "md5 " + UTF8_GARBAGE, "Content-Type": UTF8_GARBAGE,
    "X-HTTP-Method-Override": UTF8_GARBAGE, "Range": "bytes=" + UTF8_GARBAGE,
    "If-None-Match": UTF8_GARBAGE, "If-Modified-Since": UTF8_GARBAGE,
    "Origin": UTF8_GARBAGE, "Access-Control-Request-Method": UTF8_GARBAGE,
    "Forwarded": UTF8_GARBAGE, "X-Forwarded-Host": UTF8_GARBAGE, "Host": "a" * 10_000,
    "Transfer-Encoding": "chunked, " + UTF8_GARBAGE, "X-" + "H" * 1000: BIG_HEADER,
}


@pytest.mark.parametrize("method", ["POST", "PATCH", "HEAD", "GET", "OPTIONS", "DELETE",
                                    "PUT", "TRACE"])
@pytest.mark.parametrize("target", ["collection", "upload", "finished"])
@pytest.mark.parametrize("behind_proxy", ["off", "on"])
def test_garbage_everywhere_never_500(make_app, upload_dir, method, target, behind_proxy):
    app = make_app(behind_proxy=behind_proxy)
    client = Client(app)
    upload = create(client, 10)
    patch(client, upload, b"hello", 0)
    finished = create(client, 5)
    patch(client, finished, b"done!", 0)
    path = {"collection": "/files/", "upload": upload, "finished": finished}[target]
    before = snapshot(upload_dir)
    response = send(app, method, path, {**TUS, **GARBAGE_HEADERS}, b"XYZ",
                    extra_environ={"HTTP_X_\xff\xfe": "1", "HTTP_": UTF8_GARBAGE})
    assert response.status_code < 500, response.data
    if response.status_code >= 400 and method != "HEAD":
        assert response.data.startswith(b"ERR_"), response.data
    if method == "DELETE" and target != "collection" and response.status_code == 204:
        assert not (upload_dir / path.rsplit("/", 1)[1]).exists()
        return
    assert snapshot(upload_dir) == before
    assert (upload_dir / upload.rsplit("/", 1)[1]).read_bytes() == b"hello"
    assert (upload_dir / finished.rsplit("/", 1)[1]).read_bytes() == b"done!"


@pytest.mark.parametrize("method", ["GET", "HEAD", "PATCH", "OPTIONS", "DELETE"])
def test_override_is_only_honoured_on_post(world, method):
    """A GET (say, an <img> tag) carrying X-HTTP-Method-Override: DELETE deletes nothing."""
    before = snapshot(world["dir"])
    headers = {**BASE[method], "X-HTTP-Method-Override": "DELETE" if method != "DELETE" else "GET"}
    response = send(world["app"], method, world["finished"], headers, BODY.get(method, b""))
    assert response.status_code < 500
    if method == "DELETE":
        assert response.status_code == 204
        assert not (world["dir"] / world["finished"].rsplit("/", 1)[1]).exists()
    else:
        assert (world["dir"] / world["finished"].rsplit("/", 1)[1]).read_bytes() == b"done!"
    if method != "DELETE":
        assert_unchanged(world, before)


def test_truncated_body_keeps_received_bytes_and_says_so(world):
    """Not hostile so much as broken: the bytes that did arrive are kept (resumable)."""
    response = send(world["app"], "PATCH", world["upload"],
                    {**BASE["PATCH"], "Content-Length": "5"}, b"XYZ")
    assert_error(response, "PATCH", 400)
    assert response.data.startswith(b"ERR_CLIENT_GONE")
    assert (world["dir"] / world["upload"].rsplit("/", 1)[1]).read_bytes() == b"helloXYZ"
    head = world["client"].head(world["upload"], headers=TUS)
    assert head.headers["Upload-Offset"] == "8"
