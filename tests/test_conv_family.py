"""conv1d and conv_transpose2d as differentiable ops and modules, against torch: forward-mode AD,
torch.func, double backward (each pass's gradient again on this package's kernels), gradcheck and
gradgradcheck in float64, opcheck, torch.compile without a graph break, autocast, Conv1d and
ConvTranspose2d (state_dict, output_size, padding modes) and convert_model on whole models.
"""

from __future__ import annotations

import warnings

import numpy
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

import triton_conv
from triton_conv.autograd import conv_transpose2d_op
from triton_conv.launchers.common import launch_counts

from .contract import (
    EXACT,
    EXACT_TOL,
    LOW_PRECISION,
    compiled_against_eager,
    gradchecks_run_our_kernels,
    outcome,
)
from .reference import rel_error

# conv_transpose2d with a crop (output_padding > padding), groups and dilation; conv1d strided, dilated.
TRANSPOSED = (
    (2, 4, 3, 4),
    (4, 2, 3, 2),
    dict(stride=(2, 1), output_padding=(1, 0), groups=2, dilation=(1, 2)),
)
ONE_D = ((2, 4, 9), (6, 2, 3), dict(stride=2, padding=1, dilation=2, groups=2))
OPS = {
    "conv_transpose2d": (
        triton_conv.conv_transpose2d, F.conv_transpose2d, TRANSPOSED, lambda w, kw: w[1] * kw["groups"]
    ),
    "conv1d": (triton_conv.conv1d, F.conv1d, ONE_D, lambda w, kw: w[0]),
}  # fmt: skip
# Smaller still for gradgradcheck (each of its perturbations runs the kernels).
GRADCHECK = {
    "conv_transpose2d": ((1, 2, 2, 3), (2, 1, 2, 2), dict(stride=(2, 1), output_padding=(1, 0), groups=2,
                                                          dilation=(1, 2))),
    "conv1d": ((1, 2, 5), (2, 1, 2), dict(stride=2, padding=1, dilation=2, groups=2)),
}  # fmt: skip


def _exact(*shapes, requires_grad=False):
    return [torch.randn(s, dtype=EXACT, requires_grad=requires_grad) for s in shapes]


def _case(name, requires_grad=False):
    ours, theirs, (x_shape, w_shape, kwargs), channels = OPS[name]
    x, w, b = _exact(x_shape, w_shape, (channels(w_shape, kwargs),), requires_grad=requires_grad)
    return ours, theirs, kwargs, (x, w, b)


@pytest.mark.parametrize("name", OPS)
def test_gradcheck_and_gradgradcheck_float64(name):
    ours, _, _, channels = OPS[name]
    x_shape, w_shape, kwargs = GRADCHECK[name]
    inputs = _exact(x_shape, w_shape, (channels(w_shape, kwargs),), requires_grad=True)

    def conv(*args):
        return ours(*args, **kwargs)

    gradchecks_run_our_kernels(conv, inputs)


@pytest.mark.parametrize("name", OPS)
def test_forward_mode_ad_matches_torch(name, triton_only):
    ours, theirs, kwargs, primals = _case(name)
    tangents = [torch.randn_like(t) for t in primals]
    with fwAD.dual_level():
        expected = fwAD.unpack_dual(theirs(*map(fwAD.make_dual, primals, tangents), **kwargs)).tangent
    with triton_only() as proof, fwAD.dual_level():
        got = fwAD.unpack_dual(ours(*map(fwAD.make_dual, primals, tangents), **kwargs)).tangent
    kernel = "dgrad_kernel" if name == "conv_transpose2d" else "fprop_kernel"
    assert proof.launches == {kernel: 3}  # the primal, then op(tx, w) and op(x, tw)
    assert rel_error(got, expected) < EXACT_TOL
    with triton_only():
        _, got = torch.func.jvp(lambda *a: ours(*a, **kwargs), tuple(primals), tuple(tangents))
    assert rel_error(got, expected) < EXACT_TOL


@pytest.mark.parametrize("name", OPS)
def test_double_backward_runs_on_triton_kernels(name, triton_only):
    """A gradient penalty: d/d(x, w, b) of |dL/dx|^2, every pass again on this package's kernels."""
    ours, theirs, kwargs, leaves = _case(name, requires_grad=True)
    grads = {}
    for label, conv in (("ours", ours), ("torch", theirs)):
        for t in leaves:
            t.grad = None
        with triton_only() if label == "ours" else torch.enable_grad() as proof:
            (dx,) = torch.autograd.grad(conv(*leaves, **kwargs).sin().sum(), leaves[0], create_graph=True)
            dx.square().sum().backward()
        grads[label] = [t.grad.clone() for t in leaves]
        if label == "ours":
            assert set(proof.launches) == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}
    for got, expected in zip(grads["ours"], grads["torch"]):
        assert rel_error(got, expected) < EXACT_TOL


