"""In-process hook functions for the hook tests (``hooks_python="support.hookfns:record"``).

pytest puts ``tests/`` on ``sys.path`` (as it does for ``conftest``), so the app
imports this module by name and the tests read and steer the same module object.
``record`` keeps a deep copy of every event it gets and answers with whatever
``ANSWERS[event type]`` holds: a tusd hook answer (dict), a function of the event
returning one, or an exception instance to raise.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable, Union

Answer = Union[dict, Callable[[dict], Any], BaseException, None]

EVENTS: list[dict] = []
ANSWERS: dict[str, Answer] = {}
_lock = threading.Lock()


def reset() -> None:
    with _lock:
        EVENTS.clear()
    ANSWERS.clear()


def types() -> list[str]:
    with _lock:
        return [event["Type"] for event in EVENTS]


def of_type(event_type: str) -> list[dict]:
    with _lock:
        return [event for event in EVENTS if event["Type"] == event_type]


def record(event: dict) -> Any:
    with _lock:
        EVENTS.append(copy.deepcopy(event))
    answer = ANSWERS.get(event["Type"])
    if isinstance(answer, BaseException):
        raise answer
    if callable(answer):
        return answer(event)
    return answer


# -- a bearer-token authorization hook, as docs/hooks.md shows -------------------------

TOKENS = {"Bearer tok-alice": "alice", "Bearer tok-bob": "bob"}


def authorize(event: dict) -> Any:
    """Every request needs a known token; an upload belongs to whoever created it
    (the owner is written into its metadata by pre-create)."""
    record(event)
    request, upload = event["Event"]["HTTPRequest"], event["Event"]["Upload"]
    user = TOKENS.get((request["Header"].get("Authorization") or [""])[0])
    if event["Type"] == "pre-access":
        if user is None:
            return {"RejectAccess": True,
                    "HTTPResponse": {"StatusCode": 401, "Body": "who are you?\n",
                                     "Header": {"WWW-Authenticate": "Bearer"}}}
        if upload["ID"] and upload["MetaData"].get("owner") != user:
            return {"RejectAccess": True}
        return {"Identity": user}
    if event["Type"] == "pre-create":
        return {"ChangeFileInfo": {"MetaData": {**upload["MetaData"], "owner": user}}}
    return None
