"""Two hosts on a real distributed file system: MooseFS, mounted twice.

Each "host" is its own ``mfsmount`` of one MooseFS volume (its own client,
session and caches; see tests/support/moosefs.py) with the production gunicorn
(deploy/gunicorn.conf.py) serving the same upload directory on it.  What a
client sees through one host must hold on the other: offsets, bytes, locks and
the hand-over of a stalled request.  The last tests lose whole hosts (server
and mount, ``kill -9``), one fenced by the operator and one left to the master,
and measure how long the dead host's lock outlives it.

Run alone with ``python -m pytest tests/server/test_multihost_moosefs.py -s`` (as root:
it creates a network namespace and FUSE mounts); ``-s`` shows the measurements.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests
from conftest import (
    OCTET,
    ROOT,
    TUS,
    Server,
    assert_writes_traceable,
    random_file,
    require_tool,
    sha256,
    sha256_file,
)
from support import concatload, moosefs
from support.deploy import start_production_gunicorn, start_stock_gunicorn, upload_with_cuts
from support.nginx import start_nginx
from support.rawclient import raw_create, raw_request, read_status, send_partial_patch

from tuswsgi.locking import open_shared

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UPLOADS = "uploads"


@dataclass
class Host:
    """A gunicorn serving the upload directory through one mount."""

    name: str
    server: Server
    mount: moosefs.Mount

    @property
    def port(self) -> int:
        return self.server.port

    def file(self, upload_path: str) -> Path:
        """The upload's data file as this host sees it."""
        return self.mount.path / UPLOADS / upload_path.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def moose(tmp_path_factory) -> Iterator[moosefs.MooseFS]:
    """One MooseFS for the module, mounted as "a" and "b"; torn down even on failure."""
    require_tool("root (network namespaces and FUSE mounts)", os.geteuid() == 0)
    for tool in moosefs.missing_tools():
        require_tool(f"{tool} (see .ci/install.d/moosefs.sh)", False)
    fs = moosefs.start_moosefs(tmp_path_factory.mktemp("moosefs"))
    try:
        (fs.mounts["a"].path / UPLOADS).mkdir()
        yield fs
    finally:
        fs.stop()


def start_host(mount: moosefs.Mount, workdir: Path) -> Host:
    """The production gunicorn on ``mount``'s upload directory, logging to ``workdir``."""
    workdir.mkdir(exist_ok=True)
    server = start_production_gunicorn(workdir, upload_dir=mount.path / UPLOADS, name=mount.name,
                                       TUSWSGI_BEHIND_PROXY="on")
    return Host(mount.name, server, mount)


@pytest.fixture(scope="module")
def hosts(moose, tmp_path_factory) -> Iterator[tuple[Host, Host]]:
    """Production gunicorns A (on mount a) and B (on mount b)."""
    work = tmp_path_factory.mktemp("hosts")
    started: list[Host] = []
    try:
        for name in ("a", "b"):
            started.append(start_host(moose.mounts[name], work / name))
        yield started[0], started[1]
    finally:
        for host in started:
            host.server.stop()


def head(host: Host, path: str, timeout: float = 30) -> requests.Response:
    return requests.head(f"http://127.0.0.1:{host.port}{path}", headers=TUS, timeout=timeout)


def patch(host: Host, path: str, data: bytes, offset: int) -> requests.Response:
    return requests.patch(f"http://127.0.0.1:{host.port}{path}", data=data, timeout=60,
                          headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})


def offset_of(host: Host, path: str) -> int:
    response = head(host, path)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def wait_for_size(path: Path, size: int, timeout: float = 30) -> None:
    """Poll a data file until it holds ``size`` bytes (what a server has written)."""
    moosefs.wait_until(lambda: path.exists() and path.stat().st_size >= size, timeout,
                       f"{path.name} to reach {size} bytes")


