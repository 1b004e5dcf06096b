"""Helpers for the deployment tests (tests/test_deploy_*.py): start a real server
from a file in deploy/, and upload through it with tuspy while a FaultProxy cuts
the connection.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlsplit

import requests
from conftest import ROOT, TUS, Server, listening_socket, port_of, settled, wait_for_port
from packaging.utils import canonicalize_name
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from support.docs import Step, recipe
from support.faultproxy import FaultProxy
from support.setupinfo import declared

DEPLOY = ROOT / "deploy"
#: What a service manager or a web server gives its children: no pyenv shims, no venv.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What a checkout holds that ``git clone`` would not give a user.
NOT_CLONED = {".git", "tests/node_modules", "build", "dist", "uploads", "tests/artifacts", "bench/.scratch",
              "bench/results"}


def start_process(command: Sequence[str], port: int, log_path: Path, *, env: dict,
                  cwd: Path, upload_dir: Path, timeout: float = 30,
                  listener: Optional[socket.socket] = None) -> Server:
    """Start a server process in its own session and wait until ``port`` answers;
    ``listener`` is a bound socket the process inherits (for ``fd://`` binds)."""
    fds = (listener.fileno(),) if listener is not None else ()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=log, pass_fds=fds,
                                stderr=subprocess.STDOUT, start_new_session=True)
    if listener is not None:
        listener.close()
    server = Server(proc, port, upload_dir, log_path)
    try:
        wait_for_port(port, proc, timeout=timeout)
    except RuntimeError as exc:
        server.stop()
        raise RuntimeError(f"{exc}\n{' '.join(command)}\n{server.log()}") from None
    return server


def start_socket_activated(command: Sequence[str], listener: socket.socket, log_path: Path, *,
                           env: dict, cwd: Path, upload_dir: Path, timeout: float = 30) -> Server:
    """``command`` as systemd starts a socket-activated service: ``listener`` (bound
    and listening, kept open by the caller as systemd keeps it) as file descriptor
    3, ``LISTEN_FDS=1`` and ``LISTEN_PID`` set to the service's own pid."""
    fd = listener.fileno()

    def as_fd_3() -> None:  # runs before Popen closes what pass_fds does not keep
        os.dup2(fd, 3)
    wrapper = ["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", *command]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(wrapper, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, pass_fds=(fd, 3), preexec_fn=as_fd_3)
    server = Server(proc, port_of(listener), upload_dir, log_path)
    try:
        wait_for_port(port_of(listener), proc, timeout=timeout)
        _wait_for_accepting(server, timeout)
    except (RuntimeError, AssertionError) as exc:
        server.stop()
        raise RuntimeError(f"{exc}\n{' '.join(command)}\n{server.log()}") from None
    return server


def _wait_for_accepting(server: Server, timeout: float) -> None:
    """A held socket takes connections before any worker runs: wait for an answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.options(f"http://127.0.0.1:{server.port}/files/", timeout=2)
            return
        except requests.RequestException:
            assert server.proc.poll() is None, f"exited with {server.proc.returncode}"
            assert time.monotonic() < deadline, "no worker answered"


def production_env(bind: str, upload_dir: Path, **extra: str) -> dict:
    """This environment without tuswsgi/gunicorn settings, plus the listen address,
    the upload directory and a small worker layout for a 2-core test machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUSWSGI_", "GUNICORN_"))}
    env.update({"TUSWSGI_BIND": bind, "TUSWSGI_UPLOAD_DIR": str(upload_dir),
                "TUSWSGI_WORKERS": "2", "TUSWSGI_THREADS": "8"})
    env.update(extra)
    return env


