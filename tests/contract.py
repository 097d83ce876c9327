"""Helpers of the contract tests: tensors of any memory layout, placed in poisoned storage, and the
comparison of an outcome of triton_conv with torch's.

A `Layout` says how a tensor lies in memory: the order of its dimensions, gaps between elements,
broadcast (stride 0) dimensions, an overlapping dimension and a storage offset. `place` builds such a
view inside a storage whose every element the view does not cover is NaN: a kernel that reads one
position outside the tensor (beyond it, before it, or in a gap between its elements) and uses it
turns the output into NaN, which `rel_error` refuses. Each case is a dataclass whose repr rebuilds
it, so a failure message is its own reproduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .reference import REL_TOL_FP32_IEEE, tolerance


def reproduction(module: str, call: str) -> str:
    """What a failure prints: a command that runs the failing case alone."""
    return f"reproduce: TRITON_INTERPRET=1 python -c 'import torch; from {module} import *; {call}'"


@dataclass(frozen=True)
class Layout:
    """Memory order (outermost to innermost dimension), per-dimension gap (1 dense, 2 every other
    element), broadcast dimensions (stride 0), one dimension whose stride is halved (an overlapping
    view: two indices share an element), storage offset and trailing room."""

    order: tuple[int, ...]
    gaps: tuple[int, ...]
    broadcast: tuple[bool, ...] = ()
    overlap: int | None = None
    offset: int = 0
    tail: int = 0

    @staticmethod
    def dense(rank: int) -> Layout:
        return Layout(tuple(range(rank)), (1,) * rank)

    def strides(self, shape) -> tuple[int, ...]:
        strides = [0] * len(shape)
        running = 1
        for dim in reversed(self.order):
            if self.broadcast and self.broadcast[dim]:
                continue
            strides[dim] = running * self.gaps[dim]
            if self.overlap == dim:
                strides[dim] = max(1, strides[dim] // 2)
            running = strides[dim] * max(shape[dim], 1)
        return tuple(strides)


def place(shape, dtype, layout: Layout, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(view, storage): a tensor of `shape` laid out as `layout` in a NaN-filled storage; the
    elements the view covers hold random values."""
    strides = layout.strides(shape)
    reach = sum((size - 1) * step for size, step in zip(shape, strides)) if all(shape) else -1
    storage = torch.full((layout.offset + reach + 1 + layout.tail,), math.nan, dtype=dtype)
    if all(shape):
        covered = torch.arange(storage.numel()).as_strided(shape, strides, layout.offset).reshape(-1)
        values = torch.randn(covered.numel(), generator=generator, dtype=torch.float32)
        storage[covered] = values.to(dtype)
    return storage.as_strided(shape, strides, layout.offset), storage


# Every supported Triton runs float64 and bfloat16 through the kernels (tests/test_numerics.py holds
# both to bit-exact results), so the contract is checked against float64 everywhere.
EXACT = torch.float64
EXACT_TOL = 1e-12
LOW_PRECISION = [torch.float16, torch.bfloat16]


def bound(dtype) -> float:
    """Relative error allowed against a float64 reference (the interpreter's fp32 dot is exact)."""
    return REL_TOL_FP32_IEEE if dtype == torch.float32 else tolerance(dtype)


def outcome(fn):
    """("ok", value) or ("raise", exception)."""
    try:
        return "ok", fn()
    except Exception as error:  # noqa: BLE001 - the kind is compared by the caller
        return "raise", error


def same_storage(before: torch.Tensor, after: torch.Tensor) -> bool:
    return torch.equal(before.isnan(), after.isnan()) and torch.equal(before.nan_to_num(), after.nan_to_num())
