"""torch.func.vmap over the ops runs their batching rules (triton_conv/autograd/batching.py): the
vmapped dimension folded into one problem, against torch's convolutions under vmap (or a loop over
the samples) in float64, for every combination of batched arguments, in_dims and out_dims that are
not 0, groups, stride, padding and dilation. torch's BatchedFallback (a loop over the samples) is
switched off here, so an op without a rule raises; the launch counts show that B samples launch
what one sample does."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

import triton_conv
from triton_conv import passes
from triton_conv.autograd import batching, conv2d_op, input_grad_op, weight_grad_op
from triton_conv.launchers.common import launch_counts

from .contract import EXACT, EXACT_TOL
from .reference import bound, rel_error

B = 3  # the vmapped size
# Per sample: x (N, C, H, W), w (K, C/g, R, S); nothing a multiple of a tile.
X, W = (2, 4, 5, 6), (6, 2, 3, 2)
GEOMETRY = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
PADS = [1, 0, 1, 0]  # the ops' padding: top, left, bottom, right
OP_GEOMETRY = ((2, 1), PADS, (1, 2), 2)
TRANSPOSED = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2))
TRANSPOSED_W = (4, 3, 3, 2)  # (C_in, C_out/g, R, S)


@pytest.fixture(autouse=True)
def _no_fallback():
    """torch's per-sample loop for ops without a batching rule raises instead of running."""
    enabled = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        yield
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(enabled)


def batched(shape, bdim, batch=B):
    """Fresh float64 values of `shape`, with a vmapped dimension of size `batch` at `bdim` (none
    when bdim is None)."""
    if bdim is None:
        return torch.randn(shape, dtype=EXACT)
    return torch.randn((batch, *shape), dtype=EXACT).movedim(0, bdim)


def sample(tensor, bdim, i):
    return tensor if bdim is None else tensor.select(bdim, i)


def close(ours, theirs) -> bool:
    return rel_error(ours, theirs) < 100 * EXACT_TOL


def launches(triton_only, fn):
    with triton_only() as proof:
        result = fn()
    return result, proof.launches


_PROBE = torch.library.Library("triton_conv_vmap_test", "DEF")
_PROBE.define("twice(Tensor x) -> Tensor")
_PROBE.impl("twice", lambda x: 2 * x, "CompositeExplicitAutograd")


def test_an_op_without_a_rule_raises_here():
    """The guard the other tests rely on: with the fallback off, an op without a rule cannot loop."""
    with pytest.raises(RuntimeError, match="fallback"):
        vmap(torch.ops.triton_conv_vmap_test.twice)(torch.randn(3, 2))


# --- conv2d, conv_transpose2d and conv1d: every combination of batched arguments --------------------
def _in_dims_cases(x_dims, w_dims, b_dims):
    """(x, w, b) in_dims with something batched; b "none" is no bias at all."""
    return [c for c in itertools.product(x_dims, w_dims, b_dims) if any(d not in (None, "none") for d in c)]


def _forward_case(x_shape, w_shape, bias_channels, in_dims):
    x_dim, w_dim, b_dim = in_dims
    x, w = batched(x_shape, x_dim), batched(w_shape, w_dim)
    b = None if b_dim == "none" else batched((bias_channels,), b_dim)
    return (x, w, b), (x_dim, w_dim, None if b_dim == "none" else b_dim)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("in_dims", _in_dims_cases((None, 0, -1), (None, 0, 2), ("none", None, 0)))
