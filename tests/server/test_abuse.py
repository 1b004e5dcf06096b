"""What one client can make a real server store: small requests that would copy
much (finals naming one partial over and over, or very many partials), and floods
of creations from one client while a real client (tuspy) uploads next to it.

Behind a proxy (``behind_proxy = on``) the client is the address the proxy
forwards, so one test machine plays several clients with ``X-Forwarded-For``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import OCTET, TUS, random_file, sha256, sha256_file
from tusclient import client as tus_client

pytestmark = pytest.mark.e2e


def stored_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())


def uploads_in(directory: Path) -> set[str]:
    return {path.name[:-5] for path in directory.glob("*.info")}


def partial(url: str, data: bytes, **headers: str) -> str:
    created = requests.post(url, timeout=10, headers={
        **TUS, "Upload-Length": str(len(data)), "Upload-Concat": "partial", **headers})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    if data:
        answer = requests.patch(location, data=data, timeout=10, headers={
            **TUS, "Upload-Offset": "0", "Content-Type": OCTET, **headers})
        assert answer.status_code == 204, answer.text
    return location


def test_a_small_request_cannot_make_the_server_copy_much(gunicorn_factory):
    """Issue 22's request (a 60 KB final naming one 64 KiB partial 1,500 times made
    a 96 MiB final) and its variants are refused with a stable code and store
    nothing; a final the bounds allow stores no more than the partials it was sent."""
    server = gunicorn_factory(workers=2, threads=4)
    part = partial(server.url, os.urandom(65536))
    relative = "/files/" + part.rsplit("/", 1)[1]
    before = (uploads_in(server.upload_dir), stored_bytes(server.upload_dir))
    for names, code in (([relative] * 1500, "ERR_CONCAT_TOO_MANY_PARTS"),
                        ([relative, part], "ERR_CONCAT_REPEATED_PART")):
        head = "final;" + " ".join(names)
        answer = requests.post(server.url, headers={**TUS, "Upload-Concat": head}, timeout=10)
        print(f"final naming {len(names)} parts in {len(head)} bytes: {answer.status_code} {answer.text!r}")
        assert answer.status_code == 400 and answer.text.startswith(code + ": ")
        assert (uploads_in(server.upload_dir), stored_bytes(server.upload_dir)) == before
    many = [partial(server.url, bytes([n % 256])) for n in range(101)]
    answer = requests.post(server.url, headers={**TUS, "Upload-Concat": "final;" + " ".join(many)},
                           timeout=10)
    assert answer.status_code == 400 and answer.text.startswith("ERR_CONCAT_TOO_MANY_PARTS: ")
    assert len(uploads_in(server.upload_dir)) == len(before[0]) + 101
    allowed = requests.post(server.url, headers={**TUS, "Upload-Concat": "final;" + " ".join(many[:100])},
                            timeout=10)
    assert allowed.status_code == 201, allowed.text
    final = server.upload_dir / allowed.headers["Location"].rsplit("/", 1)[1]
    assert final.read_bytes() == bytes(range(100))  # 100 bytes, as many as the partials sent


def flood(url: str, address: str, count: int, length: int) -> list[requests.Response]:
    """``count`` creations from one client, four at a time."""
    def create(_: int) -> requests.Response:
        return requests.post(url, timeout=30, headers={
            **TUS, "Upload-Length": str(length), "X-Forwarded-For": address})
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(create, range(count)))


def test_the_creation_caps_refuse_a_flood_while_a_real_client_uploads(gunicorn_factory, tmp_path):
    """Behind a proxy, one client floods creations of 1 GiB uploads (it would never
    send them) while another uploads a file with tuspy.  The flood gets its 20
    unfinished uploads (a few more at most, for creations in flight at once in three
    workers) and then 429s; tuspy's upload is untouched by it; a flood of empty
    uploads (finished at once) meets the cap of creations a minute instead."""
    server = gunicorn_factory(workers=3, threads=8, env={
        "TUSWSGI_BEHIND_PROXY": "on", "TUSWSGI_CLIENT_MAX_UNFINISHED": "20",
        "TUSWSGI_CLIENT_CREATION_RATE": "60"})
    source = random_file(tmp_path / "real.bin", 6 * 1024 * 1024 + 3)
    uploader = tus_client.TusClient(server.url, headers={"X-Forwarded-For": "198.51.100.7"}).uploader(
        str(source), chunk_size=512 * 1024)
    with ThreadPoolExecutor(1) as pool:
        real = pool.submit(uploader.upload)
        answers = flood(server.url, "203.0.113.9", 200, 1 << 30)
        real.result(timeout=120)
    created = [answer for answer in answers if answer.status_code == 201]
    refused = [answer for answer in answers if answer.status_code == 429]
    codes = {answer.text.split(":", 1)[0] for answer in refused}
    print(f"flood of 200 creations: {len(created)} created, {len(refused)} refused ({sorted(codes)})")
    assert 20 <= len(created) <= 24 and len(created) + len(refused) == 200
    assert codes <= {"ERR_TOO_MANY_UNFINISHED", "ERR_TOO_MANY_CREATIONS"}
    assert sha256_file(server.upload_dir / uploader.url.rsplit("/", 1)[1]) == sha256(source.read_bytes())
    assert len(uploads_in(server.upload_dir)) == len(created) + 1

    minute = int(time.time() // 60)
    empty = flood(server.url, "203.0.113.10", 80, 0)
    statuses = [answer.status_code for answer in empty]
    print(f"flood of 80 empty uploads: {statuses.count(201)} created, {statuses.count(429)} refused")
    if int(time.time() // 60) == minute:  # (the count starts over each minute)
        assert statuses.count(201) == 60 and statuses.count(429) == 20
        assert all(answer.text.startswith("ERR_TOO_MANY_CREATIONS: ") and
                   1 <= int(answer.headers["Retry-After"]) <= 60
                   for answer in empty if answer.status_code == 429)
    again = tus_client.TusClient(server.url, headers={"X-Forwarded-For": "198.51.100.7"}).uploader(
        str(source), chunk_size=1024 * 1024)
    again.upload()  # the real client still uploads normally
    assert sha256_file(server.upload_dir / again.url.rsplit("/", 1)[1]) == sha256(source.read_bytes())
