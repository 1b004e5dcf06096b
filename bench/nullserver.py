"""A raw-socket "server" that does no work: the client's ceiling.

It parses just enough HTTP/1.1 to find Content-Length, discards the body with
``recv_into`` and answers like bench/sink.py (without touching any file).  A
server can't beat it, so if tuswsgi or the sink come close to it, the client
or the loopback is the limit, not the server.  One thread per connection.

    python bench/nullserver.py PORT
"""

import socket
import sys
import threading
import uuid

#: Where every connection's body lands: one buffer shared by all threads (the
#: bytes are thrown away, so interleaved writes do no harm), so thousands of
#: open connections cost no memory each (bench/capacity.py holds 10,000).
DISCARD = memoryview(bytearray(1 << 20))


def serve(conn: socket.socket) -> None:
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
            lines = head.decode("latin-1").split("\r\n")
            method, _path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = body = int(headers.get("content-length", "0"))
            take = min(length, len(buf))
            buf, length = buf[take:], length - take
            while length:
                n = conn.recv_into(DISCARD, min(length, len(DISCARD)))
                if not n:
                    return
                length -= n
            if method == "POST":
                reply = (f"HTTP/1.1 201 Created\r\nLocation: /files/{uuid.uuid4().hex}\r\n"
                         "Upload-Offset: 0\r\nContent-Length: 0\r\n\r\n")
            elif method == "PATCH":
                offset = int(headers.get("upload-offset", "0")) + body
                reply = f"HTTP/1.1 204 No Content\r\nUpload-Offset: {offset}\r\n\r\n"
            else:
                reply = "HTTP/1.1 200 OK\r\nUpload-Offset: 0\r\nContent-Length: 0\r\n\r\n"
            conn.sendall(reply.encode())
    except OSError:
        pass
    finally:
        conn.close()


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(1024)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
