"""Hooks end to end: real hook processes and a real HTTP receiver, a real gunicorn
(2 workers) and the real tus client (tuspy).

Background events run on a pool in whichever worker answered, so only causal
order is asserted across them (pre-create before post-create, pre-finish before
post-finish); the blocking events of one client's requests come in request order.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests
from conftest import OCTET, TUS, free_port, sha256_file
from support import cookieauth
from support.hookreceiver import HookReceiver
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

pytestmark = pytest.mark.e2e

BLOCKING = ("pre-access", "pre-create", "pre-finish", "pre-terminate")

HOOK_SCRIPT = """#!{python}
import fcntl, json, os, sys
event = json.load(sys.stdin)
with open({log!r}, "a") as log:
    fcntl.flock(log, fcntl.LOCK_EX)
    log.write(json.dumps({{"worker": os.getppid(), "event": event}}) + "\\n")
answer = os.path.join({answers!r}, event["Type"] + ".json")
if os.path.exists(answer):
    with open(answer) as handle:
        sys.stdout.write(handle.read())
"""


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def no_uploads(upload_dir: Path) -> bool:
    return not upload_dir.exists() or not any(upload_dir.iterdir())


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# -- command hooks -----------------------------------------------------------------------

class HookDir:
    """A tusd-style hook directory whose scripts log every event they get."""

    def __init__(self, root: Path, events=("pre-access", "pre-create", "post-create",
                                           "post-receive", "pre-finish", "post-finish",
                                           "pre-terminate", "post-terminate")) -> None:
        self.path = root / "hooks"
        self.answers = root / "answers"
        self.log = root / "events.jsonl"
        self.path.mkdir()
        self.answers.mkdir()
        self.log.touch()
        script = HOOK_SCRIPT.format(python=sys.executable, log=str(self.log),
                                    answers=str(self.answers))
        for event in events:
            hook = self.path / event
            hook.write_text(script)
            hook.chmod(0o755)

    def answer(self, event: str, answer: Optional[dict]) -> None:
        target = self.answers / f"{event}.json"
        if answer is None:
            target.unlink(missing_ok=True)
        else:
            target.write_text(json.dumps(answer))

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def events(self) -> list[dict]:
        return [entry["event"] for entry in self.entries()]


def test_command_hooks_see_a_tuspy_upload_in_order(gunicorn_factory, tmp_path):
    hooks = HookDir(tmp_path)
    server = gunicorn_factory(workers=2, env={"TUSWSGI_HOOKS_DIR": str(hooks.path),
                                              "TUSWSGI_HOOKS_PROGRESS_INTERVAL": "0.2s"})
    size = 3 * 256 * 1024 + 17
    source = random_file(tmp_path / "photo.jpg", size)
    client = tus_client.TusClient(server.url, headers={"Authorization": "Bearer t0ken"})
    uploader = client.uploader(str(source), chunk_size=256 * 1024,
                               metadata={"filename": "photo.jpg", "filetype": "image/jpeg"})
    uploader.upload()
    upload_id = uploader.url.rsplit("/", 1)[1]
    stored = server.upload_dir / upload_id
    assert sha256_file(stored) == sha256_file(source)

    # post-receive runs in the background, so it may land after post-finish
    wait_until(lambda: {"post-finish"} <= {e["Type"] for e in hooks.events()}
               and [e["Type"] for e in hooks.events()].count("post-receive") >= 4)
    events = hooks.events()
    types = [e["Type"] for e in events]

    blocking = [(e["Type"], e["Event"]["HTTPRequest"]["Method"]) for e in events
                if e["Type"] in BLOCKING]
    patches = [(t, m) for t, m in blocking if m == "PATCH"]
    assert blocking[:2] == [("pre-access", "POST"), ("pre-create", "POST")]
    assert patches == [("pre-access", "PATCH")] * 4 + [("pre-finish", "PATCH")]
    assert blocking[-1] == ("pre-finish", "PATCH")
    assert types.count("post-create") == 1 and types.count("post-finish") == 1
    assert types.index("pre-create") < types.index("post-create")
    assert types.index("pre-finish") < types.index("post-finish")
    assert types.count("post-receive") >= 4  # at least one per PATCH

    expected_upload = {"ID": upload_id, "Size": size, "SizeIsDeferred": False,
                       "MetaData": {"filename": "photo.jpg", "filetype": "image/jpeg"},
                       "IsPartial": False, "IsFinal": False, "PartialUploads": None,
                       "Storage": {"Type": "filestore", "Path": str(stored)}}
    for event in events:
        upload, request = event["Event"]["Upload"], event["Event"]["HTTPRequest"]
        assert request["RemoteAddr"].startswith("127.0.0.1:")
        assert request["Header"]["Authorization"] == ["Bearer t0ken"]
        if event["Type"] in ("pre-access", "pre-create") and request["Method"] == "POST":
            continue
        assert {k: v for k, v in upload.items() if k != "Offset"} == expected_upload, event["Type"]
        assert request["URI"] == ("/files/" if request["Method"] == "POST" else f"/files/{upload_id}")
    pre_create = events[types.index("pre-create")]["Event"]["Upload"]
    assert (pre_create["ID"], pre_create["Size"], pre_create["MetaData"]) == \
        ("", size, expected_upload["MetaData"])
    assert events[types.index("post-create")]["Event"]["Upload"]["Offset"] == 0
    assert events[types.index("pre-finish")]["Event"]["Upload"]["Offset"] == size
    assert events[types.index("post-finish")]["Event"]["Upload"]["Offset"] == size
    access_offsets = [e["Event"]["Upload"]["Offset"] for e in events
                      if e["Type"] == "pre-access" and e["Event"]["HTTPRequest"]["Method"] == "PATCH"]
    assert access_offsets == [0, 262144, 524288, 786432]  # where each PATCH starts
    received = sorted(e["Event"]["Upload"]["Offset"] for e in events if e["Type"] == "post-receive")
    assert set(received) >= {262144, 524288, 786432, size}  # one at the end of every PATCH
    assert all(0 < offset <= size for offset in received)


def test_command_hook_answers_reject_and_terminate(gunicorn_factory, tmp_path):
    hooks = HookDir(tmp_path)
    server = gunicorn_factory(workers=2, env={"TUSWSGI_HOOKS_DIR": str(hooks.path)})
    hooks.answer("pre-create", {"RejectUpload": True, "HTTPResponse": {
        "StatusCode": 507, "Body": "disk quota of this user is full", "Header": {"X-Quota": "0"}}})
    response = requests.post(server.url, headers={**TUS, "Upload-Length": "10"})
    assert response.status_code == 507
    assert response.text == "disk quota of this user is full"
    assert response.headers["X-Quota"] == "0"
    assert no_uploads(server.upload_dir)

    hooks.answer("pre-create", {"ChangeFileInfo": {"ID": "chosen-by-script"}})
    response = requests.post(server.url, data=b"0123456789", headers={
        **TUS, "Upload-Length": "10", "Content-Type": OCTET})
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/files/chosen-by-script")
    assert (server.upload_dir / "chosen-by-script").read_bytes() == b"0123456789"

    hooks.answer("pre-terminate", {"RejectTermination": True})
    response = requests.delete(response.headers["Location"], headers=TUS)
    assert response.status_code == 400
    assert (server.upload_dir / "chosen-by-script").read_bytes() == b"0123456789"


def test_broken_command_hooks(gunicorn_factory, tmp_path):
    """A blocking script that fails or prints garbage is a 500; a background one is
    only logged; an event without an executable is simply not sent."""
    hooks = HookDir(tmp_path, events=("pre-create", "post-create"))
    (hooks.path / "pre-finish").write_text("#!/bin/sh\nexit 0\n")  # not executable: skipped
    server = gunicorn_factory(workers=2, env={"TUSWSGI_HOOKS_DIR": str(hooks.path)})
    (hooks.path / "pre-create").write_text("#!/bin/sh\necho 'bad news' >&2\nexit 3\n")
    response = requests.post(server.url, headers={**TUS, "Upload-Length": "10"})
    assert response.status_code == 500
    assert response.text.startswith("ERR_HOOK_FAILED")
    (hooks.path / "pre-create").write_text("#!/bin/sh\necho 'this is not json'\n")
    response = requests.post(server.url, headers={**TUS, "Upload-Length": "10"})
    assert response.status_code == 500
    assert no_uploads(server.upload_dir)

    (hooks.path / "pre-create").write_text("#!/bin/sh\ncat >/dev/null\n")  # empty answer: fine
    (hooks.path / "post-create").write_text("#!/bin/sh\nexit 1\n")
    response = requests.post(server.url, data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 201
    assert (server.upload_dir / response.headers["Location"].rsplit("/", 1)[1]).read_bytes() == b"abc"
    wait_until(lambda: "post-create hook failed" in server.log())
    assert "exited with 3" in server.log() and "bad news" in server.log()


# -- HTTP hooks -----------------------------------------------------------------------------

@pytest.fixture
def receiver():
    hook_receiver = HookReceiver()
    yield hook_receiver
    hook_receiver.close()


def http_hooked(gunicorn_factory, receiver: HookReceiver, **env: str):
    return gunicorn_factory(workers=2, env={"TUSWSGI_HOOKS_HTTP": receiver.url,
                                            "TUSWSGI_HOOKS_HTTP_BACKOFF": "0.2s", **env})


def test_http_hooks_observe_a_tuspy_upload_with_forwarded_authorization(
        gunicorn_factory, receiver, tmp_path):
    server = http_hooked(gunicorn_factory, receiver,
                         TUSWSGI_HOOKS_HTTP_FORWARD_HEADERS="Authorization")
    source = random_file(tmp_path / "notes.txt", 300_000)
    client = tus_client.TusClient(server.url, headers={"Authorization": "Bearer s3cret",
                                                       "Cookie": "session=private"})
    uploader = client.uploader(str(source), chunk_size=100_000, metadata={"filename": "notes.txt"})
    uploader.upload()
    upload_id = uploader.url.rsplit("/", 1)[1]
    assert sha256_file(server.upload_dir / upload_id) == sha256_file(source)
    wait_until(lambda: receiver.of_type("post-finish") and receiver.types().count("post-receive") >= 3)

    types = receiver.types()
    assert types.index("pre-create") < types.index("post-create")
    assert types.index("pre-finish") < types.index("post-finish")
    assert types.count("pre-access") == 4  # the POST and three PATCHes
    assert types.count("post-receive") >= 3
    for call in receiver.calls:
        assert call["path"] == "/tus-hooks"
        assert call["headers"]["Hook-Name"] == call["event"]["Type"]
        assert call["headers"]["Content-Type"] == "application/json"
        assert call["headers"]["Authorization"] == "Bearer s3cret"  # forwarded
        assert "Cookie" not in call["headers"]  # not asked for: not forwarded
        # ...though the event itself shows the client's request as it came
        assert call["event"]["Event"]["HTTPRequest"]["Header"]["Cookie"] == ["session=private"]
    finished = receiver.of_type("post-finish")[0]["event"]["Event"]["Upload"]
    assert (finished["ID"], finished["Offset"], finished["Size"], finished["MetaData"]) == \
        (upload_id, 300_000, 300_000, {"filename": "notes.txt"})
    assert finished["Storage"] == {"Type": "filestore",
                                   "Path": str(server.upload_dir / upload_id)}


def test_http_pre_create_rejection_reaches_the_client(gunicorn_factory, receiver, tmp_path):
    server = http_hooked(gunicorn_factory, receiver)
    receiver.script["pre-create"] = [(200, {"RejectUpload": True, "HTTPResponse": {
        "StatusCode": 403, "Body": "uploads of .exe files are not allowed",
        "Header": {"X-Reason": "file-type"}}})]
    source = random_file(tmp_path / "setup.exe", 1000)
    uploader = tus_client.TusClient(server.url).uploader(str(source), metadata={
        "filename": "setup.exe"})
    with pytest.raises(TusCommunicationError) as caught:
        uploader.upload()
    assert caught.value.status_code == 403
    response = requests.post(server.url, headers={**TUS, "Upload-Length": "1000"})
    assert response.status_code == 403
    assert response.text == "uploads of .exe files are not allowed"
    assert response.headers["X-Reason"] == "file-type"
    assert no_uploads(server.upload_dir)
    pre_create = receiver.of_type("pre-create")[0]["event"]["Event"]["Upload"]
    assert (pre_create["Size"], pre_create["MetaData"]) == (1000, {"filename": "setup.exe"})
    time.sleep(0.3)
    assert "post-create" not in receiver.types()


def test_http_hook_retries_5xx_with_backoff_then_succeeds(gunicorn_factory, receiver):
    server = http_hooked(gunicorn_factory, receiver, TUSWSGI_HOOKS_HTTP_RETRIES="3")
    receiver.script["pre-create"] = [(500, None), (503, None),
                                     (200, {"ChangeFileInfo": {"ID": "third-time-lucky"}})]
    response = requests.post(server.url, data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/files/third-time-lucky")
    assert (server.upload_dir / "third-time-lucky").read_bytes() == b"abc"
    attempts = receiver.of_type("pre-create")
    assert len(attempts) == 3
    assert all(a["event"] == attempts[0]["event"] for a in attempts)  # the same event resent
    gaps = [later["time"] - earlier["time"] for earlier, later in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.36  # 0.2 s, then doubled


def test_http_hook_gives_up_after_retries_and_does_not_retry_4xx(gunicorn_factory, receiver):
    server = http_hooked(gunicorn_factory, receiver, TUSWSGI_HOOKS_HTTP_RETRIES="2")
    receiver.script["pre-create"] = [(500, None)]
    response = requests.post(server.url, headers={**TUS, "Upload-Length": "3"})
    assert response.status_code == 500
    assert response.text.startswith("ERR_HOOK_FAILED")
    assert len(receiver.of_type("pre-create")) == 3  # first try + 2 retries

    receiver.script["pre-create"] = [(404, None)]
    response = requests.post(server.url, headers={**TUS, "Upload-Length": "3"})
    assert response.status_code == 500
    assert len(receiver.of_type("pre-create")) == 4  # one more call, no retry
    assert no_uploads(server.upload_dir)


def test_unreachable_http_hook_fails_only_blocking_events(gunicorn_factory, tmp_path):
    server = gunicorn_factory(workers=2, env={
        "TUSWSGI_HOOKS_HTTP": f"http://127.0.0.1:{free_port()}/nobody",
        "TUSWSGI_HOOKS_HTTP_RETRIES": "1", "TUSWSGI_HOOKS_HTTP_BACKOFF": "0.1s",
        "TUSWSGI_HOOKS_ENABLED": "post-create,post-receive,post-finish"})
    response = requests.post(server.url, data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Content-Type": OCTET})
    assert response.status_code == 201
    stored = server.upload_dir / response.headers["Location"].rsplit("/", 1)[1]
    assert stored.read_bytes() == b"abc"
    wait_until(lambda: "post-finish hook failed" in server.log())


def test_python_and_http_hooks_both_see_a_forwarded_cookie(gunicorn_factory, receiver, tmp_path):
    """With ``http_forward_headers = Cookie`` the HTTP hook gets the client's cookie as a
    header of its own call; the event (what Python hooks get) carries it in every case."""
    log = tmp_path / "cookies.log"
    server = http_hooked(gunicorn_factory, receiver, TUSWSGI_HOOKS_HTTP_FORWARD_HEADERS="Cookie",
                         TUSWSGI_HOOKS_ENABLED="pre-access", **cookieauth.server_env("s3cret", log))
    source = random_file(tmp_path / "cookie.bin", 200_000)
    cookie = "theme=dark; session=s3cret"
    client = tus_client.TusClient(server.url, headers={"Cookie": cookie})
    uploader = client.uploader(str(source), chunk_size=100_000)
    uploader.upload()
    assert sha256_file(server.upload_dir / uploader.url.rsplit("/", 1)[1]) == sha256_file(source)
    calls = receiver.of_type("pre-access")
    assert len(calls) == 3  # the POST and two PATCHes
    for call in calls:
        assert call["headers"]["Cookie"] == cookie
        assert call["event"]["Event"]["HTTPRequest"]["Header"]["Cookie"] == [cookie]
    assert log.read_text().splitlines() == [repr([cookie])] * 3

    stranger = requests.post(server.url, headers={**TUS, "Upload-Length": "1",
                                                  "Cookie": "session=guess"}, timeout=10)
    assert stranger.status_code == 403
    assert "ERR_ACCESS_DENIED" in stranger.text
    assert receiver.of_type("pre-access")[-1]["headers"]["Cookie"] == "session=guess"
