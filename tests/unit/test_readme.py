"""The README's tables are generated from the code's own tables, so they cannot drift.

Regenerate after changing a setting or an error: ``UPDATE_README=1 python -m pytest
tests/unit/test_readme.py``.
"""

import os
import re

from conftest import ROOT

from tuswsgi.config import SETTINGS
from tuswsgi.errors import ERRORS


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


def error_table() -> str:
    rows = ["| Code | Status | Meaning |", "| --- | --- | --- |"]
    rows += [f"| `{code}` | {status} | {message} |" for code, (status, message) in ERRORS.items()]
    return "\n".join(rows)


def check_block(name: str, content: str) -> None:
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    assert pattern.search(text), f"README lacks the {name} markers"
    wanted = pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)
    if os.environ.get("UPDATE_README") == "1":
        path.write_text(wanted, encoding="utf-8")
        return
    assert text == wanted, f"README {name} is stale: UPDATE_README=1 python -m pytest {__file__}"


def test_config_table_is_current():
    check_block("config-table", config_table())


def test_error_table_is_current():
    check_block("error-table", error_table())


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash .ci/install && python -m pytest" in readme
    assert "pip install . && gunicorn tuswsgi:app" in readme
    assert ci.rstrip().endswith("python -m pytest")
