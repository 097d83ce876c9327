"""Property tests of torch's conv2d contract over argument *kinds*: the memory layout of every tensor
(permuted, gapped, broadcast, overlapping, offset, in NaN-poisoned storage), dtype mixes under
autocast and grad modes, torch.func transforms, and the kinds of the integer arguments.

Every case is compared with torch: where torch raises, triton_conv raises an error catchable as
torch's (RuntimeError, and TypeError/ValueError where torch's is that); where torch computes,
triton_conv computes the same (against a float64 reference), never reads outside a tensor (a NaN
neighbour would show) and never writes to a caller's tensor. A failure prints the command that
reruns the case alone. Sizes are small and examples capped: the interpreter is slow.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import triton_conv

from .conftest import TritonProof
from .contract import (
    EXACT,
    EXACT_TOL,
    LOW_PRECISION,
    Layout,
    outcome,
    reproduction,
    run_in_layouts,
)
from .reference import bound, rel_error

MODULE = "tests.test_contract_properties"
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --- geometry ------------------------------------------------------------------------------------
@st.composite
def geometries(draw, unbatched_ok=True):
    """(x_shape, w_shape, kwargs): small, every feature (groups, stride, dilation, padding forms)."""
    groups = draw(st.sampled_from([1, 1, 2]))
    c, k = draw(st.integers(1, 3)) * groups, draw(st.integers(1, 3)) * groups
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from([0, 1, (1, 0), "valid"] + (["same"] if stride == (1, 1) else [])))
    pad_h, pad_w = (
        (0, 0) if isinstance(padding, str) else (padding, padding) if isinstance(padding, int) else padding
    )
    extent_h, extent_w = dilation[0] * (r - 1) + 1, dilation[1] * (s - 1) + 1
    h = draw(st.integers(max(1, extent_h - 2 * pad_h), extent_h + 3))
    w = draw(st.integers(max(1, extent_w - 2 * pad_w), extent_w + 3))
    batch = draw(st.sampled_from([None, 1, 2] if unbatched_ok else [1, 2]))
    x_shape = (c, h, w) if batch is None else (batch, c, h, w)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x_shape, (k, c // groups, r, s), kwargs


@st.composite
def layouts(draw, rank: int):
    order = tuple(draw(st.permutations(range(rank))))
    gaps = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(rank))
    broadcast = tuple(draw(st.sampled_from([False, False, False, True])) for _ in range(rank))
    overlap = draw(st.sampled_from([None, None, *range(rank)]))
    return Layout(order, gaps, broadcast, overlap, draw(st.integers(0, 3)), draw(st.integers(0, 2)))


# --- 1. any memory layout of every tensor ---------------------------------------------------------
@dataclass(frozen=True)
class ViewCase:
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
def view_cases(draw):
    x_shape, w_shape, kwargs = draw(geometries())
    y_rank = len(x_shape)
    return ViewCase(
        x_shape, w_shape, kwargs,
        draw(st.sampled_from([torch.float32, torch.float32, EXACT, *LOW_PRECISION])),
        draw(layouts(len(x_shape))), draw(layouts(4)), draw(st.one_of(st.none(), layouts(1))),
        draw(layouts(y_rank)), draw(st.sampled_from(["", "x", "w", "xw", "xwb", "wb", "b"])),
        draw(st.integers(0, 2**31 - 1)),
    )  # fmt: skip


def run_view_case(case: ViewCase, proof=None):
    failure = reproduction(MODULE, f"run_view_case({case!r})")
    launched = run_in_layouts(case, triton_conv.conv2d, F.conv2d, case.w_shape[0], failure, proof)
    if launched is not None:
        assert launched.launches.get("fprop_kernel") == 1, failure


@settings(max_examples=40, **FAST)
@given(case=view_cases())
def test_every_tensor_in_any_layout_matches_torch(case, triton_only):
    run_view_case(case, triton_only)


# --- 2. dtype mixes, autocast and grad modes --------------------------------------------------------
@dataclass(frozen=True)
class ModeCase:
    dtypes: tuple  # x, w, b (None: no bias)
    autocast: torch.dtype | None  # CPU autocast's dtype, None: off
    grad_mode: str  # "enable_grad", "no_grad", "inference_mode"
    needs: str
    seed: int


FLOATS = [*LOW_PRECISION, torch.float32, torch.float64]


@st.composite
def mode_cases(draw):
    dtype = draw(st.sampled_from(FLOATS))
    mixed = draw(st.booleans())
    pick = (lambda: draw(st.sampled_from(FLOATS))) if mixed else (lambda: dtype)
    dtypes = (dtype, pick(), draw(st.one_of(st.none(), st.just(pick()))))
    return ModeCase(
        dtypes, draw(st.sampled_from([None, *LOW_PRECISION])),
        draw(st.sampled_from(["enable_grad", "enable_grad", "no_grad", "inference_mode"])),
        draw(st.sampled_from(["", "x", "w", "b", "xwb"])), draw(st.integers(0, 2**31 - 1)),
    )  # fmt: skip


def _modes(case: ModeCase):
    stack = contextlib.ExitStack()
    stack.enter_context(getattr(torch, case.grad_mode)())
    if case.autocast is not None:
        stack.enter_context(torch.autocast(torch.get_default_device().type, dtype=case.autocast))
    return stack


def run_mode_case(case: ModeCase):
    generator = torch.Generator(torch.get_default_device()).manual_seed(case.seed)  # the tensors' device
    shapes = ((2, 3, 5, 4), (4, 3, 3, 3), (4,))
    tensors = [
        None if dtype is None else torch.randn(shape, generator=generator).to(dtype)
        for shape, dtype in zip(shapes, case.dtypes)
    ]
    for name, tensor in zip("xwb", tensors):
        if tensor is not None and name in case.needs:
            tensor.requires_grad_()
    failure = reproduction(MODULE, f"run_mode_case({case!r})")
    results = {}
    for name, conv in (("torch", F.conv2d), ("ours", triton_conv.conv2d)):
        leaves = [None if t is None else t.detach().requires_grad_(t.requires_grad) for t in tensors]
        # ours with torch's convolutions barred and the kernels counted
        proof = TritonProof() if name == "ours" else contextlib.nullcontext()
        with proof:
            with _modes(case):
                kind, y = outcome(lambda: conv(*leaves, padding=1))  # noqa: B023
            grads = None
            if kind == "ok" and y.requires_grad:
                y.backward(torch.ones_like(y))
                grads = [None if t is None else t.grad for t in leaves]
        results[name] = (kind, y, grads)
    (torch_kind, expected, expected_grads), (kind, got, grads) = results["torch"], results["ours"]
    assert kind == torch_kind, (expected if torch_kind == "raise" else got, failure)
    if kind == "raise":
        assert isinstance(got, RuntimeError), failure
        return
    assert got.dtype == expected.dtype and got.requires_grad == expected.requires_grad, failure
    gradients = zip(("dgrad_kernel", "wgrad_kernel"), grads or ())  # x's and w's (b's is a sum)
    wanted = {"fprop_kernel"} | {kernel for kernel, grad in gradients if grad is not None}
    assert proof.launches.keys() == wanted, (proof.launches, failure)
    assert torch.is_inference(got) == torch.is_inference(expected), failure
    assert rel_error(got, expected) < 2 * bound(got.dtype), failure
    for ours, theirs in zip(grads or (), expected_grads or ()):
        assert (ours is None) == (theirs is None), failure
        if ours is not None:
            assert ours.dtype == theirs.dtype and rel_error(ours, theirs) < 2 * bound(got.dtype), failure


@settings(max_examples=40, **FAST)
@given(mode_cases())
def test_dtype_mixes_autocast_and_grad_modes_match_torch(case):
    run_mode_case(case)


# --- 3. torch.func and forward-mode AD -------------------------------------------------------------
TRANSFORMS = ("grad", "vjp", "jvp", "forward_ad", "grad_of_grad", "jvp_of_grad", "vmap_of_grad")


@dataclass(frozen=True)
class TransformCase:
    transform: str
    x_shape: tuple
    w_shape: tuple
    kwargs: dict
    argnums: tuple  # differentiate in these of (x, w, b)
    seed: int


@st.composite
def transform_cases(draw):
    x_shape, w_shape, kwargs = draw(geometries(unbatched_ok=False))
    argnums = draw(st.sampled_from([(0,), (1,), (2,), (0, 1), (0, 1, 2)]))
    return TransformCase(
        draw(st.sampled_from(TRANSFORMS)), x_shape, w_shape, kwargs, argnums, draw(st.integers(0, 2**31 - 1))
    )


def _apply_transform(case: TransformCase, conv, primals, directions):
    """The transform of f(x, w, b) = sum(sin(conv(x, w, b))) (or of conv itself for jvp/vjp)."""

    def f(*args):
        return conv(*args, **case.kwargs).sin().sum()

    def y(*args):
        return conv(*args, **case.kwargs)

    argnums = case.argnums
    if case.transform == "grad":
        return torch.func.grad(f, argnums=argnums)(*primals)
    if case.transform == "vjp":
        out, pullback = torch.func.vjp(y, *primals)
        return pullback(torch.cos(out))
    if case.transform == "jvp":
        return torch.func.jvp(y, primals, directions)[1]
    if case.transform == "forward_ad":
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, t) for p, t in zip(primals, directions)]
            return fwAD.unpack_dual(y(*duals)).tangent
    if case.transform == "grad_of_grad":
        return torch.func.grad(
            lambda *a: sum(g.square().sum() for g in torch.func.grad(f, argnums=argnums)(*a))
        )(*primals)
    if case.transform == "jvp_of_grad":  # a Hessian-vector product, forward over reverse
        return torch.func.jvp(lambda *a: torch.func.grad(f, argnums=argnums)(*a), primals, directions)[1]
    # per-sample gradients of the weight: vmap over the batch of x
    x, w, b = primals
    per_sample = torch.func.vmap(torch.func.grad(lambda w, x: f(x.unsqueeze(0), w, b)), in_dims=(None, 0))
    return per_sample(w, x)


def run_transform_case(case: TransformCase):
    generator = torch.Generator(torch.get_default_device()).manual_seed(case.seed)  # the tensors' device
    shapes = (case.x_shape, case.w_shape, (case.w_shape[0],))
    primals = tuple(torch.randn(s, generator=generator, dtype=EXACT) for s in shapes)
    directions = tuple(torch.randn(s, generator=generator, dtype=EXACT) for s in shapes)
    failure = reproduction(MODULE, f"run_transform_case({case!r})")
    with TritonProof() as proof:
        got = _apply_transform(case, triton_conv.conv2d, primals, directions)
    assert "fprop_kernel" in proof.launches, (proof.launches, failure)
    expected = _apply_transform(case, F.conv2d, primals, directions)
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected), failure
    for ours, theirs in zip(got, expected):
        assert ours is not None and ours.shape == theirs.shape, failure
        assert rel_error(ours, theirs) < 100 * EXACT_TOL, failure


@settings(max_examples=20, **FAST)
@given(transform_cases())
def test_torch_func_transforms_match_torch(case):
    run_transform_case(case)


# --- 4. the kinds of the integer arguments ----------------------------------------------------------
def _int_kinds(value: int):
    """value in each form torch's int arguments may be given in (and a few it refuses)."""
    return st.sampled_from([
        value, np.int64(value), np.int32(value), torch.tensor(value), torch.tensor([value]),
        torch.tensor(value, dtype=torch.int32), torch.tensor([[value]]), (value,), [value],
        (np.int64(value), torch.tensor(value)), (value, torch.tensor([[[value]]])),
    ])  # fmt: skip


