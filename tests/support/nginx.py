"""nginx started for real from deploy/nginx.conf, from a temporary prefix.

The site file is used unchanged except for what a test machine must move: its
listen ports (free ports on 127.0.0.1), its certificate paths and the upstream's
ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from conftest import Server, free_port, require_tool, wait_for_port

from support.deploy import DEPLOY, start_process, substitute

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    require_tool("openssl", shutil.which("openssl") is not None)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class Nginx:
    server: Server
    https_port: int
    http_port: int
    prefix: Path

    @property
    def public(self) -> str:
        return f"https://localhost:{self.https_port}"

    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")


def site_config(upstreams: Sequence[int], https_port: int, http_port: int, cert: Path, key: Path) -> str:
    """deploy/nginx.conf with the test machine's ports and certificate."""
    text = (DEPLOY / "nginx.conf").read_text()
    servers = "\n    ".join(f"server 127.0.0.1:{port};" for port in upstreams)
    text = substitute(text, r"^    server 127\.0\.0\.1:8000;", "    " + servers)
    text = substitute(text, r"^    listen 80;", f"    listen 127.0.0.1:{http_port};")
    text = substitute(text, r"^    listen \[::\]:80;\n", "")
    text = substitute(text, r"^    listen 443 ssl http2;", f"    listen 127.0.0.1:{https_port} ssl http2;")
    text = substitute(text, r"^    listen \[::\]:443 ssl http2;\n", "")
    text = substitute(text, r"^    ssl_certificate \S+;", f"    ssl_certificate {cert};")
    return substitute(text, r"^    ssl_certificate_key \S+;", f"    ssl_certificate_key {key};")


def start_nginx(tmp_path: Path, upstreams: Sequence[int]) -> Nginx:
    require_tool("nginx (Debian package nginx)", NGINX is not None)
    prefix = tmp_path / "nginx"
    (prefix / "temp").mkdir(parents=True)
    cert, key = make_certificate(prefix)
    https_port, http_port = free_port(), free_port()
    (prefix / "site.conf").write_text(site_config(upstreams, https_port, http_port, cert, key))
    # As root, nginx's workers would switch to `nobody`, who cannot enter pytest's
    # 0700 temporary directory.
    user = "user root root;" if os.geteuid() == 0 else ""
    temp = prefix / "temp"
    (prefix / "nginx.conf").write_text(f"""
{user}
daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {prefix}/site.conf;
}}
""")
    command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    server = start_process(command, https_port, prefix / "nginx.out", env=dict(os.environ), cwd=prefix,
                           upload_dir=tmp_path / "uploads")
    wait_for_port(http_port, server.proc)
    return Nginx(server, https_port, http_port, prefix)
