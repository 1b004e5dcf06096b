"""Who gets in, as a table: the worker's admission rules from plain counts."""

from __future__ import annotations

import pytest

from tuswsgi.server.admission import (
    OVERFLOW_GRACE,
    Capacity,
    Load,
    evictable,
    has_room,
    may_accept,
    must_shed,
)

CAP = Capacity(threads=10, body_slots=8, max_connections=100)


@pytest.mark.parametrize("threads, reserved, connections, expected", [
    (3000, 50, 10000, Capacity(3000, 2950, 10000)),
    (8, 50, 16, Capacity(8, 4, 16)),        # at most half the threads are reserved
    (1, 50, 0, Capacity(1, 1, 1)),          # at least one reads bodies; at least one connection
])
def test_capacity_of_the_settings(threads, reserved, connections, expected):
    assert Capacity.of(threads, reserved, connections) == expected


@pytest.mark.parametrize("load, now, accept", [
    (Load(), 0.0, True),
    (Load(requests=7, bodies=7), 0.0, True),
    (Load(requests=8, bodies=3), 0.0, False),                 # any running request may hold a body soon
    (Load(bodies=8), 0.0, False),                             # full: another worker may have room
    (Load(requests=10), 0.0, False),                          # every thread busy
    (Load(bodies=8, overflow_since=0.0), OVERFLOW_GRACE, True),   # waited the grace: taken and answered
    (Load(bodies=8, overflow_since=0.0), OVERFLOW_GRACE / 2, False),
    (Load(requests=10, overflow_since=0.0), 5.0, False),      # nothing would answer it
    (Load(requests=2, fresh=40, overflow_since=0.0), OVERFLOW_GRACE, True),  # silent ones need no thread
    (Load(requests=6, bodies=6, fresh=2), 0.0, False),        # two just taken will send bodies soon
    (Load(requests=6, bodies=6, fresh=1), 0.0, True),
    (Load(paused_until=1.0), 0.5, False),                     # out of descriptors a moment ago
    (Load(paused_until=1.0), 1.0, True),
    (Load(connections=100, sheddable=0), 0.0, False),         # at the cap with nothing to shed
    (Load(connections=100, sheddable=3), 0.0, True),          # ... or with an idle one to close
])
def test_may_accept(load, now, accept):
    assert may_accept(CAP, load, now) is accept


@pytest.mark.parametrize("load, room", [(Load(), True), (Load(bodies=8), False), (Load(requests=8), False),
                                        (Load(requests=7, fresh=1), False)])
def test_has_room(load, room):
    assert has_room(CAP, load) is room


@pytest.mark.parametrize("connections, shed", [(99, False), (100, True), (150, True)])
def test_must_shed(connections, shed):
    assert must_shed(CAP, Load(connections=connections)) is shed


@pytest.mark.parametrize("holders, victim", [
    ([], None),
    ([(None, "new")], None),                            # a rate not known yet (under a second)
    ([(8192.0, "phone"), (0.05, "drip")], "drip"),
    ([(100.0, "slow"), (0.05, "drip"), (3.0, "slower")], "drip"),
    ([(8192.0, "phone"), (300.0, "fine")], None),       # every body above the minimum: refuse the new one
])
def test_the_slowest_body_below_the_minimum_gives_way(holders, victim):
    assert evictable(holders, min_rate=240) == victim