BAD_KINDS = [True, 1.0, np.float64(1.0), torch.tensor(1.0), "1", None, (1, 1, 1), [], np.array([1, 1]),
             torch.tensor([1, 1]), range(1, 3), 2**63, -(2**63) - 1, 2**40, -1, 0]  # fmt: skip


@dataclass(frozen=True)
class KindCase:
    argument: str
    value: object = field(compare=False)

    def __repr__(self):
        return f"KindCase({self.argument!r}, {_value_repr(self.value)})"


def _value_repr(value):
    if isinstance(value, torch.Tensor):
        return f"torch.tensor({value.tolist()!r}, dtype={value.dtype})"
    if isinstance(value, np.ndarray):
        return f"np.array({value.tolist()!r})"
    if isinstance(value, np.generic):
        return f"np.{type(value).__name__}({value.item()!r})"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_value_repr(v) for v in value)
        return f"({inner},)" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


@st.composite
def kind_cases(draw):
    argument = draw(st.sampled_from(["stride", "padding", "dilation", "groups"]))
    good = {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}[argument]
    value = draw(st.one_of(_int_kinds(good), st.sampled_from(BAD_KINDS)))
    return KindCase(argument, value)


def run_kind_case(case: KindCase):
    x = torch.randn(1, 4, 7, 6)
    w = torch.randn(4, 2, 3, 3)
    kwargs = {"groups": 2, case.argument: case.value}
    failure = reproduction(MODULE, f"run_kind_case({case!r})")
    torch_kind, expected = outcome(lambda: F.conv2d(x, w, **kwargs))
    with TritonProof() as proof:
        kind, got = outcome(lambda: triton_conv.conv2d(x, w, **kwargs))
    assert proof.launches == ({"fprop_kernel": 1} if kind == "ok" else {}), (proof.launches, failure)
    if kind == "raise":
        assert isinstance(got, RuntimeError) and case.argument in str(got), (got, failure)
        if torch_kind == "raise":
            for natural in (TypeError, ValueError):
                assert not isinstance(expected, natural) or isinstance(got, natural), (got, expected, failure)
        else:  # refused where torch takes it: a bool tensor (torch's own handling is inconsistent); a bool
            # after a tuple's first element, which torch's parser takes as 1, is never drawn (README says so)
            assert _has_bool_tensor(case.value), (got, failure)
        return
    assert torch_kind == "ok", (expected, failure)
    assert got.shape == expected.shape and rel_error(got, expected) < bound(torch.float32), failure


