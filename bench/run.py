#!/usr/bin/env python3
"""Benchmark tuswsgi against a raw-copy WSGI sink and @tus/server (issue #7).

    python bench/run.py [--storage tmpfs|disk] [--quick] [--rounds N]

In one run, on the same storage and with the same client (bench/client.py):

- ``tuswsgi``      tuswsgi under gunicorn with the production settings
                   (deploy/gunicorn.conf.py if present, else python:tuswsgi.gunicorn_conf);
- ``sink``         bench/sink.py (copies wsgi.input to a file) under the SAME settings;
- ``@tus/server``  @tus/server + @tus/file-store on Node.js, installed with npm
                   into bench/.scratch/node (skipped when node/npm are missing);
- ``ceiling``      bench/nullserver.py, a raw-socket server that discards the
                   body: what the client itself can drive (not a contender).

Servers are started fresh and alternated every round; medians are reported.
A "scaling with work" section then compares tuswsgi's HEAD, POST and PATCH
rates with 10 uploads in the directory against 100,000 (10,000 in --quick),
and bench/capacity.py measures many slow uploads held open at once
(``--no-capacity`` skips it).  Results: a table on stdout and bench/results/<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Optional

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SCRATCH = os.path.join(BENCH, ".scratch")
RESULTS = os.path.join(BENCH, "results")
sys.path.insert(0, BENCH)

import client  # noqa: E402
from populate import populate  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30

FULL = dict(single=1 * GiB, big=4 * GiB, chunked=256 * MiB, chunk=1 * MiB, small_total=32 * MiB,
            small=64 << 10, conc_uploads=64, conc_size=8 * MiB, conc_clients=16, rps_clients=8,
            rps_seconds=5.0, scale_n=100_000, scale_seconds=5.0, rounds=3)
QUICK = dict(single=64 * MiB, big=256 * MiB, chunked=32 * MiB, chunk=1 * MiB, small_total=4 * MiB,
             small=64 << 10, conc_uploads=32, conc_size=1 * MiB, conc_clients=16, rps_clients=8,
             rps_seconds=1.5, scale_n=10_000, scale_seconds=1.5, rounds=1)

NODE_SERVER = r"""
// Written by bench/run.py: @tus/server + @tus/file-store, as @tus/server's README shows.
import http from 'node:http';
import {Server} from '@tus/server';
import {FileStore} from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
const tus = new Server({path: '/files', datastore: new FileStore({directory})});
const server = http.createServer((req, res) => tus.handle(req, res));
server.requestTimeout = 0;       // a 4 GiB PATCH may take longer than Node's 300 s default
server.keepAliveTimeout = 75000; // as gunicorn's keepalive
server.listen(Number(port), '127.0.0.1');
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fmt_size(n: int) -> str:
    return f"{n // GiB} GiB" if n >= GiB and n % GiB == 0 else \
        f"{n // MiB} MiB" if n >= MiB else f"{n >> 10} KiB"


# -- storage ---------------------------------------------------------------

