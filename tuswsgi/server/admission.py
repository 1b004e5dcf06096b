"""Who gets in: connections, request threads and body places, decided from plain
values (no sockets, no clock of its own), so every rule is a row in a table test.

A worker has ``threads`` request threads; at most ``body_slots`` of them
(``threads - reserved_threads``) read bodies at once, so a request without a
body (HEAD, OPTIONS, DELETE: how a client learns where to resume) always finds
one.  Connections waiting for a request head hold no thread, only a descriptor:
at most ``max_connections`` are open, and when that many are, the oldest idle
or slow-head connection is shed to make room for a new one.

Placement across workers: a worker takes new connections only while it has
room for another request with a body, so a connection never waits in a full
worker while another one is free.  Connections it took in the last
:data:`FRESH` seconds that have not sent a head yet count as requests to come:
a burst of uploads arriving at once is spread over the workers instead of all
landing in the one that woke first (a connection slower than that to send its
head no longer counts, so slow heads cannot stop a worker accepting).  When
every worker is full, a connection
that waited :data:`OVERFLOW_GRACE` is taken anyway and answered: its body gets
the place of the slowest body below the minimum rate, if there is one, else
``503`` with ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, TypeVar

#: When every worker is full, a connection waits this long before a full worker
#: takes it anyway (to serve it if it has no body, or answer its body).
OVERFLOW_GRACE = 0.25
#: How long a new connection that has not sent its head counts as a request to come.
FRESH = 0.5

Holder = TypeVar("Holder")


@dataclass(frozen=True)
class Capacity:
    """A worker's fixed limits."""

    threads: int
    body_slots: int
    max_connections: int

    @classmethod
    def of(cls, threads: int, reserved_threads: int, max_connections: int) -> Capacity:
        """Reserve at most half the threads; at least one reads bodies."""
        reserved = min(reserved_threads, threads // 2)
        return cls(threads, max(threads - reserved, 1), max(max_connections, 1))


@dataclass(frozen=True)
class Load:
    """What a worker holds now.

    ``requests``: heads handed to threads (running or queued); ``fresh``:
    connections taken in the last :data:`FRESH` seconds that have sent no head
    yet; ``bodies``: body places taken; ``connections``: open client sockets; ``sheddable``: how
    many of those wait idle or for a slow head; ``overflow_since``: since when
    connections have waited in the listen queue while the worker was full
    (``None``: not seen); ``paused_until``: accepting failed for want of
    descriptors and resumes then.
    """

    requests: int = 0
    fresh: int = 0
    bodies: int = 0
    connections: int = 0
    sheddable: int = 0
    overflow_since: Optional[float] = None
    paused_until: float = 0.0


def has_room(capacity: Capacity, load: Load) -> bool:
    """Room for one more request with a body, after the ones about to come: any
    request running may be one (a thread has yet to take its body's place)."""
    return load.requests + load.fresh < capacity.body_slots and load.bodies < capacity.body_slots


def may_accept(capacity: Capacity, load: Load, now: float) -> bool:
    """Whether to take a connection from the listen queue now."""
    if now < load.paused_until:
        return False
    if load.connections >= capacity.max_connections and not load.sheddable:
        return False
    if has_room(capacity, load):
        return True
    waited = load.overflow_since is not None and now - load.overflow_since >= OVERFLOW_GRACE
    return waited and load.requests < capacity.threads  # a thread is free to answer it


def must_shed(capacity: Capacity, load: Load) -> bool:
    """Whether taking one more connection needs an idle one closed first."""
    return load.connections >= capacity.max_connections


def evictable(holders: Iterable[tuple[Optional[float], Holder]], min_rate: float) -> Optional[Holder]:
    """The body to stop so that a new one can have its place: the slowest whose
    rate is known and below ``min_rate``; ``None`` when every body is faster
    (the new one is then refused with 503)."""
    slowest: Optional[tuple[float, Holder]] = None
    for rate, holder in holders:
        if rate is not None and rate < min_rate and (slowest is None or rate < slowest[0]):
            slowest = (rate, holder)
    return slowest[1] if slowest is not None else None
