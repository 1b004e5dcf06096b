"""A TCP proxy on loopback that cuts client connections on purpose.

It forwards bytes between a client and a server and, once ``cut_after`` bytes
have gone from the client to the server on a connection, closes both sides:
what a dropped Wi-Fi link or a killed laptop looks like to the server.  With
``stall_after`` it instead stops forwarding client bytes but keeps the
connection open (a silent client).
"""

from __future__ import annotations

import socket
import threading
from typing import Optional


class FaultProxy:
    def __init__(self, target_port: int, *, cut_after: Optional[int] = None,
                 stall_after: Optional[int] = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.stall_after = stall_after
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        sent = 0
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    server.shutdown(socket.SHUT_WR)
                    return
                if self.cut_after is not None and sent + len(data) >= self.cut_after:
                    server.sendall(data[: self.cut_after - sent])
                    self.cuts += 1
                    _close(client, server)
                    return
                if self.stall_after is not None and sent + len(data) >= self.stall_after:
                    server.sendall(data[: self.stall_after - sent])
                    self._closed.wait()
                    return
                server.sendall(data)
                sent += len(data)
        except OSError:
            _close(client, server)

    @staticmethod
    def _downstream(server: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    client.shutdown(socket.SHUT_WR)
                    return
                client.sendall(data)
        except OSError:
            _close(client, server)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        _close(*self._sockets)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
