"""A network namespace joined to this host by a veth pair: a test's own "server
host", for daemons that refuse loopback addresses.  Only this machine's own
addresses are used: the namespace's side and the host's side of the pair."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


def ip_tool() -> str:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"


@dataclass
class Namespace:
    """``name`` with ``inside`` (a /24 address) on its end of a veth pair and
    ``outside`` on this host's end."""

    name: str
    outside: str
    inside: str
    created: bool = False

    @property
    def veth(self) -> str:
        return f"t{self.name[-10:]}"  # interface names have at most 15 characters

    def create(self) -> Namespace:
        """Make the namespace and the pair; refuses a subnet already in use
        (a namespace left behind by a killed run: see ``ip netns list``)."""
        ip = ip_tool()
        taken = subprocess.run([ip, "-o", "addr", "show", "to", f"{self.outside}/24"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        if taken:
            raise RuntimeError(f"{self.outside}/24 is already in use (see `ip netns list`): {taken}")
        out, into = self.veth + "a", self.veth + "b"
        inside = [ip, "netns", "exec", self.name, ip]
        self.created = True
        for command in ([ip, "netns", "add", self.name],
                        [ip, "link", "add", out, "type", "veth", "peer", "name", into],
                        [ip, "link", "set", into, "netns", self.name],
                        [ip, "addr", "add", f"{self.outside}/24", "dev", out],
                        [ip, "link", "set", out, "up"],
                        [*inside, "addr", "add", f"{self.inside}/24", "dev", into],
                        [*inside, "link", "set", into, "up"],
                        [*inside, "link", "set", "lo", "up"]):
            subprocess.run(command, check=True, capture_output=True, timeout=30)
        return self

    def command(self, *args: str) -> list[str]:
        """``args`` run inside the namespace."""
        return [ip_tool(), "netns", "exec", self.name, *args]

    def delete(self) -> None:
        """Remove the namespace (which takes its end of the pair) and this end.
        Call once no process runs inside any more."""
        if self.created:
            subprocess.run([ip_tool(), "netns", "delete", self.name], capture_output=True, timeout=30)
            subprocess.run([ip_tool(), "link", "delete", self.veth + "a"], capture_output=True, timeout=30)
            self.created = False


def unique_name(prefix: str) -> str:
    return f"{prefix}{os.getpid()}"
