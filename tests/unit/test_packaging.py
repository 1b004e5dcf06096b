"""What setup.py promises a user: the Python it runs on.

The floor is checked against the *oldest* release setup.py allows of each
dependency, not the newest one installed here: pip on an older Python picks an
older release (filelock 4.1.1 and later need 3.11, but on 3.10 pip takes 4.1.0,
which setup.py's ``filelock>=3.30`` allows), so only the oldest allowed release
says what a dependency needs at the least.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

from conftest import ROOT, require_tool
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from support.setupinfo import declared, lower_bound, runtime_requirements

#: Where .ci/install.d/dependency-floors.sh unpacks the oldest allowed releases.
FLOORS = Path(os.environ.get("TUSWSGI_DEPENDENCY_FLOORS", "/opt/tuswsgi-dependency-floors"))


def python_floor() -> Version:
    return lower_bound(SpecifierSet(declared()["python_requires"]))


def oldest_allowed_needs() -> dict[str, Version]:
    """Each run-time dependency -> the least Python its oldest allowed release accepts."""
    require_tool(f"the oldest allowed dependencies in {FLOORS} (.ci/install.d/dependency-floors.sh)",
                 FLOORS.is_dir())
    needs = {}
    for requirement in runtime_requirements():
        (dist,) = importlib.metadata.distributions(name=requirement.name, path=[str(FLOORS)])
        assert Version(dist.version) == lower_bound(requirement.specifier), \
            f"{FLOORS} holds {requirement.name} {dist.version}: run .ci/install.d/dependency-floors.sh"
        needs[requirement.name] = lower_bound(SpecifierSet(dist.metadata["Requires-Python"] or ""))
    return needs


def test_python_floor_is_what_the_dependencies_need():
    needs = oldest_allowed_needs()
    floor = python_floor()
    too_new = {name: str(need) for name, need in needs.items() if need > floor}
    assert not too_new, f"python_requires >={floor}, but these need more: {too_new}"
    # Not below, and not above either without a reason of tuswsgi's own.
    assert floor == max(needs.values()), f"python_requires >={floor}; the dependencies need {needs}"


def test_floor_is_the_same_everywhere():
    floor = python_floor()
    short = f"py{floor.major}{floor.minor}"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on 3.10
    assert re.findall(r'^target-version = "(.*)"$', pyproject, re.M) == [short]  # ruff
    assert re.findall(r'^python_version = "(.*)"$', pyproject, re.M) == [str(floor)]  # mypy
    versions = [Version(c.rsplit("::", 1)[1].strip()) for c in declared()["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert min(versions) == floor, versions


def test_every_python_requirement_in_the_docs_names_the_floor():
    floor = python_floor()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    claims = [(page.name, match[1]) for page in pages
              for match in re.finditer(r"Python (3\.\d+)(\+| or newer| or later)",
                                       page.read_text(encoding="utf-8"))]
    assert claims, "README.md says nowhere which Python it needs"
    assert all(Version(version) == floor for _, version in claims), claims
