"""triton_conv.conv1d against float64 torch: conv2d's kernels on height-one views. Every argument
(stride, padding as ints, 'same' and 'valid', dilation, groups, bias), batched and unbatched, every
layout and dtype, each pass on this package's kernels, torch's degenerate shapes and errors.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import triton_conv

from .conftest import TritonProof
from .contract import outcome, refused_as_torch_refuses, reproduction, same_outcome_as_torch
from .reference import bound, rel_error

MODULE = "tests.test_conv1d"

# (x shape, weight shape, conv1d keyword arguments): no length a tile multiple.
FEATURES = {
    "k3_p1": ((2, 5, 11), (7, 5, 3), dict(padding=1)),
    "stride2_dilation2": ((2, 4, 13), (6, 4, 3), dict(stride=2, dilation=2, padding=2)),
    "same_even": ((2, 4, 10), (5, 4, 4), dict(padding="same", dilation=2)),
    "valid": ((2, 4, 9), (5, 4, 3), dict(padding="valid")),
    "groups": ((2, 6, 9), (4, 3, 3), dict(groups=2, stride=3)),
    "depthwise": ((2, 4, 9), (8, 1, 5), dict(groups=4, padding=2)),
    "pointwise": ((2, 9, 7), (10, 9, 1), {}),
    "unbatched": ((5, 11), (7, 5, 3), dict(padding=(1,))),
    "channels_37": ((1, 37, 6), (41, 37, 3), dict(padding=1)),
}
VARIANTS = [
    (torch.float32, "ncl"),
    (torch.float16, "nlc"),
    (torch.bfloat16, "strided"),
    (torch.float64, "nlc"),
]
CASES = [
    (name, *VARIANTS[(index + shift) % len(VARIANTS)], bool((index + shift) % 2))
    for index, name in enumerate(FEATURES)
    for shift in (0, 1)
]


def make(shape, dtype, layout: str) -> torch.Tensor:
    """ncl (contiguous), nlc (channels innermost: unit channel stride, as a channels_last 2-D tensor
    seen at height one) or strided (a sliced view)."""
    if layout == "strided":
        big = torch.randn(*[2 * d + 1 for d in shape]).to(dtype)
        return big[tuple(slice(1, 1 + 2 * d, 2) for d in shape)]
    tensor = torch.randn(shape).to(dtype)
    if layout == "nlc" and len(shape) == 3:
        tensor = tensor.transpose(1, 2).contiguous().transpose(1, 2)
    return tensor


def _torch_output(x, w, b, kwargs) -> torch.Tensor:
    """torch's own output for the same strides, in float32 (whose CPU path takes the same memory
    format decision for every dtype); on a GPU in the tensors' own dtype (cuDNN keeps float64 in
    NCHW whatever the strides, and takes the others' strides into account)."""
    dtype = x.dtype if x.device.type == "cuda" else torch.float32

    def same_strides(t):
        copy = torch.empty_strided(t.shape, t.stride(), dtype=dtype)
        return copy.copy_(t.detach())

    return F.conv1d(same_strides(x), same_strides(w), None if b is None else same_strides(b), **kwargs)


@pytest.mark.parametrize("feature,dtype,layout,with_bias", CASES, ids=str)
def test_forward_and_gradients_match_torch(feature, dtype, layout, with_bias, triton_only):
    x_shape, w_shape, kwargs = FEATURES[feature]
    x = make(x_shape, dtype, layout).requires_grad_()
    w = make(w_shape, dtype, layout).requires_grad_()
    b = make((w_shape[0],), dtype, "ncl").requires_grad_() if with_bias else None
    with triton_only() as proof:
        y = triton_conv.conv1d(x, w, b, **kwargs)
        grad_output = torch.randn_like(y)
        y.backward(grad_output)
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in (x, w, b)]
    expected = F.conv1d(*leaves, **kwargs)
    expected.backward(grad_output.double())
    assert y.shape == expected.shape and y.dtype == dtype
    assert rel_error(y, expected) < bound(dtype)
    for name, got, ref in zip("xwb", (x.grad, w.grad, None if b is None else b.grad), leaves):
        if ref is not None:
            assert got.dtype == dtype and rel_error(got, ref.grad) < 2 * bound(dtype), f"d{name}"
    # The output's strides are torch's: conv1d makes its input contiguous, so a channels-innermost
    # input gives an (N, K, L) contiguous output, a channels-innermost weight a channels-innermost one.
    # A dimension of size 1 addresses nothing, and its stride may differ: the output is no view
    # (test_the_output_is_a_tensor_of_its_own_as_torchs_is), and _unsafe_view, which makes it,
    # computes the stride of a size-1 dimension its own way.
    want = _torch_output(x, w, b, kwargs)
    assert [s for s, n in zip(y.stride(), y.shape) if n > 1] == [
        s for s, n in zip(want.stride(), want.shape) if n > 1
    ]


