"""Each class of wrong answer that issue 11 found, closed: one test per class, against torch.

Bias views, forward-mode AD, autocast and float64, the frozen-weight bias gradient, degenerate
shapes, Conv2dFunction's own checks, the kinds and catchability of errors, and double backward
(each pass's gradient again on this package's kernels). Hooks of convert_model are in test_nn.py,
the tuning cache's robustness in test_tuning_cache_robustness.py, property tests over argument kinds
in test_contract_properties.py.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

import triton_conv
from triton_conv import ConvArgumentError, ConvTypeError
from triton_conv.autograd import conv2d_op, input_grad_op, weight_grad_op

from .conftest import TritonProof
from .contract import (
    EXACT,
    EXACT_TOL,
    LOW_PRECISION,
    gradchecks_run_our_kernels,
    outcome,
    reproduction,
    same_outcome_as_torch,
)
from .reference import bound, rel_error

MODULE = "tests.test_contract"


def _exact(*shapes, requires_grad=False):
    return [torch.randn(s, dtype=EXACT, requires_grad=requires_grad) for s in shapes]


# --- bias of any strides -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sliced", "expanded", "offset"])
def test_bias_of_any_strides(kind, triton_only):
    x, w = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3)
    # NaN beside the bias's elements: a read past them shows in the output.
    storage = torch.full((16,), float("nan"))
    if kind == "sliced":
        storage[1:9:2] = torch.randn(4)
        bias = storage[1:9:2]
    elif kind == "expanded":
        storage[5] = 0.75
        bias = storage[5:6].expand(4)
    else:
        storage[11:15] = torch.randn(4)
        bias = storage[11:15]
    bias = bias.detach().requires_grad_()
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, bias, padding=1)
        y.backward(torch.ones_like(y))
    assert proof.launches == {"fprop_kernel": 1}
    expected = F.conv2d(x.double(), w.double(), bias.detach().double(), padding=1)
    assert rel_error(y, expected) < bound(torch.float32)  # TF32 on a GPU
    assert torch.equal(bias.grad, torch.full((4,), 2.0 * 6 * 5))
    with triton_only():
        y = triton_conv.conv2d_with_config(x, w, bias.detach(), padding=1)
    assert rel_error(y, expected) < bound(torch.float32)


# --- forward-mode AD ---------------------------------------------------------------------------------
def test_forward_mode_ad_matches_torch(triton_only):
    x, w, b, tx, tw, tb = _exact((2, 3, 6, 5), (4, 3, 3, 2), (4,), (2, 3, 6, 5), (4, 3, 3, 2), (4,))
    kwargs = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in ((x, tx), (w, tw), (b, tb))]
        expected = fwAD.unpack_dual(F.conv2d(*duals, **kwargs)).tangent
    with triton_only() as proof, fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in ((x, tx), (w, tw), (b, tb))]
        got = fwAD.unpack_dual(triton_conv.conv2d(*duals, **kwargs)).tangent
    assert proof.launches == {"fprop_kernel": 3}  # the primal, then conv(tx, w) and conv(x, tw)
    assert rel_error(got, expected) < EXACT_TOL
    with triton_only():
        _, got = torch.func.jvp(lambda *a: triton_conv.conv2d(*a, **kwargs), (x, w, b), (tx, tw, tb))
    assert rel_error(got, expected) < EXACT_TOL


def test_forward_mode_through_the_backward_ops(triton_only):
    """jvp of a gradient (forward over reverse, a Hessian-vector product) differentiates dgrad and
    wgrad in forward mode: their jvp formulas, on this package's kernels."""
    x, w, tw = _exact((2, 3, 5, 5), (4, 3, 3, 3), (4, 3, 3, 3))

    def loss(conv):
        return lambda w: conv(x, w, None, padding=1).square().sum()

    with triton_only() as proof:
        _, got = torch.func.jvp(torch.func.grad(loss(triton_conv.conv2d)), (w,), (tw,))
    _, expected = torch.func.jvp(torch.func.grad(loss(F.conv2d)), (w,), (tw,))
    assert rel_error(got, expected) < EXACT_TOL
    assert proof.launches["wgrad_kernel"] >= 2 and proof.launches["fprop_kernel"] >= 2


