"""Concatenation: partial uploads joined into a final one, and everything it refuses."""

import base64

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from werkzeug.test import Client


def info_files(upload_dir):
    return sorted(p.name for p in upload_dir.glob("*.info"))


def partial(client, data: bytes, length=None) -> str:
    path = create(client, len(data) if length is None else length, Upload_Concat="partial")
    if data:
        assert patch(client, path, data, 0).status_code == 204
    return path


def post_final(client, urls, **headers):
    return client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(urls),
                                           **{k.replace("_", "-"): v for k, v in headers.items()}})


def test_partial_upload_echoes_concat_on_head(client, upload_dir):
    path = partial(client, b"abc")
    head = client.head(path, headers=TUS)
    assert head.headers["Upload-Concat"] == "partial"
    assert head.headers["Upload-Offset"] == "3"
    assert head.headers["Upload-Length"] == "3"
    assert data_file(upload_dir, path).read_bytes() == b"abc"


def test_partial_with_creation_with_upload(client, upload_dir):
    response = client.post("/files/", data=b"xyz", headers={
        **TUS, "Upload-Concat": "partial", "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 201
    path = response.headers["Location"]
    assert data_file(upload_dir, path).read_bytes() == b"xyz"
    assert client.head(path, headers=TUS).headers["Upload-Concat"] == "partial"


def test_plain_upload_has_no_concat_header(client):
    path = create(client, 3)
    assert "Upload-Concat" not in client.head(path, headers=TUS).headers


@pytest.mark.parametrize("absolute", [False, True])
def test_final_is_the_concatenation(client, upload_dir, absolute):
    parts = [partial(client, b"hello "), partial(client, b"tus "), partial(client, b"world")]
    urls = ["http://localhost" + p if absolute else p for p in parts]
    response = post_final(client, urls)
    assert response.status_code == 201, response.get_data(as_text=True)
    final = response.headers["Location"]
    assert final.startswith("http://localhost/files/")
    assert final.rsplit("/", 1)[1] not in {p.rsplit("/", 1)[1] for p in parts}
    assert data_file(upload_dir, final).read_bytes() == b"hello tus world"
    head = client.head(final, headers=TUS)
    assert head.status_code == 200
    assert head.headers["Upload-Length"] == str(6 + 4 + 5)
    assert head.headers["Upload-Offset"] == "15"
    assert head.headers["Upload-Concat"] == "final;" + " ".join(
        "http://localhost" + p for p in parts)
    assert "Upload-Expires" not in head.headers
    # The parts are untouched.
    assert [data_file(upload_dir, p).read_bytes() for p in parts] == [b"hello ", b"tus ", b"world"]


def test_final_keeps_part_order(client, upload_dir):
    a, b = partial(client, b"A"), partial(client, b"BB")
    response = post_final(client, [b, a])
    assert response.status_code == 201
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"BBA"
    head = client.head(response.headers["Location"], headers=TUS)
    assert head.headers["Upload-Length"] == "3"


def test_final_with_empty_part(client, upload_dir):
    a, empty = partial(client, b"abc"), partial(client, b"")
    response = post_final(client, [empty, a])
    assert response.status_code == 201
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"abc"


def test_final_with_metadata(client):
    metadata = "filename " + base64.b64encode(b"joined.bin").decode()
    response = post_final(client, [partial(client, b"a")], Upload_Metadata=metadata)
    head = client.head(response.headers["Location"], headers=TUS)
    assert head.headers["Upload-Metadata"] == metadata


def test_final_survives_deleting_its_parts(client, upload_dir):
    parts = [partial(client, b"one"), partial(client, b"two")]
    final = post_final(client, parts).headers["Location"]
    for path in parts:
        assert client.delete(path, headers=TUS).status_code == 204
    assert data_file(upload_dir, final).read_bytes() == b"onetwo"
    assert client.get(final).get_data() == b"onetwo"


def test_final_with_large_parts(client, upload_dir):
    one = bytes(range(256)) * 5000
    two = bytes(reversed(range(256))) * 7000
    parts = [partial(client, one), partial(client, two)]
    final = post_final(client, parts).headers["Location"]
    assert data_file(upload_dir, final).read_bytes() == one + two


@pytest.mark.parametrize("data", [b"", b"x"])
def test_patch_on_final_is_403_and_unchanged(client, upload_dir, data):
    final = post_final(client, [partial(client, b"ab")]).headers["Location"]
    response = patch(client, final, data, 2)
    assert response.status_code == 403
    assert response.get_data(as_text=True).startswith("ERR_UPLOAD_IS_FINAL")
    assert data_file(upload_dir, final).read_bytes() == b"ab"
    assert client.head(final, headers=TUS).headers["Upload-Offset"] == "2"


def test_final_with_body_is_refused(client, upload_dir):
    part = partial(client, b"ab")
    before = info_files(upload_dir)
    response = client.post("/files/", data=b"cd", headers={
        **TUS, "Upload-Concat": "final;" + part, "Content-Type": OCTET})
    assert response.status_code == 403
    assert info_files(upload_dir) == before


# -- refused final uploads create nothing ------------------------------------------------

def _assert_refused(client, upload_dir, urls, before, **headers):
    response = post_final(client, urls, **headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_data(as_text=True).startswith("ERR_INVALID_CONCAT")
    assert "Location" not in response.headers
    assert info_files(upload_dir) == before
    return response


def test_final_with_unknown_part(client, upload_dir):
    good = partial(client, b"ab")
    before = info_files(upload_dir)
    _assert_refused(client, upload_dir, [good, "/files/" + "0" * 32], before)


def test_final_with_non_partial_part(client, upload_dir):
    good = partial(client, b"ab")
    plain = create(client, 2)
    patch(client, plain, b"cd", 0)
    before = info_files(upload_dir)
    _assert_refused(client, upload_dir, [good, plain], before)


def test_final_of_final_is_refused(client, upload_dir):
    final = post_final(client, [partial(client, b"ab")]).headers["Location"]
    before = info_files(upload_dir)
    _assert_refused(client, upload_dir, [final], before)


def test_final_with_deleted_part(client, upload_dir):
    part = partial(client, b"ab")
    client.delete(part, headers=TUS)
    before = info_files(upload_dir)
    _assert_refused(client, upload_dir, [part], before)


@pytest.mark.parametrize("url", [
    "/other/" + "0" * 32, "/files/a/b", "/files/..", "/files/abc.info", "/files/",
    "relative-id", "http://localhost/elsewhere/abc",
])
def test_final_with_foreign_url(client, upload_dir, url):
    good = partial(client, b"ab")
    before = info_files(upload_dir)
    _assert_refused(client, upload_dir, [good, url], before)


@pytest.mark.parametrize("headers", [{"Upload_Length": "2"}, {"Upload_Length": "0"},
                                     {"Upload_Defer_Length": "1"}])
def test_final_with_length_is_400(client, upload_dir, headers):
    good = partial(client, b"ab")
    before = info_files(upload_dir)
    _assert_refused(client, upload_dir, [good], before, **headers)


@pytest.mark.parametrize("value", ["final;", "final", "foo", "partial;x", "final ;/files/a"])
def test_malformed_concat_header_creates_nothing(client, upload_dir, value):
    response = client.post("/files/", headers={**TUS, "Upload-Concat": value,
                                               "Upload-Length": "3"})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_INVALID_CONCAT")
    assert info_files(upload_dir) == []


def test_final_larger_than_max_size_is_413(make_app, upload_dir):
    client = Client(make_app(max_size="4"))
    parts = [partial(client, b"abc"), partial(client, b"de")]
    before = info_files(upload_dir)
    response = post_final(client, parts)
    assert response.status_code == 413
    assert info_files(upload_dir) == before


# -- bounds: what one small request can make the server store -------------------------

def refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_data(as_text=True).startswith(code + ": ")


@pytest.mark.parametrize("spelling", ["same", "relative and absolute"])
def test_a_final_naming_a_partial_twice_is_refused(client, upload_dir, spelling):
    a, b = partial(client, b"A"), partial(client, b"BB")
    again = b if spelling == "same" else "http://localhost" + b
    before = info_files(upload_dir)
    refused(post_final(client, [b, a, again]), 400, "ERR_CONCAT_REPEATED_PART")
    assert info_files(upload_dir) == before


@pytest.mark.parametrize(("max_parts", "code"), [("100", "ERR_CONCAT_TOO_MANY_PARTS"),
                                                  ("0", "ERR_CONCAT_REPEATED_PART")])
def test_a_small_request_naming_one_partial_1500_times_stores_nothing(make_app, upload_dir, max_parts, code):
    """The request of issue 22: 60 KB naming one 64 KiB partial 1,500 times made a
    96 MiB final. It is refused for the number of parts, and with no limit on that,
    for naming one twice; before any part is looked at."""
    client = Client(make_app(max_concat_parts=max_parts))
    part = partial(client, b"x" * 65536)
    before = info_files(upload_dir)
    response = post_final(client, [part] * 1500)
    refused(response, 400, code)
    assert info_files(upload_dir) == before
    assert sum(path.stat().st_size for path in upload_dir.iterdir() if path.is_file()) < 70_000


def test_more_partials_than_max_concat_parts_are_refused(make_app, upload_dir):
    client = Client(make_app(max_concat_parts="3"))
    parts = [partial(client, bytes([65 + n])) for n in range(4)]
    before = info_files(upload_dir)
    refused(post_final(client, parts), 400, "ERR_CONCAT_TOO_MANY_PARTS")
    assert info_files(upload_dir) == before
    response = post_final(client, parts[:3])
    assert response.status_code == 201
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"ABC"


def test_the_default_bounds_parts_before_looking_any_up(client, upload_dir):
    """101 names (the default allows 100) are refused for their number, before the
    server opens a single one of them."""
    names = [f"/files/{n:032x}" for n in range(101)]
    refused(post_final(client, names), 400, "ERR_CONCAT_TOO_MANY_PARTS")
    refused(post_final(client, names[:100]), 400, "ERR_INVALID_CONCAT")  # unknown uploads
    assert info_files(upload_dir) == []


def test_a_final_larger_than_max_size_is_refused(make_app, upload_dir):
    """Each part may be within max_size while their sum is not."""
    client = Client(make_app(max_size="10"))
    parts = [partial(client, b"123456"), partial(client, b"abcdef")]
    before = info_files(upload_dir)
    refused(post_final(client, parts), 413, "ERR_MAX_SIZE_EXCEEDED")
    assert info_files(upload_dir) == before

