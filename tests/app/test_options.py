"""Discovery (OPTIONS), the protocol version check, and headers on every response."""

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from werkzeug.test import Client

EXTENSIONS = ["creation", "creation-with-upload", "creation-defer-length", "termination",
              "checksum", "expiration", "concatenation", "concatenation-unfinished"]


def info_files(upload_dir):
    return sorted(p.name for p in upload_dir.glob("*.info"))


@pytest.mark.parametrize("path", ["/files/", "/files", "/files/" + "0" * 32])
def test_options_without_tus_resumable(client, path):
    """200 with an empty body, as tusd answers (the protocol allows 200 or 204)."""
    response = client.options(path)
    assert response.status_code == 200
    assert response.get_data() == b""
    assert response.headers["Content-Length"] == "0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Extension"].split(",") == EXTENSIONS
    assert response.headers["Tus-Checksum-Algorithm"].split(",") == [
        "md5", "sha1", "sha256", "sha512", "crc32"]
    assert "Tus-Max-Size" not in response.headers


def test_options_on_existing_upload(client):
    path = create(client, 3)
    response = client.options(path)
    assert response.status_code == 200
    assert response.headers["Tus-Extension"].split(",") == EXTENSIONS


@pytest.mark.parametrize("version", ["0.2.2", "", "garbage"])
def test_options_ignores_tus_resumable(client, version):
    response = client.options("/files/", headers={"Tus-Resumable": version})
    assert response.status_code == 200
    assert response.headers["Tus-Version"] == "1.0.0"


def test_options_without_expiration(make_app):
    client = Client(make_app(expiration="0"))
    response = client.options("/files/")
    extensions = response.headers["Tus-Extension"].split(",")
    assert "expiration" not in extensions
    assert extensions == [e for e in EXTENSIONS if e != "expiration"]


def test_options_with_max_size(make_app):
    client = Client(make_app(max_size="1K"))
    response = client.options("/files/")
    assert response.status_code == 200
    assert response.headers["Tus-Max-Size"] == "1024"


def test_options_checksum_algorithms_follow_config(make_app):
    client = Client(make_app(checksum_algorithms="sha1,crc32"))
    response = client.options("/files/")
    assert response.headers["Tus-Checksum-Algorithm"] == "sha1,crc32"


# -- Tus-Resumable required ---------------------------------------------------------

BAD_VERSIONS = [None, "0.2.2", "1.0", "2.0.0", ""]


def _version_headers(version):
    return {} if version is None else {"Tus-Resumable": version}


def _assert_412(response):
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    body = response.get_data(as_text=True)
    assert body.startswith("ERR_UNSUPPORTED_VERSION") or (response.request.method == "HEAD"
                                                          and body == "")
    assert "Upload-Offset" not in response.headers


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_post_without_version_is_412_and_creates_nothing(client, upload_dir, version):
    response = client.post("/files/", headers={**_version_headers(version), "Upload-Length": "3"})
    _assert_412(response)
    assert "Location" not in response.headers
    assert info_files(upload_dir) == []


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_post_with_body_without_version_is_412_and_creates_nothing(client, upload_dir, version):
    response = client.post("/files/", data=b"abc", headers={
        **_version_headers(version), "Upload-Length": "3", "Content-Type": OCTET})
    _assert_412(response)
    assert info_files(upload_dir) == []


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_patch_without_version_is_412_and_upload_unchanged(client, upload_dir, version):
    path = create(client, 6)
    patch(client, path, b"abc", 0)
    response = client.patch(path, data=b"def", headers={
        **_version_headers(version), "Upload-Offset": "3", "Content-Type": OCTET})
    _assert_412(response)
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert client.head(path, headers=TUS).headers["Upload-Offset"] == "3"


#: A HEAD or DELETE with no version header at all is the final RFC's (tests/app/test_ietf.py).
WRONG_VERSIONS = [v for v in BAD_VERSIONS if v is not None]


