"""Event logs (``log_format = json``) and X-Request-ID."""

from __future__ import annotations

import json
import logging
import re
import socket
import time

import pytest
import requests
from conftest import OCTET, TUS, create, patch, wait_for_size

from tuswsgi.logs import JsonFormatter

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_lines(caplog):
    """The ``tuswsgi`` log records of the test, as the JSON format writes them."""
    caplog.set_level(logging.INFO, logger="tuswsgi")
    formatter = JsonFormatter()

    def lines(event=None) -> list[dict]:
        parsed = [json.loads(formatter.format(record)) for record in caplog.records
                  if record.name.startswith("tuswsgi")]
        return [entry for entry in parsed if event is None or entry["event"] == event]
    return lines


def upload_id(path: str) -> str:
    return path.rsplit("/", 1)[1]


# -- in-process: every event and its fields -----------------------------------------------

def test_upload_lifecycle_events_and_their_fields(client, json_lines):
    path = create(client, 10)
    the_id = upload_id(path)
    assert patch(client, path, b"hello", 0).status_code == 204
    assert patch(client, path, b"world", 5).status_code == 204
    other = create(client, 4, Upload_Concat="partial")
    assert patch(client, other, b"ab", 0).status_code == 204
    assert client.delete(other, headers=TUS).status_code == 204

    created = json_lines("upload.created")
    assert [(e["upload"], e["length"]) for e in created] == [(the_id, 10), (upload_id(other), 4)]
    assert "kind" not in created[0] and created[1]["kind"] == "partial"  # None is left out
    received = [(e["upload"], e["offset"], e["new_offset"], e["bytes"])
                for e in json_lines("upload.received")]
    assert received == [(the_id, 0, 5, 5), (the_id, 5, 10, 5), (upload_id(other), 0, 2, 2)]
    assert all(isinstance(e["seconds"], float) for e in json_lines("upload.received"))
    assert [(e["upload"], e["length"]) for e in json_lines("upload.finished")] == [(the_id, 10)]
    assert [(e["upload"], e["offset"]) for e in json_lines("upload.terminated")] == \
        [(upload_id(other), 2)]

    for entry in json_lines():
        assert set(entry) >= {"time", "level", "pid", "event"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
        assert entry["level"] == "info"
    requests_logged = json_lines("request")
    assert [(r["method"], r["status"]) for r in requests_logged] == [
        ("POST", 201), ("PATCH", 204), ("PATCH", 204), ("POST", 201), ("PATCH", 204),
        ("DELETE", 204)]
    assert requests_logged[0]["path"] == "/files/"
    assert requests_logged[2]["path"] == path and requests_logged[2]["offset"] == "10"
    assert all(HEX_ID.fullmatch(r["request_id"]) for r in requests_logged)
    assert len({r["request_id"] for r in requests_logged}) == len(requests_logged)
    assert "error" not in requests_logged[0]


def test_error_requests_log_their_error_code(client, json_lines):
    path = create(client, 10)
    assert patch(client, path, b"abc", 7).status_code == 409
    entry = json_lines("request")[-1]
    assert (entry["status"], entry["error"], entry["path"]) == (409, "ERR_MISMATCHED_OFFSET", path)
    assert json_lines("upload.received") == []  # nothing was appended


class ShortBody:
    """A body that delivers ``sent`` bytes and then ends, as a client that went away."""

    def __init__(self, sent: int) -> None:
        self.left = sent

    def read(self, size: int = -1) -> bytes:
        size = min(self.left, 1000 if size < 0 else size, 1000)
        self.left -= size
        return b"q" * size


def test_interrupted_upload_event_tells_what_was_kept(client, json_lines, upload_dir):
    path = create(client, 5000)
    response = client.patch(path, headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET},
                            environ_overrides={"wsgi.input": ShortBody(3000),
                                               "CONTENT_LENGTH": "5000"})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_CLIENT_GONE")
    [entry] = json_lines("upload.interrupted")
    assert (entry["upload"], entry["reason"], entry["offset"], entry["new_offset"], entry["bytes"]) \
        == (upload_id(path), "ERR_CLIENT_GONE", 0, 3000, 3000)
    assert (upload_dir / upload_id(path)).stat().st_size == 3000
    assert json_lines("request")[-1]["error"] == "ERR_CLIENT_GONE"


# -- X-Request-ID -----------------------------------------------------------------------------

@pytest.mark.parametrize("sent", ["abc-123", "req_2024.07.01:42/7", "x" * 128,
                                  "0123456789abcdef0123456789abcdef", "with spaces inside"])
def test_a_sane_request_id_is_echoed_and_logged(client, json_lines, sent):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "1", "X-Request-ID": sent})
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == sent
    assert json_lines("request")[-1]["request_id"] == sent


