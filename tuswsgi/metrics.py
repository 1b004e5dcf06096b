"""Prometheus metrics, correct across the server's worker processes.

``prometheus_client`` is an optional extra (``pip install tuswsgi[metrics]``).
Under a multi-process server every worker writes its numbers to files in a directory shared
by the workers of one server run (prometheus_client's multiprocess mode), and
``/metrics`` adds them up, whichever worker answers.  With metrics off, or the
package missing, every method is a no-op.
"""

from __future__ import annotations

import os
import struct
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

from .server import run_id_process


def _multiprocess_dir() -> str:
    """One directory per server run, shared by its workers: named after the
    master's pid *and* start time, so a reused pid never inherits a dead run's
    files.  Created before the first import of prometheus_client in a worker."""
    master = run_id_process()
    path = os.path.join(tempfile.gettempdir(), f"tuswsgi-metrics-{master}-{_start_time(master)}")
    os.makedirs(path, exist_ok=True)
    return path


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), else ``0``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


class Metrics:
    enabled = False

    def request(self, method: str, status: int) -> None: ...
    def received(self, count: int) -> None: ...
    def upload_event(self, event: str) -> None: ...
    def hook_called(self, event: str, ok: bool) -> None: ...
    def lock_event(self, event: str) -> None: ...

    @contextmanager
    def writing(self) -> Iterator[None]:
        yield

    def render(self) -> tuple[bytes, str]:
        return b"", "text/plain"


class PrometheusMetrics(Metrics):
    enabled = True

    def __init__(self) -> None:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _multiprocess_dir())
        import prometheus_client as prom  # imported after the directory is set
        from prometheus_client import multiprocess

        self._prom = prom
        self._multiprocess = multiprocess
        self._requests = prom.Counter("tuswsgi_requests", "HTTP requests answered",
                                      ["method", "status"])
        self._bytes = prom.Counter("tuswsgi_received_bytes", "Upload bytes written to storage")
        self._uploads = prom.Counter("tuswsgi_uploads", "Upload lifecycle events",
                                     ["event"])
        self._writing = prom.Gauge("tuswsgi_uploads_in_progress",
                                   "Requests currently writing upload data",
                                   multiprocess_mode="livesum")
        self._hooks = prom.Counter("tuswsgi_hook_calls", "Hook calls", ["event", "result"])
        self._locks = prom.Counter("tuswsgi_lock_events", "Lock hand-overs and timeouts",
                                   ["event"])
        # Create this process's files now, at boot: a scrape must never find one
        # that another worker is creating at that moment.
        self._bytes.inc(0)
        self._writing.set(0)

    def request(self, method: str, status: int) -> None:
        self._requests.labels(method, str(status)).inc()

    def received(self, count: int) -> None:
        if count:
            self._bytes.inc(count)

    def upload_event(self, event: str) -> None:
        self._uploads.labels(event).inc()

    def hook_called(self, event: str, ok: bool) -> None:
        self._hooks.labels(event, "ok" if ok else "error").inc()

    def lock_event(self, event: str) -> None:
        self._locks.labels(event).inc()

    @contextmanager
    def writing(self) -> Iterator[None]:
        self._writing.inc()
        try:
            yield
        finally:
            self._writing.dec()

    def render(self) -> tuple[bytes, str]:
        """Add up every worker's files, skipping any that is still being created
        (a worker killed at that moment would leave it empty for good)."""
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        files = [entry.path for entry in os.scandir(directory)
                 if entry.name.endswith(".db") and _complete(entry.path)]
        registry = self._prom.CollectorRegistry()
        registry.register(_MergedFiles(self._multiprocess.MultiProcessCollector, files))
        return self._prom.generate_latest(registry), self._prom.CONTENT_TYPE_LATEST


class _MergedFiles:
    """A collector over a chosen list of multiprocess files."""

    def __init__(self, collector: Any, files: list[str]) -> None:
        self._collector = collector
        self._files = files

    def collect(self) -> Any:
        return self._collector.merge(self._files, accumulate=True)


def _complete(path: str) -> bool:
    """A multiprocess file starts with its used size; an empty or torn one is skipped."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return len(head) == 8 and 8 <= struct.unpack_from("i", head)[0] <= os.path.getsize(path)


_shared: list[PrometheusMetrics] = []


def metrics_from_config(config: Any) -> Metrics:
    """The process's metrics.  prometheus_client keeps one registry per process, so
    every app built in it (several mounts, tests) shares one set of series."""
    if not config.metrics:
        return Metrics()
    if not _shared:
        try:
            _shared.append(PrometheusMetrics())
        except ImportError:
            from .config import ConfigError
            raise ConfigError("metrics = on needs prometheus_client: "
                              "pip install 'tuswsgi[metrics]'") from None
    return _shared[0]
