"""Upload-Checksum: verified chunks are kept, anything else leaves the upload as it was."""

import base64
import hashlib
import io
import socket
import zlib

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request

from tuswsgi.body import CONNECTION_KEY, Connection
from tuswsgi.server.framing import BodyReader
from tuswsgi.server.wire import Wire

ALGORITHMS = ("md5", "sha1", "sha256", "sha512", "crc32")


def digest(algorithm: str, data: bytes) -> bytes:
    if algorithm == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    return hashlib.new(algorithm, data).digest()


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(digest(algorithm, data)).decode()}"


def leftovers(upload_dir, path):
    """Sidecar files that must not survive a request (lock files may)."""
    upload_id = path.rsplit("/", 1)[1]
    return sorted(p.name for p in upload_dir.iterdir()
                  if p.name.startswith(upload_id) and (p.name.endswith(".pending")
                                                      or ".tmp-" in p.name))


def offset(client, path) -> str:
    return client.head(path, headers=TUS).headers["Upload-Offset"]


def chunked_patch(client, path, data, offset_, **headers):
    """A PATCH without Content-Length (Transfer-Encoding: chunked, input terminated)."""
    all_headers = {**TUS, "Upload-Offset": str(offset_), "Content-Type": OCTET}
    all_headers.update({k.replace("_", "-"): v for k, v in headers.items()})
    environ = EnvironBuilder(path=path, method="PATCH", headers=all_headers).get_environ()
    environ["wsgi.input"] = io.BytesIO(data)
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    parts = client.run_wsgi_app(environ, buffered=True)
    return client.response_wrapper(*parts, request=Request(environ))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_correct_checksum_is_accepted(client, upload_dir, algorithm):
    path = create(client, 11)
    response = patch(client, path, b"hello ", 0, Upload_Checksum=checksum(algorithm, b"hello "))
    assert response.status_code == 204, response.get_data(as_text=True)
    assert response.headers["Upload-Offset"] == "6"
    response = patch(client, path, b"world", 6, Upload_Checksum=checksum(algorithm, b"world"))
    assert response.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"hello world"
    assert offset(client, path) == "11"
    assert leftovers(upload_dir, path) == []


def test_algorithm_name_is_case_insensitive(client, upload_dir):
    path = create(client, 3)
    response = patch(client, path, b"abc", 0,
                     Upload_Checksum=checksum("sha256", b"abc").replace("sha256", "SHA256"))
    assert response.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_crc32_digest_is_big_endian(client, upload_dir):
    data = b"endianness"
    value = zlib.crc32(data)
    assert value.to_bytes(4, "big") != value.to_bytes(4, "little")
    path = create(client, len(data))
    little = "crc32 " + base64.b64encode(value.to_bytes(4, "little")).decode()
    assert patch(client, path, data, 0, Upload_Checksum=little).status_code == 460
    assert data_file(upload_dir, path).read_bytes() == b""
    big = "crc32 " + base64.b64encode(value.to_bytes(4, "big")).decode()
    assert patch(client, path, data, 0, Upload_Checksum=big).status_code == 204
    assert data_file(upload_dir, path).read_bytes() == data


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_mismatch_is_460_and_chunk_discarded(client, upload_dir, algorithm):
    path = create(client, 10)
    assert patch(client, path, b"abc", 0).status_code == 204
    response = patch(client, path, b"defg", 3, Upload_Checksum=checksum(algorithm, b"DEFG"))
    assert response.status_code == 460
    assert response.get_data(as_text=True).startswith("ERR_CHECKSUM_MISMATCH")
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert offset(client, path) == "3"
    assert leftovers(upload_dir, path) == []
    # The client retries the same chunk with the right checksum.
    response = patch(client, path, b"defg", 3, Upload_Checksum=checksum(algorithm, b"defg"))
    assert response.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"abcdefg"