@pytest.mark.parametrize("name", OPS)
def test_torch_func_transforms_match_torch(name, triton_only):
    """grad, vjp, a Hessian-vector product (jvp of grad) and per-sample gradients (vmap of grad)."""
    ours, theirs, kwargs, (x, w, b) = _case(name)
    tw = torch.randn_like(w)

    def results(conv):
        def loss(w, x):
            return conv(x, w, b, **kwargs).sin().sum()

        out, pullback = torch.func.vjp(lambda x, w: conv(x, w, b, **kwargs), x, w)
        per_sample = torch.func.vmap(torch.func.grad(lambda w, x: loss(w, x.unsqueeze(0))), in_dims=(None, 0))
        return (
            torch.func.grad(loss, argnums=(0, 1))(w, x),
            pullback(out.cos()),
            torch.func.jvp(lambda w: torch.func.grad(loss)(w, x), (w,), (tw,))[1],
            per_sample(w, x),
        )

    with triton_only() as proof:
        ours_results = results(ours)
    assert proof.launches.keys() == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}
    for got, expected in zip(ours_results, results(theirs)):
        got, expected = (v if isinstance(v, tuple) else (v,) for v in (got, expected))
        for a, b_ in zip(got, expected, strict=True):
            assert rel_error(a, b_) < 100 * EXACT_TOL


def test_opcheck():
    x, w, b = _exact((2, 4, 3, 4), (4, 2, 3, 2), (4,), requires_grad=True)
    args = ((2, 1), (1, 0), (1, 0), 2, (1, 2))  # stride, padding, output_padding (a crop), groups, dilation
    torch.library.opcheck(conv_transpose2d_op, (x, w, b, *args))
    x, w = (t.detach().float().to(memory_format=torch.channels_last) for t in (x, w))
    torch.library.opcheck(conv_transpose2d_op, (x, w, None, (2, 2), (0, 0), (0, 0), 1, (1, 1)))


def test_compiled_model_has_no_graph_break():
    """fullgraph=True over a decoder with a Conv1d head: one graph, our ops in it (the transposed
    forward as triton_conv.conv_transpose2d, its backward as conv2d and conv2d_weight_grad), and the
    eager model's gradients."""

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 3, 2, stride=2)
            self.up2 = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)
            self.head = nn.Conv1d(2, 2, 3, padding=1)

        def forward(self, x):
            y = self.up2(torch.relu(self.up(x)))
            return self.head(y.flatten(2))

    x = torch.randn(2, 4, 3, 2, requires_grad=True)
    launched, forward_ops, backward_ops = compiled_against_eager(Decoder(), x)
    assert launched == {"dgrad_kernel": 2 + 1, "fprop_kernel": 1 + 2, "wgrad_kernel": 3}
    assert {"triton_conv.conv_transpose2d.default", "triton_conv.conv2d.default"} <= forward_ops
    assert {"triton_conv.conv2d.default", "triton_conv.conv2d_weight_grad.default"} <= backward_ops
    assert not any("convolution" in op for op in forward_ops | backward_ops)


@pytest.mark.parametrize("autocast_dtype", LOW_PRECISION)
@pytest.mark.parametrize("name", OPS)
def test_autocast_casts_as_torch_does(name, autocast_dtype, triton_only):
    """float64 left alone, lower precisions cast to the autocast dtype, mixes raise where torch's do."""
    ours, theirs, (x_shape, w_shape, kwargs), channels = OPS[name]
    shapes = (x_shape, w_shape, (channels(w_shape, kwargs),))
    for dtypes in ((EXACT,) * 3, (torch.float32,) * 3, (torch.float16, torch.float32, torch.bfloat16),
                   (EXACT, torch.float32, None)):  # fmt: skip
        x, w, b = (None if d is None else torch.randn(s).to(d) for s, d in zip(shapes, dtypes))
        with torch.autocast(torch.get_default_device().type, dtype=autocast_dtype):
            torch_kind, expected = outcome(lambda: theirs(x, w, b, **kwargs))  # noqa: B023
            with triton_only():
                kind, got = outcome(lambda: ours(x, w, b, **kwargs))  # noqa: B023
        assert kind == torch_kind, (dtypes, got, expected)
        if kind == "ok":
            assert got.dtype == expected.dtype, dtypes
            assert rel_error(got, expected) < (EXACT_TOL if got.dtype == EXACT else 3e-2), dtypes
        else:
            assert isinstance(got, RuntimeError), dtypes


