"""Log lines for requests and upload events, as text or as JSON.

Every line carries an event name and fields (upload ID, offsets, byte counts,
durations, request ID); :func:`log_event` is the one way code writes them.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any, Optional

log = logging.getLogger("tuswsgi")

#: The X-Request-ID of the request being served, added to every line it logs.
current_request_id: ContextVar[Optional[str]] = ContextVar("tuswsgi_request_id", default=None)


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if not log.isEnabledFor(level):
        return
    fields["request_id"] = current_request_id.get()
    text = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    log.log(level, "%s %s", event, text, extra={"event": event, "fields": fields})


class _SecondClock:
    """Formats a log record's time, once per second rather than once per line
    (strftime is a good part of a log line's cost at thousands of lines a second)."""

    def __init__(self, pattern: str) -> None:
        self._pattern = pattern
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = second, time.strftime(self._pattern, time.gmtime(second))
        return self._text


class TextFormatter(logging.Formatter):
    """``[2026-11-25 14:00:00.123] [pid] [INFO] event key=value ...`` (UTC)."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _SecondClock("%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = (f"[{self._clock(record.created)}.{int(record.msecs):03d}] [{record.process}] "
                f"[{record.levelname}] {record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event and the event's fields."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _SecondClock("%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": f"{self._clock(record.created)}.{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "pid": record.process,
                 "event": getattr(record, "event", None) or "message"}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update({k: v for k, v in fields.items() if v is not None})
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str) -> None:
    """Give the ``tuswsgi`` logger a stderr handler unless the host set one up."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
