"""What setup.py declares, read without running it: the literal keywords of its
``setup()`` call.

Run as a script (``python tests/support/setupinfo.py --floors``) it prints the
oldest release each run-time dependency allows, as ``name==version`` pins, for
``.ci/install.d/dependency-floors.sh``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent.parent
#: Extras a user installs to run the server (the ``test`` extra is for developers).
RUNTIME_EXTRAS = ("metrics",)


def declared(root: Path = ROOT) -> dict[str, Any]:
    """Every keyword of ``setup()`` in ``root/setup.py`` whose value is a literal."""
    tree = ast.parse((root / "setup.py").read_text(encoding="utf-8"))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "setup"]
    assert len(calls) == 1, "setup.py must call setup() once"
    values = {}
    for keyword in calls[0].keywords:
        try:
            values[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:  # computed (long_description, packages)
            continue
    return values


def runtime_requirements(root: Path = ROOT) -> list[Requirement]:
    """``install_requires`` plus the extras a deployment may use."""
    setup = declared(root)
    lines = list(setup["install_requires"])
    for extra in RUNTIME_EXTRAS:
        lines += setup["extras_require"][extra]
    return [Requirement(line) for line in lines]


def lower_bound(specifier: SpecifierSet) -> Version:
    """The least version a ``>=`` clause allows (``0`` without one)."""
    bounds = [Version(clause.version) for clause in specifier if clause.operator == ">="]
    return max(bounds, default=Version("0"))


def floors(root: Path = ROOT) -> list[str]:
    """``name==version`` of the oldest release each run-time dependency allows."""
    pins = []
    for requirement in runtime_requirements(root):
        bound = lower_bound(requirement.specifier)
        assert bound > Version("0"), f"{requirement} has no lower bound"
        pins.append(f"{requirement.name}=={bound}")
    return pins


if __name__ == "__main__":
    if sys.argv[1:] != ["--floors"]:
        sys.exit("usage: setupinfo.py --floors")
    print(" ".join(floors()))