class Storage:
    """Where every server keeps its uploads: a tmpfs mounted here, /dev/shm, or disk."""

    def __init__(self, kind: str, size_hint: int) -> None:
        self.kind, self.mounted = kind, False
        if kind == "tmpfs":
            self.path = os.path.join(SCRATCH, "tmpfs")
            os.makedirs(self.path, exist_ok=True)
            size = f"{max(2 * size_hint // GiB + 2, 4)}g"
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                                   "tuswsgi-bench", self.path], capture_output=True, text=True)
            if done.returncode == 0:
                self.mounted, self.description = True, f"tmpfs mounted at {self.path} (size={size})"
            else:
                log(f"mount failed ({done.stderr.strip()}); using /dev/shm")
                self.path = f"/dev/shm/tuswsgi-bench-{os.getpid()}"
                os.makedirs(self.path, exist_ok=True)
                self.description = f"tmpfs /dev/shm ({self.path})"
        else:
            self.path = os.path.join(SCRATCH, "disk")
            os.makedirs(self.path, exist_ok=True)
            fs = subprocess.run(["df", "-T", self.path], capture_output=True, text=True).stdout
            self.description = f"disk dir {self.path} ({' '.join(fs.splitlines()[-1].split()[:2])})"

    def dir(self, name: str) -> str:
        path = os.path.join(self.path, name)
        os.makedirs(path, exist_ok=True)
        return path

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", self.path], check=False)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def clear_dir(path: str, keep: Optional[set] = None) -> None:
    """Remove the uploads in ``path`` (all, or those whose ID is not in ``keep``)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if keep is not None and entry.name.split(".", 1)[0] in keep:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass


# -- servers ---------------------------------------------------------------

def gunicorn_config() -> str:
    deploy = os.path.join(ROOT, "deploy", "gunicorn.conf.py")
    return deploy if os.path.isfile(deploy) else "python:tuswsgi.gunicorn_conf"


class Server:
    """A server process on a fresh port, storing into ``directory``."""

    name = "?"
    multi_worker = False
    cwd = SCRATCH

    def __init__(self, directory: str, logfile: str) -> None:
        self.directory, self.logfile = directory, logfile
        self.port = free_port()
        self.addr = ("127.0.0.1", self.port)
        self.proc: Optional[subprocess.Popen] = None

    def command(self) -> tuple[list[str], dict]:
        raise NotImplementedError

    def start(self) -> None:
        cmd, env = self.command()
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=self.cwd,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.logfile}")
            try:
                conn = client.Conn(*self.addr, timeout=5)
                status, _ = conn.request("OPTIONS", "/files/")
                conn.close()
                if status < 500 and len(self.worker_pids()) >= self.expected_workers():
                    time.sleep(0.3)
                    return
            except (OSError, client.HTTPError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not come up; see {self.logfile}")

    def expected_workers(self) -> int:
        return 1

    def worker_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class GunicornServer(Server):
    multi_worker = True

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as handle:
                return [int(pid) for pid in handle.read().split()]
        except OSError:
            return []

    def expected_workers(self) -> int:
        return gunicorn_settings()["workers"]


class TuswsgiServer(GunicornServer):
    name = "tuswsgi"

    def command(self):
        return ([sys.executable, "-m", "gunicorn", "-c", gunicorn_config(), "tuswsgi:app"],
                {"TUSWSGI_BIND": f"127.0.0.1:{self.port}", "TUSWSGI_UPLOAD_DIR": self.directory,
                 "PYTHONPATH": ROOT, "TUSWSGI_CONFIG": ""})


class SinkServer(GunicornServer):
    name = "sink"

    def command(self):
        return ([sys.executable, "-m", "gunicorn", "-c", gunicorn_config(), "sink:app"],
                {"TUSWSGI_BIND": f"127.0.0.1:{self.port}", "SINK_DIR": self.directory,
                 "PYTHONPATH": f"{BENCH}:{ROOT}", "TUSWSGI_CONFIG": ""})


class NodeServer(Server):
    name = "@tus/server"

    def command(self):
        return (["node", os.path.join(SCRATCH, "node", "server.mjs"), str(self.port), self.directory], {})


class CeilingServer(Server):
    name = "ceiling"

    def command(self):
        return ([sys.executable, os.path.join(BENCH, "nullserver.py"), str(self.port)], {})


_settings_cache: dict = {}


def gunicorn_settings() -> dict:
    """workers/threads as the production config computes them on this machine."""
    if not _settings_cache:
        code = (f"import json,sys; sys.path.insert(0, {ROOT!r}); import runpy; "
                f"ns = runpy.run_path({gunicorn_config()!r}) if {gunicorn_config()!r}.endswith('.py') else "
                "vars(__import__('tuswsgi.gunicorn_conf', fromlist=['x'])); "
                "print(json.dumps({k: str(ns[k]) if k == 'worker_class' else ns[k] "
                "for k in ('workers','threads','worker_class','keepalive')}))"
                )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=SCRATCH, env={**os.environ, "PYTHONPATH": ROOT})
        _settings_cache.update(json.loads(out.stdout) if out.returncode == 0 else
                               {"workers": 1, "threads": "?", "error": out.stderr[-300:]})
    return _settings_cache


def setup_node() -> Optional[str]:
    """Install @tus/server + @tus/file-store into bench/.scratch/node; return its version."""
    if not shutil.which("node") or not shutil.which("npm"):
        log("node/npm not found: @tus/server skipped")
        return None
    directory = os.path.join(SCRATCH, "node")
    os.makedirs(directory, exist_ok=True)
    package_json = os.path.join(directory, "package.json")
    if not os.path.exists(package_json):
        with open(package_json, "w") as handle:
            json.dump({"name": "tuswsgi-bench-scratch", "private": True, "type": "module"}, handle)
    installed = os.path.join(directory, "node_modules", "@tus", "server", "package.json")
    if not os.path.exists(installed) or not os.path.exists(
            os.path.join(directory, "node_modules", "@tus", "file-store")):
        log("npm install @tus/server @tus/file-store into bench/.scratch/node")
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund",
                               "@tus/server", "@tus/file-store"], cwd=directory,
                              capture_output=True, text=True)
        if done.returncode != 0:
            log(f"npm install failed: @tus/server skipped\n{done.stderr[-500:]}")
            return None
    with open(os.path.join(directory, "server.mjs"), "w") as handle:
        handle.write(NODE_SERVER)
    with open(installed) as handle:
        return json.load(handle)["version"]


# -- memory ----------------------------------------------------------------

def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak RSS of each worker during a block: VmHWM (reset first through
    /proc/<pid>/clear_refs) and, as a cross-check, VmRSS sampled every 20 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.sampled = {pid: 0 for pid in pids}
        self.before = {pid: _status_kib(pid, "VmRSS") for pid in pids}
        self.hwm_reset = True
        for pid in pids:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as handle:
                    handle.write("5")
            except OSError:
                self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.sampled[pid] = max(self.sampled[pid], _status_kib(pid, "VmRSS"))
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm = {pid: _status_kib(pid, "VmHWM") for pid in self.pids}

    def peak_mib(self) -> float:
        """The largest worker's peak (MiB)."""
        peaks = [max(self.sampled[pid], self.hwm.get(pid, 0) if self.hwm_reset else 0)
                 for pid in self.pids]
        return max(peaks) / 1024 if peaks else float("nan")

    def detail(self) -> dict:
        return {str(pid): {"before_kib": self.before[pid], "sampled_peak_kib": self.sampled[pid],
                           "hwm_kib": self.hwm.get(pid)} for pid in self.pids}