def kill_server(server: Server) -> None:
    """``kill -9`` a gunicorn master and its workers (its process group)."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()


# -- the checks -------------------------------------------------------------------

def test_upload_started_on_one_host_resumes_on_the_other(hosts, tmp_path):
    a, b = hosts
    data = random_file(tmp_path / "source.bin", 3 * 1024 * 1024 + 17).read_bytes()
    path = raw_create(a.port, len(data))
    first = patch(a, path, data[:1_048_581], 0)
    assert first.status_code == 204 and first.headers["Upload-Offset"] == "1048581"
    assert offset_of(b, path) == 1_048_581
    assert b.file(path).stat().st_size == 1_048_581
    rest = patch(b, path, data[1_048_581:], 1_048_581)
    assert rest.status_code == 204 and rest.headers["Upload-Offset"] == str(len(data))
    assert offset_of(a, path) == offset_of(b, path) == len(data)
    assert sha256_file(a.file(path)) == sha256_file(b.file(path)) == sha256(data)


def test_racing_writers_on_both_hosts_keep_every_acknowledged_byte(hosts):
    """Six writers, three through each host, PATCH one upload at the offsets they
    believe, each attempt with its own fill byte: every 204 must be on disk at its
    offset, and every run on disk traceable to the request that named it."""
    piece, total = 256 * 1024, 256 * 1024 * 24
    path = raw_create(hosts[0].port, total)
    attempts: dict[int, tuple[int, int]] = {}
    acknowledged: list[tuple[int, int, int]] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def writer(seed: int) -> None:
        host = hosts[seed % 2]
        for attempt in range(40):
            offset = int(head(host, path).headers["Upload-Offset"])
            if offset >= total:
                return
            fill = seed * 40 + attempt
            data = bytes([fill]) * min(piece, total - offset)
            with lock:
                attempts[fill] = (offset, len(data))
            response = patch(host, path, data, offset)
            with lock:
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 204:
                    acknowledged.append((offset, int(response.headers["Upload-Offset"]), fill))

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"racing writers: {len(attempts)} attempts, statuses {dict(sorted(statuses.items()))}")
    assert set(statuses) <= {204, 400, 409, 423}, statuses
    stored_a, stored_b = hosts[0].file(path).read_bytes(), hosts[1].file(path).read_bytes()
    assert stored_a == stored_b and len(stored_a) == total
    assert offset_of(hosts[0], path) == offset_of(hosts[1], path) == total
    runs = assert_writes_traceable(stored_a, attempts, acknowledged)
    acknowledged_bytes = sum(end - start for start, end, _ in acknowledged)
    print(f"racing writers: {len(acknowledged)} acknowledged ({acknowledged_bytes} bytes), "
          f"{runs} runs on disk, all traceable")


def test_stalled_patch_on_one_host_is_handed_over_to_a_head_on_the_other(hosts):
    a, b = hosts
    data = os.urandom(2_000_000)
    path = raw_create(a.port, len(data))
    stalled = send_partial_patch(a.port, path, 0, data, 700_000)
    try:
        wait_for_size(a.file(path), 700_000)
        started = time.monotonic()
        response = head(b, path)
        elapsed = time.monotonic() - started
        status, reply = read_status(stalled, 10)
    finally:
        stalled.close()
    print(f"hand-over across hosts: HEAD on B answered {response.status_code} in {elapsed * 1000:.0f} ms "
          f"with offset {response.headers.get('Upload-Offset')}; the stalled PATCH on A got {status}")
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "700000"
    assert elapsed < 4, "hand-over took nearly the whole lock_timeout"  # hang guard; 1 s is the goal
    assert status == 400 and b"ERR_UPLOAD_INTERRUPTED" in reply
    assert patch(b, path, data[700_000:], 700_000).status_code == 204
    assert sha256_file(a.file(path)) == sha256(data)


#: gunicorn's own workers, and how many PATCHes can stall on one host while every
#: other request still finds a thread there, whichever worker takes them (gthread:
#: 2 workers of 8 threads, and nothing places them: 6 leave any one worker 2;
#: sync: 2 workers, one request each).
STOCK = {"gthread": 6, "sync": 1}


@pytest.fixture(scope="module", params=list(STOCK))
def stock_hosts(request, moose, tmp_path_factory) -> Iterator[tuple[str, Host, Host]]:
    """``gunicorn -k WORKER -w 2 --threads 8 tuswsgi:app`` on each mount: none of
    tuswsgi's gunicorn settings."""
    work = tmp_path_factory.mktemp(f"{request.param}-hosts")
    started: list[Host] = []
    try:
        for name in ("a", "b"):
            mount = moose.mounts[name]
            server = start_stock_gunicorn(work / name, request.param, upload_dir=mount.path / UPLOADS,
                                          name=name)
            started.append(Host(name, server, mount))
        yield request.param, started[0], started[1]
    finally:
        for host in started:
            host.server.stop()