# --- autocast ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("autocast_dtype", LOW_PRECISION)
def test_autocast_casts_as_torch_does(autocast_dtype, triton_only):
    """float64 is left alone; float16/bfloat16/float32 go to the autocast dtype; mixes raise where
    torch raises."""
    cases = {
        "float64": (torch.float64, torch.float64, torch.float64),
        "float32": (torch.float32, torch.float32, torch.float32),
        "float16": (torch.float16, torch.float16, None),
        "mixed_low": (torch.float16, torch.float32, torch.bfloat16),
        "float64_with_float32": (torch.float64, torch.float32, None),
    }
    for name, dtypes in cases.items():
        x, w, b = (
            None if d is None else torch.randn(s).to(d)
            for s, d in zip(((2, 3, 5, 4), (4, 3, 3, 3), (4,)), dtypes)
        )
        with torch.autocast(torch.get_default_device().type, dtype=autocast_dtype):
            torch_kind, expected = outcome(lambda: F.conv2d(x, w, b, padding=1))  # noqa: B023
            with triton_only():
                kind, got = outcome(lambda: triton_conv.conv2d(x, w, b, padding=1))  # noqa: B023
        assert kind == torch_kind, (name, got, expected)
        if kind == "ok":
            assert got.dtype == expected.dtype, name
            assert rel_error(got, expected) < (EXACT_TOL if got.dtype == torch.float64 else 3e-2), name
        else:
            assert isinstance(got, RuntimeError), name


# --- the bias gradient with the weight frozen ------------------------------------------------------------
def test_frozen_weight_bias_gradient_sums_float64_in_float64(triton_only):
    """dy's values cancel to far below float32's resolution: a float32 sum loses them."""
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)  # frozen
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, b)
        dy = torch.full_like(y, 1e-9)
        dy[:, :, 0, 0] = 1e8
        dy[:, :, 1, 1] = -1e8
        y.backward(dy)
    assert proof.launches == {"fprop_kernel": 1}  # the bias gradient alone is a sum: no GEMM
    expected = dy.sum(dim=(0, 2, 3))
    assert torch.allclose(b.grad, expected, rtol=1e-12, atol=0)


# --- degenerate shapes: what torch does, exactly ------------------------------------------------------
def _degenerate_cases():
    for n, c, k, (h, w), (r, s), padding, groups, bias, stride in itertools.product(
        (0, 2), (0, 2), (0, 2), ((0, 4), (3, 0), (3, 4)), ((0, 2), (2, 0), (1, 1), (2, 2)),
        (0, 1, "same"), (1, 2), (False, True), (1, 2),
    ):  # fmt: skip
        yield (n, c, h, w), (k, c // groups, r, s), bias, dict(padding=padding, groups=groups, stride=stride)


def run_degenerate_case(x_shape, w_shape, with_bias, kwargs):
    failure = reproduction(MODULE, f"run_degenerate_case({x_shape}, {w_shape}, {with_bias}, {kwargs})")
    results = {}
    # Fresh values in float64 (a flipped or misplaced tap shows; both sides round alike), the same
    # for both sides; ours with torch's convolutions barred and its launches counted.
    values = [torch.randn(x_shape, dtype=EXACT), torch.randn(w_shape, dtype=EXACT)]
    values.append(torch.randn(w_shape[0], dtype=EXACT) if with_bias else None)
    for name, conv in (("torch", F.conv2d), ("ours", triton_conv.conv2d)):
        leaves = [None if v is None else v.clone().requires_grad_() for v in values]
        with TritonProof() if name == "ours" else contextlib.nullcontext() as proof:
            kind, y = outcome(lambda: conv(*leaves, **kwargs))  # noqa: B023
            grads = None
            if kind == "ok" and y.numel() == 0:  # an empty output's gradients: zeros of every input's shape
                y.sum().backward()
                grads = [None if t is None else t.grad for t in leaves]
        results[name] = (kind, y), grads
    (expected, expected_grads), (got, grads) = results["torch"], results["ours"]
    computed = got[0] == "ok" and got[1].numel() > 0 and math.prod(w_shape[1:]) > 0
    assert proof.launches == ({"fprop_kernel": 1} if computed else {}), (proof.launches, failure)
    # torch_crops: 'same' with a zero-size kernel (and no input channels, else both raise).
    if not same_outcome_as_torch(expected, got, failure, torch_crops=True):
        return
    for ours, theirs in zip(grads or (), expected_grads or ()):
        assert (ours is None) == (theirs is None), failure
        assert ours is None or (ours.shape == theirs.shape and torch.equal(ours, theirs)), failure


def test_degenerate_shapes_do_what_torch_does():
    """Every combination of empty batch, channels, output channels, image rows or columns and kernel
    sizes with padding, groups, bias and stride: raises where torch raises, the same tensor (and the
    same gradients of an empty output) otherwise."""
    for case in _degenerate_cases():
        run_degenerate_case(*case)


def test_no_input_channels_is_an_empty_output_as_in_torch(triton_only):
    x, w, b = torch.randn(2, 0, 5, 5), torch.randn(3, 0, 3, 3), torch.randn(3)
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, b)
    assert y.shape == F.conv2d(x, w, b).shape == (2, 0, 3, 3) and not proof.launches


