#!/usr/bin/env python3
"""Profile tuswsgi's hot path with py-spy (``pip install py-spy``).

    python bench/profile.py [--case single|small|head|all] [--size-mib N] [--storage tmpfs|disk]

Starts tuswsgi exactly as bench/run.py does (production gunicorn settings), has
``py-spy record`` sample every worker while the client drives one case, and
prints where the busy worker spent its samples: by function (self time, the
leaf frame) and by frame on the stack (inclusive).  The raw collapsed stacks go
to bench/results/profile-<case>-<date>-<pid>.txt (open them with speedscope or
flamegraph.pl).  By default only the thread holding the GIL is sampled, which
is Python's CPU time; the worker's user+system CPU seconds are printed beside
it (syscalls such as recv/write copy bytes without the GIL).  Cases: ``single`` one big PATCH, ``chunked`` 1 MiB PATCHes, ``small`` 64 KiB PATCHes on
one keep-alive connection, ``head`` HEADs from 8 keep-alive clients.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import client
import run

MiB = 1 << 20


def record(pids: list[int], stamp: str, case: str, rate: int, extra: list[str] = ()) -> list[tuple[int, str, subprocess.Popen]]:
    spies = []
    for pid in pids:
        out = os.path.join(run.RESULTS, f"profile-{case}-{stamp}-{pid}.txt")
        proc = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--output", out, *list(extra)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        spies.append((pid, out, proc))
    time.sleep(1.0)  # let py-spy attach
    return spies


def stop(spies) -> None:
    for _, _, proc in spies:
        proc.send_signal(signal.SIGINT)
    for _, _, proc in spies:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    try:
        with open(path) as handle:
            for line in handle:
                frames, _, count = line.rstrip("\n").rpartition(" ")
                if frames:
                    stacks.append((frames.split(";"), int(count)))
    except FileNotFoundError:
        pass
    return stacks


def short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``file.py:func``; site-packages and stdlib trimmed."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib/" + path.split("/", 1)[1]
    return f"{path}:{name}"


def report(stacks, top: int) -> str:
    total = sum(count for _, count in stacks)
    selfs: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    for frames, count in stacks:
        names = [short(f) for f in frames]
        selfs[names[-1]] += count
        for name in set(names):
            incl[name] += count
    lines = [f"{total} samples", "", "self (leaf frame):"]
    lines += [f"  {100 * c / total:5.1f}%  {n}" for n, c in selfs.most_common(top)]
    lines += ["", "inclusive (on the stack), tuswsgi/werkzeug/gunicorn/filelock frames:"]
    keep = ("tuswsgi/", "werkzeug/", "gunicorn/", "filelock/", "sink")
    lines += [f"  {100 * c / total:5.1f}%  {n}" for n, c in incl.most_common()
              if n.startswith(keep)][:top * 2]
    return "\n".join(lines)


def drive(case: str, addr, size: int) -> str:
    if case == "single":
        result = client.upload(addr, size, size)
        return f"single {size // MiB} MiB PATCH: {size / MiB / result['seconds']:.0f} MiB/s"
    if case == "chunked":
        result = client.upload(addr, size, MiB)
        return f"{size // MiB} MiB in 1 MiB PATCHes: {size / MiB / result['seconds']:.0f} MiB/s"
    if case == "small":
        result = client.upload(addr, size, 64 << 10)
        return f"{size // MiB} MiB in 64 KiB PATCHes: {result['requests'] / result['seconds']:.0f} req/s"
    conn = client.Conn(*addr)
    paths = [client.create(conn, MiB) for _ in range(8)]
    conn.close()
    result = run.rps(addr, 8, 8.0, "head", paths)
    return f"HEAD, 8 clients: {result['rate']:.0f} req/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("single", "chunked", "small", "head", "all"), default="all")
    parser.add_argument("--size-mib", type=int, help="upload size (default 2048 single, 48 small)")
    parser.add_argument("--storage", choices=("tmpfs", "disk"), default="tmpfs")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--all-threads", action="store_true",
                        help="sample every thread, not only the one holding the GIL (py-spy's "
                             "idle detection does not drop the 32 waiting gthread threads here)")
    args = parser.parse_args()
    if not shutil.which("py-spy"):
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    os.makedirs(run.RESULTS, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    storage = run.Storage(args.storage, 4 << 30)
    logdir = os.path.join(run.SCRATCH, "logs", stamp)
    os.makedirs(logdir, exist_ok=True)
    cases = ("single", "chunked", "small", "head") if args.case == "all" else (args.case,)
    try:
        for case in cases:
            size = (args.size_mib or {"single": 2048, "chunked": 512, "small": 48, "head": 0}[case]) * MiB
            server = run.TuswsgiServer(storage.dir("tuswsgi"), os.path.join(logdir, f"profile-{case}.log"))
            server.start()
            try:
                cpu_before = {pid: cpu_seconds(pid) for pid in server.worker_pids()}
                spies = record(server.worker_pids(), stamp, case, args.rate, [] if args.all_threads else ["--gil"])
                wall = time.perf_counter()
                summary = drive(case, server.addr, size)
                wall = time.perf_counter() - wall
                stop(spies)
                cpu = {pid: tuple(a - b for a, b in zip(cpu_seconds(pid), before, strict=True))
                       for pid, before in cpu_before.items()}
            finally:
                server.stop()
                run.clear_dir(server.directory)
            busiest = max(spies, key=lambda spy: sum(c for _, c in load(spy[1])))
            print(f"=== {case}: {summary} (py-spy, worker {busiest[0]}, {busiest[1]})")
            user, system = cpu[busiest[0]]
            print(f"worker CPU while driven: user {user:.2f}s + sys {system:.2f}s over {wall:.2f}s wall "
                  f"(includes py-spy's own pauses; other worker: "
                  + ", ".join(f"{u + s_:.2f}s" for pid, (u, s_) in cpu.items() if pid != busiest[0]) + ")")
            print(report(load(busiest[1]), args.top))
            print()
    finally:
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