def test_conv2d_every_in_dims_matches_torch_in_one_launch(in_dims, groups, triton_only):
    w_shape = (W[0], X[1] // groups, *W[2:])
    args, dims = _forward_case(X, w_shape, W[0], in_dims)
    kwargs = dict(GEOMETRY, groups=groups)
    ours, counts = launches(
        triton_only, lambda: vmap(lambda x, w, b: triton_conv.conv2d(x, w, b, **kwargs), dims)(*args)
    )
    theirs = vmap(lambda x, w, b: F.conv2d(x, w, b, **kwargs), dims)(*args)
    assert close(ours, theirs)
    assert counts == {"fprop_kernel": 1}


@pytest.mark.parametrize("in_dims", _in_dims_cases((None, 0, 1), (None, -1), ("none", None, 0)))
def test_conv_transpose2d_every_in_dims_matches_torch_in_one_launch(in_dims, triton_only):
    bias_channels = TRANSPOSED_W[1] * TRANSPOSED["groups"]
    args, dims = _forward_case((2, 4, 3, 4), TRANSPOSED_W, bias_channels, in_dims)
    ours, counts = launches(
        triton_only,
        lambda: vmap(lambda x, w, b: triton_conv.conv_transpose2d(x, w, b, **TRANSPOSED), dims)(*args),
    )
    theirs = vmap(lambda x, w, b: F.conv_transpose2d(x, w, b, **TRANSPOSED), dims)(*args)
    assert close(ours, theirs)
    assert counts == {"dgrad_kernel": 1}


@pytest.mark.parametrize("x_shape", [(2, 4, 9), (4, 9)], ids=["batched", "unbatched"])
@pytest.mark.parametrize("in_dims", _in_dims_cases((None, 0, -1), (None, 1), (None, 0)))
def test_conv1d_every_in_dims_matches_torch(in_dims, x_shape, triton_only):
    kwargs = dict(stride=2, padding=1, dilation=2, groups=2)
    args, dims = _forward_case(x_shape, (6, 2, 3), 6, in_dims)
    ours, counts = launches(
        triton_only, lambda: vmap(lambda x, w, b: triton_conv.conv1d(x, w, b, **kwargs), dims)(*args)
    )
    assert close(ours, vmap(lambda x, w, b: F.conv1d(x, w, b, **kwargs), dims)(*args))
    assert counts == {"fprop_kernel": 1}


@pytest.mark.parametrize("out_dims", [1, -1, 4])
def test_out_dims(out_dims):
    x, w = batched((3, *X[1:]), 1), batched(W, 0)
    ours = vmap(lambda x, w: triton_conv.conv2d(x, w, **GEOMETRY), (1, 0), out_dims)(x, w)
    assert close(ours, vmap(lambda x, w: F.conv2d(x, w, **GEOMETRY), (1, 0), out_dims)(x, w))


def test_unbatched_input_inside_vmap(triton_only):
    """A (C, H, W) sample (conv2d's unbatched form) reaches the op as one image, folded like any."""
    x, w = batched(X[1:], 0), batched(W, None)
    ours, counts = launches(triton_only, lambda: vmap(lambda x: triton_conv.conv2d(x, w, **GEOMETRY))(x))
    assert close(ours, vmap(lambda x: F.conv2d(x, w, **GEOMETRY))(x))
    assert counts == {"fprop_kernel": 1}


def test_nested_vmap(triton_only):
    """Inputs vmapped at the outer level, weights at the inner: B1 x B2 convolutions in one launch."""
    x, w, b = batched(X, 0, 2), batched(W, 0, 3), batched((W[0],), 0, 3)

    def run(conv):
        inner = vmap(lambda x, w, b: conv(x, w, b, **GEOMETRY), (None, 0, 0))
        return vmap(inner, (0, None, None))(x, w, b)

    ours, counts = launches(triton_only, lambda: run(triton_conv.conv2d))
    assert close(ours, run(F.conv2d))
    assert counts == {"fprop_kernel": 1}


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d", "conv1d"])
@pytest.mark.parametrize("unbatched", [True, False], ids=["unbatched", "one_image"])
def test_nested_vmap_of_weights_then_biases_is_laid_out_as_torchs(op, unbatched, triton_only):
    """Weights vmapped at the outer level, biases alone at the inner, one input: the bias rule
    added to an unsqueezed output, and the add ordered the two vmapped dimensions the other way
    round, so a `.view()` of the result failed where torch's works."""
    torch_conv = getattr(F, op)
    x_shape, w_shape = {
        "conv2d": ((2, 4, 5), (4, 2, 3, 3)),
        "conv_transpose2d": ((4, 4, 5), (4, 4, 3, 3)),
        "conv1d": ((2, 5), (4, 2, 3)),
    }[op]
    x = batched(x_shape if unbatched else (1, *x_shape), None)
    w, b = batched(w_shape, 0, 2), batched((4,), 0, 3)

    def run(conv):
        inner = vmap(lambda bias, weight: conv(x, weight, bias, padding=1), (0, None))
        return vmap(lambda weight: inner(b, weight))(w)

    ours, counts = launches(triton_only, lambda: run(getattr(triton_conv, op)))
    theirs = run(torch_conv)
    assert close(ours, theirs) and ours.stride() == theirs.stride()
    assert ours.view(6, -1).shape == theirs.view(6, -1).shape
    assert sum(counts.values()) == 1


def test_channels_last_samples_keep_their_layout(triton_only):
    """Samples in channels_last, stacked at dim 0: the fold is a view and each output sample is
    channels_last too, as cuDNN's; stacked at the last dim (a copy), the values still match."""
    x = torch.stack([batched(X, None).to(memory_format=torch.channels_last) for _ in range(B)])
    w = batched(W, None)
    ours = vmap(lambda x: triton_conv.conv2d(x, w, **GEOMETRY))(x)
    assert close(ours, vmap(lambda x: F.conv2d(x, w, **GEOMETRY))(x))
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    last = x.movedim(0, -1)
    assert close(vmap(lambda x: triton_conv.conv2d(x, w, **GEOMETRY), -1)(last), ours)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_casts_as_a_loop_over_the_samples(dtype, triton_only):
    """Under autocast (on the suite's device) each sample is cast as torch casts conv2d, weight and
    bias batched or not, a float32 input with a low-precision weight included; float64 is left
    alone. (torch's own rule skips the cast: its vmapped conv2d gives float32 where its loop gives
    `dtype`.)"""
    x, w, b = batched(X, 0).float(), batched(W, 0).to(dtype), batched((W[0],), None).float()
    with torch.autocast(torch.get_default_device().type, dtype=dtype), triton_only() as proof:
        ours = vmap(lambda x, w: triton_conv.conv2d(x, w, b, **GEOMETRY))(x, w)
        exact = vmap(lambda x, w: triton_conv.conv2d(x, w, b.double(), **GEOMETRY))(x.double(), w.double())
    assert ours.dtype == dtype and exact.dtype == EXACT
    samples = [F.conv2d(*(t.to(dtype).double() for t in (x[i], w[i], b)), **GEOMETRY) for i in range(B)]
    assert rel_error(ours, torch.stack(samples)) < 2 * bound(dtype)
    assert proof.launches == {"fprop_kernel": 2}


# --- the gradient ops themselves --------------------------------------------------------------------
def _grad_case(in_dims):
    dy_dim, x_dim, w_dim = in_dims
    x_shape = X
    dy_shape = F.conv2d(torch.empty(X, dtype=EXACT), torch.empty(W, dtype=EXACT), **GEOMETRY).shape
    return batched(dy_shape, dy_dim), batched(x_shape, x_dim), batched(W, w_dim)


def _per_sample(fn, args, in_dims):
    results = [fn(*(sample(a, d, i) for a, d in zip(args, in_dims))) for i in range(B)]
    if isinstance(results[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*results))
    return torch.stack(results)


GRAD_IN_DIMS = [c for c in itertools.product((None, 0, -1), (None, 0, 1), (None, 0)) if c != (None,) * 3]


@pytest.mark.parametrize("in_dims", GRAD_IN_DIMS)
def test_input_grad_op_every_in_dims_matches_torch(in_dims, triton_only):
    args = _grad_case(in_dims)
    ours, counts = launches(
        triton_only, lambda: vmap(lambda dy, x, w: input_grad_op(dy, x, w, *OP_GEOMETRY), in_dims)(*args)
    )

    def reference(dy, x, w):
        return torch.nn.grad.conv2d_input(x.shape, w, dy, **GEOMETRY)

    assert close(ours, _per_sample(reference, args, in_dims))
    assert counts == {"dgrad_kernel": 1}


@pytest.mark.parametrize("in_dims", GRAD_IN_DIMS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_weight_grad_op_every_in_dims_matches_torch(in_dims, with_bias, triton_only):
    """dw (per-sample gradients where dy and x are batched) and db: the bias gradient, or the empty
    tensor the op returns without one."""
    args = _grad_case(in_dims)
    (dw, db), counts = launches(
        triton_only,
        lambda: vmap(lambda dy, x, w: weight_grad_op(dy, x, w, *OP_GEOMETRY, with_bias), in_dims)(*args),
    )

    def reference(dy, x, w):
        db = dy.sum((0, 2, 3)) if with_bias else dy.new_empty(0)
        return torch.nn.grad.conv2d_weight(x, w.shape, dy, **GEOMETRY), db

    dw_ref, db_ref = _per_sample(reference, args, in_dims)
    assert close(dw, dw_ref)
    assert db.shape == db_ref.shape and (not with_bias or close(db, db_ref))
    assert counts == {"wgrad_kernel": 1}


# --- torch.func transforms through the rules --------------------------------------------------------
def _net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 4, (3, 2), stride=2, groups=2, dilation=(1, 2)),
        nn.Tanh(),
        nn.ConvTranspose2d(4, 2, 2, stride=2, output_padding=1, groups=2),
    ).double()