EMPTY_BATCH_OPS = {
    # name -> (ours, torch's, input shape, weight shape): the batch empty
    "conv2d": (triton_conv.conv2d, F.conv2d, (0, 4, 5, 5), (6, 4, 3, 3)),
    "conv2d-no-channels": (triton_conv.conv2d, F.conv2d, (2, 0, 5, 5), (6, 0, 3, 3)),
    "conv_transpose2d": (triton_conv.conv_transpose2d, F.conv_transpose2d, (0, 4, 5, 5), (4, 6, 3, 3)),
    "conv1d": (triton_conv.conv1d, F.conv1d, (0, 4, 7), (6, 4, 3)),
}


@pytest.mark.parametrize("layouts", list(itertools.product((False, True), repeat=3)), ids=str)
@pytest.mark.parametrize("name", sorted(EMPTY_BATCH_OPS))
def test_an_empty_batch_is_laid_out_as_torch_lays_it_out(name, layouts, triton_only):
    """torch's empty path, on every device: the output contiguous whatever the inputs' layouts, the
    gradients zeros_like(input) and zeros_like(weight). Ours followed the rule of a batch (channels
    last if either input is), which matters once the empty tensor meets code that reads its strides
    (.view, a kernel's layout check). The fake implementations (torch.compile) give the same strides."""
    ours, theirs, input_shape, weight_shape = EMPTY_BATCH_OPS[name]
    x_last, w_last, dy_last = layouts

    def laid_out(shape, channels_last):
        t = torch.randn(shape)
        return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

    x, w, b = laid_out(input_shape, x_last), laid_out(weight_shape, w_last), torch.randn(6)
    strides = []
    for conv in (theirs, ours):
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        with triton_only() if conv is ours else contextlib.nullcontext() as proof:
            y = conv(*leaves)
            dy = laid_out(y.shape, dy_last)
            grads = torch.autograd.grad(y, leaves, dy)
        strides.append([y.stride()] + [g.stride() for g in grads])
    assert not proof.launches
    assert strides[1] == strides[0]
    if name != "conv1d":  # conv1d runs the conv2d op on height-one views
        from torch._subclasses.fake_tensor import FakeTensorMode

        op = ours
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fakes = [mode.from_tensor(t) for t in (x, w, b)]
            assert op(*fakes).stride() == strides[0][0]


@pytest.mark.parametrize("argument", ["stride", "padding", "dilation", "groups"])
def test_a_zero_dimensional_numpy_array_is_the_int_it_holds(argument, triton_only):
    """torch 2.13 fails an internal assert (PyList_Check) on np.array(2); ours computes with 2."""
    x, w = torch.randn(1, 4, 7, 6, dtype=EXACT), torch.randn(4, 2, 3, 3, dtype=EXACT)
    value = {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}[argument]
    kwargs = {"groups": 2, argument: value}
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, **{**kwargs, argument: np.array(value)})
    assert proof.launches == {"fprop_kernel": 1}
    assert rel_error(y, F.conv2d(x, w, **kwargs)) < EXACT_TOL


# --- Conv2dFunction and the ops check their arguments ------------------------------------------------
GEOMETRY = ((1, 1), (1, 1, 1, 1), (1, 1), 1)


@pytest.mark.parametrize(
    "change,words",
    [
        (dict(dilation=(0, 1)), "dilation"),
        (dict(padding=(-1, 0, 0, 0)), "padding"),
        (dict(stride=(1, 0)), "stride"),
        (dict(groups=0), "groups"),
        (dict(padding=(1, 1)), "padding"),
        (dict(bias=torch.randn(3)), "bias"),
        (dict(input=torch.randn(1, 2, 5, 5).double()), "dtype"),
    ],
)
@pytest.mark.parametrize("entry", ["Conv2dFunction", "op"])
def test_conv2d_function_checks_its_arguments(entry, change, words):
    args = dict(input=torch.randn(1, 2, 5, 5), weight=torch.randn(4, 2, 3, 3), bias=torch.randn(4))
    args.update(dict(zip(("stride", "padding", "dilation", "groups"), GEOMETRY)))
    args.update(change)
    call = triton_conv.Conv2dFunction.apply if entry == "Conv2dFunction" else conv2d_op
    with pytest.raises(RuntimeError, match=words) as caught:
        call(*args.values())
    assert isinstance(caught.value, (ValueError, TypeError))