def test_under_gunicorns_workers_stalled_patches_on_one_host_are_handed_over_to_heads_on_both(
        stock_hosts):
    """PATCHes stall on host A (bytes sent, then silence); for each upload a HEAD
    on A and a HEAD on B at once: every HEAD answers the stored offset, within the
    lock timeout, and every upload then resumes to the same bytes."""
    worker, a, b = stock_hosts
    sent = 256 * 1024
    uploads = []
    for _ in range(STOCK[worker]):
        data = os.urandom(600_000)
        path = raw_create(a.port, len(data))
        uploads.append((path, data, send_partial_patch(a.port, path, 0, data, sent)))
    try:
        for path, _, _ in uploads:
            wait_for_size(a.file(path), sent)
        started = time.monotonic()
        with ThreadPoolExecutor(2 * len(uploads)) as pool:
            answers = list(pool.map(lambda job: head(job[0], job[1]),
                                    [(host, path) for path, _, _ in uploads for host in (a, b)]))
        elapsed = time.monotonic() - started
    finally:
        for _, _, sock in uploads:
            sock.close()
    print(f"{worker}: {len(answers)} HEADs on A and B answered {sorted({r.status_code for r in answers})} "
          f"in {elapsed:.2f} s")
    assert [r.status_code for r in answers] == [200] * 2 * len(uploads)
    assert {r.headers["Upload-Offset"] for r in answers} == {str(sent)}
    for path, data, _ in uploads:
        assert patch(b, path, data[sent:], sent).status_code == 204
        assert sha256_file(b.file(path)) == sha256(data)


def test_server_killed_mid_patch_resumes_on_the_other_host(moose, hosts, tmp_path):
    """A third gunicorn on mount a is killed with -9 while a PATCH streams into it;
    host B then finds every byte that reached the file, and the upload finishes."""
    b = hosts[1]
    victim = start_production_gunicorn(tmp_path, upload_dir=moose.mounts["a"].path / UPLOADS, name="victim")
    try:
        data = os.urandom(3_000_000)
        path = raw_create(b.port, len(data))
        sock = send_partial_patch(victim.port, path, 0, data, 1_200_000)
        wait_for_size(moose.mounts["a"].path / UPLOADS / path.rsplit("/", 1)[1], 1_200_000)
        kill_server(victim)
        sock.close()
    finally:
        victim.stop()
    offset = offset_of(b, path)
    print(f"kill -9 mid-PATCH: host B resumes from {offset} of the 1200000 bytes sent")
    assert offset == 1_200_000
    assert b.file(path).read_bytes() == data[:offset]
    assert patch(b, path, data[offset:], offset).status_code == 204
    assert sha256_file(b.file(path)) == sha256(data)