@pytest.mark.parametrize("version", WRONG_VERSIONS)
def test_head_with_a_wrong_version_is_412(client, version):
    path = create(client, 6)
    response = client.head(path, headers=_version_headers(version))
    _assert_412(response)


@pytest.mark.parametrize("version", WRONG_VERSIONS)
def test_delete_with_a_wrong_version_is_412_and_upload_kept(client, upload_dir, version):
    path = create(client, 6)
    patch(client, path, b"abc", 0)
    response = client.delete(path, headers=_version_headers(version))
    _assert_412(response)
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert client.head(path, headers=TUS).status_code == 200


def test_method_override_without_version_is_412(client, upload_dir):
    path = create(client, 3)
    response = client.post(path, data=b"abc", headers={
        "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0", "Content-Type": OCTET})
    _assert_412(response)
    assert data_file(upload_dir, path).read_bytes() == b""


# -- headers on every response --------------------------------------------------------

def _responses(client, upload_dir):
    """One response of each kind the server produces."""
    path = create(client, 4)
    unknown = "/files/" + "0" * 32
    yield "201", client.post("/files/", headers={**TUS, "Upload-Length": "4"})
    yield "200 HEAD", client.head(path, headers=TUS)
    yield "204 PATCH", patch(client, path, b"ab", 0)
    yield "404", client.head(unknown, headers=TUS)
    yield "400", client.post("/files/", headers=TUS)
    yield "409", patch(client, path, b"ab", 0)
    yield "412", client.head(path, headers={"Tus-Resumable": "0.2.2"})
    yield "413", patch(client, path, b"abcdef", 2)
    yield "415", client.patch(path, data=b"x", headers={**TUS, "Upload-Offset": "2"})
    yield "460", patch(client, path, b"cd", 2, Upload_Checksum="sha1 " + "A" * 27 + "=")
    yield "405", client.open("/files/", method="PUT", headers=TUS)
    yield "204 DELETE", client.delete(path, headers=TUS)
    yield "410", client.head(path, headers=TUS)
    yield "200 GET", client.get(create(client, 0))


def test_every_response_has_tus_resumable_and_nosniff(client, upload_dir):
    seen = []
    for label, response in _responses(client, upload_dir):
        seen.append((label, response.status_code))
        assert response.headers.get("Tus-Resumable") == "1.0.0", label
        assert response.headers.get("X-Content-Type-Options") == "nosniff", label
    assert [code for _, code in seen] == [
        201, 200, 204, 404, 400, 409, 412, 413, 415, 460, 405, 204, 410, 200]


# -- unknown methods -----------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/files/", {"POST", "OPTIONS"}),
    ("GET", "/files/", {"POST", "OPTIONS"}),
    ("DELETE", "/files/", {"POST", "OPTIONS"}),
    ("PATCH", "/files/", {"POST", "OPTIONS"}),
    ("FOO", "/files/", {"POST", "OPTIONS"}),
    ("PUT", "/files/" + "0" * 32, {"HEAD", "PATCH", "DELETE", "GET", "OPTIONS"}),
    ("POST", "/files/" + "0" * 32, {"HEAD", "PATCH", "DELETE", "GET", "OPTIONS"}),
    ("PROPFIND", "/files/" + "0" * 32, {"HEAD", "PATCH", "DELETE", "GET", "OPTIONS"}),
])
def test_unknown_method_is_405_with_allow(client, upload_dir, method, path, allowed):
    response = client.open(path, method=method, headers=TUS)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed
    assert response.get_data(as_text=True).startswith("ERR_METHOD_NOT_ALLOWED")
    assert info_files(upload_dir) == []


def test_405_on_existing_upload_leaves_it_alone(client, upload_dir):
    path = create(client, 3)
    patch(client, path, b"ab", 0)
    response = client.open(path, method="PUT", data=b"zzz", headers={**TUS, "Content-Type": OCTET})
    assert response.status_code == 405
    assert data_file(upload_dir, path).read_bytes() == b"ab"
