"""Settings: unit parsers, error messages naming key and value, precedence, tus.ini."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from tuswsgi import cli, config
from tuswsgi.config import (
    SETTINGS,
    ConfigError,
    find_config_file,
    load_config,
    parse_bool,
    parse_duration,
    parse_size,
)


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch):
    """No ./tus.ini is picked up by accident: every test runs in an empty directory."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_ini(path: Path, **values) -> Path:
    lines = ["[tuswsgi]", *(f"{key} = {value}" for key, value in values.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- parsers ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("1024", 1024), ("1k", 1024), ("1K", 1024), ("512K", 512 << 10),
    ("10M", 10 << 20), ("10MB", 10 << 20), ("2G", 2 << 30), ("1T", 1 << 40),
    ("1.5K", 1536), (" 3 M ", 3 << 20),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "10X", "1KK", "K", "1 0", "1e3", "0x10"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("45", 45), ("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800),
    ("2w", 1209600), ("1.5h", 5400), ("0", 0), ("10S", 10),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "-5s", "5y", "5ms", "h"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "yes", "on", " On "])
def test_parse_bool_true(text):
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", "OFF"])
def test_parse_bool_false(text):
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "maybe", "2", "enabled"])
def test_parse_bool_rejects(text):
    with pytest.raises(ValueError):
        parse_bool(text)


def test_defaults():
    cfg = load_config(None, environ={})
    assert cfg.source is None
    assert cfg.max_size == 0
    assert cfg.expiration == 7 * 86400
    assert cfg.base_path == "/files/"
    assert cfg.download is True
    assert cfg.behind_proxy is False
    assert cfg.cors_origins == ("*",)
    assert cfg.checksum_algorithms == ("md5", "sha1", "sha256", "sha512", "crc32")
    assert cfg.max_metadata_size == 16 << 10
    assert set(cfg.as_dict()) == {s.name for s in SETTINGS}


# -- bad values name the key and the value -----------------------------------------

BAD_VALUES = [
    ("max_size", "abc"), ("expiration", "forever"), ("download", "maybe"),
    ("behind_proxy", "sometimes"), ("network_timeout", "0"), ("fsync", "sometimes"),
    ("checksum_algorithms", "md5,rot13"), ("base_path", "no-slash"),
    ("max_metadata_size", "-3"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_value_in_file(tmp_path, key, value):
    ini = write_ini(tmp_path / "bad.ini", **{key: value})
    with pytest.raises(ConfigError) as info:
        load_config(str(ini), environ={})
    message = str(info.value)
    assert key in message
    assert value in message
    assert str(ini) in message


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_value_in_environment(key, value):
    env_name = "TUSWSGI_" + key.upper()
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={env_name: value})
    message = str(info.value)
    assert key in message
    assert value in message
    assert env_name in message


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_value_in_override(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, **{key: value})
    assert key in str(info.value)
    assert value in str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unknown_key_in_file_is_an_error(tmp_path):
    ini = write_ini(tmp_path / "typo.ini", max_szie="10M")
    with pytest.raises(ConfigError) as info:
        load_config(str(ini), environ={})
    assert "max_szie" in str(info.value)


def test_unknown_override_is_an_error():
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, uplod_dir="/tmp")
    assert "uplod_dir" in str(info.value)


def test_other_sections_are_ignored(tmp_path):
    ini = tmp_path / "other.ini"
    ini.write_text("[gunicorn]\nworkers = 4\n[tuswsgi]\nmax_size = 1K\n")
    assert load_config(str(ini), environ={}).max_size == 1024


def test_missing_config_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.ini"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing), environ={})
    assert str(missing) in str(info.value)