def test_per_sample_gradients_of_a_conv_net_launch_what_one_sample_does(triton_only):
    theirs_net = _net()
    ours_net = triton_conv.convert_model(copy.deepcopy(theirs_net))
    x = batched((1, 3, 7, 6), 0, 5)

    def per_sample(model):
        params = {name: p.detach() for name, p in model.named_parameters()}

        def loss(params, x):
            return functional_call(model, params, (x,)).sin().sum()

        return vmap(grad(loss), (None, 0))(params, x), lambda: grad(loss)(params, x[0])

    (ours, one_sample), counts = launches(triton_only, lambda: per_sample(ours_net))
    theirs, _ = per_sample(theirs_net)
    assert ours.keys() == theirs.keys()
    assert all(close(ours[name], theirs[name]) for name in ours)
    _, single = launches(triton_only, one_sample)
    assert counts == single and sum(counts.values()) == 8


def test_model_ensemble(triton_only):
    """Stacked parameters of B models (torch.func.stack_module_state) on one batch and on B batches."""
    models = [_net() for _ in range(B)]
    params, buffers = torch.func.stack_module_state(models)
    x = batched((2, 3, 7, 6), None)
    base = copy.deepcopy(models[0])  # functional_call puts the stacked parameters in
    ours_base = triton_conv.convert_model(copy.deepcopy(base))

    def ensemble(model, x, x_dim):
        return vmap(lambda p, b, x: functional_call(model, (p, b), (x,)), (0, 0, x_dim))(params, buffers, x)

    for xs, x_dim in ((x, None), (torch.stack([x + i for i in range(B)]), 0)):
        ours, counts = launches(triton_only, lambda xs=xs, x_dim=x_dim: ensemble(ours_base, xs, x_dim))
        assert close(ours, ensemble(base, xs, x_dim))
        assert counts == {"fprop_kernel": 2, "dgrad_kernel": 1}