def test_twenty_uploads_through_nginx_with_random_cuts(hosts, tmp_path_factory):
    """nginx round robin over A and B; each upload is cut 0-2 times at random
    bytes and resumed by tuspy, so its requests land on both hosts."""
    work = tmp_path_factory.mktemp("nginx")
    nginx = start_nginx(work, [host.port for host in hosts])
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    sizes = [rng.randrange(600_000, 2_500_000) for _ in range(20)]
    # Each cut below a chunk and all of them within two thirds of the upload, so
    # every cut falls inside a request that the upload still makes.
    plans = [(size, sorted(rng.sample(range(20_000, min(500_000, size // 3)), rng.randrange(3))))
             for size in sizes]
    patch_lines = [host.server.log().count("request method=PATCH") for host in hosts]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REQUESTS_CA_BUNDLE", str(nginx.prefix / "cert.pem"))
        try:
            def one(number: int) -> bool:
                size, cuts = plans[number]
                source = random_file(work / f"source-{number}.bin", size)
                path = upload_with_cuts(nginx.https_port, source, cuts, chunk_size=512 * 1024,
                                        scheme="https", host="localhost")
                return sha256_file(hosts[number % 2].file(path)) == sha256_file(source)
            with ThreadPoolExecutor(4) as pool:
                matches = list(pool.map(one, range(20)))
        finally:
            nginx.server.stop()
    served = [host.server.log().count("request method=PATCH") - before
              for host, before in zip(hosts, patch_lines, strict=True)]
    mismatches = matches.count(False)
    print(f"20 uploads (seed {seed}), {sum(len(cuts) for _, cuts in plans)} cuts, PATCHes served by A/B: "
          f"{served}, {mismatches} mismatches")
    assert mismatches == 0
    assert all(served), served


def test_racing_heads_on_both_hosts_never_fail(hosts):
    """The first HEAD of an upload creates its lock file, and a HEAD that finds the
    lock held creates a stop request: on MooseFS the loser of a plain O_CREAT race
    is told EEXIST.  Both hosts HEAD fresh uploads at once, again and again."""
    a, b = hosts
    control = _plain_create_races(a.mount.path / UPLOADS, b.mount.path / UPLOADS, 100)
    print(f"plain O_CREAT races between the mounts: {control} of 100 losers got EEXIST")
    assert _open_shared_races(a.mount.path / UPLOADS, b.mount.path / UPLOADS, 100) == 0
    statuses: dict[int, int] = {}
    barrier = threading.Barrier(2)

    def one_head(host: Host, path: str) -> None:
        barrier.wait()
        status = head(host, path).status_code
        statuses[status] = statuses.get(status, 0) + 1

    for _ in range(30):
        path = raw_create(a.port, 10)
        for _ in range(5):
            threads = [threading.Thread(target=one_head, args=(host, path)) for host in (a, b)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    print(f"racing HEADs on fresh uploads: {statuses}")
    assert statuses == {200: 300}


def test_finals_over_parts_sent_through_both_hosts_assemble_once(hosts):
    """concatenation-unfinished across hosts: final uploads created on either host
    while their parts' pieces go through both; whichever host finishes a part
    assembles the finals waiting for it (the shared directory is the only place
    that knows), and each final is finished once, by one host."""
    a, b = hosts
    rng = random.Random(7)
    work = concatload.plan(rng, finals=8, shared=3, max_part=100_000)
    sender = concatload.Sender([f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"], 7)
    concatload.run(work, sender, rng, threads=4)  # never more bodies than a worker has slots (4)
    concatload.check_finals(work, sender, a.mount.path / UPLOADS)
    concatload.finished_once(work, [a.server.log(), b.server.log()])


def _plain_create_races(first: Path, second: Path, rounds: int) -> int:
    """How often a plain ``O_CREAT`` of one new name through both mounts at once
    fails with EEXIST (the file system's behaviour, before any tolerance)."""
    failures = _create_races(first, second, rounds, "race",
                             lambda path: os.open(path, os.O_CREAT | os.O_RDWR, 0o644))
    assert {exc.errno for exc in failures} <= {errno.EEXIST}, failures
    return len(failures)


def _open_shared_races(first: Path, second: Path, rounds: int) -> int:
    """The same race through :func:`tuswsgi.locking.open_shared`: how many failed."""
    return len(_create_races(first, second, rounds, "shared",
                             lambda path: open_shared(str(path), os.O_RDWR)))


def _create_races(first: Path, second: Path, rounds: int, prefix: str,
                  opener: Callable[[Path], int]) -> list[OSError]:
    """Open one new name through both mounts at once, ``rounds`` times; the errors."""
    failures: list[OSError] = []

    def create(root: Path, name: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            os.close(opener(root / name))
        except OSError as exc:
            failures.append(exc)

    for number in range(rounds):
        barrier = threading.Barrier(2)
        name = f"{prefix}-{os.getpid()}-{number}.lock"
        threads = [threading.Thread(target=create, args=(root, name, barrier)) for root in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        os.unlink(first / name)
    return failures


def test_check_shared_dir_finds_the_two_mounts_safe(hosts):
    """The operator's self-test on the upload directory through both mounts."""
    a, b = hosts
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tuswsgi.cli", "check-shared-dir", str(a.mount.path / UPLOADS),
               str(b.mount.path / UPLOADS)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "verdict: safe"
    assert len([line for line in lines if line.startswith("safe ")]) == 9
    assert not [name for name in os.listdir(a.mount.path / UPLOADS) if name.startswith(".tuswsgi-check")]


# -- losing whole hosts ------------------------------------------------------------
#
# One loss event serves several checks, because on MooseFS a write to a chunk that
# a dead client was writing waits for the master's chunk lock (120 s): hosts C and
# D die at the same moment, D is fenced by the operator, C is not, and every
# follow-up (through host B, and a bare-file-system probe) runs at once.

@dataclass
class Victim:
    """A host about to die while it holds an upload's lock in a stalled PATCH:
    1000000 bytes acknowledged, 500000 more written into an open descriptor."""

    host: Host
    path: str
    data: bytes
    stalled: socket.socket


@dataclass
class HostLoss:
    """What a client of host B saw after a host died holding an upload's lock."""

    answers: list = field(default_factory=list)  # (seconds since the death, status) per HEAD via B
    session_gone: float = float("nan")  # seconds since the death when the master stopped listing it
    bound: float = 0.0  # seconds since the death by which the master must have dropped it
    offset: int = -1  # the offset B reported once unlocked
    prefix_intact: bool = False  # the file held exactly the upload's first ``offset`` bytes
    patches: list = field(default_factory=list)  # (offset, status, seconds) of each PATCH via B
    final_size: int = -1
    sha_matches: bool = False

    @property
    def unlocked(self) -> float:
        return self.answers[-1][0]

    @property
    def statuses_before(self) -> set:
        return {status for _, status in self.answers[:-1]}


def doom_host(moose: moosefs.MooseFS, b: Host, name: str, workdir: Path) -> Victim:
    """Start host ``name`` (a new mount and gunicorn) and leave it holding an
    upload's lock: a PATCH that sent 500000 of its bytes and went silent."""
    host = start_host(moose.mount(name), workdir / name)
    data = os.urandom(4_000_000)
    path = raw_create(b.port, len(data))
    assert patch(host, path, data[:1_000_000], 0).status_code == 204
    stalled = send_partial_patch(host.port, path, 1_000_000, data[1_000_000:], 500_000)
    wait_for_size(host.file(path), 1_500_000)
    return Victim(host, path, data, stalled)


def kill_host(victim: Victim) -> None:
    """A host losing power: its mfsmount first (so nothing is closed cleanly),
    then its gunicorn, both with -9."""
    victim.host.mount.kill()
    kill_server(victim.host.server)
    victim.stalled.close()


def follow_loss(b: Host, path: str, data: bytes, died: float, loss: HostLoss) -> None:
    """HEAD through B back to back until one is not 423 (each HEAD polls the lock
    for lock_timeout, so the first 200 comes within a poll of the release), then
    resume the upload (``data`` at ``path``) through B; record everything in ``loss``."""
    deadline = died + moosefs.SESSION_STARTUP_GRACE + moosefs.SESSION_SUSTAIN_TIME + 30
    while time.monotonic() < deadline:
        status = raw_request(b.port, "HEAD", path).status
        loss.answers.append((time.monotonic() - died, status))
        if status != 423:
            break
    if loss.answers[-1][1] != 200:
        return
    loss.offset = offset_of(b, path)
    loss.prefix_intact = b.file(path).read_bytes() == data[:loss.offset]
    offset = loss.offset
    for _ in range(3):  # as a tus client does: on 409, ask for the offset again
        started = time.monotonic()
        response = requests.patch(f"http://127.0.0.1:{b.port}{path}", data=data[offset:], timeout=300,
                                  headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
        loss.patches.append((offset, response.status_code, time.monotonic() - started))
        if response.status_code != 409:
            break
        offset = offset_of(b, path)
    loss.final_size = b.file(path).stat().st_size
    loss.sha_matches = sha256_file(b.file(path)) == sha256(data)


def watch_session(moose: moosefs.MooseFS, mount: moosefs.Mount, died: float, loss: HostLoss) -> None:
    """Record when the master stops listing ``mount``'s session."""
    deadline = died + moosefs.SESSION_STARTUP_GRACE + moosefs.SESSION_SUSTAIN_TIME + 30
    while time.monotonic() < deadline:
        if moose.session_of(mount) is None:
            loss.session_gone = time.monotonic() - died
            return
        time.sleep(0.2)  # an observer's polling interval, not a synchronisation


@pytest.fixture(scope="module")
def losses(moose, hosts, tmp_path_factory) -> Iterator[dict]:
    """Hosts C and D die at once (-9 on mfsmount and gunicorn) while each holds an
    upload's lock; a bare writer on mount e dies with them, in the middle of
    appending to a file of its own ("appended", "positional", the file-system
    probe) and to the data file of an upload ("bare").  The operator fences D
    and E (removes their sessions); C is left to the master.  Returns a
    :class:`HostLoss` for "c", "d" and "bare", and the probe's results."""
    b = hosts[1]
    work = tmp_path_factory.mktemp("losses")
    victims: dict[str, Victim] = {}
    probe = moose.mount("e")
    probe_files = [moose.mounts["b"].path / name for name in ("appended", "positional")]
    bare = (raw_create(b.port, 4_000_000), b"1" * 1_000_000 + b"2" * 500_000 + os.urandom(2_500_000))
    try:
        for name in ("c", "d"):
            victims[name] = doom_host(moose, b, name, work)
        writer = _dying_writer([probe.path / path.name for path in probe_files] +
                               [probe.path / UPLOADS / bare[0].rsplit("/", 1)[1]])
        for victim in victims.values():
            kill_host(victim)
        died = time.monotonic()
        probe.kill()
        writer.kill()
        writer.wait()
        for mount in (victims["d"].host.mount, probe):
            moosefs.wait_until(lambda mount=mount: (moose.session_of(mount) or ("", ""))[1] == "inactive",
                               30, "the master to see the session disconnected")
            moose.remove_session(mount)
        results = {name: HostLoss(bound=moose.lock_release_bound(died) - died) for name in ("c", "d", "bare")}
        uploads = {name: (victim.path, victim.data) for name, victim in victims.items()} | {"bare": bare}
        probe_sizes: dict[str, tuple[int, int, float]] = {}
        jobs = [threading.Thread(target=follow_loss, args=(b, path, data, died, results[name]))
                for name, (path, data) in uploads.items()]
        jobs.append(threading.Thread(target=watch_session,
                                     args=(moose, victims["c"].host.mount, died, results["c"])))
        jobs += [threading.Thread(target=lambda path=path, flags=flags: probe_sizes.__setitem__(
            path.name, _write_ten(path, flags)))
            for path, flags in zip(probe_files, (os.O_APPEND, 0), strict=True)]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join()
        yield {**results, "probe": probe_sizes, "probe_files": probe_files}
    finally:
        for victim in victims.values():
            victim.host.server.stop()
            moose.unmount(victim.host.mount)
        moose.unmount(probe)


def test_a_fenced_dead_host_frees_its_upload_at_once(losses):
    """The way to shorten a host loss on MooseFS: once the host is known dead, the
    operator removes its session (mfscli -CRS/<id>); its locks go with it."""
    loss = losses["d"]
    print(f"fenced host loss: B answered {loss.answers[-1][1]} {loss.unlocked:.1f} s after the mount died "
          f"(after {len(loss.answers) - 1} answers 423)")
    assert loss.answers[-1][1] == 200
    assert loss.statuses_before <= {423}
    assert loss.unlocked < 15


def test_losing_a_whole_host_locks_its_upload_until_the_master_drops_the_session(losses):
    """Host C holds an upload's lock when its gunicorn and its mfsmount die (-9).
    The master keeps C's session, and so its lock, for SESSION_SUSTAIN_TIME (60 s
    at least, checked every 10 s, and never in the master's first 120 s): host B
    answers 423 meanwhile, then 200."""
    loss = losses["c"]
    print(f"host loss: {len(loss.answers) - 1} answers 423 from B, then {loss.answers[-1][1]} "
          f"{loss.unlocked:.1f} s after the mount died; the master dropped the session after "
          f"{loss.session_gone:.1f} s (bound {loss.bound:.0f} s)")
    assert loss.answers[-1][1] == 200
    assert loss.statuses_before == {423}
    assert moosefs.SESSION_SUSTAIN_TIME - 1 <= loss.unlocked <= loss.bound + 5


def report_resume(name: str, loss: HostLoss, length: int) -> None:
    patches = ", ".join(f"at {offset}: {status} after {seconds:.1f} s"
                        for offset, status, seconds in loss.patches)
    print(f"host {name} lost: B reported offset {loss.offset} (1000000 acknowledged, 1500000 written by "
          f"the dead host); PATCHes {patches}; the file holds {loss.final_size} bytes of {length}, "
          f"SHA-256 {'matches' if loss.sha_matches else 'differs'}")


def assert_resumed(loss: HostLoss, length: int) -> None:
    """B reports what the dead host had acknowledged or written, and the resume
    puts the rest right there.  A crashed MooseFS client may leave an unfinished
    tail past the end fstat shows, where an O_APPEND write would land: the server
    cuts such bytes off again and answers 409, and the client, asking for the
    offset again, resends from the same place."""
    assert 1_000_000 <= loss.offset <= 1_500_000, loss.offset
    assert loss.prefix_intact
    statuses = [status for _, status, _ in loss.patches]
    assert statuses[-1] == 204 and set(statuses[:-1]) <= {409}, loss.patches
    assert {offset for offset, _, _ in loss.patches} == {loss.offset}, "a 409 moved the offset"
    assert loss.final_size == length, "the PATCH's bytes did not land at the offset it was accepted at"
    assert loss.sha_matches


def test_upload_resumes_after_a_fenced_host_loss(losses):
    report_resume("D (fenced)", losses["d"], 4_000_000)
    assert_resumed(losses["d"], 4_000_000)


def test_upload_resumes_after_a_host_loss(losses):
    report_resume("C", losses["c"], 4_000_000)
    assert_resumed(losses["c"], 4_000_000)


def test_upload_resumes_after_its_writer_died_mid_write(losses):
    """The bare writer died with 500000 bytes appended to the upload's data file
    but not closed, as a gunicorn on a dying host does: B must resume from the
    size it sees and put the rest right there."""
    report_resume("E (bare writer, fenced)", losses["bare"], 4_000_000)
    assert_resumed(losses["bare"], 4_000_000)


def test_moosefs_places_o_append_past_the_size_after_a_writer_died(losses):
    """The file system's behaviour behind those failures, without tuswsgi: a writer
    on mount e appended 1000000 bytes to two files and closed them, appended
    500000 more to each and died (its mount and itself, -9) before closing.
    Through mount b both files have 1000000 bytes; an O_APPEND write of ten bytes
    to the first lands at 1500000 nonetheless, while a positional write at the
    size fstat reported lands where it was asked to."""
    (seen_appended, size_appended, took_appended), (seen_positional, size_positional, took_positional) = (
        losses["probe"]["appended"], losses["probe"]["positional"])
    print(f"after a dead writer: O_APPEND at fstat size {seen_appended} made the file {size_appended} bytes "
          f"({took_appended:.1f} s); pwrite at {seen_positional} made it {size_positional} "
          f"({took_positional:.1f} s)")
    assert seen_appended == seen_positional == 1_000_000
    assert size_positional == 1_000_010
    assert losses["probe_files"][1].read_bytes()[-10:] == b"3" * 10
    assert size_appended == 1_500_010, "MooseFS no longer appends past the visible end"


def _dying_writer(paths: list[Path]) -> subprocess.Popen:
    """A process that appends 1000000 bytes "1" to each file and closes it, then
    500000 bytes "2" through a descriptor it keeps open; returns once it has."""
    script = (
        "import os, sys, time\n"
        "fds = []\n"
        "for path in sys.argv[1:]:\n"
        "    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n"
        "    os.write(fd, b'1' * 1000000)\n"
        "    os.close(fd)\n"
        "    fd = os.open(path, os.O_WRONLY | os.O_APPEND)\n"
        "    os.write(fd, b'2' * 500000)\n"
        "    fds.append(fd)\n"
        "print('written', flush=True)\n"
        "time.sleep(600)\n")
    writer = subprocess.Popen([sys.executable, "-c", script, *map(str, paths)], stdout=subprocess.PIPE,
                              text=True)
    assert writer.stdout.readline().strip() == "written"
    return writer


def _write_ten(path: Path, flags: int) -> tuple[int, int, float]:
    """Write ten bytes at the size fstat reports (O_APPEND, or pwrite when
    ``flags`` is 0); return that size, the size afterwards, and the seconds the
    write and close took (a chunk the dead writer held may be locked a while)."""
    started = time.monotonic()
    fd = os.open(path, os.O_WRONLY | flags)
    try:
        seen = os.fstat(fd).st_size
        if flags & os.O_APPEND:
            os.write(fd, b"3" * 10)
        else:
            os.pwrite(fd, b"3" * 10, seen)
        after = os.fstat(fd).st_size
    finally:
        os.close(fd)
    return seen, after, time.monotonic() - started