def test_malformed_config_file_is_an_error(tmp_path):
    ini = tmp_path / "broken.ini"
    ini.write_text("this is not ini\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(ini), environ={})
    assert str(ini) in str(info.value)


# -- precedence --------------------------------------------------------------------

def test_precedence_default_file_env_override(tmp_path):
    ini = write_ini(tmp_path / "p.ini", max_size="1K", expiration="1h", fsync="finish",
                    download="off")
    env = {"TUSWSGI_EXPIRATION": "2h", "TUSWSGI_FSYNC": "always"}
    cfg = load_config(str(ini), environ=env, fsync="none")
    assert cfg.max_size == 1024            # file beats default
    assert cfg.download is False           # file beats default
    assert cfg.expiration == 7200          # env beats file
    assert cfg.fsync == "none"             # override beats env and file
    assert cfg.lock_timeout == 5           # default where nobody says anything
    assert cfg.source == str(ini)


def test_tuswsgi_config_env_names_the_file(tmp_path):
    ini = write_ini(tmp_path / "elsewhere.ini", max_size="2K")
    cfg = load_config(None, environ={"TUSWSGI_CONFIG": str(ini)})
    assert cfg.max_size == 2048
    assert cfg.source == str(ini)
    assert find_config_file({"TUSWSGI_CONFIG": str(ini)}) == str(ini)


def test_tus_ini_in_cwd_is_used_when_no_env(empty_cwd, tmp_path):
    write_ini(empty_cwd / "tus.ini", max_size="3K")
    assert find_config_file({}) == "tus.ini"
    assert load_config(None, environ={}).max_size == 3072
    other = write_ini(tmp_path / "explicit.ini", max_size="4K")
    # $TUSWSGI_CONFIG wins over ./tus.ini
    assert load_config(None, environ={"TUSWSGI_CONFIG": str(other)}).max_size == 4096


def test_no_file_means_defaults():
    assert find_config_file({}) is None
    assert load_config(None, environ={}).source is None


def test_list_and_bool_overrides_accept_python_values():
    cfg = load_config(None, environ={}, cors_origins=["https://a.example", "https://b.example"],
                      download=False, max_size=10)
    assert cfg.cors_origins == ("https://a.example", "https://b.example")
    assert cfg.download is False
    assert cfg.max_size == 10


# -- tus.ini ------------------------------------------------------------------------

def test_committed_tus_ini_is_the_sample_config():
    assert (ROOT / "tus.ini").read_text(encoding="utf-8") == cli.sample_config()


def test_sample_config_lists_every_key_at_its_default(tmp_path):
    text = cli.sample_config()
    for setting in config.SETTINGS:
        assert f"# {setting.file_key} = {setting.default}".rstrip() + "\n" in text
    # Uncommented, the sample is a valid config that yields the defaults.
    ini = tmp_path / "uncommented.ini"
    ini.write_text("\n".join(line[2:] if " = " in line and line.startswith("# ") else line
                             for line in text.splitlines()))
    assert load_config(str(ini), environ={}).as_dict() == load_config(None, environ={}).as_dict()


# -- start-up with a bad value --------------------------------------------------------

def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUSWSGI_")}
    env.update(extra)
    return env


def test_lazy_app_with_bad_env_exits_4_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import tuswsgi; tuswsgi.app"], cwd=tmp_path,
        env=clean_env(TUSWSGI_MAX_SIZE="abc", TUSWSGI_UPLOAD_DIR=str(tmp_path / "u"),
                      PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "max_size" in lines[0]
    assert "abc" in lines[0]
    assert not (tmp_path / "u").exists()


def test_importing_the_package_reads_no_config(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import tuswsgi; print(tuswsgi.__version__)"], cwd=tmp_path,
        env=clean_env(TUSWSGI_MAX_SIZE="abc", PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.parametrize(("key", "value"), [("max_size", "abc"), ("expiration", "0.001s")])
def test_gunicorn_with_bad_env_stops_with_message(tmp_path, key, value):
    """A value that cannot be parsed, or one the rules refuse, stops the server at boot."""
    pytest.importorskip("gunicorn")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-w", "1", "-b", "127.0.0.1:0",
         "tuswsgi:app"], cwd=tmp_path,
        env=clean_env(**{"TUSWSGI_" + key.upper(): value}, TUSWSGI_UPLOAD_DIR=str(tmp_path / "u"),
                      PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    named = [line for line in result.stderr.splitlines() if key in line]
    assert len(named) == 1, result.stderr
    assert value in named[0]


# -- rules: values valid alone that make the server unusable ------------------------------

UNUSABLE = [
    ({"expiration": "0.001s"}, ["expiration = 0.001s", "network_timeout = 60s"]),
    ({"expiration": "1m", "network_timeout": "2m"}, ["expiration = 60s", "network_timeout = 120s"]),
    ({"expiration": "30s", "network_timeout": "30s"}, ["expiration = 30s"]),
    ({"network_timeout": "0.2s"}, ["network_timeout = 0.2s"]),
    ({"head_timeout": "0.5s"}, ["head_timeout = 0.5s"]),
    ({"max_head_size": "1K"}, ["max_head_size = 1024"]),
    ({"cors_origins": "*", "cors_allow_credentials": "on"}, ["cors_allow_credentials = on"]),
]


@pytest.mark.parametrize(("values", "named"), UNUSABLE)
def test_unusable_combinations_are_refused_naming_keys_and_values(values, named):
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, **values)
    message = str(info.value)
    assert all(text in message for text in named), message
    assert "\n" not in message


def test_every_broken_rule_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, expiration="0.001s", head_timeout="0.1s")
    assert "expiration = 0.001s" in str(info.value) and "head_timeout = 0.1s" in str(info.value)


@pytest.mark.parametrize(("values", "named"), [
    ({"expiration": "10m"}, "expiration = 600s"),
    ({"cleanup_interval": "5s"}, "cleanup_interval = 5s"),
    ({"lock_timeout": "0.5s"}, "lock_timeout = 0.5s"),
])
def test_likely_mistakes_are_warnings(values, named):
    config = load_config(None, environ={}, **values)
    assert len(config.warnings) == 1 and config.warnings[0].startswith(named), config.warnings


def test_defaults_and_production_defaults_break_no_rule():
    from tuswsgi.config import PRODUCTION_DEFAULTS, RULES
    assert load_config(None, environ={}).warnings == ()
    assert load_config(None, environ={}, **PRODUCTION_DEFAULTS).warnings == ()
    assert all(rule.severity in ("error", "warning") and rule.when and rule.why for rule in RULES)
    assert all(key in config.SETTINGS_BY_NAME for rule in RULES for key in rule.keys)


def test_expiration_zero_is_no_expiry_and_breaks_no_rule():
    assert load_config(None, environ={}, expiration="0", network_timeout="5m").warnings == ()


def test_production_defaults_apply_only_where_the_operator_said_nothing(tmp_path):
    from tuswsgi.config import PRODUCTION_DEFAULTS, apply_defaults, configured
    assert PRODUCTION_DEFAULTS == {"upload_page": "off", "client_creation_rate": "1000",
                                   "client_max_unfinished": "1000", "disk_reserve": "5%"}
    ini = tmp_path / "tus.ini"
    ini.write_text("[tuswsgi]\ncleanup_interval = 5m\n[hooks]\ntimeout = 3s\n")
    environ = {"TUSWSGI_CONFIG": str(ini), "TUSWSGI_MAX_SIZE": "1G"}
    assert configured("cleanup_interval", environ)  # from the file
    assert configured("hooks_timeout", environ)  # a [hooks] key, by its file name
    assert configured("max_size", environ)  # from the environment
    assert not configured("upload_page", environ)
    apply_defaults(environ, {"cleanup_interval": "0", "upload_page": "off", "max_size": "5"})
    assert environ == {"TUSWSGI_CONFIG": str(ini), "TUSWSGI_MAX_SIZE": "1G", "TUSWSGI_UPLOAD_PAGE": "off"}


def test_a_broken_config_file_counts_as_saying_nothing(tmp_path):
    """The app reports it, with the file's name, when it loads."""
    from tuswsgi.config import configured
    ini = tmp_path / "tus.ini"
    ini.write_text("not an ini file")
    assert not configured("upload_page", {"TUSWSGI_CONFIG": str(ini)})
    assert not configured("upload_page", {"TUSWSGI_CONFIG": str(tmp_path / "missing.ini")})
