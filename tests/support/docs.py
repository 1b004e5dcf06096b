"""README.md and docs/ as the tests read them: pages, links, headings, and the shell
blocks with the marker that says how each is tested (docs/testing.md):

    <!-- run -->               run by tests/server/test_docs_commands.py, as a transcript
    <!-- recipe: NAME -->      run as written by the test that asks for recipe("NAME")
    <!-- not run: REASON -->   cannot run in the suite, and says why

In a block, a comment line right below a command is output the command must print;
a comment after a blank line is narration.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from conftest import ROOT

SHELL_LANGUAGES = ("sh", "bash", "shell", "console")
MARKER = re.compile(r"<!-- (run|recipe: [\w-]+|not run: .+) -->")
FENCE = re.compile(r"^```(\S*)\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: An upload ID as the server makes them; in a transcript, it stands for the one the server chose.
UPLOAD_ID = re.compile(r"\b[0-9a-f]{32}\b")


def pages() -> list[Path]:
    """README.md and every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it is, its language, its text and its marker."""

    path: Path
    line: int
    language: str
    text: str
    marker: Optional[str]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES


def blocks(path: Path) -> list[Block]:
    found = []
    lines = path.read_text(encoding="utf-8").splitlines()
    start: Optional[int] = None
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if fence is None:
            continue
        if start is None:
            start, language = number, fence[1]
            continue
        above = lines[start - 2].strip() if start >= 2 else ""
        marker = MARKER.fullmatch(above)
        found.append(Block(path, start, language, "\n".join(lines[start:number - 1]),
                           marker[1] if marker else None))
        start = None
    assert start is None, f"{path.name}:{start}: a code block is never closed"
    return found


def shell_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks(page) if block.is_shell]


@dataclass
class Step:
    """One command of a block, and the output lines the block says it prints."""

    command: str
    expected: list[str] = field(default_factory=list)

    @property
    def program(self) -> str:
        return shlex.split(self.command, comments=True)[0]


def steps(text: str) -> list[Step]:
    found: list[Step] = []
    after_command = False
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip():
            after_command = False
        elif line.startswith("#"):
            if after_command:
                found[-1].expected.append(line[1:].strip())
        else:
            while line.endswith("\\"):
                line = line[:-1] + next(lines).strip()
            found.append(Step(line.strip()))
            after_command = True
    return found


def recipe(name: str) -> list[Step]:
    """The commands of the one block marked ``<!-- recipe: name -->``."""
    matching = [block for block in shell_blocks() if block.marker == f"recipe: {name}"]
    assert len(matching) == 1, f"{len(matching)} blocks are marked 'recipe: {name}'"
    return steps(matching[0].text)


# -- links and headings ---------------------------------------------------------------

def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        heading = re.match(r"#{1,6} (.+)", line)
        if heading and not fenced:
            base = slug(heading[1])
            anchor, n = base, 0
            while anchor in found:
                n += 1
                anchor = f"{base}-{n}"
            found.add(anchor)
    return found


def links(path: Path) -> list[str]:
    """Every link target of a page outside code, web addresses left out."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def broken_link(page: Path, target: str) -> Optional[str]:
    """Why ``target`` of ``page`` leads nowhere, or None."""
    file_part, _, fragment = target.partition("#")
    destination = (page.parent / file_part).resolve() if file_part else page
    if not destination.exists():
        return f"{target}: no such file"
    if fragment and destination.suffix == ".md" and fragment not in anchors(destination):
        return f"{target}: no heading #{fragment} in {destination.name}"
    return None


# -- running a transcript ------------------------------------------------------------------

class Transcript:
    """Runs the steps of ``run`` blocks with bash, one after another, and checks that
    each prints the lines the block shows below it.

    ``replace`` maps text of the docs to text of this run (``127.0.0.1:8000`` to the
    test server's address).  An upload ID in an expected line matches the one the
    server chose, which then replaces the documented one in later commands.
    ``NAME=value`` alone on a line sets a variable for later commands.
    """

    def __init__(self, cwd: Path, env: dict[str, str], replace: Optional[dict[str, str]] = None) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.replace = dict(replace or {})

    def _substitute(self, text: str) -> str:
        for documented, actual in self.replace.items():
            text = text.replace(documented, actual)
        return text

    def run(self, text: str) -> None:
        for step in steps(text):
            command = self._substitute(step.command)
            assignment = re.fullmatch(r"([A-Za-z_]\w*)=(\S+)", command)
            if assignment:
                self.env[assignment[1]] = shlex.split(assignment[2])[0]
                continue
            result = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            output = result.stdout.replace("\r", "").splitlines()
            if not step.expected:
                assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}"
            for expected in step.expected:
                self._expect(self._substitute(expected), output, command)

    def _expect(self, expected: str, output: list[str], command: str) -> None:
        documented_ids = UPLOAD_ID.findall(expected)
        pattern = UPLOAD_ID.sub("\0", re.escape(expected)).replace(r"\.\.\.", ".*")
        pattern = pattern.replace("\0", "([0-9a-f]{32})")
        for line in output:
            match = re.fullmatch(pattern, line.strip())
            if match:
                self.replace.update(zip(documented_ids, match.groups(), strict=True))
                return
        raise AssertionError(f"{command}\nshould print {expected!r}; it printed:\n" + "\n".join(output))

