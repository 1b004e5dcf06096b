"""tuswsgi's hook for the Django project: Django's own session decides who uploads."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from importlib import import_module
from typing import Any, Optional

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.db import close_old_connections


def session_user(event: dict) -> Optional[str]:
    """The logged-in user of the Django session named by the request's session cookie
    (any session backend), checked as Django's middleware checks it.  Hooks run
    outside Django's request cycle, so the database connection is closed here."""
    try:
        return _session_user(event)
    finally:
        close_old_connections()


def _session_user(event: dict) -> Optional[str]:
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(";".join(event["Event"]["HTTPRequest"]["Header"].get("Cookie") or []))
    except CookieError:
        return None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is None:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=morsel.value)
    if SESSION_KEY not in session:
        return None
    user = load_backend(session[BACKEND_SESSION_KEY]).get_user(session[SESSION_KEY])
    if user is None or session.get(HASH_SESSION_KEY) != user.get_session_auth_hash():
        return None  # e.g. the password changed since this login
    return user.get_username()


def authorize(event: dict) -> Any:
    """pre-access: logged-in users only, each on their own uploads; pre-create: note the owner."""
    user, upload = session_user(event), event["Event"]["Upload"]
    owner_ok = not upload["ID"] or upload["MetaData"].get("owner") == user
    if event["Type"] == "pre-access" and (user is None or not owner_ok):
        return {"RejectAccess": True}  # 403 ERR_ACCESS_DENIED
    if event["Type"] == "pre-create":
        return {"ChangeFileInfo": {"MetaData": {**upload["MetaData"], "owner": user}}}
    return None