def test_mismatch_on_chunked_body_discards_chunk(client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    response = chunked_patch(client, path, b"defg", 3, Upload_Checksum=checksum("sha1", b"xxxx"))
    assert response.status_code == 460
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert offset(client, path) == "3"
    assert leftovers(upload_dir, path) == []


def test_correct_checksum_on_chunked_body(client, upload_dir):
    path = create(client, 4)
    response = chunked_patch(client, path, b"data", 0, Upload_Checksum=checksum("md5", b"data"))
    assert response.status_code == 204, response.get_data(as_text=True)
    assert data_file(upload_dir, path).read_bytes() == b"data"


def test_chunked_body_too_long_with_checksum_is_413_and_discarded(client, upload_dir):
    path = create(client, 4)
    response = chunked_patch(client, path, b"datadata", 0,
                             Upload_Checksum=checksum("md5", b"datadata"))
    assert response.status_code == 413
    assert data_file(upload_dir, path).read_bytes() == b""
    assert leftovers(upload_dir, path) == []


def test_mismatch_on_large_chunk_discards_all_of_it(client, upload_dir):
    data = bytes(range(256)) * 9000  # > 2 MiB: several store blocks
    path = create(client, len(data) + 1)
    response = patch(client, path, data, 0, Upload_Checksum=checksum("sha256", data + b"!"))
    assert response.status_code == 460
    assert data_file(upload_dir, path).stat().st_size == 0
    assert offset(client, path) == "0"
    assert leftovers(upload_dir, path) == []


@pytest.mark.parametrize(("value", "code"), [
    ("sha3 " + base64.b64encode(b"x" * 32).decode(), "ERR_UNSUPPORTED_CHECKSUM"),
    ("crc64 " + base64.b64encode(b"x" * 8).decode(), "ERR_UNSUPPORTED_CHECKSUM"),
    ("", "ERR_UNSUPPORTED_CHECKSUM"),
    ("sha1", "ERR_INVALID_CHECKSUM"),
    ("sha1 ", "ERR_INVALID_CHECKSUM"),
    ("sha1 !!!!", "ERR_INVALID_CHECKSUM"),
    ("sha256 " + base64.b64encode(b"x" * 32).decode().rstrip("="), "ERR_INVALID_CHECKSUM"),
])
def test_unknown_or_malformed_checksum_is_400_and_unchanged(client, upload_dir, value, code):
    path = create(client, 6)
    patch(client, path, b"abc", 0)
    response = patch(client, path, b"def", 3, Upload_Checksum=value)
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith(code)
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert offset(client, path) == "3"
    assert leftovers(upload_dir, path) == []


@pytest.mark.parametrize("value", [
    "sha1 " + base64.b64encode(b"x" * 21).decode(),   # one byte too many
    "sha1 " + hashlib.sha1(b"abc").hexdigest(),       # hex text is base64 of 30 bytes
    "md5 " + base64.b64encode(b"x" * 15).decode(),
    "crc32 " + base64.b64encode(b"x" * 8).decode(),
    "sha512 " + base64.b64encode(b"x" * 32).decode(),
])
@pytest.mark.parametrize("chunked", [False, True])
def test_digest_of_the_wrong_length_is_460_and_unchanged(client, upload_dir, value, chunked):
    """Well-formed base64 that no body can match: the checksum mismatches (460), as tus's
    conformance suites expect, and nothing is written."""
    path = create(client, 6)
    patch(client, path, b"abc", 0)
    send = chunked_patch if chunked else patch
    response = send(client, path, b"def", 3, Upload_Checksum=value)
    assert response.status_code == 460
    assert response.get_data(as_text=True).startswith("ERR_CHECKSUM_MISMATCH")
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert offset(client, path) == "3"
    assert leftovers(upload_dir, path) == []


def test_creation_with_a_digest_of_the_wrong_length_creates_nothing(client, upload_dir):
    response = client.post("/files/", data=b"first", headers={
        **TUS, "Upload-Length": "10", "Content-Type": OCTET,
        "Upload-Checksum": "sha1 " + base64.b64encode(b"x" * 21).decode()})
    assert response.status_code == 460
    assert "Location" not in response.headers
    assert list(upload_dir.iterdir()) == []


def test_algorithm_not_enabled_is_400(make_app, upload_dir):
    client = Client(make_app(checksum_algorithms="sha1"))
    assert client.options("/files/").headers["Tus-Checksum-Algorithm"] == "sha1"
    path = create(client, 3)
    response = patch(client, path, b"abc", 0, Upload_Checksum=checksum("md5", b"abc"))
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_UNSUPPORTED_CHECKSUM")
    assert data_file(upload_dir, path).read_bytes() == b""
    response = patch(client, path, b"abc", 0, Upload_Checksum=checksum("sha1", b"abc"))
    assert response.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"abc"


# -- creation-with-upload ----------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_creation_with_upload_and_checksum(client, upload_dir, algorithm):
    response = client.post("/files/", data=b"first", headers={
        **TUS, "Upload-Length": "10", "Content-Type": OCTET,
        "Upload-Checksum": checksum(algorithm, b"first")})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Upload-Offset"] == "5"
    path = response.headers["Location"]
    assert data_file(upload_dir, path).read_bytes() == b"first"
    assert leftovers(upload_dir, path) == []


def test_creation_with_upload_and_wrong_checksum(client, upload_dir):
    """A creation request whose body fails its checksum is refused as a whole."""
    response = client.post("/files/", data=b"first", headers={
        **TUS, "Upload-Length": "10", "Content-Type": OCTET,
        "Upload-Checksum": checksum("sha1", b"other")})
    assert response.status_code == 460
    assert "Location" not in response.headers
    assert list(upload_dir.iterdir()) == []


def test_creation_with_upload_and_malformed_checksum_creates_nothing(client, upload_dir):
    response = client.post("/files/", data=b"first", headers={
        **TUS, "Upload-Length": "10", "Content-Type": OCTET, "Upload-Checksum": "sha1 !!!!"})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_INVALID_CHECKSUM")
    assert list(upload_dir.iterdir()) == []


def test_creation_without_body_ignores_checksum(client, upload_dir):
    """With no body there is nothing to verify."""
    response = client.post("/files/", headers={
        **TUS, "Upload-Length": "10", "Upload-Checksum": checksum("sha1", b"")})
    assert response.status_code == 201
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b""


def test_mismatch_does_not_declare_length(client, upload_dir):
    path = create(client, Upload_Defer_Length="1")
    response = patch(client, path, b"abc", 0, Upload_Length="3",
                     Upload_Checksum=checksum("sha1", b"xyz"))
    assert response.status_code == 460
    assert data_file(upload_dir, path).read_bytes() == b""
    head = client.head(path, headers=TUS)
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers.get("Upload-Defer-Length") == "1"
    assert "Upload-Length" not in head.headers


# -- checksum-trailer --------------------------------------------------------------------
#
# Trailers reach the application only through tuswsgi's worker, which hands it the
# connection's BodyReader; here a socket pair plays the connection.  Over real
# gunicorn and nginx: tests/server/test_judges_e2e.py.

def framed(chunks: list[bytes], trailers: list[tuple[str, str]]) -> dict:
    """The environ keys tuswsgi's worker adds for a chunked body with ``trailers``."""
    wire = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n"
    wire += b"".join(f"{name}: {value}\r\n".encode() for name, value in trailers) + b"\r\n"
    client_end, server_end = socket.socketpair()
    client_end.sendall(wire)
    client_end.close()
    server_end.setblocking(False)
    connection = Wire(server_end, send_timeout=5)
    reader = BodyReader(connection, b"", None, batch_wait=0, timeout=5)
    return {CONNECTION_KEY: Connection(reader, connection.sendall)}


def trailer_request(client, method, path, chunks, trailers, *, announce=True, **headers):
    all_headers = {**TUS, "Content-Type": OCTET}
    if announce:
        all_headers["Trailer"] = "Upload-Checksum"
    all_headers.update({k.replace("_", "-"): v for k, v in headers.items()})
    environ = EnvironBuilder(path=path, method=method, headers=all_headers).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = io.BytesIO(b"")
    environ["wsgi.input_terminated"] = True
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ.update(framed(chunks, trailers))
    parts = client.run_wsgi_app(environ, buffered=True)
    return client.response_wrapper(*parts, request=Request(environ))


def trailer_patch(client, path, chunks, offset_, trailers, **options):
    return trailer_request(client, "PATCH", path, chunks, trailers,
                           Upload_Offset=str(offset_), **options)


def test_checksum_trailer_is_offered_only_where_trailers_arrive(make_app):
    client = Client(make_app())
    plain = client.options("/files/")
    assert "checksum-trailer" not in plain.headers["Tus-Extension"].split(",")
    def options_through_worker(app_client):
        environ = EnvironBuilder(path="/files/", method="OPTIONS").get_environ()
        environ.update(framed([], []))
        parts = app_client.run_wsgi_app(environ, buffered=True)
        return app_client.response_wrapper(*parts, request=Request(environ))
    extensions = options_through_worker(client).headers["Tus-Extension"].split(",")
    assert extensions[extensions.index("checksum") + 1] == "checksum-trailer"
    off = options_through_worker(Client(make_app(checksum_trailer="off")))
    assert "checksum-trailer" not in off.headers["Tus-Extension"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_checksum_trailer_is_verified(client, upload_dir, algorithm):
    path = create(client, 11)
    response = trailer_patch(client, path, [b"hel", b"lo "], 0,
                             [("Upload-Checksum", checksum(algorithm, b"hello "))])
    assert response.status_code == 204, response.get_data(as_text=True)
    assert response.headers["Upload-Offset"] == "6"
    response = trailer_patch(client, path, [b"world"], 6,
                             [("Upload-Checksum", checksum(algorithm, b"world!"))])
    assert response.status_code == 460
    assert response.get_data(as_text=True).startswith("ERR_CHECKSUM_MISMATCH")
    assert data_file(upload_dir, path).read_bytes() == b"hello "
    assert offset(client, path) == "6"
    assert leftovers(upload_dir, path) == []


@pytest.mark.parametrize(("trailers", "options", "status", "code"), [
    ([], {}, 400, "ERR_TRAILER_MISSING"),                                  # a proxy dropped it
    ([("Upload-Checksum", checksum("sha1", b"abc"))], {"announce": False}, 400,
     "ERR_TRAILER_NOT_ANNOUNCED"),
    ([("Upload-Checksum", checksum("sha1", b"abc"))],
     {"announce": False, "Upload_Checksum": checksum("sha1", b"abc")}, 400, "ERR_CHECKSUM_TWICE"),
    ([("Upload-Checksum", checksum("sha1", b"abc"))] * 2, {}, 400, "ERR_INVALID_CHECKSUM"),
    ([("Upload-Checksum", "sha1 !!!!")], {}, 400, "ERR_INVALID_CHECKSUM"),
    ([("Upload-Checksum", "sha3 " + base64.b64encode(b"x" * 32).decode())], {}, 400,
     "ERR_UNSUPPORTED_CHECKSUM"),
    ([("Upload-Checksum", "sha1 " + base64.b64encode(b"x" * 21).decode())], {}, 460,
     "ERR_CHECKSUM_MISMATCH"),
])
def test_unusable_checksum_trailer_undoes_the_chunk(client, upload_dir, trailers, options, status,
                                                    code):
    path = create(client, 6)
    patch(client, path, b"ab", 0)
    response = trailer_patch(client, path, [b"c", b"d"], 2, trailers, **options)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_data(as_text=True).startswith(code)
    assert data_file(upload_dir, path).read_bytes() == b"ab"
    assert offset(client, path) == "2"
    assert leftovers(upload_dir, path) == []


def test_header_and_announced_trailer_are_refused_before_the_body(client, upload_dir):
    path = create(client, 6)
    response = trailer_patch(client, path, [b"abc"], 0, [("Upload-Checksum", checksum("md5", b"abc"))],
                             Upload_Checksum=checksum("md5", b"abc"))
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_CHECKSUM_TWICE")
    assert data_file(upload_dir, path).read_bytes() == b""


def test_other_trailers_are_ignored(client, upload_dir):
    path = create(client, 3)
    response = trailer_patch(client, path, [b"abc"], 0, [("X-Trace", "1")], announce=False)
    assert response.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_announced_trailer_without_a_way_to_read_it_is_400(client, upload_dir):
    """Without tuswsgi's worker no trailer reaches the application: an announced one
    is refused before the body is read, and an unannounced one is never seen."""
    path = create(client, 6)
    for send in (chunked_patch, patch):
        response = send(client, path, b"abc", 0, Trailer="Upload-Checksum")
        assert response.status_code == 400
        assert response.get_data(as_text=True).startswith("ERR_TRAILER_UNAVAILABLE")
    assert data_file(upload_dir, path).read_bytes() == b""
    assert chunked_patch(client, path, b"abc", 0).status_code == 204  # the header-less form works
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_creation_with_upload_and_a_checksum_trailer(client, upload_dir):
    good = trailer_request(client, "POST", "/files/", [b"first"],
                           [("Upload-Checksum", checksum("sha256", b"first"))], Upload_Length="10")
    assert good.status_code == 201, good.get_data(as_text=True)
    assert data_file(upload_dir, good.headers["Location"]).read_bytes() == b"first"
    before = sorted(p.name for p in upload_dir.iterdir())
    bad = trailer_request(client, "POST", "/files/", [b"first"],
                          [("Upload-Checksum", checksum("sha256", b"other"))], Upload_Length="10")
    assert bad.status_code == 460
    assert "Location" not in bad.headers
    assert sorted(p.name for p in upload_dir.iterdir()) == before
