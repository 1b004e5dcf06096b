"""Does a directory give tuswsgi what it relies on when servers share it?

``tuswsgi check-shared-dir DIR [DIR2]`` runs these checks in a scratch
directory inside DIR and removes it afterwards.  Given DIR2, another mount of
the same directory (for a network file system: a second mount on this host, so
each has its own client and caches), every check crosses from one path to the
other, as two hosts would.  Given DIR alone, the checks that need a second
client are reported as not checked.

What tuswsgi relies on, and so what is checked (knows nothing of HTTP):

- ``flock`` on ``<id>.lock`` excludes every other holder, through any path;
- once the lock changes hands, the new holder's ``open`` + ``fstat`` sees the
  size the old holder left, and reads its bytes (the size *is* the offset);
- an ``O_APPEND`` write lands at the size ``fstat`` reported;
- ``os.replace`` of a small file (``<id>.info``) is seen at once, without ESTALE;
- a racing plain ``O_CREAT`` succeeds, or fails only with EEXIST/ESTALE, which
  :func:`tuswsgi.locking.open_shared` tolerates;
- modification times (expiry) are at least 1 s fine and agree with this clock;
- a file created in a directory appears in a listing through the other path
  within 100 ms, and a removed one disappears (the hand-over lists ``.stops/``).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

from filelock import lock_descriptor, unlock_descriptor

from .locking import open_shared

#: A listing must show a new or removed file within this (the hand-over's poll is 50 ms).
LISTING_BOUND = 0.1
#: Rounds of each repeated check.
ROUNDS = 20
#: How far a file's mtime may be from this host's clock.
CLOCK_SKEW_BOUND = 5.0
#: How long the other path may take to show the scratch directory at all.
APPEAR_TIMEOUT = 2.0

_FIX_LOCKS = ("flock is not shared between the paths: mount with cross-client locks on (NFS: not "
              "`nolock` nor `local_lock=flock|all`; MooseFS: without `mfsnobsdlocks`; GlusterFS: keep the "
              "features/locks translator); SMB/CIFS and object-store mounts cannot be used")
_FIX_ATTRS = ("attributes are cached: turn attribute caching off (NFS `actimeo=0` or `noac`; GlusterFS mount "
              "`attribute-timeout=0,entry-timeout=0,negative-timeout=0` and volume "
              "`performance.stat-prefetch off`; MooseFS `mfsattrcacheto=0`)")
_FIX_DATA = ("file data is cached across clients: turn client data caches off (GlusterFS volume "
             "`performance.quick-read off, performance.io-cache off, performance.read-ahead off, "
             "performance.open-behind off`; MooseFS `mfscachemode=AUTO` or `NO`, never `YES`)")
_FIX_APPEND = ("O_APPEND did not write at the size fstat reported: usually the attribute cache of "
               "\"size after hand-over\" (fix that first); if that check is safe, appends on this file "
               "system cannot be trusted")
_FIX_ENTRIES = ("names are cached: turn entry caching off (NFS `lookupcache=none`; GlusterFS "
                "`entry-timeout=0,negative-timeout=0`; MooseFS `mfsentrycacheto=0`)")
_FIX_CREATE = "creating a file that another client creates at once fails with an error tuswsgi cannot absorb"
_FIX_MTIME = ("modification times are coarse or off this host's clock: synchronise clocks (NTP) on every "
              "host and the file server")
_FIX_LISTING = ("directory listings are cached: turn directory caching off (NFS `actimeo=0` or "
                "`lookupcache=none`; GlusterFS `entry-timeout=0,negative-timeout=0` and volume "
                "`performance.readdir-ahead off`; MooseFS `mfsdirentrycacheto=0`)")


@dataclass
class Result:
    """One check's verdict: ``safe`` is None when it could not be checked here."""

    name: str
    safe: Optional[bool]
    detail: str
    fix: str = ""


class _Paths:
    """The scratch directory as seen through the first and the second path."""

    def __init__(self, first: str, second: str, name: str) -> None:
        self.a = os.path.join(first, name)
        self.b = os.path.join(second, name)
        self.crossing = os.path.realpath(first) != os.path.realpath(second)

    def both(self, relative: str) -> tuple[str, str]:
        return os.path.join(self.a, relative), os.path.join(self.b, relative)


