"""The one bounded memo every per-shape cache of the package uses (problems, memory formats, launch
plans, checked model problems).

A model has tens of distinct shapes; a shape sweep or a dynamic resolution can have thousands.
Each memo starts again from empty when it reaches its limit instead of growing without end: a
cleared entry is only computed again, never wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


class BoundedMemo:
    """`get(key, build)` returns the value remembered under `key`, or calls `build()`, remembers and
    returns its result (a build that raises remembers nothing). `hits` and `misses` count lookups
    (tests read them to prove a call reused a plan). Values are never None (None means absent)."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self.values: dict = {}
        self.hits = self.misses = 0

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        value = self.values.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = build()
        if len(self.values) >= self.limit:
            self.values.clear()
        self.values[key] = value
        return value

    def __contains__(self, key) -> bool:
        return key in self.values

    def __len__(self) -> int:
        return len(self.values)

    def clear(self) -> None:
        self.values.clear()
        self.hits = self.misses = 0


def hashable(key) -> bool:
    """Whether `key` can key a memo (a SymInt, a list or a tensor inside it cannot)."""
    try:
        hash(key)
    except TypeError:
        return False
    return True
