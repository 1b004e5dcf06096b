"""A private GlusterFS volume on this machine, mounted twice with FUSE.

glusterd runs inside a network namespace of its own (tests/support/netns.py) with its
working directory, run directory and CLI socket under the test's directory, so
the machine's /var/lib/glusterd is never used; one brick, one volume, and each
mount is its own ``glusterfs`` client with its own caches.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from support.moosefs import wait_until
from support.netns import Namespace, unique_name

HOST_ADDRESS = "10.78.0.1"
NS_ADDRESS = "10.78.0.2"
VOLUME = "tusvol"
#: What the previous team found necessary for tuswsgi, and check-shared-dir confirms.
SAFE_MOUNT_OPTIONS = ("--attribute-timeout=0", "--entry-timeout=0", "--negative-timeout=0")
SAFE_VOLUME_OFF = ("performance.stat-prefetch", "performance.open-behind", "performance.quick-read",
                   "performance.io-cache", "performance.read-ahead")
TOOLS = ("glusterd", "gluster", "glusterfs", "ip")


def missing_tools() -> list[str]:
    return [name for name in TOOLS if not (shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin"))]


def _tool(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


@dataclass
class GlusterFS:
    root: Path
    namespace: Namespace = field(default_factory=lambda: Namespace(unique_name("tusgl"), HOST_ADDRESS,
                                                                    NS_ADDRESS))
    glusterd: Optional[subprocess.Popen] = None
    mounts: list = field(default_factory=list)
    clients: list = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.root / "run" / "glusterd.socket"

    def start(self) -> GlusterFS:
        """glusterd, then a one-brick volume, started."""
        for name in ("work", "run", "log", "brick"):
            (self.root / name).mkdir(parents=True)
        volfile = self.root / "glusterd.vol"
        volfile.write_text(
            "volume management\n    type mgmt/glusterd\n"
            f"    option working-directory {self.root / 'work'}\n"
            f"    option run-directory {self.root / 'run'}\n"
            f"    option glusterd-sockfile {self.socket}\n"
            "    option transport-type socket\n    option transport.socket.listen-port 24007\n"
            f"    option transport.socket.bind-address {NS_ADDRESS}\n"
            "    option ping-timeout 0\n    option event-threads 1\nend-volume\n")
        self.namespace.create()
        with open(self.root / "glusterd.out", "ab") as out:
            self.glusterd = subprocess.Popen(
                self.namespace.command(_tool("glusterd"), "-N", "-f", str(volfile),
                                       "-l", str(self.root / "log" / "glusterd.log")),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: self.glusterd.poll() is not None or self.socket.exists(), 30, "glusterd")
        self.cli("volume", "create", VOLUME, f"{NS_ADDRESS}:{self.root / 'brick'}", "force")
        self.cli("volume", "start", VOLUME)
        return self

    def cli(self, *args: str) -> str:
        result = subprocess.run(self.namespace.command(_tool("gluster"), f"--glusterd-sock={self.socket}",
                                                       "--mode=script", *args),
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"gluster {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def set_volume(self, options: dict[str, str]) -> None:
        for key, value in options.items():
            self.cli("volume", "set", VOLUME, key, value)

    def mount(self, name: str, *options: str) -> Path:
        """A FUSE client on ``root/<name>``; returns once mounted."""
        path = self.root / name
        path.mkdir(exist_ok=True)
        subprocess.run([_tool("glusterfs"), f"--volfile-server={NS_ADDRESS}", f"--volfile-id={VOLUME}",
                        *options, f"--log-file={self.root / 'log' / (name + '.log')}", str(path)],
                       check=True, capture_output=True, timeout=60)
        self.mounts.append(path)
        wait_until(lambda: os.path.ismount(path), 30, f"mount {name}")
        return path

    def unmount_all(self) -> None:
        for path in self.mounts:
            done = subprocess.run(["umount", str(path)], capture_output=True, timeout=60)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)
        self.mounts.clear()

    def stop(self) -> None:
        """Unmount, stop and delete the volume, kill glusterd and the brick it
        started, delete the namespace; every step runs even if one before failed."""
        self.unmount_all()
        bricks = self._bricks()
        if self.glusterd is not None and self.glusterd.poll() is None:
            for step in (("volume", "stop", VOLUME), ("volume", "delete", VOLUME)):
                try:
                    self.cli(*step)
                except RuntimeError:
                    pass
            os.killpg(self.glusterd.pid, signal.SIGKILL)
            self.glusterd.wait()
        self._kill_bricks(bricks)
        self.namespace.delete()
        brick_log = Path("/var/log/glusterfs/bricks") / (str(self.root / "brick").strip("/").replace("/", "-")
                                                         + ".log")
        brick_log.unlink(missing_ok=True)

    def _bricks(self) -> dict[int, list[str]]:
        """Our brick daemons (glusterd starts each in a session of its own), by
        the pid files under our run directory; a pid counts only if its command
        line names our brick (a stale pid file may name someone else by now)."""
        brick, found = str(self.root / "brick"), {}
        for pidfile in (self.root / "run").rglob("*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except (ValueError, OSError):
                continue
            if brick in args:
                found[pid] = args
        return found

    @staticmethod
    def _kill_bricks(bricks: dict[int, list[str]]) -> None:
        """Kill what is left of them and remove the sockets they leave in /run/gluster."""
        for pid, args in bricks.items():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10, f"brick {pid} to exit")
            if "-S" in args:
                Path(args[args.index("-S") + 1]).unlink(missing_ok=True)


def start_glusterfs(root: Path) -> GlusterFS:
    fs = GlusterFS(root)
    try:
        return fs.start()
    except BaseException:
        fs.stop()
        raise