def check_shared_dir(first: str, second: Optional[str] = None, rounds: int = ROUNDS) -> list[Result]:
    """Run every check in a scratch directory under ``first`` (seen through
    ``second`` too, when given); remove it afterwards.  Raises OSError when the
    scratch directory cannot be made."""
    name = f".tuswsgi-check-{secrets.token_hex(6)}"
    paths = _Paths(first, second or first, name)
    os.mkdir(paths.a)
    try:
        same = _same_directory(paths) if paths.crossing else None
        if same is not None and not same.safe:
            return [same]
        checks: list[Callable[[_Paths, int], list[Result]]] = [
            _flock, _handover, _replace, _create_race, _mtime, _listing]
        results = [same] if same is not None else []
        for check in checks:
            results += check(paths, rounds)
        if not paths.crossing:
            for result in results:
                result.detail += " (one path: this client only)"
            results.append(Result("across clients", None, "not checked: give a second mount of the same "
                                  "directory (DIR2) to check what another host would see"))
        return results
    finally:
        shutil.rmtree(paths.a, ignore_errors=True)


def is_safe(results: list[Result]) -> bool:
    return all(result.safe is not False for result in results)


def format_report(first: str, second: Optional[str], results: list[Result]) -> str:
    """Plain text: one line per check, what to change under each unsafe one, a verdict."""
    title = f"{first} and {second}" if second else f"{first} (one path)"
    lines = [f"tuswsgi check-shared-dir: {title}"]
    width = max(len(result.name) for result in results)
    for result in results:
        label = {True: "safe", False: "NOT safe", None: "-"}[result.safe]
        lines.append(f"{label:<9} {result.name:<{width}}  {result.detail}")
        if result.safe is False and result.fix:
            lines.append(f"{'':<9} {'':<{width}}  fix: {result.fix}")
    failed = sum(result.safe is False for result in results)
    verdict = "safe" if not failed else f"NOT safe ({failed} of {len(results)} checks failed)"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


# -- the checks ---------------------------------------------------------------------

def _same_directory(paths: _Paths) -> Result:
    """The two paths must name one directory, or nothing else here means anything."""
    marker_a, marker_b = paths.both("marker")
    _write(marker_a, b"here")
    seen = _within(APPEAR_TIMEOUT, lambda: os.path.exists(marker_b))
    if seen is None:
        return Result("same directory", False, f"a file made through the first path did not appear through "
                      f"the second within {APPEAR_TIMEOUT:g} s", "give two mounts of the same directory")
    return Result("same directory", True, f"a file made through the first path appeared through the second "
                  f"after {seen * 1000:.0f} ms")


def _flock(paths: _Paths, rounds: int) -> list[Result]:
    """A lock held through one path must exclude a holder through the other, and
    be free for it as soon as it is released."""
    lock_a, lock_b = paths.both("exclusive.lock")
    fds = [open_shared(lock_a, os.O_RDWR), open_shared(lock_b, os.O_RDWR)]
    try:
        failures, slowest = [], 0.0
        for number in range(rounds):
            holder, other = fds[number % 2], fds[1 - number % 2]
            if not lock_descriptor(holder, blocking=False):
                failures.append(f"round {number}: a free lock could not be taken")
                continue
            if lock_descriptor(other, blocking=False):
                failures.append(f"round {number}: both paths held the lock at once")
                unlock_descriptor(other)
            unlock_descriptor(holder)
            taken = _within(1.0, partial(lock_descriptor, other, blocking=False))
            if taken is None:
                failures.append(f"round {number}: a released lock stayed taken for 1 s")
            else:
                slowest = max(slowest, taken)
                unlock_descriptor(other)
    finally:
        for fd in fds:
            os.close(fd)
    if failures:
        return [Result("flock exclusivity", False, f"{len(failures)} of {rounds} rounds: {failures[0]}",
                       _FIX_LOCKS)]
    return [Result("flock exclusivity", True, f"{rounds} rounds: never held twice, free again within "
                   f"{slowest * 1000:.1f} ms")]


