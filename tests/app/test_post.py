"""POST: creation, deferred length, creation-with-upload, limits, and nothing left behind
by a refused request."""

import io

import pytest
from conftest import OCTET, TUS, b64, create, data_file, patch
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request


def info_files(upload_dir):
    return sorted(p.name for p in upload_dir.glob("*.info"))


def all_files(upload_dir):
    return sorted(p.name for p in upload_dir.iterdir())


def upload_id(response):
    return response.headers["Location"].rsplit("/", 1)[1]


def wsgi_request(client, method, path, body, headers, content_length=None):
    """Send ``body`` exactly as given: chunked (no Content-Length, input terminated by the
    server) unless ``content_length`` is set, in which case it is sent verbatim.  The test
    client's own helpers always compute Content-Length themselves."""
    environ = EnvironBuilder(path=path, method=method, headers=headers).get_environ()
    environ["wsgi.input"] = io.BytesIO(body)
    environ.pop("CONTENT_LENGTH", None)
    if content_length is None:
        environ["wsgi.input_terminated"] = True
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = content_length
    parts = client.run_wsgi_app(environ, buffered=True)
    return client.response_wrapper(*parts, request=Request(environ))




# -- creation -------------------------------------------------------------------------

def test_create_with_length(client, upload_dir):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "11"})
    assert response.status_code == 201
    assert response.get_data() == b""
    location = response.headers["Location"]
    assert location.startswith("http://localhost/files/")
    new_id = upload_id(response)
    assert len(new_id) == 32 and int(new_id, 16) >= 0
    assert response.headers["Upload-Offset"] == "0"
    assert "Upload-Expires" in response.headers
    assert data_file(upload_dir, location).read_bytes() == b""
    assert info_files(upload_dir) == [new_id + ".info"]
    head = client.head(location, headers=TUS)
    assert head.status_code == 200
    assert head.headers["Upload-Length"] == "11"
    assert head.headers["Upload-Offset"] == "0"


def test_location_is_usable_for_patch(client, upload_dir):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "3"})
    location = response.headers["Location"]
    assert patch(client, location, b"abc", 0).status_code == 204
    assert data_file(upload_dir, location).read_bytes() == b"abc"


def test_each_creation_gets_its_own_id(client, upload_dir):
    ids = {upload_id(client.post("/files/", headers={**TUS, "Upload-Length": "1"}))
           for _ in range(5)}
    assert len(ids) == 5
    assert len(info_files(upload_dir)) == 5


def test_create_on_path_without_trailing_slash(client, upload_dir):
    response = client.post("/files", headers={**TUS, "Upload-Length": "1"})
    assert response.status_code == 201
    assert len(info_files(upload_dir)) == 1


def test_location_uses_host_header(client):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "1",
                                               "Host": "tus.example.org:8080"})
    assert response.headers["Location"].startswith("http://tus.example.org:8080/files/")


def test_zero_length_upload_is_complete_at_once(client, upload_dir):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "0"})
    assert response.status_code == 201
    assert "Upload-Expires" not in response.headers
    head = client.head(response.headers["Location"], headers=TUS)
    assert head.headers["Upload-Length"] == "0"
    assert head.headers["Upload-Offset"] == "0"
    assert "Upload-Expires" not in head.headers
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b""


def test_create_with_deferred_length(client, upload_dir):
    response = client.post("/files/", headers={**TUS, "Upload-Defer-Length": "1"})
    assert response.status_code == 201
    head = client.head(response.headers["Location"], headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in head.headers
    assert head.headers["Upload-Offset"] == "0"
    assert len(info_files(upload_dir)) == 1


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "ERR_LENGTH_REQUIRED"),
    ({"Upload-Length": "5", "Upload-Defer-Length": "1"}, "ERR_LENGTH_AND_DEFER"),
    ({"Upload-Defer-Length": "0"}, "ERR_INVALID_DEFER_LENGTH"),
    ({"Upload-Defer-Length": "2"}, "ERR_INVALID_DEFER_LENGTH"),
    ({"Upload-Defer-Length": "true"}, "ERR_INVALID_DEFER_LENGTH"),
    ({"Upload-Defer-Length": ""}, "ERR_INVALID_DEFER_LENGTH"),
    ({"Upload-Defer-Length": "01"}, "ERR_INVALID_DEFER_LENGTH"),
    ({"Upload-Length": "-1"}, "ERR_INVALID_LENGTH"),
    ({"Upload-Length": "1e3"}, "ERR_INVALID_LENGTH"),
    ({"Upload-Length": "0x10"}, "ERR_INVALID_LENGTH"),
    ({"Upload-Length": "1.5"}, "ERR_INVALID_LENGTH"),
    ({"Upload-Length": ""}, "ERR_INVALID_LENGTH"),
    ({"Upload-Length": "9" * 30}, "ERR_INVALID_LENGTH"),
    ({"Upload-Length": "+5"}, "ERR_INVALID_LENGTH"),
    ({"Upload-Length": "five"}, "ERR_INVALID_LENGTH"),
])
def test_bad_length_headers_are_400_and_create_nothing(client, upload_dir, headers, code):
    response = client.post("/files/", headers={**TUS, **headers})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith(code)
    assert "Location" not in response.headers
    assert all_files(upload_dir) == []


