"""Request headers of the IETF resumable-upload drafts, per interop version, and
what the draft tests read from an answer; shared by the in-process and the
real-server draft tests."""

from __future__ import annotations

import json


def draft(version: int, **headers: str) -> dict[str, str]:
    """Headers of a draft request: the interop version plus ``headers``."""
    return {"Upload-Draft-Interop-Version": str(version),
            **{name.replace("_", "-"): value for name, value in headers.items()}}


def completion(version: int, complete: bool) -> dict[str, str]:
    """The request header saying whether this body ends the upload."""
    if version == 3:
        return {"Upload-Incomplete": "?0" if complete else "?1"}
    return {"Upload-Complete": "?1" if complete else "?0"}


def path_of(response) -> str:
    """The path of the upload a (werkzeug test) creation answer names."""
    return "/files/" + response.headers["Location"].rsplit("/", 1)[1]


def problem(response) -> dict:
    """The problem details (RFC 9457) of a (werkzeug test) error answer."""
    assert response.headers["Content-Type"] == "application/problem+json", response.headers
    return json.loads(response.get_data())