def _handover(paths: _Paths, rounds: int) -> list[Result]:
    """Append through one path under the lock, then through the other take the
    lock and check size (open + fstat) and bytes; its own append must land at the
    size it saw.  Each reader has looked at the file before, so a cache that
    keeps an old size or old bytes shows."""
    lock_a, lock_b = paths.both("handover.lock")
    data_a, data_b = paths.both("handover.data")
    _write(data_a, b"")
    sides = [(lock_a, data_a), (lock_b, data_b)]
    expected = b""
    stale_size, stale_data, misplaced = [], [], []
    for number in range(rounds):
        writer, reader = sides[number % 2], sides[1 - number % 2]
        _peek(reader[1])
        chunk = os.urandom(1000 + number * 517)
        with _locked(writer[0]):
            seen, after = _append(writer[1], chunk)
        if seen != len(expected) or after != seen + len(chunk):
            misplaced.append(f"round {number}: fstat said {seen}, the append made {after}")
        expected += chunk
        with _locked(reader[0]):
            size, content = _read_all(reader[1])
        if size != len(expected):
            stale_size.append(f"round {number}: expected {len(expected)} bytes, fstat said {size}")
        if content != expected:
            stale_data.append(f"round {number}: the bytes read differ from those written")
    return [
        _verdict("size after hand-over", stale_size, rounds,
                 "open + fstat saw the size the other path left", _FIX_ATTRS),
        _verdict("bytes after hand-over", stale_data, rounds, "read the bytes the other path wrote",
                 _FIX_DATA),
        _verdict("O_APPEND position", misplaced, rounds, "each append landed at the size fstat reported",
                 _FIX_APPEND),
    ]


def _replace(paths: _Paths, rounds: int) -> list[Result]:
    """``os.replace`` a small file through one path; read it through the other at once."""
    target_a, target_b = paths.both("record.info")
    _write(target_a, b"0")
    failures = []
    for number in range(1, rounds + 1):
        source, reader = (target_a, target_b) if number % 2 else (target_b, target_a)
        _peek(reader)
        temp = f"{source}.tmp-{number}"
        _write(temp, str(number).encode())
        os.replace(temp, source)
        try:
            with open(reader, "rb") as handle:
                found = handle.read()
        except OSError as exc:
            failures.append(f"round {number}: {errno.errorcode.get(exc.errno or 0, exc.errno)}")
            continue
        if found != str(number).encode():
            failures.append(f"round {number}: read {found!r}, the old version")
    return [_verdict("rename visibility", failures, rounds, "a replaced file read new at once, no ESTALE",
                     _FIX_ENTRIES)]


def _create_race(paths: _Paths, rounds: int) -> list[Result]:
    """Two threads create one new name at once, one through each path: plain
    ``O_CREAT`` may lose with EEXIST or ESTALE on some file systems, which
    :func:`open_shared` absorbs; anything else, or a failing ``open_shared``, is not safe."""
    raced, failures = [], []
    for number in range(rounds):
        pair = paths.both(f"race-{number}.lock")
        raced += _race(pair, lambda path: os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o644)))
        shared = paths.both(f"shared-{number}.lock")
        failures += _race(shared, lambda path: os.close(open_shared(path, os.O_RDWR)))
    unexpected = [code for code in raced if code not in (errno.EEXIST, errno.ESTALE)]
    if failures or unexpected:
        codes = sorted({errno.errorcode.get(code, str(code)) for code in failures + unexpected})
        detail = f"racing creations failed with {', '.join(codes)}"
        return [Result("O_CREAT races", False, detail, _FIX_CREATE)]
    note = (f"{len(raced)} of {rounds} plain O_CREAT losers got EEXIST/ESTALE (tolerated)" if raced
            else f"{rounds} races, no errors")
    return [Result("O_CREAT races", True, note)]


def _mtime(paths: _Paths, rounds: int) -> list[Result]:
    """Expiry compares modification times with this host's clock: they must be
    at most 1 s coarse, agree between the paths and with the clock."""
    stamp_a, stamp_b = paths.both("mtime")
    fine = False
    worst_skew = worst_disagreement = 0.0
    for number in range(rounds):
        before = time.time()
        _write(stamp_a, str(number).encode())
        after = time.time()
        mtime_a = os.stat(stamp_a).st_mtime_ns
        fine = fine or mtime_a % 1_000_000_000 != 0
        disagreement = abs(os.stat(stamp_b).st_mtime_ns - mtime_a) / 1e9
        worst_disagreement = max(worst_disagreement, disagreement)
        seconds = mtime_a / 1e9  # may be cut to the second below ``before``
        worst_skew = max(worst_skew, before - 1.0 - seconds, seconds - after)
    resolution = "finer than 1 s" if fine else "1 s"
    detail = (f"resolution {resolution}, the paths agree within {worst_disagreement:.3f} s, "
              f"this clock within {worst_skew:.1f} s")
    if worst_skew > CLOCK_SKEW_BOUND or worst_disagreement > 1.0:
        return [Result("modification times", False, detail, _FIX_MTIME)]
    return [Result("modification times", True, detail)]


