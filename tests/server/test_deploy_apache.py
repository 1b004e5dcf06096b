"""Shared-hosting deployments under a real Apache (Debian's apache2): mod_wsgi in
daemon mode (deploy/apache-mod_wsgi.conf + deploy/passenger_wsgi.py) and plain CGI
(deploy/tuswsgi.cgi + deploy/.htaccess).

Apache runs its children and CGI scripts as ``www-data``, who can enter neither
pytest's temporary directory nor this run's Python (under /root on the test
machines).  So each test builds a world-readable site under /tmp, with
tuswsgi and its dependencies copied into a directory the system ``python3`` reads
(a virtualenv of /usr/bin/python3 for mod_wsgi, whose Debian build embeds that
Python; ``lib/`` for CGI, as ``pip install --target lib`` would on a shared host).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest
import requests
from conftest import (
    OCTET,
    TUS,
    Server,
    free_port,
    random_file,
    require_tool,
    sha256,
    sha256_file,
    wait_for_size,
)
from support.deploy import (
    DEPLOY,
    SYSTEM_PATH,
    WorldReadableDir,
    chown_tree,
    copy_packages,
    start_process,
    substitute,
    upload_with_cuts,
)
from support.rawclient import send_partial_patch

pytestmark = pytest.mark.e2e

APACHE = shutil.which("apache2") or ("/usr/sbin/apache2" if os.path.exists("/usr/sbin/apache2") else None)
MODULES = Path("/usr/lib/apache2/modules")
SYSTEM_PYTHON = "/usr/bin/python3"
RUN_USER = "www-data"


def require_apache(*modules: str) -> None:
    require_tool("apache2 (Debian package apache2)", APACHE is not None)
    for module in modules:
        package = "libapache2-mod-wsgi-py3" if module == "wsgi" else "apache2"
        require_tool(f"mod_{module} (Debian package {package})", (MODULES / f"mod_{module}.so").exists())
    require_tool("python3 (Debian package python3)", os.path.exists(SYSTEM_PYTHON))
    if os.geteuid() != 0:
        pytest.skip("Apache tests start Apache as root so it can switch to www-data")


@pytest.fixture
def site() -> Iterator[Path]:
    directory = WorldReadableDir("tuswsgi-apache-")
    yield directory.path
    directory.cleanup()


def start_apache(root: Path, port: int, site_conf: str, modules: tuple[str, ...]) -> Server:
    for name in ("run", "logs"):
        (root / name).mkdir(exist_ok=True)
        (root / name).chmod(0o755)
    loads = "\n".join(f"LoadModule {name}_module {MODULES}/mod_{name}.so"
                      for name in ("mpm_event", "authz_core", "mime", "alias", "dir", "rewrite", *modules))
    (root / "site.conf").write_text(site_conf)
    (root / "httpd.conf").write_text(f"""
ServerRoot "{root}"
Listen 127.0.0.1:{port}
ServerName localhost
PidFile {root}/run/httpd.pid
DefaultRuntimeDir {root}/run
Mutex file:{root}/run default
ErrorLog {root}/logs/error.log
LogLevel info
{loads}
User {RUN_USER}
Group {RUN_USER}
TypesConfig /etc/mime.types
LogFormat "%h \\"%r\\" %>s %b %D" short
CustomLog {root}/logs/access.log short
<Directory />
    AllowOverride None
    Require all denied
</Directory>
Include {root}/site.conf
""")
    command = [APACHE, "-d", str(root), "-f", str(root / "httpd.conf"), "-DFOREGROUND"]
    env = {"PATH": SYSTEM_PATH, "LANG": "C"}
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, env=env, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return start_process(command, port, root / "logs" / "apache.out", env=env, cwd=root,
                         upload_dir=root / "uploads")


def error_log(root: Path) -> str:
    path = root / "logs" / "error.log"
    return path.read_text(errors="replace") if path.exists() else ""


def upload_and_check(root: Path, port: int, upload_dir: Path, path: str) -> None:
    source = random_file(root.parent / f"{root.name}-source.bin", 8 * 1024 * 1024 + 77)
    try:
        try:
            upload = upload_with_cuts(port, source, cuts=[1_200_000, 2_500_000],
                                      chunk_size=3 * 1024 * 1024, path=path)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- Apache error log:\n{error_log(root)[-6000:]}") from None
        assert upload.startswith(path)
        assert sha256_file(upload_dir / upload.rsplit("/", 1)[1]) == sha256_file(source)
    finally:
        source.unlink()


def mod_wsgi_site(site: Path, port: int, timeout: Optional[int] = None, ini: str = "") -> tuple[str, Path]:
    """What the install steps in deploy/apache-mod_wsgi.conf do: a venv of the Python
    mod_wsgi embeds, tuswsgi in it, the entry file and a tus.ini next to it; the
    site configuration, with Apache's ``Timeout`` set to ``timeout``."""
    require_apache("wsgi")
    app = site / "app"
    uploads = app / "uploads"
    uploads.mkdir(parents=True)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(app / "venv")], check=True,
                   timeout=120)
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    copy_packages(app / "venv" / "lib" / f"python{version}" / "site-packages")
    shutil.copy(DEPLOY / "passenger_wsgi.py", app / "passenger_wsgi.py")
    (app / "tus.ini").write_text(f"[tuswsgi]\nupload_dir = {uploads}\n{ini}")
    chown_tree(uploads, RUN_USER)
    conf = (DEPLOY / "apache-mod_wsgi.conf").read_text()
    assert conf.count("/srv/tuswsgi") >= 3
    conf = conf.replace("/srv/tuswsgi", str(app))
    conf = substitute(conf, r"user=tuswsgi group=tuswsgi", f"user={RUN_USER} group={RUN_USER}")
    conf = substitute(conf, r"^WSGISocketPrefix \S+", f"WSGISocketPrefix {site}/run/wsgi")
    conf = substitute(conf, r"^<VirtualHost \*:80>", f"<VirtualHost *:{port}>")
    if timeout is not None:
        conf = substitute(conf, r"^    Timeout 60$", f"    Timeout {timeout}")
    return conf, uploads