def _has_bool_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool
    return isinstance(value, (tuple, list)) and any(_has_bool_tensor(v) for v in value)


@settings(max_examples=60, **FAST)
@given(kind_cases())
def test_integer_argument_kinds_match_torch(case):
    run_kind_case(case)


@pytest.mark.parametrize("argument", ["stride", "padding", "dilation", "groups"])
def test_a_one_element_tensor_of_any_rank_is_an_int(argument):
    """torch takes tensor([[2]]) wherever an int goes (it was refused here once)."""
    good = {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}[argument]
    for value in (torch.tensor([[good]]), (good, torch.tensor([[[good]]], dtype=torch.int32))):
        run_kind_case(KindCase(argument, value))


def test_a_case_reproduces_from_its_repr():
    """The failure messages' commands rebuild the same case."""
    strided = Layout((3, 2, 1, 0), (2, 1, 1, 1), (False,) * 4, 1, 2, 1)
    case = ViewCase((2, 1, 3, 3), (1, 1, 2, 2), {"stride": (1, 1)}, torch.float16, Layout.dense(4), strided,
                    None, Layout.dense(4), "x", 7)  # fmt: skip
    namespace = {"torch": torch, "np": np, **globals()}
    assert eval(repr(case), namespace) == case
    kind = KindCase("stride", (np.int64(2), torch.tensor([2])))
    again = eval(repr(kind), namespace)
    assert again.argument == "stride" and _value_repr(again.value) == _value_repr(kind.value)
