"""Prometheus metrics against a real gunicorn with 3 workers: whichever worker
answers ``/metrics``, the totals are those of all workers together."""

from __future__ import annotations

import re
import socket
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import OCTET, TUS

pytestmark = pytest.mark.e2e

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$')


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """Prometheus text format → {metric: {sorted label pairs: value}}."""
    samples: dict[str, dict[tuple, float]] = defaultdict(dict)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or "")))
        samples[name][pairs] = float(value)
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def fresh(method: str, url: str, **kwargs) -> requests.Response:
    """One request on its own connection, so the listening socket may hand it to any worker."""
    with requests.Session() as session:
        return session.request(method, url, **kwargs)


@pytest.fixture
def metrics_server(gunicorn_factory, monkeypatch):
    # Each gunicorn run gets its own multiprocess directory unless one is inherited.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return gunicorn_factory(workers=3, threads=4, env={"TUSWSGI_METRICS": "on"})


def metrics_url(server) -> str:
    return f"http://127.0.0.1:{server.port}/metrics"


def worker_pids(server, path: str = "") -> set[str]:
    """The pids of the workers that logged a request (for ``path``, if given)."""
    pattern = r"\[(\d+)\] \[INFO\] request method=\w+ path=" + re.escape(path)
    return set(re.findall(pattern, server.log()))


def in_parallel(function, items, width: int = 8) -> list:
    with ThreadPoolExecutor(width) as pool:
        return list(pool.map(function, items))


def test_totals_are_the_same_whichever_worker_answers(metrics_server):
    server = metrics_server
    n_created, chunk = 8, 1000

    def create(_):
        response = fresh("POST", server.url, headers={**TUS, "Upload-Length": str(2 * chunk)})
        assert response.status_code == 201
        return response.headers["Location"]

    def append(url_offset_data):
        url, offset, data = url_offset_data
        return fresh("PATCH", url, data=data, headers={
            **TUS, "Upload-Offset": str(offset), "Content-Type": OCTET}).status_code

    urls = in_parallel(create, range(n_created))
    for offset in (0, chunk):  # five uploads finished, in two PATCHes each
        assert in_parallel(append, [(url, offset, b"x" * chunk) for url in urls[:5]]) == [204] * 5
    assert append((urls[5], 0, b"y" * 123)) == 204
    assert append((urls[5], 0, b"z" * 10)) == 409  # wrong offset: refused, no bytes
    sent = 5 * 2 * chunk + 123
    assert in_parallel(lambda url: fresh("DELETE", url, headers=TUS).status_code,
                       [urls[0], urls[6], urls[7]]) == [204] * 3
    missing = server.url + "0123456789abcdef0123456789abcdef"
    heads = [missing] * 4 + urls[1:3] + [urls[0]]
    assert in_parallel(lambda url: fresh("HEAD", url, headers=TUS).status_code, heads) == \
        [404] * 4 + [200, 200, 410]

    # Which workers took the traffic is up to the kernel; the scrapes below must reach
    # all three, so at least two answer for traffic some other worker served.
    stored = sum(path.stat().st_size for path in server.upload_dir.iterdir()
                 if "." not in path.name)
    assert stored == sent - 2 * chunk  # urls[0] (2000 bytes, finished) was deleted

    expected_requests = {("POST", "201"): n_created, ("PATCH", "204"): 11, ("PATCH", "409"): 1,
                         ("DELETE", "204"): 3, ("HEAD", "404"): 4, ("HEAD", "200"): 2,
                         ("HEAD", "410"): 1}

    def check(samples) -> float:
        requests_total = {(dict(k)["method"], dict(k)["status"]): v
                          for k, v in samples["tuswsgi_requests_total"].items()}
        scrapes = requests_total.pop(("GET", "200"), 0)
        assert requests_total == expected_requests
        assert value(samples, "tuswsgi_received_bytes_total") == sent
        assert value(samples, "tuswsgi_uploads_total", event="created") == n_created
        assert value(samples, "tuswsgi_uploads_total", event="finished") == 5
        assert value(samples, "tuswsgi_uploads_total", event="terminated") == 3
        assert value(samples, "tuswsgi_uploads_total", event="expired") == 0
        assert value(samples, "tuswsgi_uploads_in_progress") == 0
        assert value(samples, "tuswsgi_lock_events_total", event="handover") == 0
        return scrapes

    def scrape(_):
        response = fresh("GET", metrics_url(server))
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.text)

    issued = 0
    for _ in range(20):  # bursts of concurrent scrapes until every worker answered some
        for samples in in_parallel(scrape, range(6), width=6):
            assert check(samples) < issued + 6
        issued += 6
        if len(worker_pids(server, "/metrics")) == 3:
            break
    assert len(worker_pids(server, "/metrics")) == 3, "the scrapes never reached every worker"
    for _ in range(3):  # a scrape is counted once answered: the next one sees every earlier one
        assert check(scrape(None)) == issued
        issued += 1


