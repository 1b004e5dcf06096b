"""The ``tuswsgi`` command and the ``[hooks]`` section: what test_cli.py does not cover."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from tuswsgi import cli
from tuswsgi.config import SETTINGS


def run(tmp_path: Path, *args: str, **env: str):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUSWSGI_")}
    full_env.update(TUSWSGI_UPLOAD_DIR=str(tmp_path / "uploads"), PYTHONPATH=str(ROOT), **env)
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "tuswsgi.cli", *args], cwd=work, env=full_env,
                          capture_output=True, text=True, timeout=60)


def values(result) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split(" = ", 1) for line in result.stdout.splitlines()[1:])


def test_hooks_section_of_the_file_and_env_overrides(tmp_path):
    ini = tmp_path / "tus.ini"
    ini.write_text("[tuswsgi]\nmetrics = on\n\n[hooks]\ndir = /srv/hooks\n"
                   "http = http://127.0.0.1:9000/hooks\nhttp_forward_headers = Authorization, Cookie\n"
                   "enabled = pre-create post-finish\nprogress_interval = 2s\n")
    result = values(run(tmp_path, "-c", str(ini), "check-config"))
    assert result["hooks_dir"] == "/srv/hooks"
    assert result["hooks_http"] == "http://127.0.0.1:9000/hooks"
    assert result["hooks_http_forward_headers"] == "Authorization,Cookie"
    assert result["hooks_enabled"] == "pre-create,post-finish"
    assert result["hooks_progress_interval"] == "2.0"
    assert result["metrics"] == "on"
    result = values(run(tmp_path, "-c", str(ini), "check-config",
                        TUSWSGI_HOOKS_DIR="/env/hooks", TUSWSGI_HOOKS_PROGRESS_INTERVAL="0.5",
                        TUSWSGI_HOOKS_PYTHON="json:dumps", TUSWSGI_LOG_FORMAT="json"))
    assert result["hooks_dir"] == "/env/hooks"  # the environment wins over the file
    assert result["hooks_progress_interval"] == "0.5"
    assert result["hooks_python"] == "json:dumps"
    assert result["hooks_http"] == "http://127.0.0.1:9000/hooks"
    assert result["log_format"] == "json"


@pytest.mark.parametrize(("env", "key"), [
    ({"TUSWSGI_HOOKS_ENABLED": "pre-create,pre-upload"}, "hooks_enabled"),
    ({"TUSWSGI_HOOKS_TIMEOUT": "0"}, "hooks_timeout"),
    ({"TUSWSGI_HOOKS_HTTP_RETRIES": "-1"}, "hooks_http_retries"),
    ({"TUSWSGI_HOOKS_PROGRESS_INTERVAL": "often"}, "hooks_progress_interval"),
    ({"TUSWSGI_LOG_FORMAT": "xml"}, "log_format"),
    ({"TUSWSGI_METRICS": "maybe"}, "metrics"),
])
def test_bad_hook_and_observability_settings_exit_2(tmp_path, env, key):
    result = run(tmp_path, "check-config", **env)
    assert result.returncode == 2
    assert key in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_value_in_the_hooks_section_of_the_file_exits_2(tmp_path):
    ini = tmp_path / "tus.ini"
    ini.write_text("[hooks]\nhttp_backoff = soon\n")
    result = run(tmp_path, "-c", str(ini), "check-config")
    assert result.returncode == 2
    assert "hooks_http_backoff" in result.stderr and "soon" in result.stderr


def test_bad_value_in_the_hooks_section_names_that_section(tmp_path):
    ini = tmp_path / "tus.ini"
    ini.write_text("[hooks]\nhttp_backoff = soon\n")
    result = run(tmp_path, "-c", str(ini), "check-config")
    assert "[hooks]" in result.stderr


@pytest.mark.parametrize("command", ["check-config", "list"])
def test_unimportable_python_hook_is_a_configuration_error(tmp_path, command):
    result = run(tmp_path, command, TUSWSGI_HOOKS_PYTHON="no_such_module:hook")
    assert result.returncode == 2
    assert "hooks_python" in result.stderr and "Traceback" not in result.stderr


def test_sample_config_documents_every_hooks_key_under_its_section():
    text = cli.sample_config()
    hooks_part = text.split("\n[hooks]\n", 1)[1]
    for setting in SETTINGS:
        if setting.section == "hooks":
            assert f"# {setting.file_key} = {setting.default}".rstrip() in hooks_part, setting.name
            assert not setting.file_key.startswith("hooks_")
    assert "# metrics = off" in text and "# log_format = text" in text
