"""tus-js-client (pinned in tests/package.json) speaking the IETF draft, in Node.

``protocol: 'ietf-draft-03'`` sends ``Upload-Draft-Interop-Version: 5`` and
``'ietf-draft-05'`` sends 6 (with ``Content-Type: application/partial-upload`` on
its appends).  tests/js/node-client.js drives the client (its ``protocol``
option); every case checks the bytes in the upload directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from conftest import TUS, sha256_file, start_gunicorn
from support.jsclient import methods, node_client, stored

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
PROTOCOLS = {"ietf-draft-03": "5", "ietf-draft-05": "6"}



@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("js-ietf-source") / "payload.bin"
    path.write_bytes(os.urandom(3 * MIB + 4321))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gunicorn = start_gunicorn(tmp_path_factory.mktemp("js-ietf-server"), workers=2, threads=4)
    yield gunicorn
    gunicorn.stop()





def check_draft_requests(result: dict, protocol: str) -> None:
    """Every request spoke the draft version the protocol stands for, never tus."""
    for method, _url, headers, status in result["requests"]:
        assert headers["Upload-Draft-Interop-Version"] == PROTOCOLS[protocol]
        assert "Tus-Resumable" not in headers
        assert status is not None and 200 <= status < 300, (method, status)
        if method == "PATCH" and protocol == "ietf-draft-05":
            assert headers["Content-Type"] == "application/partial-upload"


def draft_head(url: str, protocol: str) -> requests.Response:
    return requests.head(url, headers={"Upload-Draft-Interop-Version": PROTOCOLS[protocol]},
                         timeout=10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_upload(server, source, protocol):
    result = node_client("upload", server, source, protocol=protocol)
    assert sha256_file(stored(server, result["url"])) == sha256_file(source)
    assert methods(result) == ["POST"] + ["PATCH"] * 4  # 1 MiB chunks
    check_draft_requests(result, protocol)
    post = result["requests"][0][2]
    assert post["Upload-Complete"] == "?0"
    assert post["Upload-Length"] == str(source.stat().st_size)
    # tus-js-client 4.3.1's Node FileSource says ``done`` only when one chunk covers the
    # whole file, so even the last PATCH says ``Upload-Complete: ?0``; the upload still
    # completes because its length was announced at creation.
    assert all(request[2]["Upload-Complete"] == "?0" for request in result["requests"][1:])
    state = draft_head(result["url"], protocol)
    assert state.status_code == 204
    assert state.headers["Upload-Complete"] == "?1"
    assert state.headers["Upload-Offset"] == state.headers["Upload-Length"] == str(source.stat().st_size)
    # tus sees the same finished upload, with tus-js-client's metadata
    assert requests.head(result["url"], headers=TUS, timeout=10).headers["Upload-Offset"] == \
        str(source.stat().st_size)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_upload_data_during_creation(server, source, protocol):
    result = node_client("upload", server, source, protocol=protocol,
                         options={"uploadDataDuringCreation": True})
    assert sha256_file(stored(server, result["url"])) == sha256_file(source)
    assert methods(result) == ["POST"] + ["PATCH"] * 3
    check_draft_requests(result, protocol)
    post = result["requests"][0][2]
    assert post["Upload-Complete"] == "?0"
    if protocol == "ietf-draft-05":
        assert post["Content-Type"] == "application/partial-upload"
    assert result["requests"][1][2]["Upload-Offset"] == str(MIB)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_small_file_in_the_creation_request(server, tmp_path, protocol):
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(54321))
    result = node_client("upload", server, small, protocol=protocol,
                         options={"uploadDataDuringCreation": True})
    assert methods(result) == ["POST"]
    assert result["requests"][0][2]["Upload-Complete"] == "?1"
    assert sha256_file(stored(server, result["url"])) == sha256_file(small)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_abort_then_resume_from_the_stored_fingerprint(server, source, tmp_path, protocol):
    storage = tmp_path / "tus-urls.json"
    storage.write_text("{}")
    options = {"chunkSize": 256 * 1024}
    first = node_client("abort", server, source, protocol=protocol, storage=str(storage),
                        stopAt=1 * MIB, options=options)
    url = first["url"]
    assert url in storage.read_text()
    offset = int(draft_head(url, protocol).headers["Upload-Offset"])
    assert 0 < offset < source.stat().st_size
    assert draft_head(url, protocol).headers["Upload-Complete"] == "?0"

    second = node_client("resume", server, source, protocol=protocol, storage=str(storage), options=options)
    assert second["previous"] == 1
    assert second["url"] == url
    assert second["requests"][0][:2] == ["HEAD", url]
    assert second["requests"][1][0] == "PATCH"
    assert int(second["requests"][1][2]["Upload-Offset"]) == offset
    assert "POST" not in methods(second)
    check_draft_requests(second, protocol)
    assert sha256_file(stored(server, url)) == sha256_file(source)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_abort_then_resume_a_new_upload_given_the_url(server, source, tmp_path, protocol):
    storage = tmp_path / "tus-urls.json"
    storage.write_text("{}")
    options = {"chunkSize": 512 * 1024, "uploadDataDuringCreation": True}
    first = node_client("abort", server, source, protocol=protocol, storage=str(storage),
                        stopAt=2 * MIB, options=options)
    url = first["url"]
    offset = int(draft_head(url, protocol).headers["Upload-Offset"])
    assert offset >= 2 * MIB

    second = node_client("resume-url", server, source, protocol=protocol, uploadUrl=url, options=options)
    assert second["url"] == url
    assert methods(second)[0] == "HEAD" and "POST" not in methods(second)
    assert int(second["requests"][1][2]["Upload-Offset"]) == offset
    check_draft_requests(second, protocol)
    assert sha256_file(stored(server, url)) == sha256_file(source)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_resuming_a_finished_upload_sends_nothing(server, source, protocol):
    first = node_client("upload", server, source, protocol=protocol)
    second = node_client("resume-url", server, source, protocol=protocol, uploadUrl=first["url"])
    assert methods(second) == ["HEAD"]  # Upload-Offset == Upload-Length: done
    assert sha256_file(stored(server, first["url"])) == sha256_file(source)
