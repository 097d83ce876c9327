"""The package's one bounded memo (triton_conv.memo): what every per-shape cache relies on."""

from __future__ import annotations

import pytest

from triton_conv.memo import BoundedMemo, hashable


def test_a_memo_builds_once_per_key_and_counts_its_lookups():
    memo, built = BoundedMemo(limit=3), []

    def build(value):
        return lambda: built.append(value) or value

    assert [memo.get(key, build(key * 10)) for key in (1, 2, 1, 1, 2)] == [10, 20, 10, 10, 20]
    assert built == [10, 20] and (memo.misses, memo.hits) == (2, 3)
    assert 1 in memo and 3 not in memo and len(memo) == 2


def test_a_full_memo_starts_again_and_keeps_the_new_value():
    memo = BoundedMemo(limit=3)
    for key in range(3):
        memo.get(key, lambda key=key: key + 100)
    assert memo.get(3, lambda: 103) == 103  # the fourth key: cleared, then stored
    assert len(memo) == 1 and 3 in memo and 0 not in memo
    for key in range(10):
        memo.get(key, lambda key=key: key + 100)
        assert len(memo) <= 3


def test_a_build_that_raises_remembers_nothing():
    memo = BoundedMemo()

    def refuse():
        raise ValueError("not a problem")

    for _ in range(2):
        with pytest.raises(ValueError, match="not a problem"):
            memo.get("bad", refuse)
    assert "bad" not in memo and memo.misses == 2
    memo.clear()
    assert (len(memo), memo.hits, memo.misses) == (0, 0, 0)


def test_hashable_tells_the_keys_a_memo_can_hold():
    assert hashable((1, "a", (2, 3)))
    assert not hashable((1, [2, 3]))
    assert not hashable({"a": 1})
