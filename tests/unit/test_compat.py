"""What tuswsgi takes from gunicorn is one list (tuswsgi/server/compat.py), checked
at boot: every use goes through it, and the check names what is missing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT
from gunicorn.config import Config

from tuswsgi.server import compat

PACKAGE = ROOT / "tuswsgi"


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def gunicorn_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "gunicorn"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gunicorn":
            found.append(node.module or "")
    return found


def test_the_installed_gunicorn_has_everything_listed():
    assert compat.missing(Config()) == []


def test_only_compat_imports_gunicorn():
    importers = {path.relative_to(ROOT).as_posix() for path in python_files() if gunicorn_imports(path)}
    assert importers == {"tuswsgi/server/compat.py"}


def test_every_compat_name_used_in_the_package_is_listed():
    used = set()
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "compat":
                used.add(node.attr)
    assert used, "the server uses gunicorn through compat"
    assert used <= set(compat.__all__)


@pytest.mark.parametrize("owner", [owner for owner, _ in compat.USED])
def test_a_missing_name_is_named_at_boot(monkeypatch, owner):
    monkeypatch.setattr(compat, "USED", ((owner, ("gone_in_a_future_release",)),))
    assert compat.missing(Config()) == [f"{owner.__qualname__}.gone_in_a_future_release"]


def test_an_older_gunicorn_than_the_floor_is_named(monkeypatch):
    monkeypatch.setattr(compat, "version", lambda: "22.0.0")
    assert f"gunicorn >= {compat.FLOOR}" in compat.missing(Config())


def test_a_parser_that_reads_heads_differently_is_named(monkeypatch):
    class Blind(compat.Request):  # type: ignore[misc,valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.headers = []
    monkeypatch.setattr(compat, "Request", Blind)
    assert any("Request.method/.version/.headers" in item for item in compat.missing(Config()))


def test_the_setting_list_is_what_the_worker_reads():
    source = "\n".join(path.read_text() for path in (PACKAGE / "server").glob("*.py"))
    read = {name for name in __import__("re").findall(r"cfg\.([a-z_]+)", source)}
    assert read <= set(compat.SETTINGS) | {"ssl_context"}


def test_wsgi_create_sends_no_100_continue_through_the_wire():
    """gunicorn's create() answers ``Expect: 100-continue`` by calling send() on the
    socket at once (every release since 20); tuswsgi's Wire holds that back, so
    the body reader sends it when the body is first read."""
    import socket as socket_module

    from tuswsgi.server.wire import Wire

    head = b"PATCH /files/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    request = compat.Request(Config(), compat.IterUnreader([head]), ("127.0.0.1", 1), 1)
    ours, theirs = socket_module.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        compat.create(request, Wire(ours, 5), ("127.0.0.1", 1), ("127.0.0.1", 2), Config())
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(100)