def _listing(paths: _Paths, rounds: int) -> list[Result]:
    """A name created (then removed) through one path must appear in (then leave)
    ``os.scandir`` through the other within :data:`LISTING_BOUND`."""
    dir_a, dir_b = paths.both("stops")
    os.mkdir(dir_a)
    _within(APPEAR_TIMEOUT, lambda: os.path.isdir(dir_b))
    failures, slowest = [], 0.0
    for number in range(rounds):
        name = f"upload-{number}"
        _names(dir_b)
        _write(os.path.join(dir_a, name), b"")
        shown = _within(LISTING_BOUND, partial(_listed, dir_b, name, True))
        os.unlink(os.path.join(dir_a, name))
        gone = _within(LISTING_BOUND, partial(_listed, dir_b, name, False))
        if shown is None or gone is None:
            what = "appear" if shown is None else "leave"
            failures.append(f"round {number}: a name took over {LISTING_BOUND * 1000:.0f} ms to {what}")
        else:
            slowest = max(slowest, shown, gone)
    if failures:
        return [Result("listing freshness", False, f"{len(failures)} of {rounds} rounds: {failures[0]}",
                       _FIX_LISTING)]
    return [Result("listing freshness", True, f"new and removed names showed within {slowest * 1000:.1f} ms")]


# -- helpers -----------------------------------------------------------------------

def _verdict(name: str, failures: list[str], rounds: int, good: str, fix: str) -> Result:
    if failures:
        return Result(name, False, f"{len(failures)} of {rounds} rounds: {failures[0]}", fix)
    return Result(name, True, f"{rounds} rounds: {good}")


def _within(timeout: float, condition: Callable[[], bool]) -> Optional[float]:
    """Poll ``condition``; how long it took to hold, or None after ``timeout``."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return None
        time.sleep(0.001)


class _locked:
    """Hold the lock file's flock (blocking) for a ``with`` block."""

    def __init__(self, path: str) -> None:
        self.fd = open_shared(path, os.O_RDWR)

    def __enter__(self) -> None:
        lock_descriptor(self.fd, blocking=True)

    def __exit__(self, *exc: object) -> None:
        unlock_descriptor(self.fd)
        os.close(self.fd)


def _write(path: str, payload: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)


def _append(path: str, payload: bytes) -> tuple[int, int]:
    """Append as tuswsgi does; return the size fstat saw before and after."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        seen = os.fstat(fd).st_size
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        return seen, os.fstat(fd).st_size
    finally:
        os.close(fd)


def _read_all(path: str) -> tuple[int, bytes]:
    """The size ``fstat`` reports right after ``open``, and every byte."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        blocks: list[bytes] = []
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                return size, b"".join(blocks)
            blocks.append(block)
    finally:
        os.close(fd)


def _peek(path: str) -> None:
    """Look at a file (stat, open, read) so that whatever a client caches is warm."""
    try:
        os.stat(path)
        _read_all(path)
    except FileNotFoundError:
        pass


def _names(directory: str) -> set[str]:
    with os.scandir(directory) as entries:
        return {entry.name for entry in entries}


def _listed(directory: str, name: str, wanted: bool) -> bool:
    """Whether ``name``'s presence in a fresh listing of ``directory`` is ``wanted``."""
    return (name in _names(directory)) is wanted


def _race(pair: tuple[str, str], create: Callable[[str], None]) -> list[int]:
    """Run ``create`` on both paths at once; the errno of each failure."""
    barrier = threading.Barrier(2)
    errors: list[int] = []

    def run(path: str) -> None:
        barrier.wait()
        try:
            create(path)
        except OSError as exc:
            errors.append(exc.errno or 0)

    threads = [threading.Thread(target=run, args=(path,)) for path in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