@pytest.mark.parametrize("transform", ["jacrev", "jacfwd"])
def test_jacobians(transform, triton_only):
    x, w, b = batched((1, 2, 4, 3), None), batched((3, 2, 3, 2), None), batched((3,), None)
    jacobian = getattr(torch.func, transform)

    def run(conv):
        return jacobian(lambda x, w, b: conv(x, w, b, padding=1), argnums=(0, 1, 2))(x, w, b)

    ours, counts = launches(triton_only, lambda: run(triton_conv.conv2d))
    assert all(close(o, t) for o, t in zip(ours, run(F.conv2d)))
    # jacrev: the forward, then one vjp of every basis vector at once (dgrad and wgrad, with db).
    # jacfwd: one jvp of every tangent at once, through x and through w: two fprops (and the primal).
    expected = {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
    assert counts == (expected if transform == "jacrev" else {"fprop_kernel": 3})


def test_hessian_and_per_sample_hessians(triton_only):
    x, w = batched((2, 4, 3), None), batched((2, 1, 3, 2), None)

    def loss(conv):
        return lambda w, x: conv(x.unsqueeze(0), w, padding=1, groups=2).sin().sum()

    ours, launched = launches(triton_only, lambda: torch.func.hessian(loss(triton_conv.conv2d))(w, x))
    assert {"fprop_kernel", "wgrad_kernel"} <= launched.keys()
    assert close(ours, torch.func.hessian(loss(F.conv2d))(w, x))
    xs = batched((2, 4, 3), 0)
    hessians = vmap(torch.func.hessian(loss(triton_conv.conv2d)), (None, 0))
    per_sample, launched = launches(triton_only, lambda: hessians(w, xs))
    assert {"fprop_kernel", "wgrad_kernel"} <= launched.keys()
    assert close(per_sample, vmap(torch.func.hessian(loss(F.conv2d)), (None, 0))(w, xs))


def test_grad_and_jvp_of_vmap(triton_only):
    """The rules run under an outer grad or jvp: the folded ops are what gets differentiated."""
    x, w, b = batched(X, 0), batched(W, 0), batched((W[0],), None)
    tx, tw = torch.randn_like(x), torch.randn_like(w)

    def run(conv):
        def f(x, w):
            return vmap(lambda x, w: conv(x, w, b, **GEOMETRY))(x, w).sin().sum()

        return grad(f, argnums=(0, 1))(x, w), torch.func.jvp(f, (x, w), (tx, tw))[1]

    (ours_grads, ours_tangent), launched = launches(triton_only, lambda: run(triton_conv.conv2d))
    assert launched.keys() == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}
    their_grads, their_tangent = run(F.conv2d)
    assert all(close(o, t) for o, t in zip(ours_grads, their_grads))
    assert close(ours_tangent, their_tangent)


