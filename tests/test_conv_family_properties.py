"""Property tests of conv_transpose2d and conv1d against torch (hypothesis), with the machinery of the
conv2d contract tests (tests/contract.py): every argument drawn (stride, padding, output_padding,
dilation, groups, bias, batched or not), every tensor in any memory layout inside NaN-poisoned
storage (a read outside a tensor shows as NaN), dtypes and gradient needs, and the kinds of the
integer arguments. Each case is compared with float64 torch and must leave the caller's tensors
untouched; a failure prints the command that reruns it. Sizes small, examples capped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import triton_conv

from .contract import EXACT, LOW_PRECISION, Layout, outcome, reproduction, run_in_layouts
from .reference import bound, rel_error
from .test_contract_properties import FAST, KindCase, _int_kinds, layouts

MODULE = "tests.test_conv_family_properties"
OPS = {"conv_transpose2d": (triton_conv.conv_transpose2d, F.conv_transpose2d),
       "conv1d": (triton_conv.conv1d, F.conv1d)}  # fmt: skip


@st.composite
def transposed_geometries(draw):
    """(x_shape, w_shape, kwargs) of a valid conv_transpose2d: output_padding below stride or dilation."""
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in, out_per_group = draw(st.integers(1, 3)) * groups, draw(st.integers(1, 3))
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    output_padding = tuple(draw(st.integers(0, max(a, b) - 1)) for a, b in zip(stride, dilation))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sizes = zip((h, w), stride, padding, dilation, (r, s), output_padding)
    assume(all((n - 1) * step - 2 * p + d * (k - 1) + o + 1 >= 1 for n, step, p, d, k, o in sizes))
    batch = draw(st.sampled_from([None, 1, 2]))
    x_shape = (c_in, h, w) if batch is None else (batch, c_in, h, w)
    kwargs = dict(
        stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation
    )
    return x_shape, (c_in, out_per_group, r, s), kwargs


@st.composite
def one_d_geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    c, k, s = draw(st.integers(1, 3)) * groups, draw(st.integers(1, 3)) * groups, draw(st.integers(1, 4))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    padding = draw(st.sampled_from([0, 1, 2, (1,), "valid"] + (["same"] if stride == 1 else [])))
    pad = 0 if isinstance(padding, str) else padding if isinstance(padding, int) else padding[0]
    length = draw(st.integers(max(1, dilation * (s - 1) + 1 - 2 * pad), dilation * (s - 1) + 5))
    batch = draw(st.sampled_from([None, 1, 2]))
    x_shape = (c, length) if batch is None else (batch, c, length)
    return (
        x_shape,
        (k, c // groups, s),
        dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    )


@dataclass(frozen=True)
class FamilyCase:
    op: str
    x_shape: tuple
    w_shape: tuple
    kwargs: dict
    dtype: torch.dtype
    x: Layout
    w: Layout
    b: Layout | None
    dy: Layout
    needs: str  # the tensors (of "xwb") that require grad
    seed: int


@st.composite
def family_cases(draw, op: str):
    x_shape, w_shape, kwargs = draw(
        transposed_geometries() if op == "conv_transpose2d" else one_d_geometries()
    )
    dtype = draw(st.sampled_from([torch.float32, torch.float32, EXACT, *LOW_PRECISION]))
    return FamilyCase(
        op, x_shape, w_shape, kwargs, dtype,
        draw(layouts(len(x_shape))), draw(layouts(len(w_shape))), draw(st.one_of(st.none(), layouts(1))),
        draw(layouts(len(x_shape))), draw(st.sampled_from(["", "x", "w", "xw", "xwb", "b"])),
        draw(st.integers(0, 2**31 - 1)),
    )  # fmt: skip


def _output_channels(case: FamilyCase) -> int:
    return case.w_shape[1] * case.kwargs["groups"] if case.op == "conv_transpose2d" else case.w_shape[0]


def run_family_case(case: FamilyCase, proof=None):
    ours, theirs = OPS[case.op]
    failure = reproduction(MODULE, f"run_family_case({case!r})")
    launched = run_in_layouts(case, ours, theirs, _output_channels(case), failure, proof)
    if proof:
        kernel = "dgrad_kernel" if case.op == "conv_transpose2d" else "fprop_kernel"
        assert launched.launches.get(kernel, 0) >= 1, failure


@settings(max_examples=40, **FAST)
@given(case=family_cases("conv_transpose2d"))
def test_conv_transpose2d_in_any_layout_matches_torch(case, triton_only):
    run_family_case(case, triton_only)


@settings(max_examples=25, **FAST)
@given(case=family_cases("conv1d"))
def test_conv1d_in_any_layout_matches_torch(case, triton_only):
    run_family_case(case, triton_only)


# --- the kinds of conv_transpose2d's integer arguments -------------------------------------------------
BAD_KINDS = [True, 1.5, torch.tensor(1.0), "1", None, (1, 1, 1), [], np.array([1, 1]), 2**63, 2**40, -1, 0]
GOOD = {"stride": 2, "padding": 1, "output_padding": 1, "dilation": 2, "groups": 2}


@st.composite
def transposed_kind_cases(draw):
    argument = draw(st.sampled_from(sorted(GOOD)))
    return KindCase(argument, draw(st.one_of(_int_kinds(GOOD[argument]), st.sampled_from(BAD_KINDS))))


def run_transposed_kind_case(case: KindCase):
    x, w = torch.randn(1, 4, 3, 4), torch.randn(4, 2, 3, 3)
    kwargs = {"groups": 2, "stride": 2, case.argument: case.value}
    failure = reproduction(MODULE, f"run_transposed_kind_case({case!r})")
    torch_kind, expected = outcome(lambda: F.conv_transpose2d(x, w, **kwargs))
    kind, got = outcome(lambda: triton_conv.conv_transpose2d(x, w, **kwargs))
    if kind == "raise":
        assert isinstance(got, RuntimeError) and case.argument in str(got), (got, failure)
        assert torch_kind == "raise", (got, failure)
        for natural in (TypeError, ValueError):
            assert not isinstance(expected, natural) or isinstance(got, natural), (got, expected, failure)
        return
    assert torch_kind == "ok", (expected, failure)
    assert got.shape == expected.shape and rel_error(got, expected) < bound(torch.float32), failure


@settings(max_examples=30, **FAST)
@given(transposed_kind_cases())
def test_transposed_integer_argument_kinds_match_torch(case):
    run_transposed_kind_case(case)