def test_backward_ops_check_their_arguments():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(4, 2, 3, 3)
    with pytest.raises(ConvArgumentError, match="grad_output"):
        input_grad_op(torch.randn(1, 4, 4, 4), x, w, *GEOMETRY)
    with pytest.raises(ConvArgumentError, match="dilation"):
        weight_grad_op(torch.randn(1, 4, 5, 5), x, w, (1, 1), (1, 1, 1, 1), (0, 1), 1, True)


# --- errors: catchable as torch's, naming the argument; every kind torch accepts is accepted ---------
def test_errors_are_runtime_errors_and_natural_kinds():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 2, 3, 3)
    with pytest.raises(RuntimeError, match="groups"):
        triton_conv.conv2d(x, w, groups=3)
    with pytest.raises(ValueError, match="stride"):
        triton_conv.conv2d(x, w, stride=0, groups=2)
    with pytest.raises(TypeError, match="padding"):
        triton_conv.conv2d(x, w, padding=1.5, groups=2)
    assert issubclass(ConvArgumentError, RuntimeError) and issubclass(ConvArgumentError, ValueError)
    assert issubclass(ConvTypeError, RuntimeError) and issubclass(ConvTypeError, TypeError)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stride=np.int64(2), padding=np.int32(1), dilation=np.uint8(1), groups=np.int64(2)),
        dict(
            stride=torch.tensor(2),
            padding=torch.tensor([1]),
            dilation=(torch.tensor(2), 1),
            groups=torch.tensor(2),
        ),
        dict(stride=[np.int64(1), 2], padding=(np.int16(0),), groups=2),
    ],
    ids=["numpy", "tensors", "mixed"],
)
def test_integer_arguments_of_every_kind_torch_accepts(kwargs, triton_only):
    x, w = _exact((1, 4, 7, 6), (4, 2, 3, 3))
    with triton_only():
        got = triton_conv.conv2d(x, w, **kwargs)
    assert rel_error(got, F.conv2d(x, w, **kwargs)) < EXACT_TOL


def test_huge_values_give_a_clear_error_or_torch_answer():
    x, w = _exact((1, 2, 5, 5), (3, 2, 3, 3))
    for name in ("padding", "dilation"):
        with pytest.raises(ConvArgumentError, match=name):
            triton_conv.conv2d(x, w, **{name: 2**40})
    with pytest.raises(ConvArgumentError, match="out of range"):
        triton_conv.conv2d(x, w, stride=2**64)
    # A stride past the padded input leaves one output row: any such stride is torch's answer.
    got = triton_conv.conv2d(x, w, stride=(2**62, 10**9), padding=1)
    assert rel_error(got, F.conv2d(x, w, stride=(2**62, 10**9), padding=1)) < EXACT_TOL


@pytest.mark.parametrize(
    "conv, theirs, x_shape, w_shape, dilation",
    [
        (triton_conv.conv2d, F.conv2d, (2, 3, 5, 5), (4, 3, 1, 3), (2**31, 1)),
        (triton_conv.conv1d, F.conv1d, (2, 3, 6), (4, 3, 1), 2**31),
        (triton_conv.conv_transpose2d, F.conv_transpose2d, (2, 3, 4, 4), (3, 2, 1, 1), 2**32 + 1),
    ],
    ids=["conv2d", "conv1d", "conv_transpose2d"],
)
def test_a_huge_dilation_of_a_one_tap_axis_is_torchs_answer_in_every_pass(
    conv, theirs, x_shape, w_shape, dilation, triton_only
):
    """A one-tap axis's dilated extent is 1 whatever its dilation, so the geometry checks accept any
    dilation there, as torch does; the kernels must never see one past int32 (the weight gradient's
    tap offsets failed to compile). The canonical problem spaces one tap by 1."""
    x, w = _exact(x_shape, w_shape, requires_grad=True)
    grads = {}
    for name, fn in (("ours", conv), ("torch", theirs)):
        with triton_only() if name == "ours" else contextlib.nullcontext() as proof:
            y = fn(x, w, dilation=dilation)
            grads[name] = (y, *torch.autograd.grad(y.sin().sum(), (x, w)))
        if name == "ours":
            assert set(proof.launches) == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}, proof.launches
    for ours, want in zip(grads["ours"], grads["torch"], strict=True):
        assert rel_error(ours, want) < EXACT_TOL