def test_an_audio_stack_of_layers(triton_only):
    """A strided, dilated, grouped stack as audio models use them, forward and backward in float64."""
    layers = [dict(stride=2, padding=3), dict(dilation=3, padding="same", groups=4), dict(padding="valid")]
    weights = [torch.randn(8, 1, 7), torch.randn(8, 2, 3), torch.randn(3, 8, 1)]
    weights = [w.double().requires_grad_() for w in weights]
    x = torch.randn(2, 1, 50, dtype=torch.float64, requires_grad=True)

    def run(conv):
        h = x
        for w, kwargs in zip(weights, layers):
            h = torch.tanh(conv(h, w, None, **kwargs))
        return torch.autograd.grad(h.square().sum(), [x, *weights])

    with triton_only() as proof:
        got = run(triton_conv.conv1d)
    assert proof.launches["fprop_kernel"] == 3 and proof.launches["wgrad_kernel"] == 3
    for ours, theirs in zip(got, run(F.conv1d)):
        assert rel_error(ours, theirs) < 1e-12


# --- degenerate shapes and errors ------------------------------------------------------------------
def _degenerate_cases():
    for n, c, k, length, s, padding, groups, bias, stride in itertools.product(
        (0, 2), (0, 2), (0, 2), (0, 4), (0, 1, 2), (0, 1, "same"), (1, 2), (False, True), (1, 2)
    ):
        yield (n, c, length), (k, c // groups, s), bias, dict(padding=padding, groups=groups, stride=stride)


def run_degenerate_case(x_shape, w_shape, with_bias, kwargs):
    failure = reproduction(MODULE, f"run_degenerate_case({x_shape}, {w_shape}, {with_bias}, {kwargs})")
    results = {}
    # Fresh float64 values, the same for both sides; ours with torch's convolutions barred.
    leaves = [torch.randn(x_shape, dtype=torch.float64), torch.randn(w_shape, dtype=torch.float64)]
    leaves.append(torch.randn(w_shape[0], dtype=torch.float64) if with_bias else None)
    for name, conv in (("torch", F.conv1d), ("ours", triton_conv.conv1d)):
        with TritonProof() if name == "ours" else contextlib.nullcontext() as proof:
            kind, y = outcome(lambda: conv(*leaves, **kwargs))  # noqa: B023
        results[name] = kind, y
    # As for conv2d: 'same' with a zero-size kernel is refused where torch crops the input.
    same_outcome_as_torch(results["torch"], results["ours"], failure, torch_crops=True)
    computed = kind == "ok" and y.numel() > 0 and math.prod(w_shape[1:]) > 0
    assert proof.launches == ({"fprop_kernel": 1} if computed else {}), (proof.launches, failure)


def test_degenerate_shapes_do_what_torch_does():
    for case in _degenerate_cases():
        run_degenerate_case(*case)


@pytest.mark.parametrize(
    "change,words",
    [
        # The values in an error are conv1d's, not those of its conv2d view: stride (1, 0), a 'pair'.
        (dict(stride=0), "stride must be positive, got 0$"),
        (dict(stride=(1, 1)), "stride"),
        (dict(padding=(1, 1)), "padding"),
        (dict(padding=-1), "padding must be non-negative, got -1$"),
        (dict(padding="same", stride=2), "got stride=2"),
        (dict(padding="full"), "padding must be 'same', 'valid' or an int, got 'full'"),
        (dict(dilation=0), "dilation must be positive, got 0$"),
        (dict(weight=torch.randn(4, 4, 12)), r"larger than the padded input.*weight \(4, 4, 12\)"),
        (dict(groups=3), "groups"),
        (dict(weight=torch.randn(4, 3, 3, 3)), "dimensions"),
        (dict(input=torch.randn(2, 4, 5, 5)), "dimensions"),
        (dict(weight=torch.randn(4, 3, 3)), "input channels"),
        (dict(bias=torch.randn(3)), "bias"),
        (dict(padding=1.5), "padding"),
    ],
)
def test_errors_name_the_argument_and_are_torchs_kind(change, words):
    args = dict(input=torch.randn(2, 4, 9), weight=torch.randn(4, 4, 3), bias=torch.randn(4))
    args.update(change)
    refused_as_torch_refuses(triton_conv.conv1d, F.conv1d, args, words)


def test_height_one_launches_compile_for_sm90_with_wgmma_and_no_spills():
    """conv1d's launches have height, kernel height, stride and dilation 1, which Triton's JIT turns
    into compile-time constants: a specialisation of its own, compiled here as a GPU would."""
    from triton_conv import KernelConfig
    from triton_conv.compile_check import compile_specs, example_spec
    from triton_conv.configs import default_pass_config
    from triton_conv.problem import ConvProblem

    problems = {  # a WaveNet-like dilated layer and a strided encoder layer, one row of 1000 samples
        "fprop": ConvProblem.from_shapes(
            (8, 128, 1, 1000), (128, 128, 1, 3), dilation=(1, 4), padding=(0, 4)
        ),
        "dgrad": ConvProblem.from_shapes((8, 128, 1, 1000), (256, 128, 1, 4), stride=(1, 2), padding=(0, 1)),
        "wgrad": ConvProblem.from_shapes((8, 128, 1, 1000), (128, 128, 1, 3), padding=(0, 1)),
    }
    # Each pass in the config it runs untuned (fprop and dgrad: 128x128 tiles, 8 warps; wgrad split-K).
    configs = {name: default_pass_config(problem, name, torch.float16) for name, problem in problems.items()}
    assert configs["fprop"] == configs["dgrad"] == KernelConfig(128, 128, 64, num_warps=8)
    specs = [example_spec(name, torch.float16, configs[name], problem) for name, problem in problems.items()]
    for name, report in zip(problems, compile_specs(specs, 90), strict=True):
        assert report.kernel == f"{name}_kernel" and not report.spills and report.wgmma, report


@pytest.mark.parametrize("weight_layout", ["ncl", "nlc"])
def test_a_permuted_sequence_input_gives_torchs_strides(weight_layout, triton_only):
    """A sequence model's (N, L, C).transpose(1, 2) input: torch's conv1d makes it contiguous first,
    so its output is (N, K, L) contiguous unless the weight's channels are innermost, and code written
    for it may .view() the output."""
    x = torch.randn(2, 11, 6).transpose(1, 2)
    w = make((5, 6, 3), torch.float32, weight_layout)
    with triton_only() as proof:
        y = triton_conv.conv1d(x, w, padding=1)
    assert proof.launches == {"fprop_kernel": 1}
    expected = F.conv1d(x.double(), w.double(), padding=1)
    assert rel_error(y, expected) < bound(torch.float32)
    assert y.stride() == F.conv1d(x, w, padding=1).stride()
    if weight_layout == "ncl":
        assert y.is_contiguous() and y.view(2, -1).shape == (2, 55)


@pytest.mark.parametrize("changed", [False, True])
@pytest.mark.parametrize("needs_grad", ["input", "weight", "both"])
def test_a_permuted_input_changed_in_place_before_backward_raises_as_torchs(needs_grad, changed):
    """torch saves conv1d's input itself (made contiguous below autograd): a change of it in place
    before backward raises. Ours convolves a contiguous copy, which no change reaches: it computed
    gradients where torch raised. Unchanged, the gradients are torch's, on this package's kernels."""
    results = []
    for conv in (F.conv1d, triton_conv.conv1d):
        torch.manual_seed(0)
        h = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=needs_grad != "weight") * 1.0
        w = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=needs_grad != "input")
        with TritonProof() if conv is triton_conv.conv1d else contextlib.nullcontext():
            y = conv(h.transpose(1, 2), w, padding=1)  # a sequence model's (N, L, C) activations
            if changed:
                with torch.no_grad():
                    h.mul_(2)
            leaves = [t for t in (h, w) if t.requires_grad and t.is_leaf]
            results.append(outcome(lambda: torch.autograd.grad(y.square().sum(), leaves or [h])))  # noqa: B023
    (torch_kind, torch_grads), (our_kind, our_grads) = results
    assert our_kind == torch_kind == ("raise" if changed else "ok"), results
    if changed:
        assert isinstance(our_grads, RuntimeError) and "modified by an inplace operation" in str(our_grads)
    else:
        for ours, theirs in zip(our_grads, torch_grads, strict=True):
            assert rel_error(ours, theirs) < 1e-12


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel", [2, 4])
def test_an_even_same_convolution_of_one_channel_has_torchs_strides(kernel, triton_only):
    """One channel given as (N, L, 1).transpose(1, 2): is_contiguous() says yes, with strides
    (L, 1, 1). torch pads an even kernel's 'same' by a copy laid out (N, C, L) contiguous, so its
    output is too (code may .view() it); ours, reading the input's own strides, was channels-inner.
    The input gradient's strides are torch's as well."""
    w = torch.randn(3, 1, kernel, dtype=torch.float64)
    results = []
    for conv in (F.conv1d, triton_conv.conv1d):
        x = torch.randn(2, 7, 1, dtype=torch.float64).transpose(1, 2).requires_grad_()
        torch.manual_seed(0)
        with triton_only() if conv is triton_conv.conv1d else contextlib.nullcontext() as proof:
            y = conv(x, w, padding="same")
            grad_x = torch.autograd.grad(y, x, torch.randn_like(y))[0]
        results.append((y.stride(), grad_x.stride()))
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1}
    assert results[1] == results[0] == ((21, 7, 1), (7, 7, 1))


