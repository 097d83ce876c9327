"""Property tests of torch.func.vmap over conv2d, conv1d and conv_transpose2d (their batching rules,
triton_conv/autograd/batching.py) over argument kinds: which tensors are batched, at which in_dims
(negative ones too), the out_dims, a vmapped size of 1 to 3, samples with or without a batch of
their own, every geometry, and each tensor in any memory layout inside NaN-poisoned storage
(expanded in the vmapped dimension or in others, overlapping, gapped, offset), plain and under
per-sample gradients (vmap of grad, which runs the gradient ops' rules).

Each case is held to a loop over the samples with torch's own function in float64 (torch's rule is
not the reference: it differs from its own loop in corners, tests/test_vmap.py), must launch each
kernel once, and must leave the caller's tensors untouched. A failure prints the command that
reruns it. Sizes small, examples capped: the interpreter is slow.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

import triton_conv

from .contract import EXACT, Layout, place, reproduction, same_storage  # noqa: F401 - Layout: reproductions
from .reference import bound, rel_error
from .test_contract_properties import FAST, geometries, layouts
from .test_conv_family_properties import one_d_geometries, transposed_geometries

MODULE = "tests.test_vmap_properties"
OPS = {
    "conv2d": (triton_conv.conv2d, F.conv2d, geometries),
    "conv1d": (triton_conv.conv1d, F.conv1d, one_d_geometries),
    "conv_transpose2d": (triton_conv.conv_transpose2d, F.conv_transpose2d, transposed_geometries),
}
# What one call launches: the forward, and under grad the two gradients besides.
LAUNCHES = {"conv2d": {"fprop_kernel": 1}, "conv1d": {"fprop_kernel": 1}}
LAUNCHES["conv_transpose2d"] = {"dgrad_kernel": 1}
GRAD_LAUNCHES = {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}


@dataclass(frozen=True)
class VmapCase:
    op: str
    x_shape: tuple  # one sample's shapes
    w_shape: tuple
    kwargs: dict
    bias: bool
    batch: int
    in_dims: tuple  # of x, w, b: None (not batched) or the vmapped dimension, maybe negative
    layouts: tuple  # of x, w, b: each tensor's Layout, its vmapped dimension included
    out_dims: int
    transform: str  # "vmap": the op; "grad": vmap of the gradient of sum(sin(op)) in every tensor
    seed: int


@st.composite
def vmap_cases(draw, op: str):
    x_shape, w_shape, kwargs = draw(OPS[op][2]())
    bias = draw(st.booleans())
    bias_channels = w_shape[1] * kwargs["groups"] if op == "conv_transpose2d" else w_shape[0]
    shapes = (x_shape, w_shape, (bias_channels,))
    in_dims = []
    for shape, present in zip(shapes, (True, True, bias)):
        rank = len(shape) + 1
        in_dims.append(draw(st.sampled_from([None, *range(-rank, rank)])) if present else None)
    if all(d is None for d in in_dims):
        in_dims[0] = 0
    ranks = [len(shape) + (d is not None) for shape, d in zip(shapes, in_dims)]
    transform = draw(st.sampled_from(["vmap", "vmap", "grad"]))
    out_rank = 2 if transform == "grad" else len(x_shape) + 1  # grad: the bias's gradient too
    return VmapCase(
        op, x_shape, w_shape, kwargs, bias, draw(st.integers(1, 3)), tuple(in_dims),
        tuple(draw(layouts(rank)) for rank in ranks), draw(st.integers(-out_rank, out_rank - 1)),
        transform, draw(st.integers(0, 2**31 - 1)),
    )  # fmt: skip


def _with_batch(shape, bdim, batch):
    if bdim is None:
        return tuple(shape)
    at = bdim % (len(shape) + 1)
    return (*shape[:at], batch, *shape[at:])


def _function(case: VmapCase, conv):
    argnums = (0, 1, 2) if case.bias else (0, 1)

    def run(x, w, b):
        return conv(x, w, b, **case.kwargs)

    if case.transform == "vmap":
        return run
    return grad(lambda x, w, b: run(x, w, b).sin().sum(), argnums=argnums)


def _per_sample(case: VmapCase, tensors):
    """torch's function on each sample in float64, stacked at out_dims."""
    fn = _function(case, OPS[case.op][1])
    results = []
    for i in range(case.batch):
        sample = [
            None if t is None else (t if d is None else t.select(d, i)).double().contiguous()
            for t, d in zip(tensors, case.in_dims)
        ]
        results.append(fn(*sample))
    if isinstance(results[0], tuple):
        return tuple(torch.stack(parts).movedim(0, case.out_dims) for parts in zip(*results))
    return torch.stack(results).movedim(0, case.out_dims)


