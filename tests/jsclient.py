"""Running tests/js/node-client.js (tus-js-client in Node) from the tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from browser import NODE_MODULES
from conftest import ROOT, require_tool

JS = ROOT / "tests" / "js"
TUS_JS = NODE_MODULES / "tus-js-client" / "dist" / "tus.min.js"


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
