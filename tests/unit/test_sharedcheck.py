"""tuswsgi.sharedcheck and ``tuswsgi check-shared-dir``, on local directories.

A local directory is what one host sees; the file systems a check must flag are
imitated by replacing the primitive each check relies on.  The real two-client
case runs on MooseFS in tests/server/test_multihost_moosefs.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from tuswsgi import sharedcheck


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tuswsgi.cli", "check-shared-dir", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def by_name(results: list[sharedcheck.Result]) -> dict[str, sharedcheck.Result]:
    return {result.name: result for result in results}


def test_a_local_directory_alone_is_safe_and_left_clean(tmp_path: Path):
    result = run_cli(str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"tuswsgi check-shared-dir: {tmp_path} (one path)"
    assert lines[-1] == "verdict: safe"
    checks = {line.split()[1] for line in lines[1:-1] if line.startswith("safe")}
    assert {"flock", "size", "bytes", "O_APPEND", "rename", "O_CREAT", "modification", "listing"} <= checks
    assert any(line.startswith("-") and "across clients" in line for line in lines)
    assert list(tmp_path.iterdir()) == []


def test_two_paths_to_one_local_directory_are_checked_as_one_client(tmp_path: Path):
    (tmp_path / "link").symlink_to(tmp_path)
    results = sharedcheck.check_shared_dir(str(tmp_path), str(tmp_path / "link"), rounds=3)
    assert sharedcheck.is_safe(results)
    assert by_name(results)["across clients"].safe is None


def test_two_different_directories_are_not_one_shared_directory(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sharedcheck, "APPEAR_TIMEOUT", 0.05)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    results = sharedcheck.check_shared_dir(str(tmp_path / "one"), str(tmp_path / "two"), rounds=3)
    assert [(r.name, r.safe) for r in results] == [("same directory", False)]
    assert not sharedcheck.is_safe(results)


def test_locks_that_do_not_exclude_are_not_safe(tmp_path: Path, monkeypatch):
    """A file system whose flock is local to each client: every lock succeeds."""
    monkeypatch.setattr(sharedcheck, "lock_descriptor", lambda fd, blocking=True: True)
    monkeypatch.setattr(sharedcheck, "unlock_descriptor", lambda fd: None)
    flock = by_name(sharedcheck.check_shared_dir(str(tmp_path), rounds=3))["flock exclusivity"]
    assert flock.safe is False
    assert "both paths held the lock at once" in flock.detail
    assert "nolock" in flock.fix


def test_a_stale_size_after_hand_over_is_not_safe(tmp_path: Path, monkeypatch):
    """A client that caches attributes: fstat after open reports the size it saw before."""
    real = sharedcheck._read_all
    cached: dict[str, int] = {}

    def stale_read(path: str) -> tuple[int, bytes]:
        size, content = real(path)
        return cached.setdefault(path, size), content

    monkeypatch.setattr(sharedcheck, "_read_all", stale_read)
    results = by_name(sharedcheck.check_shared_dir(str(tmp_path), rounds=4))
    assert results["size after hand-over"].safe is False
    assert "attribute-timeout=0" in results["size after hand-over"].fix
    assert results["bytes after hand-over"].safe is True


def test_a_slow_listing_is_not_safe(tmp_path: Path, monkeypatch):
    """A client that caches directory listings never shows the new name."""
    monkeypatch.setattr(sharedcheck, "_names", lambda directory: set())
    listing = by_name(sharedcheck.check_shared_dir(str(tmp_path), rounds=2))["listing freshness"]
    assert listing.safe is False
    assert "took over 100 ms to appear" in listing.detail


def test_an_append_that_lands_elsewhere_is_not_safe(tmp_path: Path, monkeypatch):
    """MooseFS after a writer died: O_APPEND writes past the size fstat reported."""
    real = sharedcheck._append

    def misplaced(path: str, payload: bytes) -> tuple[int, int]:
        seen, after = real(path, payload)
        return seen, after + 7

    monkeypatch.setattr(sharedcheck, "_append", misplaced)
    append = by_name(sharedcheck.check_shared_dir(str(tmp_path), rounds=2))["O_APPEND position"]
    assert append.safe is False


def test_racing_creations_that_lose_with_eexist_are_tolerated(tmp_path: Path, monkeypatch):
    """MooseFS answers EEXIST to the loser of a plain O_CREAT race; open_shared retries."""
    real_open = os.open
    lost: set[str] = set()

    def losing_open(path, flags, mode=0o777, **kwargs):
        name = os.path.basename(path)
        if name.startswith("race-") and name not in lost and flags & os.O_CREAT:
            lost.add(name)
            raise FileExistsError(17, "File exists")
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(sharedcheck.os, "open", losing_open)
    race = by_name(sharedcheck.check_shared_dir(str(tmp_path), rounds=3))["O_CREAT races"]
    assert race.safe is True
    assert race.detail.startswith("3 of 3 plain O_CREAT losers got EEXIST")


def test_the_report_says_what_to_change(tmp_path: Path):
    results = [sharedcheck.Result("flock exclusivity", True, "fine"),
               sharedcheck.Result("listing freshness", False, "slow", "turn directory caching off")]
    report = sharedcheck.format_report("/a", "/b", results).splitlines()
    assert report[0] == "tuswsgi check-shared-dir: /a and /b"
    assert report[2].startswith("NOT safe  listing freshness")
    assert report[3].strip() == "fix: turn directory caching off"
    assert report[-1] == "verdict: NOT safe (1 of 2 checks failed)"


@pytest.mark.parametrize("args", [("/nonexistent-dir",), (".", "/nonexistent-dir")])
def test_a_missing_directory_cannot_be_checked(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "is not a directory" in result.stderr


def test_an_unsafe_directory_exits_1(tmp_path: Path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    result = run_cli(str(tmp_path / "one"), str(tmp_path / "two"))
    assert result.returncode == 1, result.stdout
    assert "NOT safe  same directory" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("verdict: NOT safe")
