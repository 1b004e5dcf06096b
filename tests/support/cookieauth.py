"""A pre-access hook that authorizes requests by a session cookie, as an application
checks its own login: only a request whose ``session`` cookie equals
``$TUSWSGI_TEST_SESSION`` gets in; any other gets 403 ``ERR_ACCESS_DENIED``.

Servers load it as ``support.cookieauth:hook`` with ``tests/`` on ``PYTHONPATH``
(see :func:`server_env`).  Every cookie header the hook saw is appended to
``$TUSWSGI_TEST_COOKIE_LOG``, so a test can tell what a Python hook was given.
"""

from __future__ import annotations

import os
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Optional

TESTS = Path(__file__).resolve().parent.parent


def server_env(session: str, log: Path) -> dict[str, str]:
    """Environment for a server whose uploads need ``session=<session>``."""
    path = os.pathsep.join(filter(None, [str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "TUSWSGI_HOOKS_PYTHON": "support.cookieauth:hook",
            "TUSWSGI_TEST_SESSION": session, "TUSWSGI_TEST_COOKIE_LOG": str(log)}


def session_of(event: dict) -> Optional[str]:
    """The ``session`` cookie of the hooked request, if it sent one."""
    cookies: SimpleCookie = SimpleCookie()
    for header in event["Event"]["HTTPRequest"]["Header"].get("Cookie") or []:
        try:
            cookies.load(header)
        except CookieError:
            return None
    morsel = cookies.get("session")
    return morsel.value if morsel is not None else None


def hook(event: dict) -> Any:
    if event["Type"] != "pre-access":
        return None
    with open(os.environ["TUSWSGI_TEST_COOKIE_LOG"], "a", encoding="utf-8") as log:
        log.write(repr(event["Event"]["HTTPRequest"]["Header"].get("Cookie")) + "\n")
    if session_of(event) != os.environ["TUSWSGI_TEST_SESSION"]:
        return {"RejectAccess": True}
    return None