# -- the suite -------------------------------------------------------------

def rps(addr, clients: int, seconds: float, kind: str, paths: list[str], patch_size: int = 0) -> dict:
    start_at = time.time() + 0.5 + 0.02 * clients
    results = client.run_parallel(clients, client.loop_requests, addr, start_at, seconds, kind,
                                  paths, patch_size, clients)
    failed = [r for r in results if "error" in r]
    if failed:
        raise RuntimeError(failed[0]["trace"])
    requests = sum(r["requests"] for r in results)
    return {"rate": requests / seconds, "requests": requests, "errors": sum(r["errors"] for r in results)}


def run_suite(server: Server, sz: dict) -> dict:
    addr, out = server.addr, {}

    def single(size: int, key: str) -> None:
        with RssSampler(server.worker_pids()) as rss:
            result = client.upload(addr, size, size)
        out[key] = size / MiB / result["seconds"]
        out[key + "_rss"] = rss.peak_mib()
        out.setdefault("rss_detail", {})[key] = rss.detail()
        clear_dir(server.directory)

    single(sz["single"], "single")
    single(sz["big"], "big")

    result = client.upload(addr, sz["chunked"], sz["chunk"])
    out["chunked"] = sz["chunked"] / MiB / result["seconds"]
    clear_dir(server.directory)

    result = client.upload(addr, sz["small_total"], sz["small"])
    out["small"] = result["requests"] / result["seconds"]
    clear_dir(server.directory)

    counter = multiprocessing.get_context("fork").Value("i", 0)
    start_at = time.time() + 0.5 + 0.02 * sz["conc_clients"]
    results = client.run_parallel(sz["conc_clients"], client.concurrent_uploads, addr, start_at,
                                  counter, sz["conc_uploads"], sz["conc_size"])
    failed = [r for r in results if "error" in r]
    if failed:
        raise RuntimeError(failed[0]["trace"])
    uploaded = sum(r["uploads"] for r in results)
    elapsed = max(r["finished"] for r in results) - start_at
    out["concurrent"] = uploaded * sz["conc_size"] / MiB / elapsed
    out["concurrent_errors"] = sum(r["errors"] for r in results) + sz["conc_uploads"] - uploaded
    clear_dir(server.directory)

    conn = client.Conn(*addr)
    paths = []
    for _ in range(sz["rps_clients"]):
        path = client.create(conn, MiB)
        client.patch(conn, path, 0, 4096)
        paths.append(path)
    conn.close()
    head = rps(addr, sz["rps_clients"], sz["rps_seconds"], "head", paths)
    out["head"], out["head_errors"] = head["rate"], head["errors"]
    post = rps(addr, sz["rps_clients"], sz["rps_seconds"], "post", [])
    out["post"], out["post_errors"] = post["rate"], post["errors"]
    clear_dir(server.directory)
    return out


