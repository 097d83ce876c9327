"""triton_conv.conv_transpose2d against float64 torch: every argument (stride, padding, output_padding,
dilation, groups, bias), batched and unbatched, every layout and dtype, each pass on this package's
kernels (forward = the input-gradient kernel with a bias epilogue, input gradient = the forward
kernel, weight gradient = the weight-gradient kernel with x and dy exchanged), every tile config of
the bias epilogue, the conv2d view's geometry, torch's degenerate shapes and errors, and the sm_90
compile of the epilogue. Autograd transforms, torch.compile, opcheck, autocast and the modules are
in test_conv_family.py, property tests in test_conv_family_properties.py.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv import KernelConfig
from triton_conv.compile_check import compile_specs
from triton_conv.configs import wgmma_eligible
from triton_conv.launchers.dgrad import conv2d_dgrad, dgrad_spec
from triton_conv.problem import TRANSPOSED_PASSES, ConvProblem

from .conftest import TritonProof
from .contract import outcome, refused_as_torch_refuses, reproduction, same_outcome_as_torch
from .reference import bound, make_tensor, rel_error

MODULE = "tests.test_conv_transpose"

# (x shape, weight shape (C_in, C_out/g, R, S), conv_transpose2d keyword arguments): decoder layers and
# every argument; no dimension a tile multiple. "crop" and "dilated_crop" have output_padding >
# padding: their conv2d view pads the bottom/right negatively (a crop).
FEATURES = {
    "2x2_s2": ((2, 5, 4, 3), (5, 3, 2, 2), dict(stride=2)),
    "4x4_s2_p1": ((2, 4, 3, 4), (4, 3, 4, 4), dict(stride=2, padding=1)),
    "3x3_s2_p1_op1": ((2, 5, 4, 5), (5, 4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "crop": ((2, 3, 4, 3), (3, 4, 3, 3), dict(stride=2, output_padding=1)),
    "dilated_crop": ((1, 3, 4, 4), (3, 2, 3, 2), dict(dilation=3, output_padding=2)),
    "asymmetric": (
        (2, 3, 4, 5),
        (3, 2, 3, 2),
        dict(stride=(3, 2), padding=(1, 0), output_padding=(2, 1), dilation=(1, 2)),
    ),  # fmt: skip
    "groups": ((2, 4, 4, 5), (4, 3, 3, 3), dict(stride=2, padding=1, groups=2)),
    "depthwise": ((2, 4, 4, 4), (4, 1, 3, 3), dict(stride=2, groups=4)),
    "3x3_s1": ((2, 5, 5, 4), (5, 6, 3, 3), dict(padding=1)),
    "1x1_s2": ((2, 6, 3, 4), (6, 5, 1, 1), dict(stride=2, output_padding=1)),  # odd rows: bias only
    "unbatched": ((5, 3, 4), (5, 3, 3, 3), dict(stride=2, padding=1)),
    "channels_20": ((1, 20, 3, 3), (20, 18, 3, 3), dict(stride=2, padding=1)),
    "one_row_huge_stride": ((2, 3, 1, 2), (3, 2, 3, 3), dict(stride=5, output_padding=3)),
}
# (dtype, layout); each feature runs in two of them (and with and without a bias), so every dtype
# meets several layouts and features.
VARIANTS = [
    (torch.float32, "nchw"),
    (torch.float16, "nhwc"),
    (torch.bfloat16, "strided"),
    (torch.float64, "nhwc"),
]
CASES = [
    (name, *VARIANTS[(index + shift) % len(VARIANTS)], bool((index + shift) % 2))
    for index, name in enumerate(FEATURES)
    for shift in (0, 1)
]


def _leaves(x_shape, w_shape, kwargs, dtype, layout, with_bias):
    out_channels = w_shape[1] * kwargs.get("groups", 1)
    x = make_tensor(x_shape, dtype, layout).requires_grad_()
    w = make_tensor(w_shape, dtype, layout).requires_grad_()
    b = make_tensor((out_channels,), dtype).requires_grad_() if with_bias else None
    return x, w, b


def _reference(x, w, b, kwargs, grad_output):
    """float64 output and gradients from torch's own conv_transpose2d, on the same (rounded) values."""
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in (x, w, b)]
    y = F.conv_transpose2d(*leaves, **kwargs)
    y.backward(grad_output.double())
    return y.detach(), [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("feature,dtype,layout,with_bias", CASES, ids=str)
def test_forward_and_gradients_match_torch(feature, dtype, layout, with_bias, triton_only):
    x_shape, w_shape, kwargs = FEATURES[feature]
    x, w, b = _leaves(x_shape, w_shape, kwargs, dtype, layout, with_bias)
    with triton_only() as proof:
        y = triton_conv.conv_transpose2d(x, w, b, **kwargs)
        grad_output = torch.randn_like(y)
        y.backward(grad_output)
    # The forward is the input-gradient kernel; the backward the forward and weight-gradient kernels.
    assert proof.launches == {"dgrad_kernel": 1, "fprop_kernel": 1, "wgrad_kernel": 1}
    expected, grads = _reference(x, w, b, kwargs, grad_output)
    assert y.shape == expected.shape and y.dtype == dtype
    assert rel_error(y, expected) < bound(dtype)
    for name, got, ref in zip("xwb", (x.grad, w.grad, None if b is None else b.grad), grads):
        if ref is not None:
            assert got.dtype == dtype and rel_error(got, ref) < 2 * bound(dtype), f"d{name}"
    # The output follows the input's (or weight's) memory format, as torch's does. On a GPU torch's
    # float64 reference stays NCHW whatever the layout (cuDNN): there, torch's output in y's dtype.
    if layout != "strided":
        if x.device.type == "cuda":
            expected = F.conv_transpose2d(x.detach(), w.detach(), None, **kwargs)
        assert y.stride() == expected.stride()


@pytest.mark.parametrize("feature", ["2x2_s2", "crop", "dilated_crop", "groups"])
def test_forward_alone_is_one_input_gradient_launch(feature, triton_only):
    x_shape, w_shape, kwargs = FEATURES[feature]
    x, w, b = (t.detach() for t in _leaves(x_shape, w_shape, kwargs, torch.float64, "nchw", True))
    with triton_only() as proof:
        y = triton_conv.conv_transpose2d(x, w, b, **kwargs)
    assert proof.launches == {"dgrad_kernel": 1}
    assert rel_error(y, F.conv_transpose2d(x, w, b, **kwargs)) < 1e-12


# Tile configs, none of which divides the problems; split-K (the bias is added once, after the
# reduction of the splits) and GROUP_M=1 included.
CONFIGS = [
    KernelConfig(16, 16, 16, group_m=1),
    KernelConfig(32, 16, 16, split_k=3),
    KernelConfig(16, 32, 16, group_m=2, split_k=2),
    KernelConfig(128, 16, 32, num_warps=8),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("feature", ["4x4_s2_p1", "dilated_crop", "channels_20"])
def test_every_tile_config_of_the_bias_epilogue(feature, config, triton_only):
    x_shape, w_shape, kwargs = FEATURES[feature]
    x, w, b = (t.detach() for t in _leaves(x_shape, w_shape, kwargs, torch.float32, "nhwc", True))
    view = ConvProblem.from_transposed(x.shape, w.shape, **kwargs)
    with triton_only() as proof:
        y = conv2d_dgrad(x, w, view, config, channels_last=True, bias=b)
    assert proof.launches == {"dgrad_kernel": 1}
    # fp32: IEEE under the interpreter; on a GPU a launch outside a call takes cuDNN's TF32 setting
    expected = F.conv_transpose2d(x.double(), w.double(), b.double(), **kwargs)
    assert rel_error(y, expected) < bound(torch.float32)


# --- the conv2d view -------------------------------------------------------------------------------
def test_the_view_is_the_convolution_whose_input_gradient_it_is():
    """For every feature: the view maps y-shaped inputs to x-shaped outputs, its GEMMs are the
    transposed passes', and the transposed convolution's forward is the view's input gradient."""
    for name, (x_shape, w_shape, kwargs) in FEATURES.items():
        x_shape = x_shape if len(x_shape) == 4 else (1, *x_shape)
        view = ConvProblem.from_transposed(x_shape, w_shape, **kwargs)
        x = torch.randn(x_shape, dtype=torch.float64)
        w = torch.randn(w_shape, dtype=torch.float64)
        y = F.conv_transpose2d(x, w, **kwargs)
        assert view.input_shape == y.shape and view.output_shape == x.shape, name
        assert view.weight_shape == w.shape, name
        # y = conv_input(x, w): the vector-Jacobian product of the view's conv2d, padded as the view is.
        probe = torch.zeros(view.input_shape, dtype=torch.float64, requires_grad=True)
        pads = (view.pad_left, view.pad_right, view.pad_top, view.pad_bottom)  # negative: a crop
        conv = F.conv2d(F.pad(probe, pads), w, None, view.stride, 0, view.dilation, view.groups)
        (dgrad,) = torch.autograd.grad(conv, probe, x)
        assert rel_error(dgrad, y) < 1e-12, name
        for pass_name, conv2d_pass in TRANSPOSED_PASSES.items():
            assert view.transposed_gemm(pass_name) == view.gemm(conv2d_pass)
        arguments = view.transposed_arguments()
        assert arguments["output_padding"] == torch.nn.modules.utils._pair(kwargs.get("output_padding", 0))


def test_the_ops_take_a_crop_at_the_bottom_and_right_only(triton_only):
    """A negative bottom/right padding (what a view with output_padding > padding has) convolves the
    input without its last rows/columns, on every pass; a negative top/left padding is refused."""
    from triton_conv.autograd import conv2d_op

    x, w = (
        t.requires_grad_()
        for t in (torch.randn(2, 3, 7, 6, dtype=torch.float64), torch.randn(4, 3, 3, 2, dtype=torch.float64))
    )
    geometry = ((2, 1), (1, 0, -1, -2), (1, 2), 1)
    with triton_only() as proof:
        y = conv2d_op(x, w, None, *geometry)
        grads = torch.autograd.grad(y, (x, w), y.detach())
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
    expected = F.conv2d(F.pad(x, (0, -2, 1, -1)), w, None, (2, 1), 0, (1, 2))  # F.pad crops too
    assert rel_error(y, expected) < 1e-12
    for got, ref in zip(grads, torch.autograd.grad(expected, (x, w), y.detach())):
        assert rel_error(got, ref) < 1e-12
    with pytest.raises(RuntimeError, match="padding"):
        conv2d_op(x, w, None, (1, 1), (-1, 0, 1, 0), (1, 1), 1)


def test_transposed_gemm_names_the_decoder_passes():
    """U-Net's 2x2 stride-2 up-convolution 1024 -> 512 at 16x16 -> 32x32: its forward is dgrad of a
    2x2 stride-2 conv2d over the 32x32 output, four phases of one tap, so each output pixel is one
    GEMM row (M = N·32·32) and the reduction is the 1024 input channels."""
    view = ConvProblem.from_transposed((8, 1024, 16, 16), (1024, 512, 2, 2), stride=2)
    assert view.input_shape == (8, 512, 32, 32) and view.output_shape == (8, 1024, 16, 16)
    assert view.transposed_gemm("fprop") == (8 * 32 * 32, 512, 1024 * 4)
    assert all(phase.rows.taps * phase.cols.taps == 1 for phase in view.dgrad_phases())
    assert view.transposed_gemm("dgrad") == (8 * 16 * 16, 1024, 512 * 4)
    assert view.transposed_gemm("wgrad") == (1024, 512 * 4, 8 * 16 * 16)
    with pytest.raises(ValueError, match="pass_name"):
        view.transposed_gemm("forward")


def test_a_view_of_no_transposed_convolution_says_so():
    same_even = ConvProblem.from_shapes((1, 2, 6, 6), (3, 2, 4, 4), padding="same")  # pads 1 top, 2 bottom
    with pytest.raises(ValueError, match="no transposed convolution"):
        same_even.transposed_arguments()


# --- the tuning key and the model: a transposed convolution batches as dgrad ---------------------------
def test_the_forward_is_tuned_as_the_views_dgrad(monkeypatch):
    """One tuning key for the dgrad kernel, whether conv2d's backward or a transposed forward runs it."""
    from triton_conv import passes

    asked = []
    real = passes.choose_config
    monkeypatch.setattr(passes, "choose_config", lambda *a: asked.append(a[:2]) or real(*a))
    x, w = torch.randn(2, 4, 3, 4), torch.randn(4, 3, 4, 4)
    triton_conv.conv_transpose2d(x, w, stride=2, padding=1)
    assert asked == [(ConvProblem.from_transposed(x.shape, w.shape, stride=2, padding=1), "dgrad")]


def test_the_model_batches_a_transposed_forward_as_dgrad():
    """U-Net's up-convolution 128 -> 64 at 16x16 -> 32x32: four stride phases of 256 rows per image.
    With 128x128 tiles one image makes 2 row tiles per phase, 64 images 128: the tiles grow with N
    (as fprop's and dgrad's do), unlike its weight gradient's, which only split-K can multiply."""
    from triton_conv.model import launch_tiles, reference_config

    view = ConvProblem.from_transposed((1, 128, 16, 16), (128, 64, 2, 2), stride=2)
    forward = reference_config(TRANSPOSED_PASSES["fprop"], "fp16", "H200")
    assert (forward.block_m, forward.block_n, forward.split_k) == (128, 128, 1)
    tiles = [launch_tiles(view.with_batch(n), TRANSPOSED_PASSES["fprop"], forward) for n in (1, 64)]
    assert tiles == [2 * 4, 128 * 4]
    weight = reference_config("wgrad", "fp16", "H200")
    wgrad = [launch_tiles(view.with_batch(n), TRANSPOSED_PASSES["wgrad"], weight) for n in (1, 64)]
    assert wgrad[0] == wgrad[1]


# --- degenerate shapes and errors: what torch does ----------------------------------------------------
def _degenerate_cases():
    for n, c, k, (h, w), (r, s), groups, bias in itertools.product(
        (0, 2), (0, 2), (0, 2), ((0, 4), (3, 0), (3, 4)), ((0, 2), (2, 0), (1, 1), (2, 2)), (1, 2),
        (False, True),
    ):  # fmt: skip
        yield (n, c, h, w), (c, k // groups, r, s), bias, dict(groups=groups, stride=2, output_padding=1)


def run_degenerate_case(x_shape, w_shape, with_bias, kwargs):
    """torch's principled behaviour is its reference path (oneDNN off); where torch raises (even an
    IndexError), triton_conv raises a RuntimeError; where it answers, the same tensor and gradients."""
    failure = reproduction(MODULE, f"run_degenerate_case({x_shape}, {w_shape}, {with_bias}, {kwargs})")
    results = {}
    # Fresh float64 values, the same for both sides; ours with torch's convolutions barred.
    out_channels = w_shape[1] * kwargs["groups"]
    values = [torch.randn(x_shape, dtype=torch.float64), torch.randn(w_shape, dtype=torch.float64)]
    values.append(torch.randn(out_channels, dtype=torch.float64) if with_bias else None)
    for name, conv in (("torch", F.conv_transpose2d), ("ours", triton_conv.conv_transpose2d)):
        leaves = [None if v is None else v.clone().requires_grad_() for v in values]
        with TritonProof() if name == "ours" else contextlib.nullcontext():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # oneDNN's note on TF32 for Intel GPUs
                with torch.backends.mkldnn.flags(enabled=False):
                    kind, y = outcome(lambda: conv(*leaves, **kwargs))  # noqa: B023
            grads = None
            if kind == "ok":
                y.sum().backward()
                grads = [None if t is None else t.grad for t in leaves]
        results[name] = (kind, y), grads
    (expected, expected_grads), (got, grads) = results["torch"], results["ours"]
    if not same_outcome_as_torch(expected, got, failure):
        return
    for ours, theirs in zip(grads, expected_grads):
        assert ours is None or (ours.shape == theirs.shape and torch.allclose(ours, theirs)), failure


def test_degenerate_shapes_do_what_torch_does():
    """Every combination of empty batch, input or output channels, image rows or columns and kernel
    sizes, with groups and bias: raises where torch raises, torch's tensors otherwise."""
    for case in _degenerate_cases():
        run_degenerate_case(*case)


@pytest.mark.parametrize(
    "change,words",
    [
        (dict(stride=0), "stride"),
        (dict(dilation=(1, 0)), "dilation"),
        (dict(padding=-1), "padding"),
        (dict(output_padding=-1), "output_padding"),
        (dict(stride=2, output_padding=2), "output_padding"),
        (dict(groups=3), "groups"),
        (dict(groups=0), "groups"),
        (dict(padding=4), "output would be"),
        (dict(weight=torch.randn(5, 3, 3, 3)), "input channels"),
        (dict(bias=torch.randn(4)), "bias"),
        (dict(bias=torch.randn(3).double()), "dtype"),
        (dict(input=torch.randn(4, 5)), "dimensions"),
        (dict(stride=(1, 1, 1)), "stride"),
        (dict(output_padding=1.0), "output_padding"),
        (dict(padding="same"), "padding"),
    ],
)
def test_errors_name_the_argument_and_are_torchs_kind(change, words):
    args = dict(input=torch.randn(2, 4, 5, 5), weight=torch.randn(4, 3, 3, 3), bias=torch.randn(3))
    args.update(change)
    refused_as_torch_refuses(triton_conv.conv_transpose2d, F.conv_transpose2d, args, words)


def test_huge_stride_or_padding_gives_a_clear_error():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3)
    for kwargs in (dict(stride=2**40), dict(dilation=2**40, padding=2**39)):
        with pytest.raises(RuntimeError, match="at most"):
            triton_conv.conv_transpose2d(x, w, **kwargs)


# --- sm_90: the bias epilogue compiles to wgmma with no spills ------------------------------------------
COMPILED = [
    (KernelConfig(128, 128, 64, num_warps=8), torch.float16),
    (KernelConfig(64, 128, 64, num_warps=4), torch.bfloat16),
    (KernelConfig(64, 64, 32, num_warps=4, split_k=2), torch.float16),
    (KernelConfig(64, 64, 32, num_warps=4), torch.float32),
]


def test_the_bias_epilogue_compiles_for_sm90_with_wgmma_and_no_spills():
    """The launches a GPU would run for a U-Net up-convolution (2x2 stride 2) and a pix2pix one
    (4x4 stride 2 padding 1) on channels_last tensors, with the bias and the flags a GPU gets."""
    views = [
        ConvProblem.from_transposed((8, 128, 32, 32), (128, 64, 2, 2), stride=2),
        ConvProblem.from_transposed((8, 128, 32, 32), (128, 64, 4, 4), stride=2, padding=1),
    ]
    specs, cases = [], []
    for index, (config, dtype) in enumerate(COMPILED):
        view = views[index % 2]

        x, w, y = (
            torch.empty(shape, dtype=dtype, device="meta").to(memory_format=torch.channels_last)
            for shape in (view.output_shape, view.weight_shape, view.input_shape)
        )
        bias = torch.empty(view.in_channels, dtype=dtype, device="meta")
        spec = dgrad_spec(x, w, y, view, config, bias=bias)
        assert spec.constexprs["HAS_BIAS"]
        precision = "tf32" if dtype == torch.float32 else "ieee"
        specs.append(
            spec._replace(constexprs={**spec.constexprs, "INPUT_PRECISION": precision, "UPCAST": False})
        )
        cases.append((config, dtype))
    for (config, dtype), report in zip(cases, compile_specs(specs, 90), strict=True):
        assert report.kernel == "dgrad_kernel" and not report.spills, report
        if dtype != torch.float32 and wgmma_eligible(dtype, config.block_m, config.num_warps):
            assert report.wgmma, f"{config} {dtype} fell off wgmma: {report}"