# --- gradients of gradients, on this package's kernels ---------------------------------------------
def test_double_backward_runs_on_triton_kernels(triton_only):
    """A gradient penalty: d/d(w, b) of |dL/dx|^2. The second pass differentiates dgrad (an fprop
    and a wgrad) and wgrad; no torch convolution runs."""
    kwargs = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    x, w, b = _exact((2, 4, 7, 6), (6, 2, 3, 2), (6,), requires_grad=True)
    grads = {}
    for name, conv in (("ours", triton_conv.conv2d), ("torch", F.conv2d)):
        for t in (x, w, b):
            t.grad = None
        with triton_only() if name == "ours" else torch.enable_grad() as proof:
            (dx,) = torch.autograd.grad(conv(x, w, b, **kwargs).sin().sum(), x, create_graph=True)
            dx.square().sum().backward()
        grads[name] = [t.grad.clone() for t in (x, w, b)]
        if name == "ours":
            assert set(proof.launches) == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}
    for ours, theirs in zip(grads["ours"], grads["torch"]):
        assert rel_error(ours, theirs) < EXACT_TOL


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((1, 4, 4, 3), (4, 2, 2, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
        ((1, 2, 3, 3), (2, 2, 2, 2), dict(padding="same")),
    ],
)
def test_gradcheck_and_gradgradcheck_float64(x_shape, w_shape, kwargs):
    inputs = _exact(x_shape, w_shape, (w_shape[0],), requires_grad=True)

    def conv(*args):
        return triton_conv.conv2d(*args, **kwargs)

    gradchecks_run_our_kernels(conv, inputs)


def test_hessian_and_per_sample_gradients_match_torch(triton_only):
    x, w, b = _exact((2, 1, 3, 3), (2, 1, 2, 2), (2,))

    def loss(conv):
        return lambda w, x: conv(x.unsqueeze(0), w, b, padding=1).sin().sum()

    with triton_only() as per_sample:
        got = torch.func.vmap(torch.func.grad(loss(triton_conv.conv2d)), in_dims=(None, 0))(w, x)
    assert per_sample.launches.keys() == {"fprop_kernel", "wgrad_kernel"}
    assert (
        rel_error(got, torch.func.vmap(torch.func.grad(loss(F.conv2d)), in_dims=(None, 0))(w, x)) < EXACT_TOL
    )
    with triton_only() as second_order:
        hessian = torch.func.hessian(lambda w: loss(triton_conv.conv2d)(w, x[0]))(w)
    assert {"fprop_kernel", "wgrad_kernel"} <= second_order.launches.keys()
    assert rel_error(hessian, torch.func.hessian(lambda w: loss(F.conv2d)(w, x[0]))(w)) < EXACT_TOL


def test_opcheck_with_gradients_through_the_backward_ops():
    """opcheck's autograd registration and AOT checks on the backward ops with inputs that need
    grad (their own derivatives), as torch.compile would trace a double backward."""
    x, w = (t.requires_grad_() for t in _exact((1, 4, 4, 3), (4, 2, 2, 2)))
    geometry = ((2, 1), (1, 1, 0, 1), (1, 2), 2)
    dy = torch.randn(1, 4, 2, 3, dtype=EXACT, requires_grad=True)
    torch.library.opcheck(input_grad_op, (dy, x, w, *geometry))
    torch.library.opcheck(weight_grad_op, (dy, x, w, *geometry, True))


def test_a_problem_checked_while_tracing_is_not_remembered_for_eager_calls(monkeypatch):
    """While torch.export traces (plain ints, so the ops' memo could keep them) the problem is left
    uncanonical; kept, an eager call of the same shapes ran a dilation of 2**31 on a one-tap axis,
    which no kernel compiles."""
    from triton_conv.autograd import checks

    x, w = torch.empty(2, 3, 5, 5), torch.empty(4, 3, 1, 3)
    arguments = (x, w, None, (1, 1), (0, 0, 0, 0), (2**31, 1), 1)
    checks._PROBLEMS.clear()
    with monkeypatch.context() as tracing:
        tracing.setattr(torch.compiler, "is_compiling", lambda: True)
        assert checks.checked_problem(*arguments).dilation == (2**31, 1)  # as given, while tracing
    assert checks.checked_problem(*arguments).dilation == (1, 1)