def test_conv1d_and_conv_transpose2d_per_sample_gradients(triton_only):
    for ours, theirs, x, w, kwargs in (
        (triton_conv.conv1d, F.conv1d, batched((1, 4, 9), 0), batched((6, 2, 3), None),
         dict(stride=2, padding=1, dilation=2, groups=2)),
        (triton_conv.conv_transpose2d, F.conv_transpose2d, batched((1, 4, 3, 4), 0),
         batched(TRANSPOSED_W, None), TRANSPOSED),
    ):  # fmt: skip

        def per_sample(conv, kwargs=kwargs, x=x, w=w):
            return vmap(grad(lambda w, x: conv(x, w, **kwargs).sin().sum(), argnums=(0, 1)), (None, 0))(w, x)

        got, counts = launches(triton_only, lambda per_sample=per_sample, ours=ours: per_sample(ours))
        assert all(close(o, t) for o, t in zip(got, per_sample(theirs)))
        assert sum(counts.values()) == 3  # forward, input gradient, weight gradient


# --- errors, empty batches and the grid's cap on groups ---------------------------------------------
def test_errors_name_the_per_sample_shapes(triton_only):
    """The op's own checks on one sample: the folded problem (9 input channels here) is never named."""
    x, w, x1 = batched((2, 3, 5, 6), 0), batched(W, 0), batched(X, None)
    with triton_only() as proof, pytest.raises(triton_conv.ConvArgumentError, match=r"input channels \(3\)"):
        vmap(lambda x, w: triton_conv.conv2d(x, w, **GEOMETRY))(x, w)
    with pytest.raises(RuntimeError, match="input must have 4 dimensions"):  # the op called directly
        vmap(lambda x: conv2d_op(x, w, None, *OP_GEOMETRY))(batched(X[1:], 0))
    with pytest.raises(RuntimeError, match=r"grad_output must have the output's shape \(2, 6, 3, 4\)"):
        vmap(lambda dy: input_grad_op(dy, x1, w[0], *OP_GEOMETRY))(batched((2, 6, 3, 5), 0))
    assert proof.launches == {}


