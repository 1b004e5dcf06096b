"""The worker's suites again, on the oldest gunicorn setup.py allows and on the
newest with its C request parser.

tuswsgi's worker uses only what :mod:`tuswsgi.server.compat` lists of gunicorn;
these legs prove the range setup.py declares and that both of gunicorn's
request parsers frame requests the same.  ``.ci/install.d/gunicorn-versions.sh``
builds the venvs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, require_tool

from tuswsgi.server.compat import FLOOR

pytestmark = pytest.mark.e2e

SUITES = ["tests/server/test_framing.py", "tests/server/test_timeouts.py", "tests/server/test_faults.py",
          "tests/server/test_syscall_faults.py", "tests/server/test_zero_config.py",
          "tests/server/test_capacity.py", "tests/unit/test_compat.py"]
LEGS = {
    "floor": (Path("/opt/tuswsgi-gunicorn-floor/bin/python"), {}),
    "fast-parser": (Path("/opt/tuswsgi-gunicorn-fast/bin/python"),
                    {"GUNICORN_CMD_ARGS": "--http-parser fast"}),
}


def test_setup_py_declares_the_floor_and_no_cap():
    declared = re.search(r'"gunicorn>=([\d.]+)"', (ROOT / "setup.py").read_text())
    assert declared, "setup.py must declare gunicorn>=FLOOR, with no upper bound"
    assert FLOOR.startswith(declared[1])


@pytest.mark.skipif(os.environ.get("TUSWSGI_GUNICORN_LEG") is not None, reason="inside a leg")
@pytest.mark.parametrize("leg", LEGS)
def test_the_worker_suites_pass(leg):
    python, env = LEGS[leg]
    require_tool(f"the {leg} venv (.ci/install.d/gunicorn-versions.sh)", python.exists())
    if leg == "floor":
        version = subprocess.run([str(python), "-c", "import gunicorn; print(gunicorn.__version__)"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        assert version == FLOOR
    env = {**os.environ, **env, "TUSWSGI_GUNICORN_LEG": leg}
    result = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
