"""A raw HTTP/1.1 client over one socket: exact bytes out, responses parsed one by
one, so a test sees exactly where the server thinks each request starts and ends."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from typing import Optional

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    @property
    def closes(self) -> bool:
        return (self.header("connection") or "").lower() == "close"


def request_bytes(method: str, path: str, headers: Optional[dict] = None, body: bytes = b"", *,
                  chunked: bool = False, content_length: Optional[int] = None) -> bytes:
    """One request, exactly as it goes on the wire."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    all_headers = dict(headers or {})
    if chunked:
        all_headers["Transfer-Encoding"] = "chunked"
    elif body or content_length is not None:
        all_headers["Content-Length"] = str(len(body) if content_length is None else content_length)
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (chunk_encode(body) if chunked else body)


def chunk_encode(body: bytes, size: int = 65536) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


class RawConnection:
    """One client connection; requests and responses are paired by the test."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10, *,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        self._buffer = b""
        self._methods: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes, method: Optional[str] = None) -> None:
        if method is None:
            method = data.split(b" ", 1)[0].decode()
        self._methods.append(method)
        self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        """Bytes that are not a new request (the rest of a body)."""
        self.sock.sendall(data)

    def request(self, method: str, path: str, headers: Optional[dict] = None, body: bytes = b"",
                **options) -> RawResponse:
        self.send(request_bytes(method, path, headers, body, **options), method)
        return self.response()

    def response(self, *, interim: bool = False) -> RawResponse:
        """The next response; interim (1xx) ones are skipped unless ``interim``."""
        while True:
            head = self._read_until(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            _, code, *reason = status_line.split(" ", 2)
            headers: dict[str, str] = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            status = int(code)
            if 100 <= status < 200:
                if interim:
                    return RawResponse(status, reason[0] if reason else "", headers)
                continue
            method = self._methods.pop(0) if self._methods else "GET"
            body = b""
            if method != "HEAD" and status not in (204, 304):
                if "content-length" in headers:
                    body = self._read_exactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    body = self._read_chunked()
            return RawResponse(status, reason[0] if reason else "", headers, body)

    def closed_by_server(self, timeout: float = 10) -> bool:
        """True when the server closed cleanly (EOF, not a reset) with nothing more to say."""
        if self._buffer:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return False
        except TimeoutError:
            return False

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self._buffer += data

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(marker, 1)
        return head

    def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")
                return body
            body += self._read_exactly(size)
            self._read_exactly(2)