def run_vmap_case(case: VmapCase, proof=None):
    ours = OPS[case.op][0]
    failure = reproduction(MODULE, f"run_vmap_case({case!r})")
    generator = torch.Generator(torch.get_default_device()).manual_seed(case.seed)  # place's device
    bias_channels = (
        case.w_shape[1] * case.kwargs["groups"] if case.op == "conv_transpose2d" else case.w_shape[0]
    )
    shapes = (case.x_shape, case.w_shape, (bias_channels,))
    tensors, storages = [], []
    for shape, bdim, layout, present in zip(shapes, case.in_dims, case.layouts, (True, True, case.bias)):
        if not present:
            tensors.append(None)
            continue
        tensor, storage = place(_with_batch(shape, bdim, case.batch), EXACT, layout, generator)
        tensors.append(tensor)
        storages.append(storage)
    before = [s.clone() for s in storages]
    in_dims = tuple(d if t is not None else None for t, d in zip(tensors, case.in_dims))
    with (proof or contextlib.nullcontext)() as launched:
        got = vmap(_function(case, ours), in_dims, case.out_dims)(*tensors)
    expected = _per_sample(case, tensors)
    got, expected = (got, expected) if isinstance(got, tuple) else ((got,), (expected,))
    assert len(got) == len(expected), failure
    for ours_part, theirs in zip(got, expected):
        assert ours_part.shape == theirs.shape, (ours_part.shape, theirs.shape, failure)
        assert rel_error(ours_part, theirs) < 100 * bound(EXACT), failure
    assert all(same_storage(a, s) for a, s in zip(before, storages)), f"a caller's tensor changed; {failure}"
    if proof is not None:  # B samples launch what one does
        expected_launches = GRAD_LAUNCHES if case.transform == "grad" else LAUNCHES[case.op]
        assert launched.launches == expected_launches, (launched.launches, failure)


@settings(max_examples=30, **FAST)
@given(case=vmap_cases("conv2d"))
def test_vmap_conv2d_of_any_argument_kinds_matches_a_loop(case, triton_only):
    run_vmap_case(case, triton_only)


@settings(max_examples=15, **FAST)
@given(case=vmap_cases("conv1d"))
def test_vmap_conv1d_of_any_argument_kinds_matches_a_loop(case, triton_only):
    run_vmap_case(case, triton_only)


@settings(max_examples=20, **FAST)
@given(case=vmap_cases("conv_transpose2d"))
def test_vmap_conv_transpose2d_of_any_argument_kinds_matches_a_loop(case, triton_only):
    run_vmap_case(case, triton_only)


def test_vmap_of_grad_of_conv_transpose2d_with_a_channels_last_weight(triton_only):
    """Found by the property above on torch 2.11, whose vmap cannot clone to channels_last: the
    backward's gradients in torch's layout must not be asked of a vmapped tensor."""
    one_by_two = dict(stride=(1, 1), padding=(0, 0), output_padding=(0, 0), groups=1, dilation=(1, 1))
    channels_last_weight = Layout((0, 2, 3, 1), (1, 1, 1, 1))
    case = VmapCase(
        "conv_transpose2d", (1, 1, 1), (1, 2, 1, 2), one_by_two, False, 2, (0, None, None),
        (Layout.dense(4), channels_last_weight, Layout.dense(1)), 0, "grad", seed=7,
    )  # fmt: skip
    run_vmap_case(case, triton_only)
