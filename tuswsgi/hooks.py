"""Hooks: tell the application about uploads and let it decide, tusd v2 style.

An event is the JSON that tusd v2 sends (``{"Type": ..., "Event": {"Upload": ...,
"HTTPRequest": ...}}``) and an answer is tusd's hook response (``HTTPResponse``,
``RejectUpload``, ``ChangeFileInfo``, ``StopUpload``, ``RejectTermination``), so
existing tusd hook scripts and webhook receivers work unchanged.

Transports: in-process Python callables, a directory of executables named after
the event (event on stdin, answer on stdout), and an HTTP endpoint.  Blocking
events (``pre-*``) wait for every transport's answer; the others run on a small
thread pool and never slow or fail a request.  This module knows no werkzeug:
the front-end hands it a :class:`RequestInfo`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .config import ConfigError
from .errors import TusError
from .events import EVENTS
from .protocol import decode_metadata
from .upload import UploadInfo

log = logging.getLogger("tuswsgi.hooks")



class HookError(Exception):
    """A blocking hook could not be run or gave no usable answer."""


@dataclass
class RequestInfo:
    """The parts of an HTTP request a hook sees (tusd's ``HTTPRequest``), and who
    sent it: the client's ``address`` and the ``identity`` a ``pre-access`` hook
    gave (neither is in the event)."""

    method: str
    uri: str
    remote_addr: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    address: str = ""
    identity: Optional[str] = None

    def to_json(self) -> dict:
        return {"Method": self.method, "URI": self.uri, "RemoteAddr": self.remote_addr,
                "Header": self.headers}

    @classmethod
    def from_environ(cls, environ: dict, method: Optional[str] = None) -> RequestInfo:
        headers: dict[str, list[str]] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:]
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                name = key
            else:
                continue
            headers.setdefault(name.replace("_", "-").title(), []).append(value)
        uri = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            uri += "?" + environ["QUERY_STRING"]
        address = environ.get("REMOTE_ADDR", "")
        remote = f"{address}:{environ['REMOTE_PORT']}" if environ.get("REMOTE_PORT") else address
        return cls(method or environ.get("REQUEST_METHOD", ""), uri, remote, headers, address)


@dataclass
class HookAnswer:
    """The merged answer of all transports for one event."""

    status: Optional[int] = None
    body: Optional[str] = None
    headers: dict[str, str] = field(default_factory=dict)
    reject_upload: bool = False
    reject_access: bool = False
    reject_termination: bool = False
    stop_upload: bool = False
    change_id: Optional[str] = None
    change_metadata: Optional[dict[str, str]] = None
    #: Who the client is (``pre-access``), for the per-client caps.
    identity: Optional[str] = None

    def merge(self, raw: Any) -> None:
        if not raw:
            return
        if not isinstance(raw, dict):
            raise HookError(f"answer is not a JSON object: {str(raw)[:80]}")
        response = raw.get("HTTPResponse") or {}
        if response.get("StatusCode"):
            self.status = int(response["StatusCode"])
        if response.get("Body") is not None:
            self.body = str(response["Body"])
        self.headers.update({str(k): str(v) for k, v in (response.get("Header") or {}).items()})
        self.reject_upload |= bool(raw.get("RejectUpload"))
        self.reject_access |= bool(raw.get("RejectAccess"))
        self.reject_termination |= bool(raw.get("RejectTermination"))
        self.stop_upload |= bool(raw.get("StopUpload"))
        change = raw.get("ChangeFileInfo") or {}
        if change.get("ID"):
            self.change_id = str(change["ID"])
        if change.get("MetaData") is not None:
            self.change_metadata = {str(k): str(v) for k, v in change["MetaData"].items()}
        if raw.get("Identity"):
            self.identity = str(raw["Identity"])


    def rejection(self, code: str, default_status: int) -> TusError:
        """The client's answer to a refusal: the hook's status, body and headers,
        else the error table's for ``code``."""
        return TusError(code, status=self.status if (self.status or 0) >= 400 else default_status,
                        body=self.body, headers=self.headers.items())


def upload_json(info: Optional[UploadInfo], storage_path: Optional[str] = None) -> dict:
    """tusd's ``FileInfo`` for an upload (an empty one before creation)."""
    if info is None:
        return {"ID": "", "Size": 0, "SizeIsDeferred": False, "Offset": 0, "MetaData": {},
                "IsPartial": False, "IsFinal": False, "PartialUploads": None, "Storage": None}
    return {
        "ID": info.id,
        "Size": info.length or 0,
        "SizeIsDeferred": info.length is None,
        "Offset": info.offset,
        "MetaData": decode_metadata(info.metadata),
        "IsPartial": info.concat == "partial",
        "IsFinal": info.concat == "final",
        "PartialUploads": list(info.parts) if info.concat == "final" else None,
        "Storage": {"Type": "filestore", "Path": storage_path} if storage_path else None,
    }


# -- transports ----------------------------------------------------------------------

Transport = Callable[[str, dict], Any]


def python_transport(dotted: str) -> Transport:
    """``package.module:function``; the function gets the whole event dict.

    Imported at start-up, so a wrong path stops the server with a clear message
    instead of failing every request."""
    module_name, _, attribute = dotted.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute or "hook")
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"bad value for 'hooks_python': {dotted!r} ({exc})") from None
    if not callable(function):
        raise ConfigError(f"bad value for 'hooks_python': {dotted!r} is not callable")
    return lambda event_type, event: function(event)