def scaling(storage: Storage, sz: dict, rounds: int, logdir: str) -> dict:
    """tuswsgi's HEAD/POST/PATCH rates with 10 uploads in the directory vs scale_n."""
    sets = {}
    for n in (10, sz["scale_n"]):
        directory = storage.dir(f"scale-{n}")
        started = time.perf_counter()
        ids = populate(directory, n)
        log(f"populated {n} uploads in {time.perf_counter() - started:.1f}s")
        sets[n] = (directory, ids)
    raw: dict = {n: {"head": [], "post": [], "patch": []} for n in sets}
    clients, seconds = sz["rps_clients"], sz["scale_seconds"]
    for r in range(rounds):
        for n in (list(sets) if r % 2 == 0 else list(reversed(list(sets)))):
            directory, ids = sets[n]
            keep = set(ids)
            server = TuswsgiServer(directory, os.path.join(logdir, f"scale-{n}.log"))
            server.start()
            try:
                paths = ["/files/" + i for i in ids]
                raw[n]["head"].append(rps(server.addr, clients, seconds, "head", paths)["rate"])
                raw[n]["patch"].append(rps(server.addr, clients, seconds, "patch", paths, sz["small"])["rate"])
                raw[n]["post"].append(rps(server.addr, clients, seconds, "post", [])["rate"])
            finally:
                server.stop()
            clear_dir(directory, keep)  # uploads POSTed during the run
            for upload_id in ids:       # PATCHed bytes: back to offset 0 for the next round
                path = os.path.join(directory, upload_id)
                if os.stat(path).st_size:
                    os.truncate(path, 0)
            log(f"scaling n={n} round {r + 1}: " + ", ".join(
                f"{k} {v[-1]:.0f}/s" for k, v in raw[n].items()))
    for directory, _ in sets.values():
        shutil.rmtree(directory, ignore_errors=True)
    return {str(n): {k: {"median": statistics.median(v), "runs": v} for k, v in kinds.items()}
            for n, kinds in raw.items()}


# -- report ----------------------------------------------------------------

