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

import pytest
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


def _interpreter_runs(dtype) -> bool:
    """Triton 3.6's interpreter fails a float64 dot and a bfloat16 constant (3.9's runs both): with
    it (and torch 2.11: the GPU machine's versions) the contract tests compute in float32, leave
    bfloat16 out and skip what only float64 can check (gradcheck)."""
    import triton_conv

    x, w, b = (
        torch.ones(shape, dtype=dtype, requires_grad=True) for shape in ((1, 1, 2, 2), (1, 1, 2, 2), 1)
    )
    try:
        y = triton_conv.conv2d(x, w, b)
        y.backward(torch.ones_like(y))
        return bool(y.item() == 5.0 and w.grad.sum().item() == 4.0)
    except Exception:  # noqa: BLE001 - any failure means: not here
        return False


FLOAT64_RUNS = _interpreter_runs(torch.float64)
LOW_PRECISION = [torch.float16] + ([torch.bfloat16] if _interpreter_runs(torch.bfloat16) else [])
EXACT = torch.float64 if FLOAT64_RUNS else torch.float32
EXACT_TOL = 1e-12 if FLOAT64_RUNS else 1e-5
needs_float64 = pytest.mark.skipif(
    not FLOAT64_RUNS, reason="this Triton's interpreter cannot run float64 dots"
)


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
