"""A Flask application with tuswsgi mounted at /uploads (docs/embedding.md's Flask recipe).

Flask's own signed-cookie session says who is logged in; tuswsgi's pre-access hook
reads the same session from the upload request's Cookie header, so only a logged-in
user can upload, and only the user who created an upload can touch it.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request, session
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import tuswsgi

flask_app = Flask(__name__)
flask_app.secret_key = os.environ["EMBED_SECRET_KEY"]
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}  # your user check here


@flask_app.post("/login")
def login() -> tuple[str, int]:
    user = request.form.get("user", "")
    if PASSWORDS.get(user) != request.form.get("password"):
        return "no\n", 403
    session["user"] = user
    return f"logged in as {user}\n", 200


@flask_app.get("/")
def index() -> str:
    return f"hello {session.get('user', 'stranger')}\n"


def session_user(event: dict) -> Any:
    """The user of Flask's session in the hooked request's cookies."""
    cookies = event["Event"]["HTTPRequest"]["Header"].get("Cookie") or [""]
    with flask_app.test_request_context(environ_base={"HTTP_COOKIE": cookies[0]}):
        return session.get("user")


def authorize(event: dict) -> Any:
    """pre-access: logged-in users only, each on their own uploads; pre-create: note the owner."""
    user, upload = session_user(event), event["Event"]["Upload"]
    owner_ok = not upload["ID"] or upload["MetaData"].get("owner") == user
    if event["Type"] == "pre-access" and (user is None or not owner_ok):
        return {"RejectAccess": True}  # 403 ERR_ACCESS_DENIED
    if event["Type"] == "pre-create":
        return {"ChangeFileInfo": {"MetaData": {**upload["MetaData"], "owner": user}}}
    return None


application = DispatcherMiddleware(flask_app, {
    "/uploads": tuswsgi.create_app(hooks_python="embed.flask_site:authorize",
                                   hooks_enabled="pre-access,pre-create", upload_page="off"),
})
