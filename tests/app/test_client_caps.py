"""Per-client caps on creations: by the identity a pre-access hook gives, else by
address; refusals are 429 with a stable code, and nothing is created."""

from __future__ import annotations

import os

import pytest
from conftest import OCTET, TUS, data_file, patch
from support import hookfns
from werkzeug.test import Client

HOOK = "support.hookfns:record"


@pytest.fixture(autouse=True)
def _fresh_hooks():
    hookfns.reset()
    yield
    hookfns.reset()


def post(client: Client, address: str = "192.0.2.7", length: int = 10, **headers: str):
    return client.post("/files/", environ_base={"REMOTE_ADDR": address},
                       headers={**TUS, "Upload-Length": str(length), **headers})


def upload_files(upload_dir) -> list[str]:
    return sorted(name for name in os.listdir(upload_dir) if not name.startswith(".")) \
        if upload_dir.exists() else []


def test_a_client_over_its_unfinished_cap_is_refused_until_one_finishes(make_app, upload_dir):
    client = Client(make_app(client_max_unfinished="3"))
    paths = [post(client).headers["Location"] for _ in range(3)]
    before = upload_files(upload_dir)
    refused = post(client)
    assert refused.status_code == 429
    assert refused.get_data(as_text=True).startswith("ERR_TOO_MANY_UNFINISHED: ")
    assert upload_files(upload_dir) == before
    assert post(client, address="198.51.100.1").status_code == 201  # another client
    finished = patch(client, paths[0], b"0123456789", 0)
    assert finished.status_code == 204
    assert post(client).status_code == 201
    assert client.delete(paths[1], headers=TUS).status_code == 204
    assert post(client).status_code == 201
    assert post(client).status_code == 429


def test_a_client_over_its_creation_rate_is_told_when_to_come_back(make_app, upload_dir):
    client = Client(make_app(client_creation_rate="5"))
    statuses = [post(client, length=0).status_code for _ in range(5)]
    refused = post(client, length=0)
    if statuses == [201] * 5:  # (unless the minute turned meanwhile)
        assert refused.status_code == 429
        assert refused.get_data(as_text=True).startswith("ERR_TOO_MANY_CREATIONS: ")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert post(client, address="2001:db8::1", length=0).status_code == 201


def test_finals_count_as_creations(make_app, upload_dir):
    client = Client(make_app(client_creation_rate="3"))
    part = post(client, length=1, Upload_Concat="partial").headers["Location"]
    assert patch(client, part, b"x", 0).status_code == 204
    final = {**TUS, "Upload-Concat": f"final;{part}"}
    answers = [client.post("/files/", environ_base={"REMOTE_ADDR": "192.0.2.7"}, headers=final)
               for _ in range(3)]
    assert [answer.status_code for answer in answers[:2]] == [201, 201]
    if answers[2].status_code == 429:  # (unless the minute turned meanwhile)
        assert answers[2].get_data(as_text=True).startswith("ERR_TOO_MANY_CREATIONS")


def test_loopback_is_nobody_unless_a_proxy_names_the_client(make_app, upload_dir):
    """A loopback peer is a proxy on this host or a local tool: not counted. Behind
    a proxy (behind_proxy = on) the client is the address the proxy forwards."""
    direct = Client(make_app(client_max_unfinished="1"))
    assert [post(direct, address="127.0.0.1").status_code for _ in range(3)] == [201] * 3
    proxied = Client(make_app(client_max_unfinished="1", behind_proxy="on"))
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert post(proxied, address="127.0.0.1", **forwarded).status_code == 201
    assert post(proxied, address="127.0.0.1", **forwarded).status_code == 429
    assert post(proxied, address="127.0.0.1", **{"X-Forwarded-For": "203.0.113.10"}).status_code == 201


def test_the_identity_a_pre_access_hook_gives_is_the_client(make_app, upload_dir):
    """One user from two addresses counts once; two users behind one address count
    apart."""
    hookfns.ANSWERS["pre-access"] = lambda event: {
        "Identity": (event["Event"]["HTTPRequest"]["Header"].get("Authorization") or [""])[0]}
    client = Client(make_app(client_max_unfinished="2", hooks_python=HOOK))
    alice, bob = {"Authorization": "alice"}, {"Authorization": "bob"}
    assert post(client, address="192.0.2.1", **alice).status_code == 201
    assert post(client, address="192.0.2.2", **alice).status_code == 201
    assert post(client, address="192.0.2.3", **alice).status_code == 429
    assert post(client, address="192.0.2.1", **bob).status_code == 201


def test_a_creation_with_a_body_is_counted_once(make_app, upload_dir):
    client = Client(make_app(client_max_unfinished="1"))
    response = client.post("/files/", data=b"abc", environ_base={"REMOTE_ADDR": "192.0.2.7"},
                           headers={**TUS, "Upload-Length": "6", "Content-Type": OCTET})
    assert response.status_code == 201
    assert data_file(upload_dir, response.headers["Location"]).read_bytes() == b"abc"
    assert post(client).status_code == 429


def test_caps_off_by_default_and_on_where_deployed(make_app):
    from tuswsgi.config import PRODUCTION_DEFAULTS
    app = make_app()
    assert not app.service.caps.enabled
    deployed = make_app(**PRODUCTION_DEFAULTS)
    assert (deployed.service.caps.per_minute, deployed.service.caps.unfinished) == (1000, 1000)