def rows(sz: dict) -> list[tuple[str, str, bool]]:
    """(key, label, higher_is_better)"""
    return [
        ("single", f"single {fmt_size(sz['single'])} PATCH (MiB/s)", True),
        ("chunked", f"{fmt_size(sz['chunked'])} in {fmt_size(sz['chunk'])} PATCHes (MiB/s)", True),
        ("small", f"{fmt_size(sz['small_total'])} in {fmt_size(sz['small'])} PATCHes (req/s)", True),
        ("concurrent", f"{sz['conc_uploads']} x {fmt_size(sz['conc_size'])} uploads, "
                       f"{sz['conc_clients']} clients (MiB/s)", True),
        ("concurrent_errors", "  errors in those uploads", False),
        ("head", f"HEAD, {sz['rps_clients']} keep-alive clients (req/s)", True),
        ("post", f"POST, {sz['rps_clients']} keep-alive clients (req/s)", True),
        ("single_rss", f"peak RSS/worker, {fmt_size(sz['single'])} upload (MiB)", False),
        ("big", f"single {fmt_size(sz['big'])} PATCH (MiB/s)", True),
        ("big_rss", f"peak RSS/worker, {fmt_size(sz['big'])} upload (MiB)", False),
    ]


def table(medians: dict, sz: dict, names: list[str]) -> str:
    contenders = [n for n in ("tuswsgi", "sink", "@tus/server") if n in names]
    cols = contenders + (["ceiling"] if "ceiling" in names else [])
    ratio_cols = [("tuswsgi/sink", "sink"), ("tuswsgi/@tus", "@tus/server")]
    ratio_cols = [(label, other) for label, other in ratio_cols if other in names]
    header = ["metric (median)"] + cols + [label for label, _ in ratio_cols]
    lines = []
    for key, label, _ in rows(sz):
        cells = [label]
        for name in cols:
            value = medians.get(name, {}).get(key)
            cells.append("-" if value is None else f"{value:.0f}" if value >= 100 or key.endswith("errors")
                         else f"{value:.1f}")
        for _, other in ratio_cols:
            a, b = medians.get("tuswsgi", {}).get(key), medians.get(other, {}).get(key)
            cells.append("-" if not a or not b or key.endswith("errors") else f"{a / b:.2f}")
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]

    def render(row):
        return "| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths, strict=True))) + " |"
    sep = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([render(header), sep] + [render(row) for row in lines])


