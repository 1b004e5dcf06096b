"""README.md is the front door and docs/ the rooms behind it; this keeps them true.

The settings table (docs/configuration.md) and the error table (docs/errors.md) are
generated from the code's own tables, so they cannot drift.  Regenerate them after
changing a setting or an error: ``UPDATE_README=1 python -m pytest tests/unit/test_readme.py``.
Every link must lead somewhere, every page must be reachable from the README, and
every shell block must say how it is tested (docs/testing.md).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

import pytest
from conftest import ROOT
from support.docs import MARKER, anchors, blocks, broken_link, links, pages, shell_blocks, slug, steps

from tuswsgi.config import RULES, SETTINGS
from tuswsgi.errors import ERRORS

DOCS = ROOT / "docs"


def repo_files(*patterns: str) -> list[Path]:
    """Files of the checkout whose path matches one of ``patterns`` (``*`` spans
    directories), without .git and tests/node_modules."""
    found = []
    for directory, subdirectories, names in os.walk(ROOT):
        subdirectories[:] = [name for name in subdirectories
                             if name not in (".git", "node_modules", "__pycache__")]
        for name in names:
            path = Path(directory, name)
            if any(fnmatch.fnmatch(path.relative_to(ROOT).as_posix(), pattern) for pattern in patterns):
                found.append(path)
    return sorted(found)


def config_table() -> str:
    rows = ["| Key | Default | Environment | Meaning |", "| --- | --- | --- | --- |"]
    for setting in SETTINGS:
        key = setting.file_key if setting.section == "tuswsgi" else \
            f"[{setting.section}] {setting.file_key}"
        default = f"`{setting.default}`" if setting.default else "(empty)"
        if setting.production is not None:
            default += f" (deployed: `{setting.production}`)"
        rows.append(f"| `{key}` | {default} | `TUSWSGI_{setting.name.upper()}` | {setting.help} |")
    return "\n".join(rows)


def rules_table() -> str:
    rows = ["| Settings | When | Start-up and `check-config` | Why |", "| --- | --- | --- | --- |"]
    for rule in RULES:
        verdict = "refuse" if rule.severity == "error" else "warn"
        keys = ", ".join(f"`{key}`" for key in rule.keys)
        rows.append(f"| {keys} | {rule.when} | {verdict} | {rule.why} |")
    return "\n".join(rows)


def error_table() -> str:
    rows = ["| Code | Status | Meaning |", "| --- | --- | --- |"]
    rows += [f"| `{code}` | {status} | {message} |" for code, (status, message) in ERRORS.items()]
    return "\n".join(rows)


def check_block(path: Path, name: str, content: str) -> None:
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    assert pattern.search(text), f"{path.name} lacks the {name} markers"
    wanted = pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)
    if os.environ.get("UPDATE_README") == "1":
        path.write_text(wanted, encoding="utf-8")
        return
    assert text == wanted, f"{path.name}: {name} is stale: UPDATE_README=1 python -m pytest {__file__}"


def test_config_table_is_current():
    check_block(DOCS / "configuration.md", "config-table", config_table())


def test_rules_table_is_current():
    check_block(DOCS / "configuration.md", "config-rules", rules_table())


def test_error_table_is_current():
    check_block(DOCS / "errors.md", "error-table", error_table())


def test_each_generated_table_lives_in_one_place():
    for name in ("config-table", "config-rules", "error-table"):
        holders = [page.name for page in pages()
                   if f"<!-- {name}:start -->" in page.read_text(encoding="utf-8")]
        assert len(holders) == 1, (name, holders)


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash .ci/install && python -m pytest" in readme
    assert "pip install . && gunicorn tuswsgi:app" in readme
    assert ci.rstrip().endswith("python -m pytest")


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move the detail to docs/"


def test_readme_lists_every_docs_page():
    listed = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    unlisted = [page.name for page in pages()[1:] if page.resolve() not in listed]
    assert not unlisted, f"README.md's Documentation section lacks {unlisted}"


@pytest.mark.parametrize("page", [*pages(), ROOT / "bench" / "README.md"], ids=lambda page: page.name)
def test_every_link_leads_somewhere(page):
    broken = [why for target in links(page) if (why := broken_link(page, target))]
    assert not broken, broken


def test_docs_pages_named_elsewhere_exist():
    """deploy/, the package, the benchmarks and setup.py point readers at docs pages."""
    texts = repo_files("deploy/*", "deploy/.htaccess", "tuswsgi/*.py", "bench/*", "setup.py", ".ci/**/*",
                       "tests/**/*.py")
    named = {(path.name, match) for path in texts
             for match in re.findall(r"docs/[\w-]+\.md", path.read_text(encoding="utf-8", errors="replace"))}
    missing = [(name, page) for name, page in named if not (ROOT / page).exists()]
    assert not missing, missing


def test_nothing_points_at_readme_sections_that_moved():
    """The README keeps no reference sections: a pointer into it names docs/ instead."""
    texts = repo_files("deploy/*", "tuswsgi/*.py", "bench/*.py", "tests/**/*.py")
    stale = [(path.name, line.strip()) for path in texts
             for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
             if re.search(r"(see|See|Install:) README\b", line)]
    assert not stale, stale


def test_slugs_are_githubs():
    assert slug("nginx in front (TLS)") == "nginx-in-front-tls"
    assert slug('Passenger (cPanel "Setup Python App", Plesk)') == "passenger-cpanel-setup-python-app-plesk"
    assert slug("The `tuswsgi` command") == "the-tuswsgi-command"
    assert slug("Apache with mod_wsgi") == "apache-with-mod_wsgi"
    assert slug("5. The store") == "5-the-store"
    assert "capacity" in anchors(DOCS / "performance.md")


# -- shell blocks: each says how it is tested ---------------------------------------------

def test_every_shell_block_says_how_it_is_tested():
    unmarked = [block.where for block in shell_blocks() if block.marker is None]
    assert not unmarked, f"add <!-- run -->, <!-- recipe: NAME --> or <!-- not run: why --> above {unmarked}"


def test_markers_sit_only_on_shell_blocks():
    for page in pages():
        markers = [line for line in page.read_text(encoding="utf-8").splitlines() if MARKER.fullmatch(line)]
        used = [block for block in blocks(page) if block.marker is not None]
        assert len(markers) == len(used) and all(block.is_shell for block in used), page.name


def test_every_recipe_is_run_by_a_test():
    names = [block.marker.split(": ", 1)[1] for block in shell_blocks()
             if block.marker and block.marker.startswith("recipe: ")]
    assert len(names) == len(set(names)), names
    assert {"run", "gunicorn", "systemd"} <= set(names)
    tests = "\n".join(path.read_text(encoding="utf-8") for path in repo_files("tests/**/test_*.py"))
    unused = [name for name in names if f'Recipe("{name}"' not in tests and f'recipe("{name}")' not in tests]
    assert not unused, f"no test runs the recipes {unused}"


def test_run_blocks_are_commands():
    for block in shell_blocks():
        if block.marker == "run":
            assert steps(block.text), block.where
