"""Where a waiting upload's CPU goes: a profile of one tuswsgi worker while it
holds many slow uploads (``python bench/capacity.py --profile``).

During the steady phase, on the first worker:

- ``perf stat`` counts its system calls by kind, its context switches and its
  CPU time (all threads), divided here per held upload and second;
- ``py-spy record --idle --gil`` samples the thread that holds the GIL, so the
  functions with the most samples are where Python time goes (``--idle`` keeps
  the samples where the GIL holder waits, e.g. in ``poll``).

The result is a dict for the capacity JSON and a table for the README.
"""

from __future__ import annotations

import collections
import os
import re
import resource
import shutil
import subprocess
from typing import Any, Optional

#: The system calls counted one by one, as far as descriptors allow: perf opens
#: a counter per event and thread, so a worker of 5,000 threads costs it 5,000
#: descriptors an event (profile at N = 2,000 for the breakdown).
SYSCALLS = ("read", "write", "futex", "poll", "ppoll", "epoll_wait", "epoll_ctl", "newfstatat",
            "openat", "close", "getdents64", "clock_nanosleep", "accept4", "sendto", "recvfrom")
TRACEPOINTS = "/sys/kernel/tracing/events/syscalls"


def events(pid: int) -> list[str]:
    """What perf counts on ``pid``: CPU time, context switches, every system call,
    and as many of SYSCALLS (those this kernel can trace) as descriptors allow."""
    known = [name for name in SYSCALLS if os.path.isdir(f"{TRACEPOINTS}/sys_enter_{name}")]
    threads = max(len(os.listdir(f"/proc/{pid}/task")), 1)
    room = (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 500) // threads
    core = ["task-clock", "context-switches", "raw_syscalls:sys_enter"]
    return (core + [f"syscalls:sys_enter_{name}" for name in known])[:max(room, 1)]


def _full_limit() -> None:
    """perf needs a descriptor per counter and thread."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class WorkerProfile:
    """perf and py-spy on one process for ``seconds``."""

    def __init__(self, pid: int, seconds: float, out_prefix: str) -> None:
        self.pid, self.seconds, self.prefix = pid, seconds, out_prefix
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self) -> None:
        if shutil.which("perf"):
            self.procs.append(("perf", subprocess.Popen(
                ["perf", "stat", "-x", ",", "-o", self.prefix + "-perf.csv", "-e", ",".join(events(self.pid)),
                 "-p", str(self.pid), "--", "sleep", str(self.seconds)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_full_limit)))
        if shutil.which("py-spy"):
            self.procs.append(("py-spy", subprocess.Popen(
                ["py-spy", "record", "--idle", "--gil", "--nonblocking", "-r", "50", "-d",
                 str(int(self.seconds)), "-f", "raw", "-o", self.prefix + "-pyspy.txt", "-p", str(self.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))

    def finish(self, uploads: int) -> dict:
        for _, proc in self.procs:
            try:
                proc.wait(self.seconds + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return {"pid": self.pid, "seconds": self.seconds, "uploads": uploads,
                "perf": _perf(self.prefix + "-perf.csv", self.seconds, uploads),
                "python": _pyspy(self.prefix + "-pyspy.txt")}


def _perf(path: str, seconds: float, uploads: int) -> Optional[dict]:
    """Counts per second and per held upload and second."""
    if not os.path.exists(path):
        return None
    counts: dict[str, float] = {}
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for line in lines:
        fields = line.strip().split(",")
        if len(fields) > 2 and fields[0] and fields[0][0].isdigit():
            name = fields[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "syscalls")
            counts[name] = float(fields[0])
    per_upload = {name: round(value / seconds / max(uploads, 1), 3) for name, value in counts.items()
                  if name not in ("task-clock",) and value}
    cpu_pct = counts.get("task-clock", 0) / 1000 / seconds * 100  # task-clock is in ms
    return {"cpu_pct": round(cpu_pct, 1),
            "cpu_us_per_upload_second": round(counts.get("task-clock", 0) * 1000 / seconds / max(uploads, 1), 1),
            "per_upload_second": per_upload}


def _pyspy(path: str, top: int = 25) -> Optional[dict]:
    """Self samples by function (the leaf frame) and inclusive samples by frame."""
    if not os.path.exists(path):
        return None
    leaf: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        frames = [_short(frame) for frame in stack.split(";")[1:] if frame]  # the first is the thread
        if not frames:
            continue
        samples = int(count)
        total += samples
        leaf[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    def pct(counter: collections.Counter) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]
    return {"samples": total, "self": pct(leaf), "inclusive": pct(inclusive)}


def _short(frame: str) -> str:
    """``function (path/to/module.py:123)`` -> ``module.py:function``."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    return f"{os.path.basename(match.group(2))}:{match.group(1)}"


def table(profile: dict[str, Any]) -> str:
    """The per-upload costs, one line per kind, for a README."""
    perf = profile.get("perf") or {}
    lines = [f"worker {profile['pid']}: {profile['uploads']} uploads held, "
             f"CPU {perf.get('cpu_pct')} % = {perf.get('cpu_us_per_upload_second')} µs per upload per second"]
    for name, value in sorted((perf.get("per_upload_second") or {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:>20}: {value:8.3f} per upload per second")
    python = profile.get("python") or {}
    for name, share in (python.get("self") or [])[:15]:
        lines.append(f"  {share:5.1f} %  {name}")
    return "\n".join(lines)