def start_production_gunicorn(workdir: Path, *, upload_dir: Optional[Path] = None, name: str = "gunicorn",
                              **extra: str) -> Server:
    """``gunicorn -c deploy/gunicorn.conf.py tuswsgi:app``, the documented command."""
    listener = listening_socket()
    port = port_of(listener)
    upload_dir = upload_dir or workdir / "uploads"
    command = [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py"), "tuswsgi:app"]
    return start_process(command, port, workdir / f"{name}-{port}.log", cwd=workdir,
                         env=production_env(f"fd://{listener.fileno()}", upload_dir, **extra),
                         upload_dir=upload_dir, listener=listener)


def start_stock_gunicorn(workdir: Path, worker: str, *, upload_dir: Optional[Path] = None,
                         name: str = "gunicorn", **extra: str) -> Server:
    """``gunicorn -k WORKER -w 2 --threads 8 tuswsgi:app`` with none of tuswsgi's
    gunicorn settings: the way a threaded WSGI app is commonly run."""
    listener = listening_socket()
    port = port_of(listener)
    upload_dir = upload_dir or workdir / "uploads"
    command = [sys.executable, "-m", "gunicorn", "-k", worker, "-w", "2", "--threads", "8",
               "-b", f"fd://{listener.fileno()}", "tuswsgi:app"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUSWSGI_", "GUNICORN_"))}
    env.update({"TUSWSGI_UPLOAD_DIR": str(upload_dir), **extra})
    workdir.mkdir(parents=True, exist_ok=True)
    return start_process(command, port, workdir / f"{name}-{port}.log", cwd=workdir, env=env,
                         upload_dir=upload_dir, listener=listener)


# -- installing as a user does --------------------------------------------------------

def user_env(*path: Path, **extra: str) -> dict[str, str]:
    """What a user's shell has: none of the test run's Python (no venv, no PYTHONPATH),
    the machine's pip settings and proxies kept.  ``path`` goes first on PATH."""
    kept = {"HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME"}
    env = {name: value for name, value in os.environ.items()
           if name in kept or name.startswith(("PIP_", "SSL_CERT_"))
           or name.lower().endswith(("_proxy", "_ca_bundle"))}
    env["PATH"] = os.pathsep.join([*map(str, path), SYSTEM_PATH])
    env.update(extra)
    return env


def copy_checkout(dest: Path) -> Path:
    """The checkout as ``git clone`` gives it, working-tree changes included."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(ROOT)
        return {name for name in names if (relative / name).as_posix() in NOT_CLONED
                or name in ("__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache")
                or name.endswith(".egg-info")}
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


class Recipe:
    """A recipe of docs/deploying.md, run as written in a copy of the checkout.

    Only paths change: each absolute path in ``moved`` (``/opt/tuswsgi``, ...) lives
    under ``root`` instead, and ``python3`` is ``python`` (by default the Python
    running the tests; any Python of at least setup.py's floor would do).  Steps
    whose program is in ``skip`` (``useradd``, ``systemctl``: what a test machine
    without its own systemd has not) are left out; the test says which.
    """

    def __init__(self, name: str, root: Path, *, moved: Sequence[str], skip: Sequence[str] = (),
                 python: str = sys.executable) -> None:
        self.steps = recipe(name)
        self.root = root
        self.checkout = copy_checkout(root / "checkout")
        self.moves = {path: str(root / path.lstrip("/")) for path in sorted(moved, key=len, reverse=True)}
        shims = root / "shims"
        shims.mkdir()
        python3 = shims / "python3"
        python3.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
        python3.chmod(0o755)
        self.env = user_env(shims)
        self.skipped = [step for step in self.steps if step.program in skip]
        assert {step.program for step in self.skipped} == set(skip), \
            f"the recipe no longer has a step for each of {skip}"

    def path(self, text: str) -> str:
        """``text`` with every moved path under ``root``."""
        for installed, moved in self.moves.items():
            text = re.sub(rf"(?<![\w/.]){re.escape(installed)}(?=/|\s|$)", moved, text)
        return text

    def run(self, steps: Sequence[Step], within: Sequence[str] = ()) -> None:
        """Run ``steps`` in the checkout; ``within`` prefixes each command (``nsenter``
        for a namespaced systemd)."""
        for step in steps:
            if step in self.skipped:
                continue
            command = self.path(step.command)
            result = subprocess.run([*within, "bash", "-c", command], cwd=self.checkout, env=self.env,
                                    text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
            assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout[-4000:]}"

    def command(self, step: Step) -> tuple[Path, list[str]]:
        """A step that starts a server, as a working directory and an argv to start
        it with (``cd DIR && program args``: the test starts the program itself, so
        that it can stop it)."""
        words = shlex.split(self.path(step.command), comments=True)
        cwd = self.checkout
        if words[0] == "cd":
            assert words[2] == "&&", step.command
            cwd, words = cwd / words[1], words[3:]
        return cwd, words  # a relative program is found from cwd (POSIX Popen)

    def venv_python(self, venv: str) -> Path:
        return Path(self.path(venv)) / "bin" / "python"


def installed_distribution(python: Path, cwd: Path) -> dict[str, str]:
    """Where ``python`` imports tuswsgi from, and which distributions provide it."""
    script = ("import importlib.metadata as m, json, tuswsgi; print(json.dumps({'file': tuswsgi.__file__, "
              "'names': sorted(d.metadata['Name'] for d in m.distributions() "
              "if 'tuswsgi' in (d.read_text('top_level.txt') or '').split())}))")
    result = subprocess.run([str(python), "-c", script], cwd=cwd, env=user_env(), capture_output=True,
                            text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def assert_installed_from_wheel(python: Path, cwd: Path) -> None:
    """``python`` runs the wheel's tuswsgi (not a checkout), under this project's name only."""
    found = installed_distribution(python, cwd)
    assert Path(found["file"]).is_relative_to(python.parent.parent), found
    assert "site-packages" in Path(found["file"]).parts, found
    ours = canonicalize_name(declared()["name"])
    assert [canonicalize_name(name) for name in found["names"]] == [ours], found


def substitute(text: str, pattern: str, replacement: str, count: int = 1) -> str:
    """``re.sub`` that insists the deploy file still has what the test rewrites."""
    new, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert found == count, f"expected {count} match(es) of {pattern!r} in the deploy file, found {found}"
    return new


def upload_with_cuts(target_port: int, source: Path, cuts: Sequence[Optional[int]], *,
                     chunk_size: int, scheme: str = "http", host: str = "127.0.0.1",
                     path: str = "/files/", check_location: bool = True) -> str:
    """Upload ``source`` with tuspy through a FaultProxy in front of ``target_port``
    that cuts a connection after each number of client bytes in ``cuts`` (counted per
    connection, and tuspy opens one per request: keep each below ``chunk_size``); resume
    each time with a fresh tuspy client from the server's offset; finish without a
    cut.  TLS passes through the proxy untouched.  Returns the upload's URL path.

    With ``check_location`` every Location the server sends must be the public URL
    the client used: its scheme and ``host:port`` (the proxy's port), and ``path``.

    A request cut a moment ago may still be storing what it received when the next
    client asks for the offset; the next client would then be told too little and
    its PATCH refused (a 409 that, with a large body still being sent, can arrive as
    a reset connection).  So after a cut the offset is read until it settles, as a
    patient user would; a 409 that still happens is answered by asking again.
    """
    upload_path = None
    phases = [*cuts, None]
    failures = 0
    was_cut = False
    while phases:
        cut = phases[0]
        proxy = FaultProxy(target_port, cut_after=cut)
        try:
            public = f"{scheme}://{host}:{proxy.port}"
            if was_cut:
                url = public + upload_path
                settled(lambda url=url: int(requests.head(url, headers=TUS, timeout=10)
                                            .headers["Upload-Offset"]))
            uploader = tus_client.TusClient(public + path).uploader(
                str(source), chunk_size=chunk_size, metadata={"filename": source.name},
                url=public + upload_path if upload_path else None)
            try:
                uploader.upload()
                assert cut is None, f"the upload finished before the cut at byte {cut}"
                phases.pop(0)
            except (TusUploadFailed, TusCommunicationError) as exc:
                if getattr(exc, "status_code", None) == 409:
                    failures += 1
                    assert failures < 20, "too many 409 answers"
                    time.sleep(0.1)
                else:
                    assert cut is not None, f"upload failed without an injected cut: {exc!r}"
                    assert proxy.cuts == 1, f"upload failed but the proxy did not cut: {exc!r}"
                    phases.pop(0)
                    was_cut = True
            assert uploader.url, "the server sent no Location"
            if check_location:
                assert uploader.url.startswith(public + path), \
                    f"Location {uploader.url!r} is not under the public URL {public + path!r}"
            upload_path = urlsplit(uploader.url).path
        finally:
            proxy.close()
    assert upload_path
    return upload_path


class WorldReadableDir:
    """A temporary directory that an unprivileged server user can enter.

    pytest's tmp_path lives under a 0700 directory of root's; Apache's children and
    CGI scripts run as ``www-data`` and must read the site and write the uploads.
    """

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.path.chmod(0o755)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), user, user)


def copy_packages(site_packages: Path) -> None:
    """Copy tuswsgi and its dependencies (from this test run's environment) into a
    directory on ``sys.path`` of another interpreter, readable by everyone: what
    ``pip install --target`` would do on a shared host."""
    import filelock
    import markupsafe
    import werkzeug

    import tuswsgi
    site_packages.mkdir(parents=True, exist_ok=True)
    for module in (tuswsgi, werkzeug, markupsafe, filelock):
        source = Path(module.__file__).parent
        shutil.copytree(source, site_packages / source.name,
                        ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    for root, dirs, files in os.walk(site_packages):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            full = os.path.join(root, name)
            os.chmod(full, os.stat(full).st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