def test_an_empty_vmapped_dimension(triton_only):
    """vmap over a dimension of size 0: empty results of the per-sample shapes, nothing launched.
    (torch's own rule refuses a batched weight there, "non-positive groups", and gives (0, 0, 6, 3, 4)
    for a batched input: its split of B·N = 0 rows into B = 0 samples loses N.)"""
    x, w, dy = batched(X, 0, 0), batched(W, 0, 0), batched((2, 6, 3, 4), 0, 0)
    x1, w1 = batched(X, None), batched(W, None)
    with triton_only() as proof:
        y = vmap(lambda x: triton_conv.conv2d(x, w1, **GEOMETRY))(x)
        y_both = vmap(lambda x, w: triton_conv.conv2d(x, w, **GEOMETRY))(x, w)
        dx = vmap(lambda dy, w: input_grad_op(dy, x1, w, *OP_GEOMETRY))(dy, w)
        dw, db = vmap(lambda dy, x: weight_grad_op(dy, x, w1, *OP_GEOMETRY, True))(dy, x)
        xt, wt = batched((2, 4, 3, 4), 0, 0), batched(TRANSPOSED_W, None)
        yt = vmap(lambda x: triton_conv.conv_transpose2d(x, wt, **TRANSPOSED))(xt)
    assert proof.launches == {}
    assert y.shape == y_both.shape == (0, 2, 6, 3, 4)
    assert (dx.shape, dw.shape, db.shape, yt.shape) == ((0, *X), (0, *W), (0, 6), (0, 2, 6, 6, 6))


@pytest.mark.parametrize("vmapped", ["xwb", "b"])
@pytest.mark.parametrize("case", ["no images", "no channels"])
def test_empty_samples(case, vmapped, triton_only):
    """Samples with no images (N = 0) or no input channels, all arguments or only the bias batched:
    torch's result (no channels and no bias with no input channels) for each of the B samples,
    nothing launched."""
    x_shape, w_shape = ((0, 4, 5, 6), W) if case == "no images" else ((2, 0, 5, 6), (6, 0, 3, 2))
    groups = 2 if case == "no images" else 1
    dims = tuple(0 if name in vmapped else None for name in "xwb")
    x, w, b = (batched(shape, bdim) for shape, bdim in zip((x_shape, w_shape, (6,)), dims))
    kwargs = dict(GEOMETRY, groups=groups)
    with triton_only() as proof:
        ours = vmap(lambda x, w, b: triton_conv.conv2d(x, w, b, **kwargs), dims)(x, w, b)
    assert proof.launches == {}
    # torch's own rule fails on no channels (it adds the batched bias to an output of none): a loop
    samples = [[sample(t, bdim, i) for t, bdim in zip((x, w, b), dims)] for i in range(B)]
    theirs = torch.stack([F.conv2d(*args, **kwargs) for args in samples])
    assert ours.shape == theirs.shape


@pytest.mark.parametrize("case", ["conv2d", "input_grad", "weight_grad"])
def test_groups_past_the_grid_cap_run_in_chunks(case, monkeypatch, triton_only):
    """Where B joins the groups, g·B (times dgrad's stride phases) must stay within the grid's y
    limit: with the limit lowered to 4, five samples of 2 groups run in chunks of groups that fit."""
    monkeypatch.setattr(passes, "GRID_Y_LIMIT", 4)
    batch = 5
    dy = batched((2, 6, 3, 4), 0, batch)
    x, w, b = batched(X, 0, batch), batched(W, 0, batch), batched((6,), 0, batch)
    if case == "conv2d":  # 10 groups in chunks of 4: 4 + 4 + 2
        ours, counts = launches(
            triton_only, lambda: vmap(lambda x, w, b: conv2d_op(x, w, b, *OP_GEOMETRY))(x, w, b)
        )
        theirs = vmap(lambda x, w, b: F.conv2d(x, w, b, **GEOMETRY))(x, w, b)
        assert close(ours, theirs) and counts == {"fprop_kernel": 3}
    elif case == "input_grad":  # 2 groups x 2 stride phases per sample: one sample per launch
        ours, counts = launches(
            triton_only, lambda: vmap(lambda dy, w: input_grad_op(dy, x[0], w, *OP_GEOMETRY))(dy, w)
        )
        theirs = torch.stack([torch.nn.grad.conv2d_input(X, w[i], dy[i], **GEOMETRY) for i in range(batch)])
        assert close(ours, theirs) and counts == {"dgrad_kernel": 5}
    else:  # per-sample gradients and bias gradients, 10 groups in chunks of 4
        (dw, db), counts = launches(
            triton_only,
            lambda: vmap(lambda dy, x: weight_grad_op(dy, x, w[0], *OP_GEOMETRY, True))(dy, x),
        )
        theirs = torch.stack([torch.nn.grad.conv2d_weight(x[i], W, dy[i], **GEOMETRY) for i in range(batch)])
        assert close(dw, theirs) and close(db, dy.sum((1, 3, 4))) and counts == {"wgrad_kernel": 3}


