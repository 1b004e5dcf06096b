"""A raw-socket "server" that does no work: the client's ceiling.

It parses just enough HTTP/1.1 to find Content-Length, discards the body with
``recv_into`` and answers like bench/sink.py (without touching any file).  A
server can't beat it, so if tuswsgi or the sink come close to it, the client
or the loopback is the limit, not the server.

    python bench/nullserver.py PORT            # one thread per connection
    python bench/nullserver.py PORT --events   # one thread, epoll

Threads suit a few fast streams (the kernel copies of several connections run
in parallel).  ``--events`` suits thousands of slow connections
(bench/capacity.py): thousands of Python threads each woken ten times a second
fight over the GIL, so that the threaded server, not the client, would be the
limit.
"""

import selectors
import socket
import sys
import threading
import uuid

#: Where every connection's body lands: one buffer shared by all connections
#: (the bytes are thrown away, so interleaved writes do no harm), so thousands
#: of open connections cost no memory each (bench/capacity.py holds 10,000).
DISCARD = memoryview(bytearray(1 << 20))


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The method and the lower-cased headers of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, headers


def reply(method: str, headers: dict[str, str]) -> bytes:
    """A minimal tus-like answer to a request whose body was read."""
    if method == "POST":
        text = (f"HTTP/1.1 201 Created\r\nLocation: /files/{uuid.uuid4().hex}\r\n"
                "Upload-Offset: 0\r\nContent-Length: 0\r\n\r\n")
    elif method == "PATCH":
        offset = int(headers.get("upload-offset", "0")) + int(headers.get("content-length", "0"))
        text = f"HTTP/1.1 204 No Content\r\nUpload-Offset: {offset}\r\n\r\n"
    else:
        text = "HTTP/1.1 200 OK\r\nUpload-Offset: 0\r\nContent-Length: 0\r\n\r\n"
    return text.encode()


def serve(conn: socket.socket) -> None:
    """One connection, on a thread of its own."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            method, headers = parse_head(head)
            length = int(headers.get("content-length", "0"))
            take = min(length, len(buf))
            buf, length = buf[take:], length - take
            while length:
                n = conn.recv_into(DISCARD, min(length, len(DISCARD)))
                if not n:
                    return
                length -= n
            conn.sendall(reply(method, headers))
    except OSError:
        pass
    finally:
        conn.close()


class EventConn:
    """One connection of the event loop: the unparsed head bytes, or the body left."""

    __slots__ = ("body_left", "buf", "headers", "method", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""
        self.method, self.headers, self.body_left = "", {}, 0

    def on_readable(self) -> bool:
        """Read what arrived, answer what is complete; False when the connection ends."""
        if self.body_left:
            n = self.sock.recv_into(DISCARD, min(self.body_left, len(DISCARD)))
            self.body_left -= n
        else:
            data = self.sock.recv(65536)
            self.buf += data
            n = len(data)
        if not n:
            return False
        while self.advance():
            pass
        return True

    def advance(self) -> bool:
        """Take the next request head from the buffer, or answer the current
        request once its body is read; True when there may be more to do."""
        if self.method and not self.body_left:
            self.sock.send(reply(self.method, self.headers))  # small: the buffer takes it
            self.method = ""
            return True
        if self.method or b"\r\n\r\n" not in self.buf:
            return False
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.method, self.headers = parse_head(head)
        length = int(self.headers.get("content-length", "0"))
        take = min(length, len(self.buf))
        self.buf, self.body_left = self.buf[take:], length - take
        return True


def serve_events(listener: socket.socket) -> None:
    """Every connection in one epoll loop on one thread."""
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                accept_all(listener, selector)
                continue
            conn = key.data
            try:
                alive = conn.on_readable()
            except BlockingIOError:
                continue
            except OSError:
                alive = False
            if not alive:
                selector.unregister(conn.sock)
                conn.sock.close()


def accept_all(listener: socket.socket, selector: selectors.BaseSelector) -> None:
    """Take every connection waiting in the listen queue."""
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector.register(sock, selectors.EVENT_READ, EventConn(sock))


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(4096)
    if "--events" in sys.argv[2:]:
        serve_events(listener)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