@pytest.mark.parametrize("sent", ["", "x" * 129, "caf\u00e9", "tab\there", "bell\x07", "\x7f"])
def test_a_missing_or_garbage_request_id_is_replaced(client, json_lines, sent):
    headers = {**TUS, "Upload-Length": "1"}
    if sent:
        headers["X-Request-ID"] = sent
    responses = [client.post("/files/", headers=headers) for _ in range(2)]
    ids = [response.headers["X-Request-ID"] for response in responses]
    assert all(HEX_ID.fullmatch(request_id) for request_id in ids)
    assert ids[0] != ids[1]  # fresh each time
    assert [e["request_id"] for e in json_lines("request")] == ids


def test_request_id_is_on_error_responses_and_every_method(client):
    for method, path in (("head", "/files/nope"), ("options", "/files/"), ("get", "/elsewhere"),
                         ("patch", "/files/nope")):
        response = getattr(client, method)(path, headers={**TUS, "X-Request-ID": "trace-1"})
        assert response.headers["X-Request-ID"] == "trace-1", (method, path)
    response = client.post("/files/", headers={"X-Request-ID": "trace-2"})  # no Tus-Resumable
    assert response.status_code == 412
    assert response.headers["X-Request-ID"] == "trace-2"


def test_request_id_is_readable_by_browsers(client):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "1",
                                              "Origin": "https://app.example"})
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    preflight = client.options("/files/", headers={"Origin": "https://app.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert "X-Request-ID" in preflight.headers["Access-Control-Allow-Headers"]


# -- a real gunicorn writing JSON lines ----------------------------------------------------

@pytest.mark.e2e
def test_gunicorn_writes_one_json_object_per_line(gunicorn_factory):
    server = gunicorn_factory(workers=2, env={"TUSWSGI_LOG_FORMAT": "json"})
    response = requests.post(server.url, headers={**TUS, "Upload-Length": "8",
                                                  "X-Request-ID": "client-trace-7"})
    assert response.headers["X-Request-ID"] == "client-trace-7"
    url = response.headers["Location"]
    the_id = upload_id(url)
    headers = {**TUS, "Content-Type": OCTET}
    assert requests.patch(url, data=b"1234", headers={**headers, "Upload-Offset": "0"}).status_code == 204
    assert requests.patch(url, data=b"5678", headers={**headers, "Upload-Offset": "4"}).status_code == 204
    gone = requests.post(server.url, headers={**TUS, "Upload-Length": "1000"}).headers["Location"]
    with socket.create_connection(("127.0.0.1", server.port)) as cut:
        cut.sendall((f"PATCH /files/{upload_id(gone)} HTTP/1.1\r\nHost: x\r\n"
                     f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: {OCTET}\r\n"
                     f"Content-Length: 1000\r\n\r\n").encode() + b"z" * 300)
        wait_for_size(server.upload_dir / upload_id(gone), 300)
    garbage = requests.head(url, headers={**TUS, "X-Request-ID": "x" * 500})
    assert HEX_ID.fullmatch(garbage.headers["X-Request-ID"])
    assert requests.delete(url, headers=TUS).status_code == 204

    def entries() -> list[dict]:
        found = []
        for line in server.log().splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
            else:  # only gunicorn's own lines are not JSON
                assert re.match(r"\[[^]]+\] \[\d+\] \[[A-Z]+\] ", line), line
                assert " request method=" not in line and "upload." not in line, line
        return found

    deadline = time.monotonic() + 10
    while not any(e["event"] == "upload.interrupted" for e in entries()):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    logged = entries()
    by_event: dict[str, list[dict]] = {}
    for entry in logged:
        assert set(entry) >= {"time", "level", "pid", "event"}
        by_event.setdefault(entry["event"], []).append(entry)
    assert [e["upload"] for e in by_event["upload.created"]] == [the_id, upload_id(gone)]
    assert [(e["offset"], e["bytes"]) for e in by_event["upload.received"]
            if e["upload"] == the_id] == [(0, 4), (4, 4)]
    assert [e["upload"] for e in by_event["upload.finished"]] == [the_id]
    assert [(e["upload"], e["offset"]) for e in by_event["upload.terminated"]] == [(the_id, 8)]
    [interrupted] = by_event["upload.interrupted"]
    assert (interrupted["upload"], interrupted["reason"], interrupted["bytes"]) == \
        (upload_id(gone), "ERR_CLIENT_GONE", 300)
    first = by_event["request"][0]
    assert (first["method"], first["status"], first["request_id"]) == ("POST", 201, "client-trace-7")
    assert {e["request_id"] for e in by_event["request"]} >= {"client-trace-7",
                                                              garbage.headers["X-Request-ID"]}
    assert all(isinstance(e["pid"], int) for e in logged)
