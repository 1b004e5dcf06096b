"""What setup.py promises a user: the Python it runs on, and a distribution name that
is ours, so that every install line in the docs installs this project.

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
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, require_tool
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
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


# -- the name: every install line fetches this project ----------------------------------

#: A pip command, from ``pip`` to the end of its shell command: a closing backtick, an
#: operator, or a comment.
PIP_COMMAND = re.compile(r"\bpip3? (?:install|wheel|download)\b(?P<args>.*?)(?=`|&&|\|\||;|\||\s#|$)", re.M)
#: Options followed by a value that is not a requirement.
VALUE_OPTIONS = {"-t", "--target", "-w", "--wheel-dir", "-d", "--dest", "--prefix", "--root"}
#: Options that take requirements from elsewhere, which no page should need.
FOREIGN_SOURCES = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
                   "-f", "--find-links"}
#: Where install instructions live: the pages and the deployment files' own comments.
INSTALL_TEXTS = ["README.md", "docs/*.md", "deploy/*", "deploy/.htaccess"]


def pip_commands(text: str) -> list[str]:
    """Every ``pip install``/``wheel``/``download`` in ``text`` (continued lines joined)."""
    text = text.replace("\\\n", " ")
    return [f"pip {match[0].split()[1]}{match['args']}".strip() for match in PIP_COMMAND.finditer(text)]


def requirement_words(command: str) -> list[str]:
    words = shlex.split(command)[2:]
    found, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word.split("=", 1)[0] in FOREIGN_SOURCES:
            found.append(word)  # never ours
        elif word in VALUE_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            found.append(word)
    return found


def is_this_project(word: str) -> bool:
    """``word`` names the checkout (``.``), a wheel built from it, or the distribution
    by its own name, with extras setup.py declares."""
    setup = declared()
    match = re.fullmatch(r"(?P<base>[^\[\]]+)(?:\[(?P<extras>[\w,-]+)\])?", word)
    if match is None:
        return False
    extras = set(filter(None, (match["extras"] or "").split(",")))
    if not extras <= set(setup["extras_require"]):
        return False
    base = match["base"]
    if base in (".", "./"):
        return True
    if base.endswith(".whl"):
        stem = canonicalize_name(setup["name"]).replace("-", "_")  # a wheel's file name
        wheel = rf"{stem}-(\*|{re.escape(setup['version'])}-py3-none-any)\.whl"
        return re.fullmatch(wheel, Path(base).name) is not None
    try:
        requirement = Requirement(word)
    except InvalidRequirement:
        return False
    return canonicalize_name(requirement.name) == canonicalize_name(setup["name"]) and not requirement.url


@pytest.mark.parametrize("command, ours", [
    ("pip install .", True),
    ("pip install '.[metrics]'", True),
    ("python -m pip install -e '.[test]'", True),
    ("python3 -m pip wheel --no-deps -w dist .", True),
    ("venv/bin/pip install dist/tuswsgi_server-*.whl", True),
    ("pip install --target lib tuswsgi_server-*.whl", True),
    ("pip install 'tuswsgi-server[metrics]'", True),
    ("pip install tuswsgi", False),  # PyPI's tuswsgi is another project
    ("pip install 'tuswsgi[metrics]'", False),
    ("pip install --target lib tuswsgi", False),
    ("pip install dist/tuswsgi-0.1.0-py3-none-any.whl", False),
    ("pip install . flask", False),
    ("pip install '.[nosuchextra]'", False),
    ("pip install -r requirements.txt", False),
    ("pip install --index-url https://example.org/simple .", False),
])
def test_what_counts_as_this_project(command, ours):
    (found,) = pip_commands(f"`{command}`")
    words = requirement_words(found)
    assert bool(words) and all(map(is_this_project, words)) is ours, words


def test_every_pip_command_in_the_docs_installs_this_project():
    texts = {path.relative_to(ROOT): path.read_text(encoding="utf-8")
             for pattern in INSTALL_TEXTS for path in sorted(ROOT.glob(pattern)) if path.is_file()}
    commands = [(path, command) for path, text in texts.items() for command in pip_commands(text)]
    assert any(path.name == "README.md" for path, _ in commands), "README.md installs nothing"
    # grep -n "pip install": no line escapes the parse above
    lines = sum(line.count("pip install") for text in texts.values() for line in text.splitlines())
    assert lines == sum(command.startswith("pip install") for _, command in commands)
    foreign = [(str(path), command) for path, command in commands
               if not (words := requirement_words(command)) or not all(map(is_this_project, words))]
    assert not foreign, foreign


def test_the_version_is_declared_once():
    import tuswsgi
    assert declared()["version"] == tuswsgi.__version__
