"""Running tests/js/node-client.js (tus-js-client in Node) from the tests, and
bundling tests/js/uppy-harness.js (Uppy) for the browser with esbuild."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from conftest import ROOT, require_tool

from support.browser import NODE_MODULES

JS = ROOT / "tests" / "js"
TUS_JS = NODE_MODULES / "tus-js-client" / "dist" / "tus.min.js"
ESBUILD = NODE_MODULES / ".bin" / "esbuild"


def require_node() -> str:
    node = shutil.which("node")
    require_tool("node", node is not None)
    require_tool("tus-js-client (run `npm ci` in tests/)", TUS_JS.is_file())
    return node


def node_client(mode: str, server, file: Path, protocol: Optional[str] = None, **args) -> dict:
    """Run one case; the result has the upload ``url`` and every request made
    (``[method, url, headers, status]``)."""
    node = require_node()
    spec = {"mode": mode, "endpoint": server.url, "file": str(file), **args}
    if protocol:
        spec["protocol"] = protocol
    result = subprocess.run([node, str(JS / "node-client.js"), json.dumps(spec)],
                            capture_output=True, text=True, timeout=120, cwd=JS)
    assert result.returncode == 0, result.stderr + server.log()[-3000:]
    return json.loads(result.stdout)


def stored(server, url: str) -> Path:
    """The data file of the upload at ``url``."""
    assert url.startswith(server.url), url
    return server.upload_dir / url.rsplit("/", 1)[1]


def methods(result: dict) -> list[str]:
    return [request[0] for request in result["requests"]]


def uppy_page_files(out_dir: Path) -> dict[str, tuple[bytes, str]]:
    """The Uppy harness page and its bundle (built into ``out_dir``), for a StaticServer."""
    require_node()
    require_tool("esbuild and @uppy/* (run `npm ci` in tests/)",
                 ESBUILD.is_file() and (NODE_MODULES / "@uppy" / "tus").is_dir())
    bundle = out_dir / "uppy-harness.bundle.js"
    result = subprocess.run([str(ESBUILD), str(JS / "uppy-harness.js"), "--bundle", "--format=iife",
                             "--platform=browser", "--target=chrome110", f"--outfile={bundle}"],
                            capture_output=True, text=True, timeout=120, cwd=JS)
    assert result.returncode == 0, result.stderr
    return {"/uppy.html": ((JS / "uppy.html").read_bytes(), "text/html; charset=utf-8"),
            "/uppy-harness.bundle.js": (bundle.read_bytes(), "text/javascript; charset=utf-8")}


def harness_files(assets: str) -> dict[str, tuple[bytes, str]]:
    """tests/js/harness.html (with ``assets`` in its placeholder), tus.min.js and
    harness.js, as a StaticServer serves them."""
    html = (JS / "harness.html").read_text().replace("{{assets}}", assets).encode()
    return {
        "/harness.html": (html, "text/html; charset=utf-8"),
        "/tus.min.js": (TUS_JS.read_bytes(), "text/javascript; charset=utf-8"),
        "/harness.js": ((JS / "harness.js").read_bytes(), "text/javascript; charset=utf-8"),
    }