@pytest.mark.parametrize("op, nesting", [("conv2d", "jvp of vmap"), ("conv_transpose2d", "vmap of jvp")])
def test_compiled_forward_mode_through_the_rule(op, nesting):
    """torch.compile(fullgraph=True) of torch.func.jvp around or inside vmap: the graph opens its dual
    level in C++ (torch.autograd.forward_ad keeps no record of it), and the op must still take its
    autograd formula there, or the tangent is lost (an error in torch's jvp, both torch versions)."""
    ours_conv, torch_conv = getattr(triton_conv, op), getattr(F, op)
    kwargs, w_shape = (GEOMETRY, W) if op == "conv2d" else (TRANSPOSED, TRANSPOSED_W)
    x, w = batched(X if op == "conv2d" else (2, 4, 3, 4), 0), batched(w_shape, 0)
    tx, tw = torch.randn_like(x), torch.randn_like(w)

    def run(conv):
        def f(x, w):
            return conv(x, w, **kwargs)

        if nesting == "jvp of vmap":
            return lambda x, w, tx, tw: torch.func.jvp(vmap(f), (x, w), (tx, tw))
        return lambda x, w, tx, tw: vmap(lambda *a: torch.func.jvp(f, a[:2], a[2:]))(x, w, tx, tw)

    torch._dynamo.reset()
    ours = torch.compile(run(ours_conv), fullgraph=True)(x, w, tx, tw)
    assert all(close(o, t) for o, t in zip(ours, run(torch_conv)(x, w, tx, tw), strict=True))


def test_folding_into_the_batch_is_a_view_where_the_strides_allow():
    """The vmapped dimension in front of N folds without a copy; behind it (in_dims 1 of a
    contiguous tensor) it is copied B-major, as torch's rule does, not folded N-major."""
    x = batched(X, 0)
    folded = batching._into_batch(x, 0)
    assert folded.data_ptr() == x.data_ptr() and folded.shape == (B * X[0], *X[1:])
    x = batched(X, 1).contiguous()  # memory in (N, B) order
    folded = batching._into_batch(x, 1)
    assert folded.shape == (B * X[0], *X[1:]) and torch.equal(folded[: X[0]], x[:, 0])


@pytest.mark.parametrize("bdim", [0, 1, 2, -1])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d", "input_grad"])
def test_each_samples_result_is_laid_out_as_torchs(op, bdim, triton_only):
    """A sample's result inside vmap has torch's strides whatever dimension is vmapped: a
    `.view(-1)` of it works where torch's does (found folding N-major, where each sample's N was
    strided by B), and the stacked results have torch's strides."""
    if op == "input_grad":  # vmapped cotangents, as jacrev makes them
        x0, w = batched(X, None), batched(W, None)
        x = batched(F.conv2d(x0, w, **GEOMETRY).shape, bdim).contiguous()

        def ours_op(dy):
            return input_grad_op(dy, x0, w, *OP_GEOMETRY)

        def torch_op(dy):
            return torch.ops.aten.convolution_backward(
                dy, x0, w, None, (2, 1), (1, 0), (1, 2), False, (0, 0), 2, (True, False, False)
            )[0]
    else:
        torch_conv, geometry, weight = {
            "conv2d": (F.conv2d, GEOMETRY, W),
            "conv_transpose2d": (F.conv_transpose2d, TRANSPOSED, TRANSPOSED_W),
        }[op]
        x, w = batched(X, bdim).contiguous(), batched(weight, None)

        def ours_op(a):
            return getattr(triton_conv, op)(a, w, **geometry)

        def torch_op(a):
            return torch_conv(a, w, **geometry)

    def run(f):
        return vmap(lambda a: f(a).view(-1), in_dims=bdim)(x), vmap(f, in_dims=bdim)(x)

    ours, theirs = run(ours_op), run(torch_op)
    assert close(ours[0], theirs[0]) and close(ours[1], theirs[1])
    assert ours[1].stride() == theirs[1].stride()


