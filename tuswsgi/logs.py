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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
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
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