def test_a_one_channel_pointwise_weight_sliced_from_a_channels_inner_one(triton_only):
    """A (K, 1, 1) weight cut from a (K, L, C)-ordered one has channels-inner strides, which say
    nothing once made contiguous: torch's CPU convolution looks again there and writes (N, K, L)
    contiguous, which code may .view(). (cuDNN keeps the weight's strides: channels-inner on a GPU.)"""
    x = torch.randn(2, 1, 5)
    w = torch.randn(4, 3, 2).transpose(1, 2)[:, :1, :1]
    with triton_only() as proof:
        y = triton_conv.conv1d(x, w)
    assert proof.launches == {"fprop_kernel": 1}
    assert y.stride() == F.conv1d(x, w).stride()
    if x.device.type == "cpu":
        assert y.view(2, -1).shape == (2, 20)
    assert rel_error(y, F.conv1d(x.double(), w.double())) < bound(torch.float32)


def test_the_output_is_a_tensor_of_its_own_as_torchs_is(triton_only):
    """torch's conv1d output is no view (its convolution takes 3-D inputs): code may modify it in
    place with grad mode on after making it under no_grad, or detach_() it. Ours, the height-one
    conv2d's output without its height, must not be a view either."""
    x, w = torch.randn(2, 3, 7, dtype=torch.float64), torch.randn(4, 3, 3, dtype=torch.float64)
    scale = torch.full((1,), 2.0, dtype=torch.float64, requires_grad=True)
    results = {}
    for name, conv in (("ours", triton_conv.conv1d), ("torch", F.conv1d)):
        with triton_only() if name == "ours" else contextlib.nullcontext():
            with torch.no_grad():
                y = conv(x, w)
            assert not y._is_view(), name
            y.mul_(scale)  # a view made under no_grad would refuse this
            (grad,) = torch.autograd.grad(y.sum(), scale)
            detached = conv(x.clone().requires_grad_(), w).detach_()  # a view would refuse this
        assert y.stride() == detached.stride() and not detached.requires_grad
        results[name] = (y, grad)
    for ours, want in zip(results["ours"], results["torch"], strict=True):
        assert rel_error(ours, want) < bound(torch.float64)
