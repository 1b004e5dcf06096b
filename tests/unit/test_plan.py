"""tuswsgi.plan: every rule of an append, as a table of plain values."""

from __future__ import annotations

from typing import Optional

import pytest

from tuswsgi.errors import TusError
from tuswsgi.plan import UNBOUNDED, Append, AppendPlan, Limits, Upload, plan_append

NONE = Limits()
OK = "ERR_SIZE_EXCEEDED"  # the usual overflow code
MAX = Limits(max_size=1000)
CAP = Limits(max_append_size=100)


@pytest.mark.parametrize(("upload", "append", "limits", "plan"), [
    # a known length: room is what is left of it
    (Upload(0, 500), Append(0, 200), NONE, AppendPlan(500, 500, OK)),
    (Upload(300, 500), Append(300, 200), NONE, AppendPlan(200, 500, OK)),
    # deferred length: max_size bounds it, or nothing does
    (Upload(0, None), Append(0, 10), NONE, AppendPlan(UNBOUNDED, None, OK)),
    (Upload(100, None), Append(100, None), MAX, AppendPlan(900, None, OK)),
    # the length declared now
    (Upload(100, None), Append(100, 50, declared_length=400), NONE, AppendPlan(300, 400, OK)),
    (Upload(0, 400), Append(0, 50, declared_length=400), NONE, AppendPlan(400, 400, OK)),
    # Upload-Complete: ?1 fixes the length where the body ends
    (Upload(100, None), Append(100, 50, complete=True), NONE, AppendPlan(50, 150, OK)),
    (Upload(100, 150), Append(100, 50, complete=True), NONE, AppendPlan(50, 150, OK)),
    (Upload(0, None), Append(0, None, complete=True), NONE, AppendPlan(UNBOUNDED, None, OK)),
    # max_append_size caps one request; a chunked body past it is refused by its code
    (Upload(0, 500), Append(0, 100), CAP, AppendPlan(100, 500, "ERR_APPEND_TOO_LARGE")),
    (Upload(0, 500), Append(0, None), CAP, AppendPlan(100, 500, "ERR_APPEND_TOO_LARGE")),
    (Upload(450, 500), Append(450, None), CAP, AppendPlan(50, 500, OK)),
])
def test_plans(upload: Upload, append: Append, limits: Limits, plan: AppendPlan):
    assert plan_append(upload, append, limits) == plan


@pytest.mark.parametrize(("upload", "append", "limits", "code"), [
    (Upload(0, 10, is_final=True), Append(0, 1), NONE, "ERR_UPLOAD_IS_FINAL"),
    (Upload(40, 100), Append(0, 10), NONE, "ERR_MISMATCHED_OFFSET"),
    (Upload(40, 100), Append(41, 10), NONE, "ERR_MISMATCHED_OFFSET"),
    (Upload(0, 100), Append(0, 10, declared_length=200), NONE, "ERR_LENGTH_ALREADY_SET"),
    (Upload(50, None), Append(50, 10, declared_length=49), NONE, "ERR_LENGTH_TOO_SMALL"),
    (Upload(0, None), Append(0, 10, declared_length=1001), MAX, "ERR_MAX_SIZE_EXCEEDED"),
    (Upload(0, 100), Append(0, 50, complete=True), NONE, "ERR_INCONSISTENT_LENGTH"),
    (Upload(0, None), Append(0, 1001, complete=True), MAX, "ERR_MAX_SIZE_EXCEEDED"),
    (Upload(0, 500), Append(0, 101), CAP, "ERR_APPEND_TOO_LARGE"),
    (Upload(0, 5), Append(0, 6), NONE, "ERR_SIZE_EXCEEDED"),
    (Upload(900, None), Append(900, 101), MAX, "ERR_MAX_SIZE_EXCEEDED"),
])
def test_refusals(upload: Upload, append: Append, limits: Limits, code: str):
    with pytest.raises(TusError) as refused:
        plan_append(upload, append, limits)
    assert refused.value.error_code == code


def test_a_mismatch_says_both_offsets():
    with pytest.raises(TusError) as refused:
        plan_append(Upload(40, 100), Append(7, 1), NONE)
    error: Optional[TusError] = refused.value
    assert error is not None and (error.expected_offset, error.provided_offset) == (40, 7)
