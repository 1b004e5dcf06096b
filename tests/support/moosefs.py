"""A private MooseFS on this machine, mounted several times: one mount per "host".

The master and two chunkservers run inside a network namespace made for the
run, on a veth pair (the master refuses chunkservers on a loopback address, so
127.0.0.1 cannot be used).  Every ``mfsmount`` runs in the host's namespace and
is its own client of the master, with its own session and caches: what two
machines mounting one volume would be.  Everything lives under one directory
and is torn down by :meth:`MooseFS.stop`, whatever state it is in.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from support.netns import Namespace, unique_name

#: The master never keeps a disconnected session for less than this (seconds):
#: lower values of SESSION_SUSTAIN_TIME are raised to it, with a warning.
SESSION_SUSTAIN_TIME = 60
#: The master looks for expired sessions every this many seconds...
SESSION_CHECK_INTERVAL = 10
#: ...but removes none during its first this many seconds (clients of a master
#: that just restarted get time to reconnect).
SESSION_STARTUP_GRACE = 120
HOST_ADDRESS = "10.77.0.1"
NS_ADDRESS = "10.77.0.2"
MASTER_CLIENT_PORT = 9421
CHUNKSERVER_PORTS = (9422, 9423)
MFS_TOOLS = ("mfsmaster", "mfschunkserver", "mfsmount", "mfscli", "ip")


def missing_tools() -> list[str]:
    """The programs this harness needs that are not installed."""
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in MFS_TOOLS}
    missing = [name for name, path in found.items() if path is None]
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        missing.append("fusermount3")
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse")
    return missing


def _tool(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    """``kill -9`` the process group a daemon was started in (the master forks a
    metadata writer), reap the leader, and wait until the group is gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    wait_until(lambda: not _group_exists(proc.pid), 10, f"process group {proc.pid} to exit")


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Mount:
    """One ``mfsmount``: a client of the master with its own session."""

    name: str
    path: Path
    proc: subprocess.Popen
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` the client, as if its host lost power: its session and the
        locks it holds stay on the master until the session expires."""
        if self.alive:
            self.proc.kill()
            self.proc.wait()


@dataclass
class MooseFS:
    """A master, two chunkservers and any number of mounts under ``root``."""

    root: Path
    namespace: Namespace = field(default_factory=lambda: Namespace(unique_name("tusmh"), HOST_ADDRESS,
                                                                    NS_ADDRESS))
    daemons: list = field(default_factory=list)
    mounts: dict = field(default_factory=dict)
    #: ``time.monotonic()`` when the master began to serve.
    started_at: float = 0.0

    # -- start ----------------------------------------------------------------------
    def start(self) -> MooseFS:
        """Network namespace, master, chunkservers; returns once both chunkservers
        are registered with the master (so writes can be placed)."""
        self.namespace.create()
        self._start_master()
        for number, port in enumerate(CHUNKSERVER_PORTS, 1):
            self._start_chunkserver(number, port)
        wait_until(lambda: self.chunkservers() == len(CHUNKSERVER_PORTS), 30, "chunkservers to register")
        return self

    def _daemon(self, name: str, command: list[str]) -> subprocess.Popen:
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(self.namespace.command(*command),
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.daemons.append(proc)
        return proc

    def _start_master(self) -> None:
        data = self.root / "master"
        data.mkdir(parents=True)
        shutil.copy("/var/lib/mfs/metadata.mfs.empty", data / "metadata.mfs")
        (data / "mfsexports.cfg").write_text("*  /  rw,alldirs,admin,maproot=0:0\n")
        (data / "mfstopology.cfg").write_text("")
        config = data / "mfsmaster.cfg"
        config.write_text(_config(
            WORKING_USER="root", WORKING_GROUP="root", DATA_PATH=data, NICE_LEVEL=0,
            EXPORTS_FILENAME=data / "mfsexports.cfg", TOPOLOGY_FILENAME=data / "mfstopology.cfg",
            MATOML_LISTEN_HOST=NS_ADDRESS, MATOCS_LISTEN_HOST=NS_ADDRESS, MATOCL_LISTEN_HOST=NS_ADDRESS,
            SESSION_SUSTAIN_TIME=SESSION_SUSTAIN_TIME))
        proc = self._daemon("master", [_tool("mfsmaster"), "-f", "-c", str(config)])
        wait_until(lambda: proc.poll() is not None or _port_open(NS_ADDRESS, MASTER_CLIENT_PORT), 30,
                   "the master to listen")
        if proc.poll() is not None:
            raise RuntimeError("mfsmaster exited:\n" + (self.root / "master.log").read_text())
        self.started_at = time.monotonic()

    def _start_chunkserver(self, number: int, port: int) -> None:
        data = self.root / f"chunkserver{number}"
        disk = data / "disk"
        disk.mkdir(parents=True)
        (data / "mfshdd.cfg").write_text(f"{disk}\n")
        config = data / "mfschunkserver.cfg"
        config.write_text(_config(
            WORKING_USER="root", WORKING_GROUP="root", DATA_PATH=data, NICE_LEVEL=0,
            HDD_CONF_FILENAME=data / "mfshdd.cfg", MASTER_HOST=NS_ADDRESS, BIND_HOST=NS_ADDRESS,
            CSSERV_LISTEN_HOST=NS_ADDRESS, CSSERV_LISTEN_PORT=port))
        self._daemon(f"chunkserver{number}", [_tool("mfschunkserver"), "-f", "-c", str(config)])

    def mfscli(self, dataset: str) -> list[list[str]]:
        """Rows of ``mfscli -S<dataset>`` (plain text, tab-separated)."""
        result = subprocess.run([_tool("mfscli"), "-H", NS_ADDRESS, "-P", str(MASTER_CLIENT_PORT), "-p",
                                 "-s", "\t", f"-S{dataset}"], capture_output=True, text=True, timeout=30)
        return [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]

    def chunkservers(self) -> int:
        return sum(row[0].startswith("chunk servers") for row in self.mfscli("CS"))

    def sessions(self) -> dict[str, tuple[str, str]]:
        """Mount path -> (session id, "active" or "inactive"), as the master lists them."""
        found = {}
        for row in self.mfscli("MS"):
            if row[0].startswith(("active mounts", "inactive mounts")) and len(row) > 3:
                found[row[3]] = (row[1], row[0].split()[0])
        return found

    def session_of(self, mount: Mount) -> Optional[tuple[str, str]]:
        """``mount``'s session (id, state), or None once the master dropped it."""
        return self.sessions().get(str(mount.path))

    def remove_session(self, mount: Mount) -> str:
        """What an operator does once a dead host is known to be gone for good:
        ``mfscli -CRS/<id>`` drops its session (and its locks) at once."""
        session = self.session_of(mount)
        assert session is not None and session[1] == "inactive", session
        result = subprocess.run([_tool("mfscli"), "-H", NS_ADDRESS, "-P", str(MASTER_CLIENT_PORT),
                                 f"-CRS/{session[0]}"], capture_output=True, text=True, timeout=30)
        return result.stdout + result.stderr

    def lock_release_bound(self, died: float) -> float:
        """The latest time (monotonic) the master releases the locks of a client
        that died at ``died``: SESSION_SUSTAIN_TIME after its death, but not during
        the master's startup grace, rounded up to the next session check."""
        expiry = max(died + SESSION_SUSTAIN_TIME, self.started_at + SESSION_STARTUP_GRACE)
        return expiry + SESSION_CHECK_INTERVAL

    # -- mounts -----------------------------------------------------------------------
    def mount(self, name: str, *options: str) -> Mount:
        """``mfsmount`` the volume's root on ``root/<name>``; returns once mounted."""
        path = self.root / name
        path.mkdir()
        log_path = self.root / f"mount-{name}.log"
        opts = ",".join([f"mfsmaster={NS_ADDRESS}", f"mfsport={MASTER_CLIENT_PORT}", "mfsnice=0",
                         "mfsrlimitnofile=10000", *options])
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([_tool("mfsmount"), "-f", "-o", opts, str(path)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        mount = Mount(name, path, proc, log_path)
        self.mounts[name] = mount
        wait_until(lambda: not mount.alive or os.path.ismount(path), 30, f"mount {name}")
        if not mount.alive:
            raise RuntimeError(f"mfsmount {name} exited:\n{log_path.read_text()}")
        return mount

    def unmount(self, mount: Mount) -> None:
        """Unmount (lazily if still busy or already dead) and stop its client."""
        if os.path.ismount(mount.path) or _is_listed_mount(mount.path):
            fusermount = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
            done = subprocess.run([fusermount, "-u", str(mount.path)], capture_output=True, timeout=30)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(mount.path)], capture_output=True, timeout=30)
        if mount.alive:
            try:
                mount.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                mount.kill()
        self.mounts.pop(mount.name, None)

    # -- stop -------------------------------------------------------------------------
    def stop(self) -> None:
        """Unmount everything, kill the daemons and delete the namespace.  Each
        step runs even when an earlier one failed; the data is thrown away, so the
        daemons are killed rather than asked to save their metadata."""
        errors = []
        for mount in list(self.mounts.values()):
            try:
                self.unmount(mount)
            except Exception as exc:
                errors.append(f"unmount {mount.name}: {exc}")
        for proc in reversed(self.daemons):
            _kill_group(proc)
        self.daemons.clear()
        self.namespace.delete()
        if errors:
            raise RuntimeError("; ".join(errors))


def _is_listed_mount(path: Path) -> bool:
    """A dead FUSE mount fails ``os.path.ismount`` (ENOTCONN) but is still mounted."""
    target = str(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def _config(**values: object) -> str:
    return "".join(f"{key} = {value}\n" for key, value in values.items())


def start_moosefs(root: Path, mounts: tuple[str, ...] = ("a", "b")) -> MooseFS:
    """Start a MooseFS under ``root`` with the named mounts; on any failure
    everything started so far is torn down before the error propagates."""
    fs = MooseFS(root)
    try:
        fs.start()
        for name in mounts:
            fs.mount(name)
    except BaseException:
        fs.stop()
        raise
    return fs
