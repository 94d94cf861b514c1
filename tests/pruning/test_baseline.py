"""The uniform baseline's bisection: the smallest ratio that meets a target, in few measurements."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from dnnsplit.pruning.baseline import smallest_meeting


@given(count=st.integers(min_value=0, max_value=40), data=st.data())
def test_smallest_meeting_finds_the_first_index_that_meets(count: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=0, max_value=count))  # == count: no index meets
    calls: list[int] = []

    def meets(i: int) -> bool:
        assert 0 <= i < count
        calls.append(i)
        return i >= first

    found = smallest_meeting(count, meets)
    assert found == (first if first < count else None)
    assert len(calls) <= (math.ceil(math.log2(count)) + 1 if count else 0)
    if found:  # the ratio one step less pruned was measured: the variant's prediction is anchored on it
        assert found - 1 in calls