def scaling_table(result: dict, sz: dict) -> str:
    small, big = "10", str(sz["scale_n"])
    lines = [f"| tuswsgi, {sz['rps_clients']} clients (req/s, median) | {small} uploads | {big} uploads | ratio |",
             "|---|---:|---:|---:|"]
    labels = {"head": "HEAD (random upload)", "post": "POST",
              "patch": f"PATCH {fmt_size(sz['small'])} (random upload)"}
    for kind, label in labels.items():
        a, b = result[small][kind]["median"], result[big][kind]["median"]
        lines.append(f"| {label} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    return "\n".join(lines)


def run_capacity(storage: Storage, logdir: str, names: list[str], quick: bool) -> dict:
    """bench/capacity.py's rows for the servers of this run that it knows."""
    import capacity  # imported here: it builds on this module

    mine = [name for name in names if name in capacity.CLASSES]
    return capacity.run_capacity(storage, logdir, mine, list(capacity.QUICK_N if quick else capacity.FULL_N),
                                 capacity.QUICK if quick else capacity.Params(), quick)


def _node_package_version(name: str) -> Optional[str]:
    try:
        with open(os.path.join(SCRATCH, "node", "node_modules", "@tus", name, "package.json")) as handle:
            return json.load(handle)["version"]
    except (OSError, ValueError, KeyError):
        return None


def versions(node_version: Optional[str]) -> dict:
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return None
    from importlib.metadata import version

    import gunicorn
    import werkzeug  # noqa: F401
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "uname_r": platform.release(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), "?"),
        "python": platform.python_version(), "gunicorn": gunicorn.__version__,
        "werkzeug": version("werkzeug"), "filelock": version("filelock"),
        "node": run(["node", "--version"]) if shutil.which("node") else None,
        "tus_server": node_version,
        "tus_file_store": _node_package_version("file-store") if node_version else None,
        "tuswsgi_commit": run(["git", "rev-parse", "--short", "HEAD"]),
        "tuswsgi_dirty": bool(run(["git", "status", "--porcelain", "--", "tuswsgi"])),
        "gunicorn_config": gunicorn_config(), "gunicorn_settings": gunicorn_settings(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", choices=("tmpfs", "disk"), default="tmpfs")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (< 2 min)")
    parser.add_argument("--rounds", type=int, help="rounds of all servers (default 3, quick 1)")
    parser.add_argument("--servers", default="tuswsgi,sink,@tus/server,ceiling",
                        help="comma-separated subset of tuswsgi,sink,@tus/server,ceiling")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling-with-work section")
    parser.add_argument("--no-capacity", action="store_true",
                        help="skip the capacity section (bench/capacity.py: many slow uploads at once)")
    args = parser.parse_args()
    sz = dict(QUICK if args.quick else FULL)
    rounds = args.rounds or sz["rounds"]
    started = time.time()
    os.makedirs(SCRATCH, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    logdir = os.path.join(SCRATCH, "logs", stamp)
    os.makedirs(logdir, exist_ok=True)

    wanted = args.servers.split(",")
    node_version = setup_node() if "@tus/server" in wanted else None
    classes = {"tuswsgi": TuswsgiServer, "sink": SinkServer, "@tus/server": NodeServer,
               "ceiling": CeilingServer}
    names = [n for n in wanted if n in classes and (n != "@tus/server" or node_version)]
    env = versions(node_version)
    storage = Storage(args.storage, sz["big"])
    log(f"storage: {storage.description}; gunicorn {gunicorn_config()} {gunicorn_settings()}")
    raw: dict = {name: [] for name in names}
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                directory = storage.dir(name.replace("/", "_").replace("@", ""))
                server = classes[name](directory, os.path.join(logdir, f"{name.replace('/', '_')}-{r}.log"))
                log(f"round {r + 1}/{rounds}: {name}")
                server.start()
                try:
                    result = run_suite(server, sz)
                finally:
                    server.stop()
                    clear_dir(directory)
                raw[name].append(result)
                log("  " + ", ".join(f"{k}={v:.1f}" for k, v in result.items() if isinstance(v, (int, float))))
        scale = None
        if not args.no_scaling and "tuswsgi" in names:
            scale = scaling(storage, sz, rounds, logdir)
        capacity = None if args.no_capacity or "tuswsgi" not in names else \
            run_capacity(storage, logdir, names, args.quick)
    finally:
        storage.close()

    medians = {name: {key: statistics.median(run[key] for run in runs)
                      for key in runs[0] if isinstance(runs[0][key], (int, float))}
               for name, runs in raw.items() if runs}
    text = [f"tuswsgi benchmark {env['date']}  ({'quick' if args.quick else 'full'}, {rounds} round(s), "
            f"storage: {storage.description})",
            f"machine: nproc={env['nproc']}, uname -r {env['uname_r']}, {env['cpu']}",
            f"python {env['python']}, gunicorn {env['gunicorn']} ({gunicorn_config()}: "
            f"{env['gunicorn_settings'].get('workers')} workers x {env['gunicorn_settings'].get('threads')} "
            f"threads), werkzeug {env['werkzeug']}, filelock {env['filelock']}, node {env['node']}, "
            f"@tus/server {env['tus_server']} + @tus/file-store {env['tus_file_store']}, "
            f"tuswsgi {env['tuswsgi_commit']}{' + uncommitted changes' if env['tuswsgi_dirty'] else ''}",
            "",
            table(medians, sz, names)]
    if scale:
        text += ["", "Scaling with work (tuswsgi only):", "", scaling_table(scale, sz)]
    if capacity:
        text += ["", capacity["table"]]
    text.append(f"\n(run took {time.time() - started:.0f}s; server logs in {logdir})")
    print("\n".join(text))
    output = os.path.join(RESULTS, f"{stamp}{'-quick' if args.quick else ''}.json")
    with open(output, "w") as handle:
        json.dump({"env": env, "mode": "quick" if args.quick else "full", "rounds": rounds,
                   "storage": storage.description, "sizes": sz, "medians": medians, "runs": raw,
                   "scaling": scale, "capacity": capacity, "table": "\n".join(text)}, handle, indent=1)
    print(f"JSON: {os.path.relpath(output, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