def cgi_site(site: Path, timeout: Optional[int] = None, ini: str = "") -> tuple[str, Path]:
    """deploy/tuswsgi.cgi and its .htaccess in a directory served at /uploads/, the
    packages beside them as ``pip install --target lib`` puts them."""
    require_apache("cgid")
    htdocs = site / "htdocs"
    app = htdocs / "uploads"  # served at /uploads/
    app.mkdir(parents=True)
    uploads = site / "data"  # outside the web root
    uploads.mkdir()
    for name in ("tuswsgi.cgi", ".htaccess"):
        shutil.copy(DEPLOY / name, app / name)
    (app / "tuswsgi.cgi").chmod(0o755)
    copy_packages(app / "lib")
    (app / "tus.ini").write_text(f"[tuswsgi]\nupload_dir = {uploads}\n{ini}")
    chown_tree(uploads, RUN_USER)
    conf = f"""
LoadModule cgid_module {MODULES}/mod_cgid.so
ScriptSock {site}/run/cgid.sock
DocumentRoot {htdocs}
<Directory {htdocs}>
    AllowOverride All
    Require all granted
</Directory>
"""
    return conf + (f"Timeout {timeout}\n" if timeout is not None else ""), uploads


def test_mod_wsgi_daemon_mode_serves_an_interrupted_upload(site):
    port = free_port()
    conf, uploads = mod_wsgi_site(site, port)
    server = start_apache(site, port, conf, ("wsgi",))
    try:
        created = requests.post(f"http://127.0.0.1:{port}/files/", timeout=10,
                                headers={**TUS, "Upload-Length": "3"})
        assert created.status_code == 201, created.text + error_log(site)
        assert created.headers["Location"].startswith(f"http://127.0.0.1:{port}/files/")
        upload_and_check(site, port, uploads, "/files/")
        # The entry file, tus.ini and the venv are not served.
        assert requests.get(f"http://127.0.0.1:{port}/tus.ini", timeout=10).status_code == 404
    finally:
        server.stop()
    assert "Traceback" not in error_log(site), error_log(site)


def test_cgi_with_htaccess_serves_an_interrupted_upload(site):
    port = free_port()
    conf, uploads = cgi_site(site)
    server = start_apache(site, port, conf, ())
    try:
        base = f"http://127.0.0.1:{port}/uploads"
        created = requests.post(base + "/files/", headers={**TUS, "Upload-Length": "3"}, timeout=10)
        assert created.status_code == 201, created.text + error_log(site)
        assert created.headers["Location"].startswith(base + "/files/"), created.headers["Location"]
        options = requests.options(base + "/files/", timeout=10)
        assert options.status_code == 200 and options.headers["Tus-Version"] == "1.0.0"
        upload_and_check(site, port, uploads, "/uploads/files/")
        # Settings and bundled code are never served.
        for private in ("tus.ini", "lib/tuswsgi/config.py"):
            assert requests.get(f"{base}/{private}", timeout=10).status_code in (403, 404)
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["mod_wsgi", "cgi"])
def test_apaches_timeout_bounds_a_silent_client(site, path):
    """Under Apache a silent client is bounded by Apache's own ``Timeout`` (2 s here):
    a PATCH that sent 100 KB and went quiet lets go of its upload once it passes,
    what arrived is kept, and a client asking for the offset (423 until then, as
    ``lock_timeout`` is 1 s) gets it and resumes to the same bytes."""
    port = free_port()
    ini = "lock_timeout = 1s\n"
    conf, uploads = mod_wsgi_site(site, port, timeout=2, ini=ini) if path == "mod_wsgi" \
        else cgi_site(site, timeout=2, ini=ini)
    server = start_apache(site, port, conf, ("wsgi",) if path == "mod_wsgi" else ())
    prefix = "/files/" if path == "mod_wsgi" else "/uploads/files/"
    base = f"http://127.0.0.1:{port}{prefix}"
    data = os.urandom(1_000_000)
    try:
        created = requests.post(base, headers={**TUS, "Upload-Length": str(len(data))}, timeout=10)
        assert created.status_code == 201, created.text + error_log(site)
        upload = created.headers["Location"].rsplit("/", 1)[1]
        stalled = send_partial_patch(port, prefix + upload, 0, data, 100_000)
        try:
            wait_for_size(uploads / upload, 16_384)  # the PATCH holds the upload, storing
            started = time.monotonic()
            head = requests.head(base + upload, headers=TUS, timeout=30)
            while head.status_code == 423 and time.monotonic() - started < 15:
                head = requests.head(base + upload, headers=TUS, timeout=30)
            elapsed = time.monotonic() - started
        finally:
            stalled.close()
        assert head.status_code == 200, (head.status_code, error_log(site)[-3000:])
        assert elapsed < 8, elapsed
        offset = int(head.headers["Upload-Offset"])
        assert (uploads / upload).read_bytes() == data[:offset]
        answer = requests.patch(base + upload, data=data[offset:], timeout=30,
                                headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
        assert answer.status_code == 204, answer.text
        assert sha256_file(uploads / upload) == sha256(data)
    finally:
        server.stop()
