"""The ``tuswsgi`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TUS, create, data_file, patch
from werkzeug.test import Client

from tuswsgi import TusApp, cli
from tuswsgi.config import SETTINGS, load_config


def run(tmp_path: Path, upload_dir: Path, *args: str, **env: str):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUSWSGI_")}
    full_env.update(TUSWSGI_UPLOAD_DIR=str(upload_dir), PYTHONPATH=str(ROOT), **env)
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "tuswsgi.cli", *args], cwd=work, env=full_env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def uploads(upload_dir):
    """Three uploads: finished, partial (named), and expired-by-age."""
    app = TusApp(load_config(None, environ={}, upload_dir=str(upload_dir), expiration="1h"))
    client = Client(app)
    finished = create(client, 5, Upload_Metadata="filename ZG9uZS50eHQ=")  # done.txt
    patch(client, finished, b"hello", 0)
    partial = create(client, 10, Upload_Metadata="filename cGFydC5iaW4=")  # part.bin
    patch(client, partial, b"abc", 0)
    stale = create(client, 10)
    patch(client, stale, b"xy", 0)
    info = data_file(upload_dir, stale).with_suffix(".info")
    record = json.loads(info.read_text())
    record["created"] -= 7200
    info.write_text(json.dumps(record))
    old = time.time() - 7200
    os.utime(data_file(upload_dir, stale), (old, old))
    return {name: path.rsplit("/", 1)[1] for name, path in
            (("finished", finished), ("partial", partial), ("stale", stale))}


def test_check_config_prints_every_key(tmp_path, upload_dir):
    result = run(tmp_path, upload_dir, "check-config", TUSWSGI_MAX_SIZE="10M")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "OK" in lines[0] and "built-in defaults" in lines[0]
    values = dict(line.split(" = ", 1) for line in lines[1:])
    assert set(values) == {s.name for s in SETTINGS}
    assert values["max_size"] == str(10 << 20)
    assert values["upload_dir"] == str(upload_dir)
    assert values["download"] == "on"
    assert not upload_dir.exists()  # checking does not create the directory


def test_check_config_with_file(tmp_path, upload_dir):
    ini = tmp_path / "my.ini"
    ini.write_text("[tuswsgi]\nexpiration = 2h\n")
    result = run(tmp_path, upload_dir, "-c", str(ini), "check-config")
    assert result.returncode == 0, result.stderr
    assert str(ini) in result.stdout.splitlines()[0]
    assert "expiration = 7200.0" in result.stdout


@pytest.mark.parametrize(("where", "key", "value"), [
    ("env", "max_size", "abc"), ("env", "fsync", "sometimes"), ("file", "expiration", "soon"),
    ("file", "max_szie", "1K"), ("env", "expiration", "0.001s"),
])
@pytest.mark.parametrize("command", ["check-config", "list", "cleanup"])
def test_bad_config_exits_2_naming_the_key(tmp_path, upload_dir, where, key, value, command):
    env = {}
    args = []
    if where == "env":
        env["TUSWSGI_" + key.upper()] = value
    else:
        ini = tmp_path / "bad.ini"
        ini.write_text(f"[tuswsgi]\n{key} = {value}\n")
        args = ["-c", str(ini)]
    result = run(tmp_path, upload_dir, *args, command, **env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert key in result.stderr
    if key != "max_szie":  # an unknown key is named; its value does not matter
        assert value in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_list_table(tmp_path, upload_dir, uploads):
    result = run(tmp_path, upload_dir, "list", TUSWSGI_EXPIRATION="1h")
    assert result.returncode == 0, result.stderr
    table, summary = result.stdout.strip().split("\n\n")
    lines = table.splitlines()
    assert lines[0].split()[:6] == ["ID", "FILENAME", "SIZE", "RECEIVED", "%", "STATE"]
    assert len(lines) == 4
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert set(by_id) == set(uploads.values())
    assert "done.txt" in by_id[uploads["finished"]]
    assert "finished" in by_id[uploads["finished"]]
    assert "part.bin" in by_id[uploads["partial"]]
    assert "30.0" in by_id[uploads["partial"]]
    assert "expired" in by_id[uploads["stale"]]
    assert by_id[uploads["stale"]].endswith(" ago")  # its EXPIRES column: expired 1h ago
    assert " in " in by_id[uploads["partial"]] and "expired" not in by_id[uploads["partial"]]
    held, disk = summary.splitlines()
    assert held == ("3 uploads: 1 unfinished hold 3 B (7 B more to come), 1 expired hold 2 B "
                    "(tuswsgi cleanup removes them), 1 finished hold 5 B")
    assert disk.startswith("disk: ") and disk.endswith("no disk_reserve: new uploads are accepted "
                                                        "until the disk is full")


def test_list_says_where_the_disk_reserve_stands(tmp_path, upload_dir, uploads):
    result = run(tmp_path, upload_dir, "list", TUSWSGI_EXPIRATION="1h", TUSWSGI_DISK_RESERVE="2G")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("; new uploads are refused below 2.0 GiB free "
                                           "(disk_reserve = 2147483648)")


def test_check_config_warns_on_stderr_and_still_passes(tmp_path, upload_dir):
    result = run(tmp_path, upload_dir, "check-config", TUSWSGI_CLEANUP_INTERVAL="5s")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("tuswsgi: configuration warning: cleanup_interval = 5s: ")
    assert "cleanup_interval = 5.0" in result.stdout


def test_list_json(tmp_path, upload_dir, uploads):
    result = run(tmp_path, upload_dir, "list", "--json", TUSWSGI_EXPIRATION="1h")
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(uploads.values())
    finished = rows[uploads["finished"]]
    assert (finished["filename"], finished["size"], finished["received"], finished["state"]) \
        == ("done.txt", 5, 5, "finished")
    partial = rows[uploads["partial"]]
    assert (partial["filename"], partial["size"], partial["received"]) == ("part.bin", 10, 3)
    assert partial["state"] in ("receiving", "paused")
    assert partial["percent"] == 30.0
    stale = rows[uploads["stale"]]
    assert (stale["filename"], stale["received"], stale["state"]) == ("", 2, "expired")


def test_list_of_empty_directory(tmp_path, upload_dir):
    result = run(tmp_path, upload_dir, "list", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_show(tmp_path, upload_dir, uploads):
    upload_id = uploads["partial"]
    result = run(tmp_path, upload_dir, "show", upload_id)
    assert result.returncode == 0, result.stderr
    fields = {k.strip(): v.strip() for k, v in
              (line.split(":", 1) for line in result.stdout.splitlines())}
    assert fields["id"] == upload_id
    assert fields["filename"] == "part.bin"
    assert fields["size"] == "10" and fields["received"] == "3"
    result = run(tmp_path, upload_dir, "show", "--json", upload_id)
    row = json.loads(result.stdout)
    assert (row["id"], row["size"], row["received"]) == (upload_id, 10, 3)


@pytest.mark.parametrize("upload_id", ["0" * 32, "../etc", "a/b", ".."])
def test_show_unknown_or_invalid_is_exit_1(tmp_path, upload_dir, uploads, upload_id):
    result = run(tmp_path, upload_dir, "show", upload_id)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no upload" in result.stderr


def test_cleanup_dry_run_then_real(tmp_path, upload_dir, uploads):
    stale = uploads["stale"]
    before = {p.name: p.read_bytes() for p in upload_dir.iterdir()}
    result = run(tmp_path, upload_dir, "cleanup", "--dry-run", TUSWSGI_EXPIRATION="1h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"would be expired: {stale}"
    assert {p.name: p.read_bytes() for p in upload_dir.iterdir()} == before

    result = run(tmp_path, upload_dir, "cleanup", TUSWSGI_EXPIRATION="1h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"expired: {stale}"
    assert not (upload_dir / stale).exists()
    assert (upload_dir / (stale + ".info")).exists()
    assert (upload_dir / uploads["finished"]).read_bytes() == b"hello"
    assert (upload_dir / uploads["partial"]).read_bytes() == b"abc"

    result = run(tmp_path, upload_dir, "list", "--json", TUSWSGI_EXPIRATION="1h")
    states = {row["id"]: row["state"] for row in json.loads(result.stdout)}
    assert states[stale] == "gone"


def test_sample_config(tmp_path, upload_dir):
    result = run(tmp_path, upload_dir, "sample-config", TUSWSGI_MAX_SIZE="abc")
    assert result.returncode == 0  # needs no valid configuration
    assert result.stdout == cli.sample_config() == (ROOT / "tus.ini").read_text()


def test_no_command_is_a_usage_error(tmp_path, upload_dir):
    result = run(tmp_path, upload_dir)
    assert result.returncode == 2
    assert "usage" in result.stderr.lower()


def test_list_via_main_in_process(upload_dir, monkeypatch, capsys):
    client = Client(TusApp(load_config(None, environ={}, upload_dir=str(upload_dir))))
    path = create(client, 4)
    patch(client, path, b"ab", 0)
    monkeypatch.setenv("TUSWSGI_UPLOAD_DIR", str(upload_dir))
    monkeypatch.delenv("TUSWSGI_CONFIG", raising=False)
    monkeypatch.chdir(upload_dir)
    assert cli.main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["size"], r["received"]) for r in rows] == [(path.rsplit("/", 1)[1], 4, 2)]
    assert client.head(path, headers=TUS).headers["Upload-Offset"] == "2"
