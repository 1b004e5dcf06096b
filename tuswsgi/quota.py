"""Per-client caps on creating uploads: how many a minute, and how many unfinished
at once.  No HTTP: a client is a key the service derives (an identity a
``pre-access`` hook gave, else an address), and a refusal is returned, not raised.

The counts live in the upload directory, so every worker, and every host sharing
the directory, counts one client together, and a restart forgets nothing.  For a
client ``<upload_dir>/.clients/<hash of its key>/`` holds:

- ``.minute-<N>``: one byte appended per creation in minute ``N`` (``O_APPEND``,
  so concurrent writers never lose a count, and each learns its own number);
- ``<upload id>``: an empty marker per upload the client created.  Markers of
  uploads that finished, expired or went away are removed when the client reaches
  its cap, and by the cleanup pass, so a directory holds about the cap at most.

Cost per creation: a directory lookup, an append, a listing of the client's own
directory, a marker; nothing on appends or finishes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .upload import UPLOAD_ID

log = logging.getLogger("tuswsgi")

CLIENTS_DIR = ".clients"
_MINUTE = ".minute-"  # not an upload ID: those never start with a dot


@dataclass(frozen=True)
class Refusal:
    """Why a client may not create an upload now: an error code of the table,
    the detail, and the seconds after which asking again can succeed (or ``None``)."""

    code: str
    detail: str
    retry_after: Optional[int] = None


def client_key(identity: Optional[str], address: str) -> Optional[str]:
    """Whom a request counts against: the identity when there is one, else the
    address, an IPv6 address by its /64 (one subscriber's prefix).  A loopback or
    missing address is nobody: a proxy on this host (whose clients only
    ``behind_proxy`` tells apart) or a local tool."""
    if identity:
        return f"identity {identity}"
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return f"address {address}" if address else None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return f"address {ipaddress.ip_network((ip, 64), strict=False)}"
    return f"address {ip}"


class ClientCaps:
    """``per_minute`` creations and ``unfinished`` held uploads per client (0: no
    cap).  ``is_unfinished(upload_id)`` says whether an upload still counts."""

    def __init__(self, directory: str, *, per_minute: int, unfinished: int,
                 is_unfinished: Callable[[str], bool]) -> None:
        self.root = os.path.join(directory, CLIENTS_DIR)
        self.per_minute = per_minute
        self.unfinished = unfinished
        self.is_unfinished = is_unfinished

    @property
    def enabled(self) -> bool:
        return bool(self.per_minute or self.unfinished)

    def admit(self, client: str) -> Optional[Refusal]:
        """Count a creation by ``client``; the refusal when it is over a cap."""
        folder = self._folder(client)
        if self.per_minute:
            now = time.time()
            created = self._count(folder, int(now // 60))
            if created > self.per_minute:
                return Refusal("ERR_TOO_MANY_CREATIONS", f"{self.per_minute} a minute",
                               max(1, 60 - int(now % 60)))
        if self.unfinished:
            held = self._held(folder)
            if len(held) >= self.unfinished:
                held = self._prune(folder, held)
            if len(held) >= self.unfinished:
                return Refusal("ERR_TOO_MANY_UNFINISHED", f"{len(held)} held, at most {self.unfinished}")
        return None

    def created(self, client: str, upload_id: str) -> None:
        """Note that ``client`` now holds ``upload_id``."""
        if not self.unfinished:
            return
        try:
            _touch(self._folder(client), upload_id)
        except OSError as exc:  # the upload exists; it is only not counted
            log.warning("cannot count upload %s against its client: %s", upload_id, exc.strerror)

    def sweep(self) -> None:
        """Forget markers of uploads that no longer count, old minutes, empty folders."""
        try:
            folders = os.listdir(self.root)
        except FileNotFoundError:
            return
        minute = int(time.time() // 60)
        for name in folders:
            folder = os.path.join(self.root, name)
            try:
                self._prune(folder, self._held(folder))
                for old in _names(folder, _MINUTE):
                    if int(old[len(_MINUTE):]) < minute - 1:
                        _unlink(os.path.join(folder, old))
                os.rmdir(folder)  # only when empty; a creation racing with it retries
            except (OSError, ValueError):
                continue

    # -- the files -----------------------------------------------------------------
    def _folder(self, client: str) -> str:
        return os.path.join(self.root, hashlib.sha256(client.encode()).hexdigest()[:32])

    def _count(self, folder: str, minute: int) -> int:
        """Append one byte to this minute's file and return where it landed: this
        creation's number (``O_APPEND`` leaves the descriptor's offset at the end
        of its own write, whatever others append meanwhile)."""
        fd = _open_in(folder, f"{_MINUTE}{minute}", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, b".")
            count = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
        _unlink(os.path.join(folder, f"{_MINUTE}{minute - 2}"))
        return count

    def _held(self, folder: str) -> list[str]:
        return [name for name in _names(folder) if UPLOAD_ID.fullmatch(name)]

    def _prune(self, folder: str, held: list[str]) -> list[str]:
        still = []
        for upload_id in held:
            if self.is_unfinished(upload_id):
                still.append(upload_id)
            else:
                _unlink(os.path.join(folder, upload_id))
        return still


def _open_in(folder: str, name: str, flags: int) -> int:
    """Open a file in ``folder``, creating the folder; once more if a cleanup pass
    removed the (empty) folder in between."""
    for attempt in (1, 2):
        os.makedirs(folder, exist_ok=True)
        try:
            return os.open(os.path.join(folder, name), flags | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("not reached")


def _touch(folder: str, name: str) -> None:
    os.close(_open_in(folder, name, os.O_WRONLY | os.O_CREAT))


def _names(folder: str, prefix: str = "") -> list[str]:
    try:
        return [name for name in os.listdir(folder) if name.startswith(prefix)]
    except FileNotFoundError:
        return []


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
