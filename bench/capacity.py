#!/usr/bin/env python3
"""Capacity benchmark (issue 12): many slow uploads held open at once.

    python bench/capacity.py [--quick] [--n 100,500,2000,5000,10000]

For each N and each server (tuswsgi with the production settings, @tus/server,
and bench/nullserver.py as the client's ceiling), started fresh, in an order
that rotates with N:

- N slow uploads over real TCP to 127.0.0.1: POST, then one PATCH whose body
  is sent at a set rate (default 800 bytes every 100 ms), held open.  The load
  is asyncio on raw sockets, split across up to 4 client processes;
- a probe: every 250 ms a new client makes a POST, a HEAD of that upload and a
  1 KiB PATCH, each on a new connection, and times them (5 s = timeout);
- progress from the server's side: the data file of every upload is stat'ed
  every 2 s of the steady phase, and an upload whose file grew is progressing;
- errors seen by the slow uploads, RSS and CPU of the server's processes.

Two more rows: tuswsgi at twice its body capacity (fewer threads, so it stays
cheap) to time how fast the extra uploads are refused with 503 + Retry-After,
and ``gunicorn tuswsgi:app`` run from the checkout with no ``-c`` (the
checkout's gunicorn.conf.py) with 20 slow uploads and the probe.

Results: a table on stdout and bench/results/<date>-capacity.json.
``python bench/run.py`` runs this too (``--no-capacity`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import json
import math
import multiprocessing
import os
import resource
import socket
import sys
import time
from typing import Any, Optional

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import client  # noqa: E402
import run  # noqa: E402
import waitprofile  # noqa: E402

FULL_N = (100, 500, 2000, 5000, 10000)
QUICK_N = (50, 200)
#: Connections per client process, up to MAX_PROCESSES (then they take more each).
PER_PROCESS = 1250
MAX_PROCESSES = 4
#: The PATCH writes of a tick are spread over this many slices of the period,
#: so the servers see a steady stream rather than one burst per period.
SLICES = 10
TUS_HEADERS = {"Tus-Resumable": client.TUS}


@dataclasses.dataclass(frozen=True)
class Params:
    """What one measurement does; the defaults are the full run's."""

    chunk: int = 800               # bytes each slow upload sends per period
    every: float = 0.1             # the period (s)
    length: int = 1 << 30          # Upload-Length and the PATCH's Content-Length
    ramp_timeout: float = 30.0     # longest wait for all N to be streaming
    ramp_concurrency: int = 256    # connections being set up at once, per process
    settle: float = 1.0            # after the ramp, before measuring
    steady: float = 12.0           # the measured phase
    interval: float = 6.0          # progress sampling period: longer than the 5 s a trickling
                                   # body may wait between reads (tuswsgi.server.framing.MAX_PAUSE)
    probe_every: float = 0.25
    probe_timeout: float = 5.0
    probe_patch: int = 1024
    profile: bool = False          # profile a tuswsgi worker during the steady phase


QUICK = Params(ramp_timeout=10.0, steady=4.0)


# -- HTTP on asyncio raw sockets ------------------------------------------------------

