"""A webhook receiver for the HTTP-hook tests: a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


class HookReceiver:
    """A webhook receiver: records every call, answers from a per-event script of
    ``(status, json answer)`` pairs (the last one repeats), default ``200`` and no body."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.script: dict[str, list[tuple[int, Optional[dict]]]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event = json.loads(body)
                with receiver.lock:
                    receiver.calls.append({"time": time.monotonic(), "path": self.path,
                                           "headers": dict(self.headers.items()),
                                           "event": event})
                    steps = receiver.script.get(event["Type"]) or [(200, None)]
                    status, answer = steps.pop(0) if len(steps) > 1 else steps[0]
                payload = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tus-hooks"

    def of_type(self, event_type: str) -> list[dict]:
        with self.lock:
            return [call for call in self.calls if call["event"]["Type"] == event_type]

    def types(self) -> list[str]:
        with self.lock:
            return [call["event"]["Type"] for call in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
