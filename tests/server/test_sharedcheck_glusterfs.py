"""``tuswsgi check-shared-dir`` on GlusterFS, two FUSE mounts of one volume.

With default options each client caches attributes, names and data, and the
check must say NOT safe (a stale size after the other mount appended); with
the options docs/scaling-out.md names it must say safe.  tuswsgi itself is not run on
GlusterFS here: the MooseFS suite does the end-to-end checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator

import pytest
from conftest import ROOT, require_tool
from support import glusterfs

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Iterator[glusterfs.GlusterFS]:
    require_tool("root (network namespaces and FUSE mounts)", os.geteuid() == 0)
    for tool in glusterfs.missing_tools():
        require_tool(f"{tool} (see .ci/install.d/glusterfs.sh)", False)
    fs = glusterfs.start_glusterfs(tmp_path_factory.mktemp("glusterfs"))
    try:
        yield fs
    finally:
        fs.stop()


def check(first, second) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tuswsgi.cli", "check-shared-dir", str(first), str(second)],
                          env=env, capture_output=True, text=True, timeout=300)


def verdicts(report: str) -> dict[str, str]:
    """Check name -> "safe" / "NOT safe", from the report's lines."""
    found = {}
    for line in report.splitlines()[1:-1]:
        for label in ("NOT safe", "safe"):
            if line.startswith(label + " "):
                found[line[9:].split("  ")[0].strip()] = label
    return found


def test_default_options_are_flagged_not_safe(volume):
    first, second = volume.mount("default-a"), volume.mount("default-b")
    try:
        result = check(first, second)
    finally:
        volume.unmount_all()
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    found = verdicts(result.stdout)
    assert found["same directory"] == "safe" and found["flock exclusivity"] == "safe"
    assert found["size after hand-over"] == "NOT safe"
    assert "attribute-timeout=0" in result.stdout


def test_the_documented_options_are_safe(volume):
    volume.set_volume({option: "off" for option in glusterfs.SAFE_VOLUME_OFF})
    first = volume.mount("tuned-a", *glusterfs.SAFE_MOUNT_OPTIONS)
    second = volume.mount("tuned-b", *glusterfs.SAFE_MOUNT_OPTIONS)
    try:
        result = check(first, second)
    finally:
        volume.unmount_all()
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(verdicts(result.stdout).values()) == {"safe"}