def test_lock_handover_is_counted(metrics_server):
    """A PATCH that stalls mid-body is taken over by a HEAD: the HEAD reports the
    bytes that arrived, the stalled request ends, and one hand-over is counted."""
    server = metrics_server
    url = fresh("POST", server.url, headers={**TUS, "Upload-Length": "100000"}).headers["Location"]
    path = url.split(f":{server.port}", 1)[1]
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall((f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                     f"Upload-Offset: 0\r\nContent-Type: {OCTET}\r\nContent-Length: 100000\r\n\r\n"
                     ).encode() + b"a" * 4000)
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until the stalled request holds the lock and wrote its bytes
            gauge = value(parse(fresh("GET", metrics_url(server)).text),
                          "tuswsgi_uploads_in_progress")
            if gauge == 1:
                break
            assert time.monotonic() < deadline, "the stalled PATCH never started writing"
            time.sleep(0.05)
        head = fresh("HEAD", url, headers=TUS)
        assert head.status_code == 200
        assert head.headers["Upload-Offset"] == "4000"
        stalled.settimeout(10)
        answer = stalled.recv(65536).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 400"), answer
        assert "ERR_UPLOAD_INTERRUPTED" in answer
    finally:
        stalled.close()
    samples = parse(fresh("GET", metrics_url(server)).text)
    assert value(samples, "tuswsgi_lock_events_total", event="handover") == 1
    assert value(samples, "tuswsgi_lock_events_total", event="timeout") == 0
    assert value(samples, "tuswsgi_received_bytes_total") == 4000
    assert value(samples, "tuswsgi_uploads_in_progress") == 0
    assert value(samples, "tuswsgi_requests_total", method="PATCH", status="400") == 1


def test_hook_calls_are_counted(gunicorn_factory, monkeypatch, tmp_path):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name, script in (("pre-create", "#!/bin/sh\ncat >/dev/null\n"),
                         ("post-create", "#!/bin/sh\nexit 1\n")):
        (hooks / name).write_text(script)
        (hooks / name).chmod(0o755)
    server = gunicorn_factory(workers=3, env={"TUSWSGI_METRICS": "on",
                                              "TUSWSGI_HOOKS_DIR": str(hooks)})
    for _ in range(3):
        assert fresh("POST", server.url, headers={**TUS, "Upload-Length": "5"}).status_code == 201
    deadline = time.monotonic() + 10
    while True:
        samples = parse(fresh("GET", metrics_url(server)).text)
        if value(samples, "tuswsgi_hook_calls_total", event="post-create", result="error") == 3:
            break
        assert time.monotonic() < deadline, samples.get("tuswsgi_hook_calls_total")
        time.sleep(0.1)
    assert value(samples, "tuswsgi_hook_calls_total", event="pre-create", result="ok") == 3
    assert value(samples, "tuswsgi_hook_calls_total", event="post-create", result="ok") == 0


def test_metrics_are_off_by_default(gunicorn_server):
    response = requests.get(f"http://127.0.0.1:{gunicorn_server.port}/metrics")
    assert response.status_code == 404
    assert "tuswsgi_requests_total" not in response.text


def test_metrics_off_in_process_is_404(client):
    assert client.get("/metrics").status_code == 404


def test_metrics_path_is_configurable(gunicorn_factory, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    server = gunicorn_factory(workers=2, env={"TUSWSGI_METRICS": "on",
                                              "TUSWSGI_METRICS_PATH": "/internal/stats"})
    assert requests.get(f"http://127.0.0.1:{server.port}/metrics").status_code == 404
    response = requests.get(f"http://127.0.0.1:{server.port}/internal/stats")
    assert response.status_code == 200
    assert "tuswsgi_received_bytes_total" in response.text


def test_a_restarted_server_starts_from_zero(gunicorn_factory, monkeypatch, tmp_path):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    first = gunicorn_factory(workers=2, env={"TUSWSGI_METRICS": "on"})
    assert fresh("POST", first.url, headers={**TUS, "Upload-Length": "1"}).status_code == 201
    first.stop()
    second = gunicorn_factory(workers=2, env={"TUSWSGI_METRICS": "on"},
                              upload_dir=tmp_path / "uploads")
    samples = parse(fresh("GET", metrics_url(second)).text)
    assert value(samples, "tuswsgi_uploads_total", event="created") == 0


def test_two_apps_with_metrics_in_one_process(make_app, monkeypatch, tmp_path):
    """Two apps in one process (an embedding mounts several): both build, both
    count, and either one's /metrics shows the process's totals."""
    from werkzeug.test import Client
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    apps = [Client(make_app(metrics="on")), Client(make_app(metrics="on"))]
    for client in apps:
        assert client.post("/files/", headers={**TUS, "Upload-Length": "1"}).status_code == 201
    for client in apps:
        samples = parse(client.get("/metrics").get_data(as_text=True))
        assert value(samples, "tuswsgi_uploads_total", event="created") == 2
