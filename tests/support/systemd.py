"""systemd itself for the deployment tests: Debian's systemd as PID 1 of a PID and
mount namespace of its own, so that ``systemctl`` commands run as written.

What it may change stays in the namespace or under ``root``:

* ``/etc``, ``/opt`` and ``/var/lib`` are overlays whose upper layers live under
  ``root``: ``useradd``, the venv, the units and the uploads land there, and the
  machine's own files are never written;
* ``/run`` is a tmpfs of its own, and ``/dev/console`` (where systemd and the
  services it starts write) is a pseudo-terminal copied to ``root/console.log``;
* systemd loads units only from ``/etc/systemd/system`` and from the empty
  targets below, and runs no generators: none of the machine's units (temporary
  file cleanup, timers, getty) can start;
* ``container=`` makes it leave every mount and device alone when it ends.

The network is the machine's, so a socket unit listens where it says.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence

SYSTEMD = "/lib/systemd/systemd"
#: The targets a service's and a socket's default dependencies name, empty.
TARGETS = ["sysinit", "basic", "sockets", "shutdown", "slices", "timers", "paths", "network",
           "local-fs", "multi-user"]
#: The target systemd boots into, and returns to before it ends (``isolate``).
BOOT = "tuswsgi-tests"
OVERLAID = ["etc", "opt", "var/lib"]
#: systemd's own settings, in the overlay of /etc (they outlive a daemon-reload,
#: which command-line options do not): its lines and its services' on the console.
MANAGER = """[Manager]
LogTarget=console
DefaultStandardOutput=tty
DefaultStandardError=tty
"""


class Systemd:
    """One systemd, booted into an empty target; :meth:`within` runs a command
    beside it, :meth:`systemctl` talks to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.console = root / "console.log"
        self.proc: subprocess.Popen | None = None
        self.pid = 0
        self._slave = -1

    def start(self, timeout: float = 30) -> None:
        units = self.root / "units"
        units.mkdir(parents=True)
        for target in TARGETS:
            (units / f"{target}.target").write_text(f"[Unit]\nDescription={target} (tests)\n"
                                                    "DefaultDependencies=no\n")
        (units / f"{BOOT}.target").write_text("[Unit]\nDescription=tuswsgi tests\nAllowIsolate=yes\n")
        (units / "system.slice").write_text("[Unit]\nDefaultDependencies=no\n[Slice]\n")
        (self.root / "generators").mkdir()
        console = self._console()
        with open(self.root / "unshare.log", "wb") as errors:
            self.proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount", "--mount-proc",
                                          "--propagation", "private", "bash", "-c",
                                          self._boot_script(units, console)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.pid:
            self.pid = _child_of(self.proc.pid)
            self._check(deadline, "no systemd process")
        while self.within(["systemctl", "is-system-running"], check=False).stdout.strip() != "running":
            self._check(deadline, "systemd did not reach running")

    def _console(self) -> str:
        """A pseudo-terminal for systemd's console (it will not write to a plain file),
        copied to :attr:`console` as it comes, so that writers never block; its path."""
        master, slave = os.openpty()
        path = os.ttyname(slave)

        def copy() -> None:
            with open(self.console, "ab", buffering=0) as log:
                try:
                    while data := os.read(master, 65536):
                        log.write(data)
                except OSError:  # EIO: every writer is gone
                    pass
                finally:
                    os.close(master)
        self.console.touch()
        threading.Thread(target=copy, daemon=True).start()
        self._slave = slave  # open until systemd ends, so the copy sees no early end
        return path

    def _boot_script(self, units: Path, console: str) -> str:
        lines = ["set -e", "mount -t tmpfs tmpfs /run",
                 f"mount --bind {shlex.quote(console)} /dev/console"]
        for directory in OVERLAID:
            upper, work = self.root / "upper" / directory, self.root / "work" / directory
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            lines.append(f"mount -t overlay overlay -o lowerdir=/{directory},upperdir={upper},workdir={work}"
                         f" /{directory}")
        settings = self.root / "upper/etc/systemd/system.conf.d"
        settings.mkdir(parents=True)
        (settings / "tuswsgi-tests.conf").write_text(MANAGER)
        generators = self.root / "generators"
        lines.append(" ".join([
            "exec env container=tuswsgi-tests", f"SYSTEMD_UNIT_PATH=/etc/systemd/system:{units}",
            f"SYSTEMD_GENERATOR_PATH={generators}", f"SYSTEMD_ENVIRONMENT_GENERATOR_PATH={generators}",
            SYSTEMD, "--system", f"--unit={BOOT}.target"]))
        return "\n".join(lines)

    def _check(self, deadline: float, what: str) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what}:\n{(self.root / 'unshare.log').read_text()}\n{self.log()}")
        time.sleep(0.1)

    def within(self, argv: Sequence[str], *, cwd: Path = Path("/"), env: dict[str, str] | None = None,
               check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """``argv`` in systemd's namespaces (its files, its processes)."""
        result = subprocess.run([*self.prefix(cwd), *argv], env=env, capture_output=True, text=True,
                                timeout=timeout)
        if check:
            assert result.returncode == 0, f"{shlex.join(argv)}: exit {result.returncode}\n" \
                                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        return result

    def prefix(self, cwd: Path) -> list[str]:
        """What runs a command in systemd's namespaces, in ``cwd``."""
        return ["nsenter", "-t", str(self.pid), "-m", "-p", f"--wd={cwd}"]

    def systemctl(self, *args: str) -> str:
        return self.within(["systemctl", "--no-pager", *args]).stdout

    def path(self, inside: str) -> Path:
        """Where a file systemd's services wrote under an overlaid directory is."""
        relative = inside.lstrip("/")
        assert any(relative.startswith(directory + "/") for directory in OVERLAID), inside
        return self.root / "upper" / relative

    def log(self) -> str:
        return self.console.read_text(errors="replace")

    def stop(self) -> None:
        """Stop every unit (which removes what they made, such as ``PrivateTmp=``'s
        directories in the machine's ``/tmp``), then end systemd and, with it, every
        process of its namespace.  Safe after a failed :meth:`start`."""
        if self.proc is None:
            return
        if self.pid and self.proc.poll() is None:
            self.within(["systemctl", "isolate", f"{BOOT}.target"], check=False, timeout=120)
            deadline = time.monotonic() + 10  # it removes those directories in a child of its own
            while _child_of(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        elif self.proc.poll() is None:  # it never started systemd
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1


def _child_of(pid: int) -> int:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0
    return int(children[0]) if children else 0
