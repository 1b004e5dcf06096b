"""Hooks in-process: tusd v2 event payloads, and what each blocking answer does.

The app calls ``hookfns.record`` (or ``hookfns.authorize``) for every event; the
test steers answers through ``hookfns.ANSWERS`` and reads ``hookfns.EVENTS``.
Background events (``post-*``) are awaited with ``app.service.hooks.drain()``.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time

import pytest
from conftest import OCTET, TUS, b64, create, data_file, patch
from support import hookfns
from werkzeug.test import Client

HOOK = "support.hookfns:record"
PEER = {"REMOTE_ADDR": "192.0.2.7", "REMOTE_PORT": "50123"}


@pytest.fixture(autouse=True)
def _fresh_hooks():
    hookfns.reset()
    yield
    hookfns.reset()


@pytest.fixture
def hooked(make_app):
    """An app whose every event goes to ``hookfns.record``, and its client."""
    app = make_app(hooks_python=HOOK)
    yield app, Client(app)
    app.service.hooks.drain()




def upload_id(path: str) -> str:
    return path.rsplit("/", 1)[1]


def stream_patch(client: Client, path: str, stream, length: int, offset: int = 0):
    """PATCH with ``stream`` as the WSGI input, read as the server reads it."""
    return client.patch(path, headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET},
                        environ_overrides={"wsgi.input": stream, "CONTENT_LENGTH": str(length)})


def files_in(upload_dir) -> list[str]:
    return sorted(os.listdir(upload_dir)) if upload_dir.exists() else []


# -- payloads and order ----------------------------------------------------------------

def test_full_upload_fires_every_event_with_tusd_payloads(hooked, upload_dir):
    app, client = hooked
    response = client.post("/files/?source=test", environ_base=PEER, headers={
        **TUS, "Upload-Length": "11", "Upload-Metadata": f"filename {b64('report.pdf')},empty",
        "Authorization": "Bearer abc"})
    assert response.status_code == 201
    path = "/files/" + upload_id(response.headers["Location"])
    app.service.hooks.drain()
    assert hookfns.types() == ["pre-access", "pre-create", "post-create"]
    response = client.patch(path, data=b"hello world", environ_base=PEER,
                            headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.status_code == 204
    app.service.hooks.drain()
    assert sorted(hookfns.types()[3:]) == ["post-finish", "post-receive", "pre-access", "pre-finish"]
    assert hookfns.types()[3] == "pre-access"  # before any byte is read

    the_id = upload_id(path)
    storage_path = str(data_file(upload_dir, path))
    access, pre_create, post_create = hookfns.EVENTS[:3]
    # pre-access of a creation: no upload yet, tusd's empty FileInfo.
    assert access["Event"]["Upload"] == {
        "ID": "", "Size": 0, "SizeIsDeferred": False, "Offset": 0, "MetaData": {},
        "IsPartial": False, "IsFinal": False, "PartialUploads": None, "Storage": None}
    request = access["Event"]["HTTPRequest"]
    assert request["Method"] == "POST"
    assert request["URI"] == "/files/?source=test"
    assert request["RemoteAddr"] == "192.0.2.7:50123"
    assert request["Header"]["Authorization"] == ["Bearer abc"]
    assert request["Header"]["Upload-Length"] == ["11"]
    assert request["Header"]["Tus-Resumable"] == ["1.0.0"]
    # pre-create: the upload as asked for, metadata decoded, no ID or storage yet.
    assert pre_create["Event"]["Upload"] == {
        "ID": "", "Size": 11, "SizeIsDeferred": False, "Offset": 0,
        "MetaData": {"filename": "report.pdf", "empty": ""},
        "IsPartial": False, "IsFinal": False, "PartialUploads": None, "Storage": None}
    assert pre_create["Event"]["HTTPRequest"] == request
    # post-create: the real ID and where the bytes live.
    assert post_create["Event"]["Upload"] == {
        **pre_create["Event"]["Upload"], "ID": the_id,
        "Storage": {"Type": "filestore", "Path": storage_path}}

    by_type = {event["Type"]: event for event in hookfns.EVENTS[3:]}
    patch_request = by_type["pre-access"]["Event"]["HTTPRequest"]
    assert patch_request["Method"] == "PATCH"
    assert patch_request["URI"] == path
    assert patch_request["Header"]["Upload-Offset"] == ["0"]
    assert patch_request["Header"]["Content-Length"] == ["11"]
    assert by_type["pre-access"]["Event"]["Upload"]["Offset"] == 0  # before the bytes
    assert by_type["pre-access"]["Event"]["Upload"]["ID"] == the_id
    for name in ("post-receive", "pre-finish", "post-finish"):
        upload = by_type[name]["Event"]["Upload"]
        assert upload == {**post_create["Event"]["Upload"], "Offset": 11}, name
        assert by_type[name]["Event"]["HTTPRequest"] == patch_request, name
    assert data_file(upload_dir, path).read_bytes() == b"hello world"



def test_creation_with_upload_fires_create_receive_and_finish(hooked, upload_dir):
    app, client = hooked
    response = client.post("/files/", data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 201
    app.service.hooks.drain()
    events = hookfns.types()
    assert events[:2] == ["pre-access", "pre-create"]
    assert sorted(events[2:]) == ["post-create", "post-finish", "post-receive", "pre-finish"]
    assert hookfns.of_type("post-create")[0]["Event"]["Upload"]["Offset"] == 0
    assert hookfns.of_type("post-finish")[0]["Event"]["Upload"]["Offset"] == 3
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"abc"


def test_deferred_length_and_partial_and_final_payloads(hooked):
    app, client = hooked
    deferred = create(client, Upload_Defer_Length="1")
    app.service.hooks.drain()
    upload = hookfns.of_type("post-create")[-1]["Event"]["Upload"]
    assert (upload["SizeIsDeferred"], upload["Size"]) == (True, 0)
    response = patch(client, deferred, b"xyz", 0, Upload_Length="3")
    assert response.status_code == 204
    app.service.hooks.drain()
    finish = hookfns.of_type("post-finish")[-1]["Event"]["Upload"]
    assert (finish["ID"], finish["SizeIsDeferred"], finish["Size"], finish["Offset"]) == \
        (upload_id(deferred), False, 3, 3)

    parts = []
    for data in (b"ab", b"cde"):
        part = create(client, len(data), Upload_Concat="partial")
        assert patch(client, part, data, 0).status_code == 204
        parts.append(part)
    app.service.hooks.drain()
    part_event = hookfns.of_type("post-create")[-1]["Event"]["Upload"]
    assert (part_event["IsPartial"], part_event["IsFinal"], part_event["PartialUploads"]) == \
        (True, False, None)
    hookfns.reset()
    response = client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)})
    assert response.status_code == 201
    app.service.hooks.drain()
    pre_create = hookfns.of_type("pre-create")[0]["Event"]["Upload"]
    assert pre_create["IsFinal"] is True and pre_create["IsPartial"] is False
    assert pre_create["PartialUploads"] == [upload_id(p) for p in parts]
    assert pre_create["Size"] == 5
    post_finish = hookfns.of_type("post-finish")[0]["Event"]["Upload"]
    assert post_finish["ID"] == upload_id(response.headers["Location"])
    assert post_finish["Offset"] == 5


def test_method_override_is_what_hooks_see(hooked, upload_dir):
    app, client = hooked
    path = create(client, 2)
    hookfns.reset()
    response = client.post(path, data=b"ok", headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.status_code == 204
    app.service.hooks.drain()
    assert {e["Event"]["HTTPRequest"]["Method"] for e in hookfns.EVENTS} == {"PATCH"}
    assert data_file(upload_dir, path).read_bytes() == b"ok"


def test_only_enabled_events_are_sent(make_app):
    app = make_app(hooks_python=HOOK, hooks_enabled="post-create,post-terminate")
    client = Client(app)
    path = create(client, 2)
    assert patch(client, path, b"hi", 0).status_code == 204
    assert client.delete(path, headers=TUS).status_code == 204
    app.service.hooks.drain()
    assert hookfns.types() == ["post-create", "post-terminate"]
    assert hookfns.EVENTS[1]["Event"]["Upload"]["Offset"] == 2


def test_no_hooks_configured_no_calls(client, upload_dir):
    path = create(client, 2)
    assert patch(client, path, b"hi", 0).status_code == 204
    assert hookfns.EVENTS == []


@pytest.mark.parametrize("kind", ["empty", "final"])
def test_uploads_complete_at_creation_get_pre_finish_too(hooked, kind):
    app, client = hooked
    if kind == "empty":
        create(client, 0)
    else:
        part = create(client, 2, Upload_Concat="partial")
        assert patch(client, part, b"ab", 0).status_code == 204
        app.service.hooks.drain()
        hookfns.reset()
        response = client.post("/files/", headers={**TUS, "Upload-Concat": f"final;{part}"})
        assert response.status_code == 201
    app.service.hooks.drain()
    assert "post-finish" in hookfns.types()
    assert "pre-finish" in hookfns.types()
    assert hookfns.types().index("pre-finish") < hookfns.types().index("post-finish")


# -- pre-create ------------------------------------------------------------------------

def test_pre_create_rejection_uses_the_hooks_status_body_and_headers(hooked, upload_dir):
    app, client = hooked
    hookfns.ANSWERS["pre-create"] = {
        "RejectUpload": True,
        "HTTPResponse": {"StatusCode": 413, "Body": "quota exceeded: 10 MB left\n",
                         "Header": {"X-Quota-Left": "10485760"}}}
    response = client.post("/files/", data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 413
    assert response.get_data(as_text=True) == "quota exceeded: 10 MB left\n"
    assert response.headers["X-Quota-Left"] == "10485760"
    assert "Location" not in response.headers
    app.service.hooks.drain()
    assert hookfns.types() == ["pre-access", "pre-create"]  # no post-create, nothing received
    assert files_in(upload_dir) == []


def test_pre_create_reject_without_status_is_400_err_upload_rejected(hooked, upload_dir):
    _app, client = hooked
    hookfns.ANSWERS["pre-create"] = {"RejectUpload": True}
    response = client.post("/files/", headers={**TUS, "Upload-Length": "3"})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_UPLOAD_REJECTED")
    assert files_in(upload_dir) == []


def test_pre_create_status_400_alone_rejects(hooked, upload_dir):
    _app, client = hooked
    hookfns.ANSWERS["pre-create"] = {"HTTPResponse": {"StatusCode": 422, "Body": "no"}}
    response = client.post("/files/", headers={**TUS, "Upload-Length": "3"})
    assert (response.status_code, response.get_data(as_text=True)) == (422, "no")
    assert files_in(upload_dir) == []


def test_pre_create_rejection_content_type_replaces_the_default(hooked):
    _, client = hooked
    hookfns.ANSWERS["pre-create"] = {"RejectUpload": True, "HTTPResponse": {
        "StatusCode": 403, "Body": '{"error": "quota"}',
        "Header": {"Content-Type": "application/json"}}}
    response = client.post("/files/", headers={**TUS, "Upload-Length": "3"})
    assert response.status_code == 403
    assert response.headers.getlist("Content-Type") == ["application/json"]


def test_change_file_info_id_and_metadata(hooked, upload_dir):
    app, client = hooked
    hookfns.ANSWERS["pre-create"] = {"ChangeFileInfo": {
        "ID": "invoice-2024_07", "MetaData": {"filename": "renamed.txt", "owner": "alice"}}}
    response = client.post("/files/", headers={
        **TUS, "Upload-Length": "4", "Upload-Metadata": f"filename {b64('orig.txt')}"})
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/files/invoice-2024_07")
    assert (upload_dir / "invoice-2024_07").is_file()
    head = client.head("/files/invoice-2024_07", headers=TUS)
    metadata = dict(item.split(" ") for item in head.headers["Upload-Metadata"].split(","))
    assert {k: base64.b64decode(v).decode() for k, v in metadata.items()} == \
        {"filename": "renamed.txt", "owner": "alice"}
    assert patch(client, "/files/invoice-2024_07", b"data", 0).status_code == 204
    app.service.hooks.drain()
    created = hookfns.of_type("post-create")[0]["Event"]["Upload"]
    assert created["ID"] == "invoice-2024_07"
    assert created["MetaData"] == {"filename": "renamed.txt", "owner": "alice"}
    assert created["Storage"]["Path"] == str(upload_dir / "invoice-2024_07")
    assert (upload_dir / "invoice-2024_07").read_bytes() == b"data"


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "-leading-dash", "x" * 129, "sp ace", "é"])
def test_change_file_info_invalid_id_is_500_and_creates_nothing(hooked, upload_dir, bad_id):
    app, client = hooked
    hookfns.ANSWERS["pre-create"] = {"ChangeFileInfo": {"ID": bad_id}}
    response = client.post("/files/", headers={**TUS, "Upload-Length": "4"})
    assert response.status_code == 500
    assert response.get_data(as_text=True).startswith("ERR_HOOK_FAILED")
    assert files_in(upload_dir) == []
    assert not (upload_dir.parent / "escape").exists()
    app.service.hooks.drain()
    assert "post-create" not in hookfns.types()


def test_change_file_info_id_in_use_is_refused_and_keeps_the_first(hooked, upload_dir):
    _app, client = hooked
    hookfns.ANSWERS["pre-create"] = {"ChangeFileInfo": {"ID": "fixed"}}
    first = create(client, 3)
    assert patch(client, first, b"one", 0).status_code == 204
    response = client.post("/files/", headers={**TUS, "Upload-Length": "9"})
    assert response.status_code == 500
    assert response.get_data(as_text=True).startswith("ERR_HOOK_FAILED")
    assert (upload_dir / "fixed").read_bytes() == b"one"
    assert client.head("/files/fixed", headers=TUS).headers["Upload-Length"] == "3"


def test_change_file_info_id_for_a_final_upload(hooked, upload_dir):
    _, client = hooked
    part = create(client, 2, Upload_Concat="partial")
    assert patch(client, part, b"ab", 0).status_code == 204
    hookfns.ANSWERS["pre-create"] = lambda event: (
        {"ChangeFileInfo": {"ID": "joined"}} if event["Event"]["Upload"]["IsFinal"] else None)
    response = client.post("/files/", headers={**TUS, "Upload-Concat": f"final;{part}"})
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/files/joined")


# -- pre-access: authorization ---------------------------------------------------------

@pytest.fixture
def guarded(make_app):
    app = make_app(hooks_python="support.hookfns:authorize")
    yield app, Client(app)
    app.service.hooks.drain()


def as_user(token: str) -> dict:
    return {**TUS, "Authorization": f"Bearer {token}"}


def test_pre_access_lets_only_the_owner_write(guarded, upload_dir):
    app, client = guarded
    response = client.post("/files/", headers={**as_user("tok-alice"), "Upload-Length": "10"})
    assert response.status_code == 201
    path = "/files/" + upload_id(response.headers["Location"])
    assert patch(client, path, b"hello", 0, Authorization="Bearer tok-alice").status_code == 204

    app.service.hooks.drain()
    before = len(hookfns.EVENTS)
    response = patch(client, path, b"EVIL!", 5, Authorization="Bearer tok-bob")
    assert response.status_code == 403
    assert response.get_data(as_text=True).startswith("ERR_ACCESS_DENIED")
    app.service.hooks.drain()
    assert hookfns.types()[before:] == ["pre-access"]  # refused before anything else
    assert data_file(upload_dir, path).read_bytes() == b"hello"

    for method in ("head", "delete", "get"):
        response = getattr(client, method)(path, headers=as_user("tok-bob"))
        assert response.status_code == 403, method
    assert data_file(upload_dir, path).read_bytes() == b"hello"

    head = client.head(path, headers=as_user("tok-alice"))
    assert head.headers["Upload-Offset"] == "5"
    response = patch(client, path, b"world", 5, Authorization="Bearer tok-alice")
    assert (response.status_code, response.headers["Upload-Offset"]) == (204, "10")
    assert data_file(upload_dir, path).read_bytes() == b"helloworld"


def test_pre_access_without_token_gets_the_hooks_401(guarded, upload_dir):
    _, client = guarded
    response = client.post("/files/", headers={**TUS, "Upload-Length": "10"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_data(as_text=True) == "who are you?\n"
    assert files_in(upload_dir) == []
    response = client.post("/files/", headers={**as_user("forged"), "Upload-Length": "10"})
    assert response.status_code == 401
    assert files_in(upload_dir) == []


def test_pre_access_refusal_reads_no_body(make_app, upload_dir):
    """A refused PATCH must not consume (or store) its body: pre-access runs first."""
    app = make_app(hooks_python=HOOK)
    client = Client(app)
    path = create(client, 8)
    hookfns.ANSWERS["pre-access"] = {"RejectAccess": True}

    class Watched:
        read_calls = 0

        def read(self, size=-1):
            Watched.read_calls += 1
            return b""

    response = stream_patch(client, path, Watched(), 8)
    assert response.status_code == 403
    assert Watched.read_calls == 0
    assert data_file(upload_dir, path).read_bytes() == b""


def test_pre_access_is_not_called_for_options(hooked):
    app, client = hooked
    assert client.options("/files/").status_code == 200
    app.service.hooks.drain()
    assert hookfns.EVENTS == []


# -- pre-terminate ------------------------------------------------------------------------

def test_pre_terminate_rejection_keeps_the_upload(hooked, upload_dir):
    app, client = hooked
    path = create(client, 4)
    assert patch(client, path, b"keep", 0).status_code == 204
    hookfns.ANSWERS["pre-terminate"] = {"RejectTermination": True}
    response = client.delete(path, headers=TUS)
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_TERMINATION_REJECTED")
    hookfns.ANSWERS["pre-terminate"] = {"RejectTermination": True, "HTTPResponse": {
        "StatusCode": 409, "Body": "legal hold"}}
    response = client.delete(path, headers=TUS)
    assert (response.status_code, response.get_data(as_text=True)) == (409, "legal hold")
    app.service.hooks.drain()
    assert "post-terminate" not in hookfns.types()
    terminate = hookfns.of_type("pre-terminate")[0]["Event"]
    assert terminate["Upload"]["ID"] == upload_id(path)
    assert terminate["Upload"]["Offset"] == 4
    assert terminate["HTTPRequest"]["Method"] == "DELETE"
    assert data_file(upload_dir, path).read_bytes() == b"keep"
    assert client.get(path).get_data() == b"keep"

    hookfns.ANSWERS.clear()
    assert client.delete(path, headers=TUS).status_code == 204
    app.service.hooks.drain()
    assert hookfns.types()[-2:] == ["pre-terminate", "post-terminate"]
    assert hookfns.of_type("post-terminate")[0]["Event"]["Upload"]["ID"] == upload_id(path)
    assert not data_file(upload_dir, path).exists()
    assert client.head(path, headers=TUS).status_code == 410


# -- post-receive and StopUpload -------------------------------------------------------

class SlowBody:
    """A request body that trickles ``total`` bytes in small blocks."""

    def __init__(self, total: int, block: int = 1000, delay: float = 0.01) -> None:
        self.data = bytes(i % 251 for i in range(total))
        self.position = 0
        self.block = block
        self.delay = delay

    def read(self, size: int = -1) -> bytes:
        time.sleep(self.delay)
        size = self.block if size < 0 else min(size, self.block)
        chunk = self.data[self.position:self.position + size]
        self.position += len(chunk)
        return chunk


def test_post_receive_reports_progress_and_stop_upload_ends_the_patch(make_app, upload_dir):
    app = make_app(hooks_python=HOOK, hooks_progress_interval="0.05s")
    client = Client(app)
    total = 200_000
    path = create(client, total)
    hookfns.ANSWERS["post-receive"] = lambda event: (
        {"StopUpload": True} if event["Event"]["Upload"]["Offset"] >= 20_000 else None)
    body = SlowBody(total)
    response = stream_patch(client, path, body, total)
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("ERR_UPLOAD_STOPPED")
    app.service.hooks.drain()
    kept = data_file(upload_dir, path).read_bytes()
    assert 20_000 <= len(kept) < total
    assert kept == body.data[:len(kept)]  # every byte received is kept, in order
    assert client.head(path, headers=TUS).headers["Upload-Offset"] == str(len(kept))
    offsets = [e["Event"]["Upload"]["Offset"] for e in hookfns.of_type("post-receive")]
    assert len(offsets) >= 2  # progress during the request, not only at its end
    assert all(0 < offset <= len(kept) for offset in offsets)
    assert max(offsets) == len(kept)  # the last one tells where the upload stands
    assert "pre-finish" not in hookfns.types() and "post-finish" not in hookfns.types()

    hookfns.ANSWERS.clear()  # the client resumes and finishes
    rest = body.data[len(kept):]
    response = patch(client, path, rest, len(kept))
    assert response.status_code == 204
    assert data_file(upload_dir, path).read_bytes() == body.data


def test_post_receive_is_throttled_by_the_progress_interval(make_app, upload_dir):
    app = make_app(hooks_python=HOOK, hooks_progress_interval="10s")
    client = Client(app)
    path = create(client, 100_000)
    response = stream_patch(client, path, SlowBody(100_000, delay=0.001), 100_000)
    assert response.status_code == 204
    app.service.hooks.drain()
    assert [e["Event"]["Upload"]["Offset"] for e in hookfns.of_type("post-receive")] == [100_000]


# -- hooks that fail ---------------------------------------------------------------------

@pytest.mark.parametrize("event", ["post-create", "post-receive", "post-finish", "post-terminate"])
def test_a_failing_background_hook_never_fails_the_request(hooked, upload_dir, caplog, event):
    app, client = hooked
    hookfns.ANSWERS[event] = RuntimeError("the hook is broken")
    with caplog.at_level(logging.ERROR, logger="tuswsgi.hooks"):
        path = create(client, 4)
        assert patch(client, path, b"done", 0).status_code == 204
        assert data_file(upload_dir, path).read_bytes() == b"done"
        assert client.delete(path, headers=TUS).status_code == 204
        app.service.hooks.drain()
    assert event in hookfns.types()
    assert any(event in r.getMessage() and "the hook is broken" in r.getMessage()
               for r in caplog.records)


def test_background_hook_answers_with_garbage_are_ignored(hooked, upload_dir):
    app, client = hooked
    hookfns.ANSWERS["post-create"] = "not an object"
    path = create(client, 2)
    assert patch(client, path, b"ok", 0).status_code == 204
    app.service.hooks.drain()
    assert data_file(upload_dir, path).read_bytes() == b"ok"


def test_failing_pre_create_is_500_and_creates_nothing(hooked, upload_dir):
    app, client = hooked
    hookfns.ANSWERS["pre-create"] = ValueError("database down")
    response = client.post("/files/", data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert text.startswith("ERR_HOOK_FAILED") and "pre-create" in text
    assert files_in(upload_dir) == []
    app.service.hooks.drain()
    assert hookfns.types() == ["pre-access", "pre-create"]


def test_failing_pre_access_is_500_and_changes_nothing(hooked, upload_dir):
    _app, client = hooked
    path = create(client, 6)
    assert patch(client, path, b"abc", 0).status_code == 204
    hookfns.ANSWERS["pre-access"] = OSError("auth service unreachable")
    for response in (patch(client, path, b"def", 3), client.delete(path, headers=TUS),
                     client.head(path, headers=TUS)):
        assert response.status_code == 500
    hookfns.ANSWERS.clear()
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert client.head(path, headers=TUS).headers["Upload-Offset"] == "3"


def test_failing_pre_terminate_is_500_and_keeps_the_upload(hooked, upload_dir):
    _app, client = hooked
    path = create(client, 3)
    assert patch(client, path, b"abc", 0).status_code == 204
    hookfns.ANSWERS["pre-terminate"] = RuntimeError("nope")
    response = client.delete(path, headers=TUS)
    assert response.status_code == 500
    assert response.get_data(as_text=True).startswith("ERR_HOOK_FAILED")
    assert data_file(upload_dir, path).read_bytes() == b"abc"
    assert client.head(path, headers=TUS).status_code == 200


def test_pre_finish_failure_and_rejection_keep_bytes_and_retry_finishes(hooked, upload_dir):
    """pre-finish runs once the last byte is stored: a failure or refusal answers the
    client with an error and no post-finish, and an empty PATCH at the end asks again."""
    app, client = hooked
    path = create(client, 4)
    hookfns.ANSWERS["pre-finish"] = RuntimeError("virus scanner down")
    response = patch(client, path, b"data", 0)
    assert response.status_code == 500
    assert response.get_data(as_text=True).startswith("ERR_HOOK_FAILED")
    assert data_file(upload_dir, path).read_bytes() == b"data"
    hookfns.ANSWERS["pre-finish"] = {"HTTPResponse": {"StatusCode": 422, "Body": "infected"}}
    response = patch(client, path, b"", 4)
    assert (response.status_code, response.get_data(as_text=True)) == (422, "infected")
    app.service.hooks.drain()
    assert "post-finish" not in hookfns.types()

    hookfns.ANSWERS["pre-finish"] = {"HTTPResponse": {"Header": {"X-Scan": "clean"}}}
    response = patch(client, path, b"", 4)
    assert response.status_code == 204
    assert response.headers["X-Scan"] == "clean"
    app.service.hooks.drain()
    assert hookfns.types().count("post-finish") == 1


def test_pre_finish_headers_reach_the_creation_with_upload_response(hooked):
    _, client = hooked
    hookfns.ANSWERS["pre-finish"] = {"HTTPResponse": {"Header": {"X-Download": "/d/1"}}}
    response = client.post("/files/", data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 201
    assert response.headers["X-Download"] == "/d/1"
    response = client.post("/files/", data=b"ab", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert "X-Download" not in response.headers  # only when the upload finished


def test_blocking_hooks_of_concurrent_requests_do_not_block_each_other(make_app):
    """A slow pre-create of one request does not hold up another request's hooks."""
    app = make_app(hooks_python=HOOK)
    client = Client(app)
    release = threading.Event()
    hookfns.ANSWERS["pre-create"] = lambda event: (
        release.wait(5) and None if event["Event"]["Upload"]["Size"] == 1 else None)
    results = {}
    slow = threading.Thread(target=lambda: results.setdefault(
        "slow", client.post("/files/", headers={**TUS, "Upload-Length": "1"}).status_code))
    slow.start()
    started = time.monotonic()
    assert client.post("/files/", headers={**TUS, "Upload-Length": "2"}).status_code == 201
    assert time.monotonic() - started < 2
    release.set()
    slow.join(10)
    assert results == {"slow": 201}
    app.service.hooks.drain()
