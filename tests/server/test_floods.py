"""Floods of 6,000 slow connections against the production worker settings, with
two workers of 3,000 threads (5,900 body places, fewer than the flood's bodies),
each kind in turn: request heads
that never end (a byte every 10 s), connections that send nothing, and bodies
that drip a byte every 20 s.  Meanwhile a probe makes a POST, a HEAD and a PATCH
every 250 ms and a phone uploads at 8 KiB/s: every probe request succeeds, the
phone keeps at least 90 % of its rate, and every flood connection is cut by the
server (the timeouts are shortened to 10 s so the test sees it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from support.deploy import start_production_gunicorn
from support.flood import HonestUpload, Probe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONNECTIONS = 6000
SECONDS = 30
SHORT = {"TUSWSGI_HEAD_TIMEOUT": "10s", "TUSWSGI_MIN_BODY_RATE_WINDOW": "10s", "TUSWSGI_THREADS": "3000"}
#: How long after connecting each kind must have been cut: its timeout, plus the
#: time a loaded 2-core machine may take to get there.
CUT_WITHIN = {"head": 20, "silent": 20, "body": 25}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = start_production_gunicorn(tmp_path_factory.mktemp("floods"), **SHORT)
    yield started
    started.stop()


@pytest.mark.parametrize("kind", ["head", "silent", "body"])
def test_a_flood_of_slow_connections_is_cut_while_everyone_else_is_served(server, kind):
    flood = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "flood.py"), str(server.port),
                              kind, str(CONNECTIONS), str(SECONDS)], stdout=subprocess.PIPE, text=True)
    assert flood.stdout is not None and flood.stdout.readline().strip() == "started"
    time.sleep(CONNECTIONS / 1000)  # the flood is connected
    phone = HonestUpload(server.port, SECONDS - 10)
    probe = Probe(server.port)
    phone.start()
    probe.start()
    phone.join(SECONDS)
    results = probe.stop()
    held = json.loads(flood.stdout.readline())
    flood.wait(60)
    assert phone.upload is not None, f"the phone's upload was refused: {phone.created}"
    stored = (server.upload_dir / phone.upload).stat().st_size
    failed = [result for result in results if not result[1]]
    print(f"{kind}: {len(held)} connections, {sum(h['connected'] for h in held)} connected, "
          f"{sum(h['closed_after'] is not None for h in held)} cut; probe {len(results)} requests, "
          f"{len(failed)} failed; phone stored {stored} of {phone.sent} sent")
    assert sum(h["connected"] for h in held) >= CONNECTIONS * 0.99
    assert len(results) >= 3 * 40 and not failed, failed[:5]
    assert stored >= 0.9 * 8000 * phone.seconds
    late = [h for h in held if h["connected"] and (h["closed_after"] is None
                                                  or h["closed_after"] > CUT_WITHIN[kind])]
    assert not late, late[:5]
