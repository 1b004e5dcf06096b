"""How far a final upload can be assembled: the rule as a table."""

import pytest

from tuswsgi.concat import FinalStep, Part, plan_final

DONE3, DONE4 = Part(3, True), Part(4, True)
OPEN5 = Part(5, False)          # length known, still receiving
DEFERRED = Part(None, False)    # length not known yet
GONE3 = Part(3, True, gone=True)   # terminated after it finished: its tombstone keeps the length
LOST = Part(None, False, gone=True)  # forgotten


@pytest.mark.parametrize(("offset", "parts", "expected"), [
    # nothing finished yet: wait for the first part
    (0, [OPEN5, DONE3], FinalStep(0, (), 8, False)),
    # a finished run at the start is copied; the final waits at the first unfinished part
    (0, [DONE3, DONE4, OPEN5, DONE3], FinalStep(0, (0, 1), 15, False)),
    (7, [DONE3, DONE4, OPEN5, DONE3], FinalStep(2, (), 15, False)),
    (7, [DONE3, DONE4, Part(5, True), DONE3], FinalStep(2, (2, 3), 15, False)),
    # everything copied: nothing to do
    (15, [DONE3, DONE4, Part(5, True), DONE3], FinalStep(4, (), 15, False)),
    # the same part twice
    (3, [DONE3, DONE4, DONE3], FinalStep(1, (1, 2), 10, False)),
    # length unknown until every part's is
    (0, [DONE3, DEFERRED], FinalStep(0, (0,), None, False)),
    (3, [DONE3, Part(6, False)], FinalStep(1, (), 9, False)),
    # a copied part may be gone; one still needed may not
    (3, [GONE3, DONE4], FinalStep(1, (1,), 7, False)),
    (0, [GONE3, DONE4], FinalStep(0, (), 7, True)),
    (3, [DONE3, OPEN5, LOST], FinalStep(1, (), None, True)),
    # parts of no bytes: copied only once finished, never counted before
    (0, [Part(0, False), DONE3], FinalStep(0, (), 3, False)),
    (0, [Part(0, True), DONE3], FinalStep(0, (0, 1), 3, False)),
    (3, [DONE3, Part(0, False)], FinalStep(1, (), 3, False)),
    (0, [], FinalStep(0, (), 0, False)),
])
def test_plan_final(offset, parts, expected):
    assert plan_final(offset, parts) == expected


def test_completes_when_nothing_is_left_to_wait_for():
    assert plan_final(0, [DONE3, DONE4]).completes(2)
    assert not plan_final(0, [DONE3, OPEN5]).completes(2)


@pytest.mark.parametrize(("offset", "parts"), [(4, [DONE3, DONE4]), (3, [DEFERRED, DONE3]),
                                               (20, [DONE3])])
def test_an_offset_that_is_no_run_of_whole_parts_is_an_error(offset, parts):
    with pytest.raises(ValueError):
        plan_final(offset, parts)
