"""The worker's suites again, on the oldest gunicorn setup.py allows.

tuswsgi.worker reaches into gunicorn's threaded worker; what it relies on is
checked at boot, and this proves the floor it declares.  ``.ci/install.d/
gunicorn-floor.sh`` builds the venv (``TUSWSGI_FLOOR_PYTHON`` names another)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, require_tool

from tuswsgi.worker import GUNICORN_FLOOR, SUPPORTED_GUNICORN

pytestmark = pytest.mark.e2e

FLOOR_PYTHON = Path(os.environ.get("TUSWSGI_FLOOR_PYTHON", "/opt/tuswsgi-gunicorn-floor/bin/python"))
SUITES = ["tests/server/test_framing.py", "tests/server/test_syscall_faults.py",
          "tests/server/test_faults.py", "tests/server/test_zero_config.py", "tests/unit/test_body.py",
          "tests/unit/test_locking.py"]


def test_setup_py_declares_the_supported_range():
    low, high = SUPPORTED_GUNICORN
    declared = re.search(r'"gunicorn>=([\d.]+),<(\d+)"', (ROOT / "setup.py").read_text())
    assert declared, "setup.py must bound gunicorn"
    assert declared[1] == f"{low[0]}.{low[1]}" and int(declared[2]) == high[0]
    assert GUNICORN_FLOOR.startswith(declared[1])


@pytest.mark.skipif(os.environ.get("TUSWSGI_FLOOR_LEG") == "1", reason="this is the floor leg")
def test_the_worker_suites_pass_on_the_floor():
    require_tool(f"a venv with gunicorn {GUNICORN_FLOOR} (.ci/install.d/gunicorn-floor.sh)",
                 FLOOR_PYTHON.exists())
    version = subprocess.run([str(FLOOR_PYTHON), "-c", "import gunicorn; print(gunicorn.__version__)"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    assert version == GUNICORN_FLOOR
    env = {**os.environ, "TUSWSGI_FLOOR_LEG": "1"}
    result = subprocess.run([str(FLOOR_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