# --- the modules -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "output_size",
    [None, [9, 9], torch.Size([2, 6, 10, 11]), [10, 10]],
    ids=["none", "min", "max_nchw", "mixed"],
)
def test_conv_transpose2d_module_matches_torch(output_size, triton_only):
    kwargs = dict(stride=(2, 3), padding=(1, 0), dilation=(1, 1), groups=2)
    reference = nn.ConvTranspose2d(4, 6, (3, 3), **kwargs).double()
    module = triton_conv.ConvTranspose2d(4, 6, (3, 3), **kwargs).double()
    assert module.state_dict().keys() == reference.state_dict().keys()
    module.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 5, 3, dtype=EXACT, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    with triton_only() as proof:
        y = module(x, output_size)
        grad_output = torch.randn_like(y)
        y.backward(grad_output)
    assert proof.launches == {"dgrad_kernel": 1, "fprop_kernel": 1, "wgrad_kernel": 1}
    y_ref = reference(x_ref, output_size)
    y_ref.backward(grad_output)
    assert y.shape == y_ref.shape and rel_error(y, y_ref) < EXACT_TOL
    for got, expected in ((x.grad, x_ref.grad), (module.weight.grad, reference.weight.grad),
                          (module.bias.grad, reference.bias.grad)):  # fmt: skip
        assert rel_error(got, expected) < EXACT_TOL
    unbatched = module(x[0].detach(), None if output_size is None else list(output_size)[-2:])
    assert (
        rel_error(
            unbatched, reference(x[0].detach(), None if output_size is None else list(output_size)[-2:])
        )
        < EXACT_TOL
    )


def _refused_as_module_refuses(ours, theirs, words: str):
    """torch's modules refuse with ValueError or TypeError (some naming nothing: "object of type
    'int' has no len()"); ours with an error of the same kind, that is also torch's convolutions'
    RuntimeError, and that names the argument."""
    torch_kind, expected = outcome(theirs)
    kind, got = outcome(ours)
    assert kind == torch_kind == "raise", (got, expected)
    assert isinstance(got, type(expected)) and isinstance(got, RuntimeError), (got, expected)
    assert words in str(got), (got, expected)


def test_conv_transpose2d_module_refuses_what_torch_refuses():
    module, reference = triton_conv.ConvTranspose2d(2, 2, 3, stride=2), nn.ConvTranspose2d(2, 2, 3, stride=2)
    x = torch.randn(1, 2, 4, 4)
    # out of range, lengths torch refuses, no list, and floats (torch's error then names output_padding)
    bad_sizes = ([12, 12], [9], [1, 2, 3], [], 7, "ab", torch.tensor(10), [10.0, 10.0], [10, None],
                 [numpy.float32(10), 10])  # fmt: skip
    launched = dict(launch_counts)
    for output_size in bad_sizes:
        _refused_as_module_refuses(
            lambda: module(x, output_size),  # noqa: B023
            lambda: reference(x, output_size),  # noqa: B023
            "output_size",
        )
    assert launch_counts == launched  # refused before any kernel
    with pytest.raises(ValueError, match="zeros"):  # torch's constructor, as torch's
        triton_conv.ConvTranspose2d(2, 2, 3, padding_mode="reflect")
    module.padding_mode = reference.padding_mode = "reflect"  # set after construction
    _refused_as_module_refuses(lambda: module(x), lambda: reference(x), "padding_mode='reflect'")


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv1d_module_matches_torch(padding_mode, triton_only):
    kwargs = dict(stride=2, padding=2, dilation=2, groups=2, padding_mode=padding_mode)
    reference = nn.Conv1d(4, 6, 3, **kwargs).double()
    module = triton_conv.Conv1d(4, 6, 3, **kwargs).double()
    module.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 11, dtype=EXACT, requires_grad=True)
    with triton_only() as proof:
        y = module(x)
        y.square().sum().backward()
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
    x_ref = x.detach().clone().requires_grad_()
    y_ref = reference(x_ref)
    y_ref.square().sum().backward()
    assert rel_error(y, y_ref) < EXACT_TOL and rel_error(x.grad, x_ref.grad) < EXACT_TOL
    assert rel_error(module.weight.grad, reference.weight.grad) < EXACT_TOL