# -- max_size ----------------------------------------------------------------------------

@pytest.fixture
def small_client(make_app):
    return Client(make_app(max_size="1K"))


def test_max_size_allows_exactly_the_limit(small_client, upload_dir):
    response = small_client.post("/files/", headers={**TUS, "Upload-Length": "1024"})
    assert response.status_code == 201
    assert len(info_files(upload_dir)) == 1


def test_max_size_exceeded_is_413_and_creates_nothing(small_client, upload_dir):
    response = small_client.post("/files/", headers={**TUS, "Upload-Length": "1025"})
    assert response.status_code == 413
    assert response.get_data(as_text=True).startswith("ERR_MAX_SIZE_EXCEEDED")
    assert all_files(upload_dir) == []
    assert small_client.options("/files/").headers["Tus-Max-Size"] == "1024"


def test_max_size_applies_to_deferred_length(small_client, upload_dir):
    path = create(small_client, Upload_Defer_Length="1")
    response = patch(small_client, path, b"x" * 1025, 0)
    assert response.status_code == 413
    assert data_file(upload_dir, path).read_bytes() == b""
    response = patch(small_client, path, b"", 0, Upload_Length="1025")
    assert response.status_code == 413
    head = small_client.head(path, headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert head.headers["Upload-Offset"] == "0"


def test_max_size_applies_to_creation_with_upload(small_client, upload_dir):
    response = small_client.post("/files/", data=b"x" * 1025, headers={
        **TUS, "Upload-Length": "1025", "Content-Type": OCTET})
    assert response.status_code == 413
    assert all_files(upload_dir) == []


def test_deferred_creation_with_body_over_max_size_creates_nothing(small_client, upload_dir):
    response = small_client.post("/files/", data=b"x" * 1025, headers={
        **TUS, "Upload-Defer-Length": "1", "Content-Type": OCTET})
    assert response.status_code == 413
    assert response.get_data(as_text=True).startswith("ERR_MAX_SIZE_EXCEEDED")
    assert all_files(upload_dir) == []


# -- metadata ---------------------------------------------------------------------------

@pytest.mark.parametrize("metadata", [
    "filename " + b64("world_domination_plan.pdf") + ",is_confidential",
    "filename " + b64("résumé.txt"),
    "b " + b64("2") + ",a " + b64("1"),  # order kept
    "only_a_key",
])
def test_metadata_echoed_exactly_on_head(client, metadata):
    path = create(client, 1, Upload_Metadata=metadata)
    head = client.head(path, headers=TUS)
    assert head.headers["Upload-Metadata"] == metadata


@pytest.mark.parametrize("metadata", [None, ""])
def test_no_metadata_header_when_none_given(client, metadata):
    headers = {} if metadata is None else {"Upload_Metadata": metadata}
    path = create(client, 1, **headers)
    assert "Upload-Metadata" not in client.head(path, headers=TUS).headers


@pytest.mark.parametrize("metadata", [
    "a YQ==,a YQ==", "a YQ", "a !!!!", "a YQ== b", "a  YQ==", ",a", "a,", "a YQ==,,b",
])
def test_bad_metadata_is_400_and_creates_nothing(client, upload_dir, metadata):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "1",
                                               "Upload-Metadata": metadata})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_INVALID_METADATA")
    assert all_files(upload_dir) == []


def test_metadata_too_large_is_400_and_creates_nothing(make_app, upload_dir):
    client = Client(make_app(max_metadata_size="64"))
    ok = "k " + b64("x" * 45)  # 62 characters
    assert len(ok) <= 64
    create(client, 1, Upload_Metadata=ok)
    big = "k " + b64("x" * 60)
    response = client.post("/files/", headers={**TUS, "Upload-Length": "1",
                                               "Upload-Metadata": big})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_METADATA_TOO_LARGE")
    assert len(info_files(upload_dir)) == 1


# -- creation-with-upload -------------------------------------------------------------------

def test_creation_with_upload(client, upload_dir):
    response = client.post("/files/", data=b"hello", headers={
        **TUS, "Upload-Length": "11", "Content-Type": OCTET})
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "5"
    assert "Upload-Expires" in response.headers
    path = response.headers["Location"]
    assert data_file(upload_dir, path).read_bytes() == b"hello"
    assert client.head(path, headers=TUS).headers["Upload-Offset"] == "5"
    assert patch(client, path, b" world", 5).headers["Upload-Offset"] == "11"
    assert data_file(upload_dir, path).read_bytes() == b"hello world"