class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 we can read."""


def request_head(method: str, path: str, host: str, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers; a Content-Length for every POST and PATCH."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in {**TUS_HEADERS, **headers}.items()]
    if length or method in ("POST", "PATCH"):
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class AsyncConn:
    """One HTTP/1.1 connection on a non-blocking socket, read and written through
    asyncio's ``sock_*`` calls (no streams: the load sends on the socket directly)."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock, self.host = sock, host
        self.buf = b""
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> AsyncConn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.get_running_loop().sock_connect(sock, addr)
        except BaseException:
            sock.close()
            raise
        return cls(sock, f"{addr[0]}:{addr[1]}")

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def request(self, method: str, path: str, headers: Optional[dict[str, str]] = None,
                      body: bytes = b"") -> tuple[int, dict[str, str]]:
        """Send one request with a small body and read its response."""
        await self.send(request_head(method, path, self.host, headers or {}, len(body)) + body)
        return await self.response(method)

    async def response(self, method: str) -> tuple[int, dict[str, str]]:
        """Status and lower-cased headers of the next response; its body is skipped."""
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ProtocolError(f"bad status line {status_line[:60]!r}") from None
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines)}
        if status == 100:
            return await self.response(method)
        if method != "HEAD" and status not in (204, 304):
            await self._skip_body(headers)
        return status, headers

    async def _skip_body(self, headers: dict[str, str]) -> None:
        """Small bodies only (tus answers): chunked ones end with an empty chunk."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while b"0\r\n\r\n" not in self.buf:
                await self._fill()
            self.buf = self.buf.split(b"0\r\n\r\n", 1)[1]
            return
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            await self._fill()
        self.buf = self.buf[length:]

    async def _fill(self) -> None:
        data = await self.loop.sock_recv(self.sock, 65536)
        if not data:
            raise EOFError("connection closed before a whole response")
        self.buf += data


def error_kind(exc: BaseException) -> str:
    """A short name for how a connection failed, for the error counts."""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, EOFError):
        return "closed"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__


# -- the slow uploads (one client process) ---------------------------------------------

class SlowUpload:
    """One upload held open: its connection, what it still owes the schedule, and
    how it ended (``state``: pending, streaming, refused, answered, failed)."""

    __slots__ = ("answered_at", "conn", "error", "owed", "patch_at", "retry_after", "sent",
                 "started", "state", "status", "upload_id")

    def __init__(self) -> None:
        self.conn: Optional[AsyncConn] = None
        self.state, self.error, self.status = "pending", "", 0
        self.upload_id = ""
        self.owed = self.sent = 0
        self.started = self.patch_at = self.answered_at = 0.0
        self.retry_after = False

    def push(self, now: float, params: Params) -> None:
        """Send what the schedule owes by now (``chunk`` per ``every`` since the
        PATCH began) as far as the socket takes it: a late turn sends more, so
        the rate holds; a server that does not read makes the body fall behind."""
        due = params.chunk * (1 + int((now - self.patch_at) / params.every))
        self.owed = due - self.sent
        try:
            sent = self.conn.sock.send(client.PAYLOAD[:min(self.owed, len(client.PAYLOAD))])
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(exc)
            return
        self.owed -= sent
        self.sent += sent

    def answered(self, status: int, headers: dict[str, str]) -> None:
        """The server answered the PATCH before its end: a refusal or an error."""
        self.answered_at = time.monotonic()
        self.status = status
        self.retry_after = "retry-after" in headers
        self.state = "refused" if status == 503 and self.retry_after else "answered"
        self.conn.close()

    def fail(self, exc: BaseException) -> None:
        if self.state in ("pending", "streaming"):
            self.state, self.error = "failed", error_kind(exc)
        if self.conn is not None:
            self.conn.close()


async def hold_upload(addr: tuple[str, int], upload: SlowUpload, gate: asyncio.Semaphore,
                      params: Params) -> None:
    """POST, start the PATCH and wait for an early answer while the ticker sends."""
    try:
        async with gate:
            upload.started = time.monotonic()  # the connect, not the wait for the client's gate
            upload.conn = conn = await AsyncConn.open(addr)
            status, headers = await conn.request("POST", "/files/", {"Upload-Length": str(params.length)})
            if status != 201:
                upload.state, upload.error = "failed", f"POST {status}"
                conn.close()
                return
            upload.upload_id = headers.get("location", "").rstrip("/").rsplit("/", 1)[-1]
            await conn.send(request_head("PATCH", f"/files/{upload.upload_id}", conn.host, {
                "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, params.length))
            upload.patch_at, upload.state = time.monotonic(), "streaming"
        status, headers = await conn.response("PATCH")
        upload.answered(status, headers)
    except asyncio.CancelledError:
        raise
    except (OSError, EOFError, ProtocolError) as exc:
        upload.fail(exc)


async def tick(uploads: list[SlowUpload], params: Params, lags: list[tuple[float, float]]) -> None:
    """Every ``every/SLICES`` seconds one slice of the uploads sends what it owes.
    How late each turn ran is kept (a client that cannot keep up shows there);
    a late turn still yields, and the schedule resumes from now."""
    slices = [uploads[i::SLICES] for i in range(SLICES)]
    step = params.every / SLICES
    due = time.monotonic()
    turn = 0
    while True:
        due += step
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        lags.append((now, now - due))
        due = max(due, now - step)
        for upload in slices[turn % SLICES]:
            if upload.state == "streaming":
                upload.push(now, params)
        turn += 1


async def message(pipe: Any) -> Any:
    """The next object from the coordinator, without blocking the loop."""
    loop = asyncio.get_running_loop()
    arrived = loop.create_future()
    loop.add_reader(pipe.fileno(), lambda: arrived.done() or arrived.set_result(None))
    try:
        await arrived
    finally:
        loop.remove_reader(pipe.fileno())
    return pipe.recv()


async def drive_load(pipe: Any, addr: tuple[str, int], count: int, params: Params) -> None:
    """One client process: ramp up ``count`` uploads, say so, hold them until told
    to stop, then report how each ended."""
    uploads = [SlowUpload() for _ in range(count)]
    lags: list[tuple[float, float]] = []
    gate = asyncio.Semaphore(params.ramp_concurrency)
    started = time.monotonic()
    holders = [asyncio.create_task(hold_upload(addr, upload, gate, params)) for upload in uploads]
    ticker = asyncio.create_task(tick(uploads, params, lags))
    deadline = started + params.ramp_timeout
    while time.monotonic() < deadline and any(u.state == "pending" for u in uploads):
        await asyncio.sleep(0.05)
    ramped = [u.patch_at for u in uploads if u.patch_at]
    pipe.send({"ids": [u.upload_id for u in uploads if u.upload_id],
               "ramp_seconds": (max(ramped) - started) if ramped else None,
               "pending": sum(u.state == "pending" for u in uploads)})
    _, steady_from = await message(pipe)
    for task in [ticker, *holders]:
        task.cancel()
    await asyncio.gather(ticker, *holders, return_exceptions=True)
    for upload in uploads:
        if upload.conn is not None:
            upload.conn.close()
    pipe.send(load_summary(uploads, [lag for at, lag in lags if at >= steady_from]))


def load_summary(uploads: list[SlowUpload], lags: list[float]) -> dict:
    """How the uploads ended, refusal times, bytes sent and the ticker's lateness."""
    refused = [u for u in uploads if u.state == "refused"]
    return {
        "states": dict(collections.Counter(u.state for u in uploads)),
        "errors": dict(collections.Counter(u.error for u in uploads if u.state == "failed")),
        "answers": dict(collections.Counter(str(u.status) for u in uploads if u.state == "answered")),
        "refusal_from_start": [u.answered_at - u.started for u in refused],
        "refusal_from_patch": [u.answered_at - u.patch_at for u in refused],
        "bytes_sent": sum(u.sent for u in uploads),
        "bytes_owed": sum(u.owed for u in uploads if u.state == "streaming"),
        "tick_lags": lags,
    }


