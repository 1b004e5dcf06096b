#!/usr/bin/env python3
"""Floods of slow connections: what they cost a server, tuswsgi and @tus/server
side by side in one run.

    python bench/floods.py [--n 500,2000,6000,10000] [--kinds head,silent,body] [--watch 75]

For each N, kind and server (tuswsgi with the production settings,
``gunicorn -c deploy/gunicorn.conf.py``; @tus/server as bench/run.py sets it up),
started fresh: N connections of the kind (tests/support/flood.py: request heads
that never end, a byte every 10 s; connections that send nothing; creation
bodies that drip a byte every 20 s), and once they are connected, for 30 s, a
probe making a POST, a HEAD and a 1 KiB PATCH every 250 ms (each on a new
connection, 10 s timeout) and a phone uploading at 8 KiB/s.  Reported: the
probe's success rate and p50/p99, the phone's stored rate, the servers' CPU, and
how many flood connections the server cut within ``--watch`` seconds and when
(median and p90 after connecting).

Results: a table on stdout and bench/results/<date and time>-floods.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [BENCH, os.path.join(ROOT, "tests")]

import capacity  # noqa: E402
import run  # noqa: E402
from support.flood import HonestUpload, Probe  # noqa: E402

STEADY = 30.0
#: Connections one flood process holds: below a common descriptor limit (20,000).
#: Past about 28,000 connections to one port, widen net.ipv4.ip_local_port_range.
PER_PROCESS = 10_000


def one_cell(server: run.Server, kind: str, n: int, watch: float) -> dict:
    """One flood against a started server."""
    floods = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "support", "flood.py"),
                                str(server.port), kind, str(share), str(watch)], stdout=subprocess.PIPE, text=True)
              for share in _shares(n)]
    for flood in floods:
        assert flood.stdout is not None and flood.stdout.readline().strip() == "started"
    time.sleep(n / 1000 + 2)  # connected
    pids = capacity.server_pids(server)
    cpu_before, started = capacity.cpu_seconds(pids), time.monotonic()
    phone, probe = HonestUpload(server.port, STEADY), Probe(server.port)
    phone.start()
    probe.start()
    phone.join(STEADY + 10)
    results = probe.stop()
    cpu = (capacity.cpu_seconds(pids) - cpu_before) / (time.monotonic() - started) * 100
    stored = _settled_size(os.path.join(server.directory, phone.upload), phone.sent) if phone.upload else 0
    held = []
    for flood in floods:
        assert flood.stdout is not None
        held += json.loads(flood.stdout.readline())
        flood.wait(60)
    cut = sorted(h["closed_after"] for h in held if h["connected"] and h["closed_after"] is not None)
    ok = [r for r in results if r[1]]
    return {"server": server.name, "kind": kind, "n": n,
            "connected": sum(h["connected"] for h in held), "cut": len(cut),
            "cut_p50_s": capacity.percentile(cut, 0.5), "cut_p90_s": capacity.percentile(cut, 0.9),
            "probe_requests": len(results), "probe_ok_pct": round(100 * len(ok) / max(len(results), 1), 1),
            "probe_ms": capacity.spread([r[2] for r in ok]),
            "phone_pct": round(100 * stored / (8000 * STEADY), 1), "phone_created": phone.created,
            "cpu_pct": round(cpu)}


def _shares(n: int) -> list[int]:
    """N split over flood processes of at most PER_PROCESS connections each."""
    processes = -(-n // PER_PROCESS)
    return [n // processes + (i < n % processes) for i in range(processes)]


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _settled_size(path: str, sent: int, seconds: float = 8.0) -> int:
    """What the server stored of the phone's upload once it had time to read what
    the kernel holds (a trickling body is read seconds apart)."""
    deadline = time.monotonic() + seconds
    while _size(path) < sent and time.monotonic() < deadline:
        time.sleep(0.1)
    return _size(path)


def measure(name: str, kind: str, n: int, watch: float, storage: run.Storage, logdir: str) -> dict:
    classes = {"tuswsgi": run.TuswsgiServer, "@tus/server": run.NodeServer}
    key = f"{name.strip('@').replace('/', '-')}-{kind}-{n}"
    server = classes[name](storage.dir(key), os.path.join(logdir, key + ".log"))
    server.start()
    try:
        return one_cell(server, kind, n, watch)
    finally:
        server.stop()
        run.clear_dir(server.directory)


def table(rows: list[dict]) -> str:
    header = ["N", "kind", "server", "connected", "cut (within watch)", "cut after p50/p90 (s)",
              "probe ok", "probe p50/p99 (ms)", "phone", "CPU %"]
    lines = [[str(r["n"]), r["kind"], r["server"], str(r["connected"]), str(r["cut"]),
              f"{capacity.fmt(r['cut_p50_s'], 1)}/{capacity.fmt(r['cut_p90_s'], 1)}",
              f"{r['probe_ok_pct']} % of {r['probe_requests']}",
              f"{capacity.fmt(r['probe_ms']['p50'])}/{capacity.fmt(r['probe_ms']['p99'])}",
              f"{r['phone_pct']} %", str(r["cpu_pct"])] for r in rows]
    return capacity.render(header, lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="500,2000,6000,10000")
    parser.add_argument("--kinds", default="head,silent,body")
    parser.add_argument("--servers", default="tuswsgi,@tus/server")
    parser.add_argument("--watch", type=float, default=75.0,
                        help="how long each flood connection is held at most (s)")
    args = parser.parse_args()
    capacity.raise_fd_limit()
    names = [name for name in args.servers.split(",") if name != "@tus/server" or run.setup_node()]
    storage = run.Storage("tmpfs", 0)
    logdir = os.path.join(BENCH, "results", "logs")
    os.makedirs(logdir, exist_ok=True)
    rows: list[dict] = []
    try:
        for n in (int(v) for v in args.n.split(",")):
            for kind in args.kinds.split(","):
                for name in names:
                    run.log(f"floods: {name} {kind} x{n}")
                    rows.append(measure(name, kind, n, args.watch, storage, logdir))
                    run.log(json.dumps(rows[-1]))
    finally:
        storage.close()
    text = table(rows)
    print(text)
    out = os.path.join(BENCH, "results", f"{datetime.datetime.now():%Y-%m-%dT%H%M%S}-floods.json")
    with open(out, "w") as handle:
        json.dump({"rows": rows, "table": text, "watch": args.watch, "steady": STEADY,
                   "settings": run.gunicorn_settings(), "system": capacity.system_limits()}, handle, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