def test_creation_with_whole_upload(client, upload_dir):
    response = client.post("/files/", data=b"all of it", headers={
        **TUS, "Upload-Length": "9", "Content-Type": OCTET})
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "9"
    assert "Upload-Expires" not in response.headers
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"all of it"


def test_creation_with_upload_and_deferred_length(client, upload_dir):
    response = client.post("/files/", data=b"abc", headers={
        **TUS, "Upload-Defer-Length": "1", "Content-Type": OCTET})
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "3"
    head = client.head(response.headers["Location"], headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert head.headers["Upload-Offset"] == "3"


def test_creation_with_chunked_upload(client, upload_dir):
    response = wsgi_request(client, "POST", "/files/", b"chunky", {
        **TUS, "Upload-Length": "6", "Content-Type": OCTET})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Upload-Offset"] == "6"
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"chunky"


def test_creation_with_upload_larger_than_length_is_413_and_creates_nothing(client, upload_dir):
    response = client.post("/files/", data=b"too many bytes", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 413
    assert response.get_data(as_text=True).startswith("ERR_SIZE_EXCEEDED")
    assert "Location" not in response.headers
    assert all_files(upload_dir) == []


def test_chunked_creation_larger_than_length_is_413_and_creates_nothing(client, upload_dir):
    response = wsgi_request(client, "POST", "/files/", b"too many bytes", {
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 413
    assert response.get_data(as_text=True).startswith("ERR_SIZE_EXCEEDED")
    assert info_files(upload_dir) == []


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain",
                                          "multipart/form-data; boundary=x"])
def test_creation_body_with_wrong_content_type_is_415_and_creates_nothing(
        client, upload_dir, content_type):
    headers = {**TUS, "Upload-Length": "3"}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/files/", data=b"abc", headers=headers)
    assert response.status_code == 415
    assert response.get_data(as_text=True).startswith("ERR_INVALID_CONTENT_TYPE")
    assert all_files(upload_dir) == []


def test_content_type_with_parameters_is_accepted(client, upload_dir):
    response = client.post("/files/", data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET + "; charset=binary"})
    assert response.status_code == 201
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"abc"


def test_empty_body_needs_no_content_type(client, upload_dir):
    response = client.post("/files/", data=b"", headers={
        **TUS, "Upload-Length": "3", "Content-Type": "text/plain"})
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("value", ["-1", "abc", "1.0", "0x3", "9" * 30])
def test_bad_content_length_is_400_and_creates_nothing(client, upload_dir, value):
    response = wsgi_request(client, "POST", "/files/", b"abc", {
        **TUS, "Upload-Length": "3", "Content-Type": OCTET}, content_length=value)
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_INVALID_CONTENT_LENGTH")
    assert all_files(upload_dir) == []


# -- X-HTTP-Method-Override --------------------------------------------------------------

def test_override_post_to_head(client):
    path = create(client, 7)
    response = client.post(path, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "7"


def test_override_post_to_delete(client, upload_dir):
    path = create(client, 7)
    response = client.post(path, headers={**TUS, "X-HTTP-Method-Override": "delete"})
    assert response.status_code == 204
    assert not data_file(upload_dir, path).exists()
    assert client.head(path, headers=TUS).status_code == 410


def test_override_post_to_patch_lower_case(client, upload_dir):
    path = create(client, 3)
    response = client.post(path, data=b"xyz", headers={
        **TUS, "X-HTTP-Method-Override": " patch ", "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == b"xyz"


@pytest.mark.parametrize("override", ["PUT", "OPTIONS", "TRACE", "", "PATCH, DELETE"])
def test_override_to_unsupported_method_is_400(client, upload_dir, override):
    path = create(client, 3)
    response = client.post(path, data=b"xyz", headers={
        **TUS, "X-HTTP-Method-Override": override, "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_INVALID_METHOD_OVERRIDE")
    assert data_file(upload_dir, path).read_bytes() == b""
    assert len(info_files(upload_dir)) == 1


def test_override_is_only_honoured_on_post(client, upload_dir):
    path = create(client, 3)
    patch(client, path, b"abc", 0)
    response = client.get(path, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 200
    assert response.get_data() == b"abc"
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert client.head(path, headers=TUS).status_code == 200


def test_override_to_post_creates(client, upload_dir):
    response = client.post("/files/", headers={**TUS, "X-HTTP-Method-Override": "POST",
                                               "Upload-Length": "2"})
    assert response.status_code == 201
    assert len(info_files(upload_dir)) == 1
