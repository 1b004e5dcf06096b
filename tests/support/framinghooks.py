"""A pre-access hook for the framing tests: refuses any request that says ``X-Deny``,
so a 403 comes before the body is read, as for an unauthorized user."""

from __future__ import annotations

from typing import Any, Optional


def deny(event: dict[str, Any]) -> Optional[dict[str, Any]]:
    headers = event["Event"]["HTTPRequest"]["Header"]
    if event["Type"] == "pre-access" and "X-Deny" in headers:
        return {"RejectAccess": True}
    return None