class UNetish(nn.Module):
    """A small U-Net-style model with what convert_model converts and what it leaves alone."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fuse = nn.Conv2d(7, 4, 3, padding=1)
        self.temporal = nn.Conv1d(4, 4, 3, padding=1, groups=2)
        self.volume = nn.Conv3d(1, 1, 1)
        self.up1d = nn.ConvTranspose1d(4, 4, 2, stride=2)
        self.lazy = nn.LazyConv2d(2, 1)

    def forward(self, x):
        skip = x
        x = self.up(torch.relu(self.down(x)))
        x = self.fuse(torch.cat([x, skip], dim=1))
        n, c, h, w = x.shape
        x = self.temporal(x.flatten(2)).view(n, c, h, w)
        return x


def test_convert_model_converts_the_family_and_reports_the_rest(triton_only):
    class OwnTransposed(nn.ConvTranspose2d):
        pass

    seed = torch.initial_seed()
    original, model = (torch.manual_seed(seed) and UNetish().double() for _ in range(2))
    model.extra = OwnTransposed(2, 2, 1)
    weights = {name: module.weight for name, module in model.named_children() if name != "lazy"}
    report = []
    assert triton_conv.convert_model(model, report=report) is model
    kinds = {name: type(module) for name, module in model.named_children()}
    assert kinds["down"] is triton_conv.Conv2d and kinds["fuse"] is triton_conv.Conv2d
    assert kinds["up"] is triton_conv.ConvTranspose2d and kinds["temporal"] is triton_conv.Conv1d
    assert all(getattr(model, name).weight is weight for name, weight in weights.items())
    reasons = dict(report)
    assert set(reasons) == {"volume", "up1d", "lazy", "extra"}
    assert "no kernels" in reasons["volume"] and "no kernels" in reasons["up1d"]
    assert "lazy" in reasons["lazy"] and "subclasses nn.ConvTranspose2d" in reasons["extra"]
    x = torch.randn(2, 3, 6, 4, dtype=EXACT)
    with triton_only() as proof:
        got = model(x)
        got.square().sum().backward()
    assert proof.launches["dgrad_kernel"] >= 1 and proof.launches["wgrad_kernel"] == 4
    expected = original(x)
    assert rel_error(got, expected) < EXACT_TOL
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        triton_conv.convert_model(model)
    assert len(caught) == 1 and "volume" in str(caught[0].message)


def test_conv_transpose2d_function_and_op_agree_and_check_their_arguments(triton_only):
    x, w, b = _exact((2, 4, 3, 4), (4, 2, 3, 2), (4,), requires_grad=True)
    arguments = ((2, 1), (1, 0), (1, 0), 2, (1, 2))  # stride, padding, output_padding, groups, dilation
    results = []
    for fn in (triton_conv.ConvTranspose2dFunction.apply, conv_transpose2d_op):
        for t in (x, w, b):
            t.grad = None
        with triton_only():
            y = fn(x, w, b, *arguments)
            y.backward(torch.ones_like(y))
        results.append((y.detach(), x.grad, w.grad, b.grad))
    for first, second in zip(*results):
        assert torch.equal(first, second)
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]  # the op's formula is the Function's
    geometry = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2))
    y = F.conv_transpose2d(*leaves, **geometry)
    y.backward(torch.ones_like(y))
    for name, got, want in zip(("y", "dx", "dw", "db"), results[0], (y, *(t.grad for t in leaves))):
        assert rel_error(got, want) < 1e-12, name
    for bad, words in (
        (((2, 1), (1, 0), (2, 0), 2, (1, 2)), "output_padding"),
        (((0, 1), (1, 0), (0, 0), 2, (1, 1)), "stride"),
    ):
        with pytest.raises(RuntimeError, match=words):
            triton_conv.ConvTranspose2dFunction.apply(x, w, b, *bad)


def test_conv_transpose2d_op_takes_one_value_for_both_axes_under_autograd(triton_only):
    """The op takes one value for both axes, as the functions do; with a gradient to record, its
    autograd formula indexed the second and raised IndexError, after the forward kernel ran."""
    x, w, b = _exact((1, 2, 2, 3), (2, 1, 2, 2), (2,), requires_grad=True)
    with triton_only():
        y = conv_transpose2d_op(x, w, b, [2], [1], [1], 2, [1])
        y.backward(torch.ones_like(y))
    x_ref, w_ref, b_ref = (t.detach().requires_grad_() for t in (x, w, b))
    y_ref = F.conv_transpose2d(x_ref, w_ref, b_ref, stride=2, padding=1, output_padding=1, groups=2)
    y_ref.backward(torch.ones_like(y_ref))
    for got, expected in ((y, y_ref), (x.grad, x_ref.grad), (w.grad, w_ref.grad), (b.grad, b_ref.grad)):
        assert rel_error(got, expected) < EXACT_TOL


def test_bias_gradient_sums_float64_in_float64(triton_only):
    """dy's values cancel to far below float32's resolution: a float32 sum would lose them."""
    x, w = _exact((2, 2, 3, 3), (2, 3, 2, 2))
    b = torch.zeros(3, dtype=EXACT, requires_grad=True)
    with triton_only() as proof:
        y = triton_conv.conv_transpose2d(x, w, b, stride=2)
        dy = torch.full_like(y, 1e-9)
        dy[:, :, 0, 0], dy[:, :, 1, 1] = 1e8, -1e8
        y.backward(dy)
    assert proof.launches == {"dgrad_kernel": 1}  # the transposed forward; the bias's sum is no GEMM
    assert torch.allclose(b.grad, dy.sum(dim=(0, 2, 3)), rtol=1e-12, atol=0)