def command_transport(directory: str, timeout: float) -> Transport:
    """tusd-style file hooks: ``<directory>/<event>`` gets the event on stdin."""
    def run(event_type: str, event: dict) -> Any:
        path = os.path.join(directory, event_type)
        if not os.access(path, os.X_OK):
            return None
        try:
            done = subprocess.run([path], input=json.dumps(event).encode(), capture_output=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HookError(f"{path}: {exc}") from None
        if done.stderr:
            log.info("hook %s: %s", event_type, done.stderr.decode(errors="replace").strip())
        if done.returncode != 0:
            raise HookError(f"{path} exited with {done.returncode}")
        output = done.stdout.strip()
        if not output:
            return None
        try:
            return json.loads(output)
        except ValueError:
            raise HookError(f"{path} printed something that is not JSON") from None
    return run


def http_transport(url: str, timeout: float, retries: int, backoff: float,
                   forward_headers: tuple[str, ...] = ()) -> Transport:
    """POST the event as JSON; retry connection errors and 5xx with back-off.

    ``forward_headers`` (e.g. Authorization, Cookie) are copied from the client's
    request onto the hook request, so the receiver can authenticate the user.
    """
    wanted = {name.lower() for name in forward_headers}

    def post(event_type: str, event: dict) -> Any:
        payload = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "Hook-Name": event_type}
        for name, values in event["Event"]["HTTPRequest"]["Header"].items():
            if name.lower() in wanted and values:
                headers[name] = values[0]
        for attempt in range(retries + 1):
            request = urllib.request.Request(url, data=payload, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    body = response.read()
                return json.loads(body) if body.strip() else None
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == retries:
                    raise HookError(f"{url} answered {exc.code}") from None
            except ValueError:  # an answer, just not JSON: asking again will not help
                raise HookError(f"{url} answered something that is not JSON") from None
            except OSError as exc:
                if attempt == retries:
                    raise HookError(f"{url}: {exc}") from None
            time.sleep(backoff * (2 ** attempt))
        return None
    return post


# -- dispatch ------------------------------------------------------------------------

class Hooks:
    """Fires events at every configured transport."""

    def __init__(self, transports: list[Transport], *, enabled: tuple[str, ...] = EVENTS,
                 on_call: Callable[[str, bool], None] = lambda event, ok: None) -> None:
        self.transports = transports
        self.enabled = frozenset(enabled) if transports else frozenset()
        self.on_call = on_call
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def wants(self, event_type: str) -> bool:
        return event_type in self.enabled

    def event(self, event_type: str, info: Optional[UploadInfo], request: Optional[RequestInfo],
              storage_path: Optional[str] = None) -> dict:
        http = request.to_json() if request else {"Method": "", "URI": "", "RemoteAddr": "",
                                                   "Header": {}}
        return {"Type": event_type,
                "Event": {"Upload": upload_json(info, storage_path), "HTTPRequest": http}}

    def call(self, event_type: str, event: dict) -> HookAnswer:
        """Run a blocking event on every transport and merge the answers."""
        answer = HookAnswer()
        for transport in self.transports:
            try:
                answer.merge(transport(event_type, event))
            except Exception as exc:
                self.on_call(event_type, False)
                log.error("%s hook failed: %s", event_type, exc)
                raise HookError(str(exc)) from None
        self.on_call(event_type, True)
        return answer

    def notify(self, event_type: str, event: dict,
               on_answer: Optional[Callable[[HookAnswer], None]] = None) -> None:
        """Run a non-blocking event in the background; failures are only logged."""
        if not self.wants(event_type):
            return
        self._executor().submit(self._notify, event_type, event, on_answer)

    def _notify(self, event_type: str, event: dict,
                on_answer: Optional[Callable[[HookAnswer], None]]) -> None:
        try:
            answer = self.call(event_type, event)
        except HookError:
            return
        if on_answer is not None:
            on_answer(answer)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tuswsgi-hook")
                self._pool_pid = os.getpid()
            return self._pool

    def drain(self) -> None:
        """Wait for queued background hooks (tests and shutdown)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def hooks_from_config(config: Any, on_call: Callable[[str, bool], None]) -> Hooks:
    transports: list[Transport] = [python_transport(path) for path in config.hooks_python]
    if config.hooks_dir:
        transports.append(command_transport(config.hooks_dir, config.hooks_timeout))
    if config.hooks_http:
        transports.append(http_transport(config.hooks_http, config.hooks_timeout,
                                         config.hooks_http_retries, config.hooks_http_backoff,
                                         config.hooks_http_forward_headers))
    return Hooks(transports, enabled=config.hooks_enabled, on_call=on_call)