@pytest.mark.parametrize("in_dims", [(None, 0, None), (0, 0, None), (None, 0, 0)])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_a_weight_vmapped_ensemble_exports_non_strict(op, in_dims):
    """torch.export (non-strict, the default) of vmap over the weights: the rules returned the
    result with its vmapped dimension at 1, vmap moved it, and export recorded the move as an
    operation on a lifted constant and refused the program ('fake tensor in the exported program
    constant's list'); torch's conv2d with a bias exports."""
    x_shape, w_shape = (X, W) if op == "conv2d" else (X, TRANSPOSED_W)
    geometry = GEOMETRY if op == "conv2d" else TRANSPOSED
    out_channels = W[0] if op == "conv2d" else TRANSPOSED_W[1] * TRANSPOSED["groups"]
    x, w, b = (batched(shape, bdim) for shape, bdim in zip((x_shape, w_shape, (out_channels,)), in_dims))

    class Ensemble(nn.Module):
        def forward(self, x, w, b):
            return vmap(lambda x, w, b: getattr(triton_conv, op)(x, w, b, **geometry), in_dims)(x, w, b)

    program = torch.export.export(Ensemble(), (x, w, b), strict=False)
    expected = vmap(lambda x, w, b: getattr(F, op)(x, w, b, **geometry), in_dims)(x, w, b)
    assert close(program.module()(x, w, b), expected)


@pytest.mark.parametrize("op, dynamic", [("conv2d", False), ("conv2d", True), ("conv_transpose2d", True)])
def test_compiled_vmap_runs_the_rule_in_one_launch(op, dynamic):
    """torch.compile(fullgraph=True) traces through the rule: the compiled graph holds the folded op,
    whose output the rule returns as a view; with dynamic shapes, weight sizes included (torch 2.13's
    inductor failed on that view where the output's sizes had no lower bound it could derive).
    (Launches counted without triton_only: torch.compile refuses to run under its dispatch mode.)"""
    ours_conv, torch_conv = getattr(triton_conv, op), getattr(F, op)
    kwargs, w_shape = (GEOMETRY, W) if op == "conv2d" else (TRANSPOSED, TRANSPOSED_W)
    x, w = batched(X if op == "conv2d" else (2, 4, 3, 4), 0), batched(w_shape, None)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, w: vmap(lambda x: ours_conv(x, w, **kwargs))(x), fullgraph=True, dynamic=dynamic
    )
    before = dict(launch_counts)
    ours = compiled(x, w)
    launched = {k: n - before.get(k, 0) for k, n in launch_counts.items() if n != before.get(k, 0)}
    assert launched == {"fprop_kernel" if op == "conv2d" else "dgrad_kernel": 1}
    assert close(ours, vmap(lambda x: torch_conv(x, w, **kwargs))(x))


def test_batched_grads_through_torchs_older_vmap_loop_over_the_samples(triton_only):
    """autograd.grad(is_grads_batched=True) runs torch's older vmap, which has no rules for custom
    ops: the right gradients, one launch per sample and pass (README says so)."""
    x, w = batched(X, None).requires_grad_(), batched(W, None).requires_grad_()
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, **GEOMETRY)
        dys = torch.randn(B, *y.shape, dtype=EXACT)
        ours = torch.autograd.grad(y, (x, w), dys, is_grads_batched=True)
    theirs = torch.autograd.grad(F.conv2d(x, w, **GEOMETRY), (x, w), dys, is_grads_batched=True)
    assert all(close(o, t) for o, t in zip(ours, theirs, strict=True))
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": B, "wgrad_kernel": B}