def load_process(pipe: Any, addr: tuple[str, int], count: int, params: Params) -> None:
    asyncio.run(drive_load(pipe, addr, count, params))


# -- the probe ----------------------------------------------------------------------

async def timed(kind: str, results: list, params: Params, work: Any) -> Any:
    """Run one probe request (connect included); record its latency and status
    (``timeout`` after ``probe_timeout``, counted at that latency)."""
    started = time.monotonic()
    try:
        status, headers = await asyncio.wait_for(work(), params.probe_timeout)
        outcome = str(status)
    except (OSError, EOFError, ProtocolError, asyncio.TimeoutError) as exc:
        status, headers, outcome = 0, {}, error_kind(exc)
    results.append((kind, time.monotonic() - started, outcome))
    return status, headers


async def one_request(addr: tuple[str, int], method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, dict[str, str]]:
    """A request on a connection of its own: a new client each time."""
    conn = await AsyncConn.open(addr)
    try:
        return await conn.request(method, path, headers, body)
    finally:
        conn.close()


async def probe_once(addr: tuple[str, int], params: Params, results: list) -> None:
    """POST a small upload, HEAD it, PATCH it whole: three new connections."""
    size = params.probe_patch
    status, headers = await timed("POST", results, params, lambda: one_request(
        addr, "POST", "/files/", {"Upload-Length": str(size)}))
    if status != 201:
        return
    path = "/files/" + headers.get("location", "").rstrip("/").rsplit("/", 1)[-1]
    await timed("HEAD", results, params, lambda: one_request(addr, "HEAD", path, {}))
    await timed("PATCH", results, params, lambda: one_request(
        addr, "PATCH", path, {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        bytes(client.PAYLOAD[:size])))


async def drive_probe(pipe: Any, addr: tuple[str, int], params: Params) -> None:
    """Start a probe every ``probe_every`` seconds until told to stop."""
    results: list = []
    stop = asyncio.create_task(message(pipe))
    probes = []
    while not stop.done():
        probes.append(asyncio.create_task(probe_once(addr, params, results)))
        await asyncio.wait([stop], timeout=params.probe_every)
    await asyncio.gather(*probes)
    pipe.send(results)


def probe_process(pipe: Any, addr: tuple[str, int], params: Params) -> None:
    asyncio.run(drive_probe(pipe, addr, params))


# -- what the servers use ---------------------------------------------------------------

def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of a process (KiB), from /proc/<pid>/statm."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, IndexError, ValueError):
        return 0


def server_pids(server: run.Server) -> list[int]:
    """Every process of the server: gunicorn's master and workers, or the one process."""
    workers = server.worker_pids()
    return [server.proc.pid, *workers] if server.multi_worker else workers


def file_sizes(directory: str, ids: list[str]) -> dict[str, int]:
    """Size of each upload's data file (``<dir>/<id>`` for tuswsgi and
    @tus/file-store alike): the server's own count of what it stored."""
    sizes = {}
    for upload_id in ids:
        try:
            sizes[upload_id] = os.stat(os.path.join(directory, upload_id)).st_size
        except OSError:
            sizes[upload_id] = -1
    return sizes


def percentile(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (``q`` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: list[float]) -> dict:
    """p50, p99 and max, in milliseconds."""
    return {name: None if v is None else round(v * 1000, 1) for name, v in
            (("p50", percentile(values, 0.5)), ("p99", percentile(values, 0.99)),
             ("max", max(values) if values else None))}


# -- one measurement -----------------------------------------------------------------------

def start_children(target: Any, jobs: list[tuple]) -> list[tuple[Any, Any]]:
    """Fork one process per job, each with a pipe to it: (process, pipe)."""
    ctx = multiprocessing.get_context("fork")
    children = []
    for args in jobs:
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=target, args=(theirs, *args), daemon=True)
        proc.start()
        children.append((proc, ours))
    return children


def receive(pipe: Any, seconds: float, what: str) -> Any:
    if not pipe.poll(seconds):
        raise RuntimeError(f"no {what} from a client process within {seconds:.0f} s")
    return pipe.recv()


def split(n: int, processes: int) -> list[int]:
    """N uploads as evenly as possible over the client processes."""
    return [n // processes + (i < n % processes) for i in range(processes)]


def measure(server: run.Server, n: int, params: Params) -> dict:
    """N slow uploads and the probe against a started server; everything measured."""
    pids = server_pids(server)
    idle = {pid: rss_kib(pid) for pid in pids}
    processes = min(MAX_PROCESSES, math.ceil(n / PER_PROCESS))
    loaders = start_children(load_process, [(server.addr, count, params) for count in split(n, processes)])
    ready = [receive(pipe, params.ramp_timeout + 30, "ramp report") for _, pipe in loaders]
    ids = [upload_id for report in ready for upload_id in report["ids"]]
    time.sleep(params.settle)
    probe = start_children(probe_process, [(server.addr, params)])
    clients = [proc.pid for proc, _ in loaders + probe]
    steady_from = time.monotonic()
    profiler = None
    if params.profile and server.name == "tuswsgi":
        prefix = os.path.join(run.RESULTS, f"waitprofile-{n}-{pids[1]}")
        profiler = waitprofile.WorkerProfile(pids[1], params.steady - 1, prefix)
        profiler.start()
    cpu0, client_cpu0 = cpu_seconds(pids), cpu_seconds(clients)
    stores = server.name != "ceiling"  # the null server keeps no files: time passes all the same
    progress = sample_progress(server.directory, ids if stores else [], params, steady_from)
    steady = time.monotonic() - steady_from
    cpu, client_cpu = cpu_seconds(pids) - cpu0, cpu_seconds(clients) - client_cpu0
    loaded = {pid: rss_kib(pid) for pid in pids}
    probe[0][1].send("stop")
    probes = receive(probe[0][1], 3 * params.probe_timeout + 10, "probe results")
    for _, pipe in loaders:
        pipe.send(("stop", steady_from))
    summaries = [receive(pipe, 60, "load summary") for _, pipe in loaders]
    for proc, _ in loaders + probe:
        proc.join(10)
    row = report(n, params, ready, summaries, probes, progress if stores else None, {
        "pids": pids, "idle_kib": idle, "loaded_kib": loaded, "cpu": cpu, "client_cpu": client_cpu,
        "client_processes": processes, "steady": steady})
    if profiler is not None:
        held = row["streaming"] // max(len(pids) - 1, 1)  # the worker's share
        row["profile"] = profiler.finish(held)
        run.log(waitprofile.table(row["profile"]))
    return row


def sample_progress(directory: str, ids: list[str], params: Params, since: float) -> list[int]:
    """For each ``interval`` of the steady phase: how many uploads' files grew."""
    counts = []
    before = file_sizes(directory, ids)
    due = since
    while due + params.interval <= since + params.steady + 1e-6:
        due += params.interval
        time.sleep(max(0.0, due - time.monotonic()))
        now = file_sizes(directory, ids)
        counts.append(sum(now[i] > before[i] >= 0 for i in ids))
        before = now
    return counts


def report(n: int, params: Params, ready: list[dict], summaries: list[dict], probes: list,
           progress: Optional[list[int]], usage: dict) -> dict:
    """One row's numbers, from what the client processes and the sampling saw."""
    states: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    answers: collections.Counter = collections.Counter()
    for summary in summaries:
        states.update(summary["states"])
        errors.update(summary["errors"])
        answers.update(summary["answers"])
    lags = [lag for summary in summaries for lag in summary["tick_lags"]]
    streaming = states.get("streaming", 0)
    idle_sum, loaded_sum = sum(usage["idle_kib"].values()), sum(usage["loaded_kib"].values())
    sent = sum(s["bytes_sent"] for s in summaries)
    return {
        "n": n, "streaming": streaming, "states": dict(states), "errors": dict(errors),
        "answers": dict(answers), "refused_503": states.get("refused", 0),
        "ramp_seconds": max((r["ramp_seconds"] or 0) for r in ready),
        "pending_after_ramp": sum(r["pending"] for r in ready),
        "progressing": progress[-1] if progress else None, "progress_per_interval": progress,
        "probe": probe_stats(probes),
        "rss_idle_kib": idle_sum, "rss_loaded_kib": loaded_sum,
        "rss_per_process_kib": {str(pid): usage["loaded_kib"][pid] for pid in usage["pids"]},
        "rss_max_process_mib": max(usage["loaded_kib"].values()) / 1024,
        "kib_per_open_upload": (loaded_sum - idle_sum) / streaming if streaming else None,
        "server_cpu_seconds": usage["cpu"], "server_cpu_pct": 100 * usage["cpu"] / usage["steady"],
        "client_cpu_pct": 100 * usage["client_cpu"] / usage["steady"],
        "client_processes": usage["client_processes"],
        "tick_lag_ms": spread(lags),
        "bytes_sent": sent, "bytes_owed": sum(s["bytes_owed"] for s in summaries),
        "refusal_from_start_ms": spread([t for s in summaries for t in s["refusal_from_start"]]),
        "refusal_from_patch_ms": spread([t for s in summaries for t in s["refusal_from_patch"]]),
        "refusal_from_start": [t for s in summaries for t in s["refusal_from_start"]],
        "params": dataclasses.asdict(params),
    }


def probe_stats(probes: list) -> dict:
    """Per kind: latency spread (timeouts counted at the timeout) and outcomes."""
    out = {}
    for kind in ("POST", "HEAD", "PATCH"):
        mine = [(latency, outcome) for k, latency, outcome in probes if k == kind]
        out[kind] = {**spread([latency for latency, _ in mine]),
                     "count": len(mine),
                     "outcomes": dict(collections.Counter(outcome for _, outcome in mine)),
                     "failed": sum(not outcome.startswith("2") for _, outcome in mine)}
    return out


# -- servers and rows -----------------------------------------------------------------------

class SmallTuswsgi(run.TuswsgiServer):
    """tuswsgi with the production settings except fewer threads per worker."""

    def __init__(self, directory: str, logfile: str, threads: int) -> None:
        super().__init__(directory, logfile)
        self.threads = threads
        self.name = f"tuswsgi threads={threads}"

    def command(self) -> tuple[list[str], dict]:
        cmd, env = super().command()
        return cmd, {**env, "TUSWSGI_THREADS": str(self.threads)}


class ZeroConfigTuswsgi(run.GunicornServer):
    """``gunicorn tuswsgi:app`` from the checkout's root: it finds ./gunicorn.conf.py.
    Only the port and the upload directory come from the environment."""

    name = "gunicorn tuswsgi:app"
    cwd = ROOT

    def command(self) -> tuple[list[str], dict]:
        return ([sys.executable, "-m", "gunicorn", "tuswsgi:app"],
                {"TUSWSGI_BIND": f"127.0.0.1:{self.port}", "TUSWSGI_UPLOAD_DIR": self.directory,
                 "PYTHONPATH": ROOT, "TUSWSGI_CONFIG": ""})


class EventCeiling(run.CeilingServer):
    """bench/nullserver.py in its epoll mode: thousands of threads would make
    the threaded null server, not the client, the limit."""

    def command(self) -> tuple[list[str], dict]:
        cmd, env = super().command()
        return [*cmd, "--events"], env


CLASSES = {"tuswsgi": run.TuswsgiServer, "@tus/server": run.NodeServer, "ceiling": EventCeiling}


def body_capacity(threads: int) -> int:
    """How many bodies tuswsgi reads at once: workers x (threads - reserved),
    as tuswsgi's worker computes it (tuswsgi.server.admission.Capacity)."""
    sys.path.insert(0, ROOT)
    from tuswsgi.config import load_config
    reserved = min(load_config(None, environ={}).reserved_threads, threads // 2)
    return run.gunicorn_settings()["workers"] * max(threads - reserved, 1)


def one_row(server: run.Server, n: int, params: Params) -> dict:
    """Start the server, measure, stop it and clear its directory."""
    run.log(f"capacity: {server.name}, N={n}")
    server.start()
    try:
        row = measure(server, n, params)
    finally:
        server.stop()
        run.clear_dir(server.directory)
    row["server"] = server.name
    probe = row["probe"]
    run.log(f"  streaming {row['streaming']}/{n}, progressing {row['progressing']}, "
            f"503 {row['refused_503']}, errors {row['errors']}, probe p99 POST/HEAD/PATCH "
            f"{probe['POST']['p99']}/{probe['HEAD']['p99']}/{probe['PATCH']['p99']} ms, "
            f"RSS {row['rss_loaded_kib'] / 1024:.0f} MiB, cpu {row['server_cpu_pct']:.0f}%, "
            f"client cpu {row['client_cpu_pct']:.0f}%, tick lag p99 {row['tick_lag_ms']['p99']} ms")
    return row


def run_capacity(storage: run.Storage, logdir: str, names: list[str], ns: list[int],
                 params: Params, quick: bool, skip: tuple[str, ...] = ()) -> dict:
    """Every row of the capacity benchmark but those in ``skip`` (``twice``,
    ``zero-config``); returns the rows and the table text."""
    raise_fd_limit()
    rows = []
    for i, n in enumerate(ns):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            directory = storage.dir("cap-" + name.replace("/", "_").replace("@", ""))
            logfile = os.path.join(logdir, f"cap-{name.replace('/', '_')}-{n}.log")
            rows.append(one_row(CLASSES[name](directory, logfile), n, params))
    twice = zero = None
    if "tuswsgi" in names and "twice" not in skip:
        threads = 100 if quick else 200
        capacity = body_capacity(threads)
        server = SmallTuswsgi(storage.dir("cap-twice"), os.path.join(logdir, "cap-twice.log"), threads)
        twice = {**one_row(server, 2 * capacity, params), "capacity": capacity, "threads": threads}
    if "tuswsgi" in names and "zero-config" not in skip:
        server = ZeroConfigTuswsgi(storage.dir("cap-zero"), os.path.join(logdir, "cap-zero.log"))
        zero = one_row(server, 20, params)
    result = {"rows": rows, "twice_capacity": twice, "zero_config": zero, "system": system_limits(),
              "params": dataclasses.asdict(params), "settings": run.gunicorn_settings()}
    result["table"] = tables(result, names)
    return result


def raise_fd_limit() -> None:
    """Client processes and servers inherit this: soft to hard, and as root a
    hard limit that covers 10,000 uploads (socket + data file each, both sides)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 1 << 16) if os.geteuid() == 0 else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def system_limits() -> dict:
    """The kernel settings that bound many connections, as they were (unchanged)."""
    def read(name: str) -> str:
        try:
            with open("/proc/sys/" + name.replace(".", "/")) as handle:
                return " ".join(handle.read().split())
        except OSError:
            return "?"
    names = ("net.ipv4.ip_local_port_range", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog")
    return {**{name: read(name) for name in names},
            "RLIMIT_NOFILE": resource.getrlimit(resource.RLIMIT_NOFILE)}


# -- the table ------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def probe_cell(probe: dict) -> str:
    """p50/p99/max ms, and how many did not succeed; "-" when none was made."""
    if not probe["count"]:
        return "-"
    cell = f"{fmt(probe['p50'])}/{fmt(probe['p99'])}/{fmt(probe['max'])}"
    return cell + (f" ({probe['failed']} fail)" if probe["failed"] else "")


def errors_cell(row: dict) -> str:
    """Errors of the slow uploads, 503s apart; uploads that never started streaming."""
    parts = [f"{k} {v}" for k, v in {**row["errors"], **{f"HTTP {s}": c for s, c in row["answers"].items()}}.items()]
    if row["states"].get("pending"):
        parts.append(f"still connecting {row['states']['pending']}")
    return ", ".join(parts) or "0"


def render(header: list[str], lines: list[list[str]]) -> str:
    """A Markdown table: the first column left, the rest right aligned."""
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))) + " |" for row in [header, *lines]]
    out.insert(1, "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    return "\n".join(out)


def row_cells(label: str, row: dict) -> list[str]:
    probe = row["probe"]
    per_upload = row["kib_per_open_upload"]
    return [label, str(row["n"]), str(row["streaming"]), fmt(row["progressing"]), str(row["refused_503"]),
            errors_cell(row), probe_cell(probe["POST"]), probe_cell(probe["HEAD"]), probe_cell(probe["PATCH"]),
            f"{row['rss_loaded_kib'] / 1024:.0f} ({row['rss_max_process_mib']:.0f})",
            fmt(per_upload, 1), f"{row['server_cpu_pct']:.0f}", f"{row['client_cpu_pct']:.0f}",
            fmt(row["tick_lag_ms"]["p99"]), fmt(row["ramp_seconds"], 1)]


HEADER = ["server", "N", "streaming", "progressing", "503", "errors", "probe POST ms p50/p99/max",
          "probe HEAD ms", "probe PATCH ms", "RSS MiB (max proc)", "KiB/upload", "server CPU %",
          "client CPU %", "tick lag p99 ms", "ramp s"]


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def ratio_table(rows: list[dict]) -> str:
    """tuswsgi / @tus/server per N: progressing (>= 1 is the target), probe p99
    (<= 1), memory per open upload (<= 1)."""
    by = {(r["server"], r["n"]): r for r in rows}
    lines = []
    for n in sorted({r["n"] for r in rows}):
        a, b = by.get(("tuswsgi", n)), by.get(("@tus/server", n))
        if not a or not b:
            continue
        lines.append([str(n), ratio(a["progressing"], b["progressing"])]
                     + [ratio(a["probe"][k]["p99"], b["probe"][k]["p99"]) for k in ("POST", "HEAD", "PATCH")]
                     + [ratio(a["kib_per_open_upload"], b["kib_per_open_upload"])])
    return render(["N", "progressing", "probe POST p99", "probe HEAD p99", "probe PATCH p99",
                   "KiB/open upload"], lines)


def tables(result: dict, names: list[str]) -> str:
    """The capacity section of the report."""
    rows = result["rows"]
    text = ["Capacity: N slow uploads (800 B / 100 ms each unless set), probe every "
            f"{result['params']['probe_every'] * 1000:.0f} ms (POST, HEAD, 1 KiB PATCH, new connection each; "
            f"{result['params']['probe_timeout']:.0f} s = timeout), steady phase {result['params']['steady']:.0f} s, "
            f"progressing = data file grew in the last {result['params']['interval']:.0f} s",
            "", render(HEADER, [row_cells(r["server"], r) for r in sorted(rows, key=lambda r: (r["n"], names.index(r["server"])))])]
    if "tuswsgi" in names and "@tus/server" in names:
        text += ["", "tuswsgi / @tus/server:", "", ratio_table(rows)]
    twice, zero = result["twice_capacity"], result["zero_config"]
    if twice:
        extra = twice["n"] - twice["capacity"]
        refused = twice["refused_503"]
        text += ["", f"At twice capacity: TUSWSGI_THREADS={twice['threads']} (capacity {twice['capacity']} bodies), "
                 f"N = {twice['n']}: {refused}/{extra} extra uploads refused with 503 + Retry-After "
                 f"({100 * refused / extra:.0f} %); time to refusal from connecting p50/p99/max "
                 f"{twice['refusal_from_start_ms']['p50']}/{twice['refusal_from_start_ms']['p99']}/"
                 f"{twice['refusal_from_start_ms']['max']} ms, from the PATCH head "
                 f"{twice['refusal_from_patch_ms']['p50']}/{twice['refusal_from_patch_ms']['p99']} ms; "
                 f"within 1 s: {sum(t <= 1.0 for t in twice['refusal_from_start'])}/{extra}",
                 "", render(HEADER, [row_cells(twice["server"], twice)])]
    if zero:
        text += ["", "Zero configuration (`gunicorn tuswsgi:app` in the checkout):", "",
                 render(HEADER, [row_cells(zero["server"], zero)])]
    return "\n".join(text)


# -- command line -----------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"N = {','.join(map(str, QUICK_N))}, short phases")
    parser.add_argument("--n", help=f"comma-separated N (default {','.join(map(str, FULL_N))})")
    parser.add_argument("--chunk", type=int, help="bytes each slow upload sends per period (800)")
    parser.add_argument("--every", type=float, help="the period in seconds (0.1)")
    parser.add_argument("--steady", type=float, help="seconds of the measured phase (12; quick 4)")
    parser.add_argument("--servers", default="tuswsgi,@tus/server,ceiling",
                        help="comma-separated subset of tuswsgi,@tus/server,ceiling")
    parser.add_argument("--skip", default="", help="comma-separated rows to leave out: twice,zero-config")
    parser.add_argument("--profile", action="store_true",
                        help="profile one tuswsgi worker in the steady phase (bench/waitprofile.py)")
    args = parser.parse_args()
    params = QUICK if args.quick else Params()
    changes = {k: v for k, v in (("chunk", args.chunk), ("every", args.every), ("steady", args.steady),
                                 ("profile", args.profile)) if v}
    params = dataclasses.replace(params, **changes)
    ns = [int(n) for n in args.n.split(",")] if args.n else list(QUICK_N if args.quick else FULL_N)
    started = time.time()
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    logdir = os.path.join(run.SCRATCH, "logs", stamp)
    os.makedirs(logdir, exist_ok=True)
    os.makedirs(run.RESULTS, exist_ok=True)
    wanted = args.servers.split(",")
    node_version = run.setup_node() if "@tus/server" in wanted else None
    names = [n for n in wanted if n in CLASSES and (n != "@tus/server" or node_version)]
    env = run.versions(node_version)
    seconds = params.ramp_timeout + params.settle + params.steady + 10
    storage = run.Storage("tmpfs", int(max(ns) * params.chunk / params.every * seconds))
    try:
        result = run_capacity(storage, logdir, names, ns, params, args.quick, tuple(args.skip.split(",")))
    finally:
        storage.close()
    print(result["table"])
    print(f"\n(run took {time.time() - started:.0f}s; storage {storage.description}; server logs in {logdir})")
    output = os.path.join(run.RESULTS, f"{stamp}-capacity{'-quick' if args.quick else ''}.json")
    with open(output, "w") as handle:
        json.dump({"env": env, "capacity": result}, handle, indent=1)
    print(f"JSON: {os.path.relpath(output, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
