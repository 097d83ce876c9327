"""The forward convolution against a float64 reference, under Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

import triton_conv
from triton_conv import KernelConfig
from triton_conv.problem import ConvProblem

from .reference import bound, make_tensor, reference_conv2d, rel_error

# (input shape, weight shape, conv2d keyword arguments): every feature, no dimension a tile multiple.
FEATURES = {
    "3x3": ((2, 5, 9, 11), (7, 5, 3, 3), dict(padding=1)),
    "asymmetric": ((2, 5, 9, 11), (7, 5, 3, 2), dict(stride=(2, 1), padding=(1, 2))),
    "dilation": ((2, 3, 11, 10), (6, 3, 3, 3), dict(dilation=(2, 3), padding=(2, 3))),
    "groups": ((2, 8, 9, 7), (6, 4, 3, 3), dict(groups=2, padding=1)),
    "depthwise": ((2, 6, 8, 7), (12, 1, 3, 3), dict(groups=6, padding=1)),
    "same_even": ((2, 4, 9, 10), (5, 4, 4, 2), dict(padding="same", dilation=(1, 2))),
    "valid": ((2, 4, 9, 10), (5, 4, 3, 3), dict(padding="valid")),
    "pointwise": ((2, 9, 7, 9), (10, 9, 1, 1), {}),
    "strided_1x1": ((2, 9, 7, 9), (10, 9, 1, 1), dict(stride=2)),
    "5x5_stride3": ((1, 3, 13, 12), (5, 3, 5, 5), dict(stride=3, padding=2)),
    "unbatched": ((5, 9, 11), (7, 5, 3, 3), dict(padding=1)),
    "channels_37": ((2, 37, 6, 5), (41, 37, 3, 3), dict(padding=1)),
}
# (dtype, layout) pairs; every feature runs in each, so every dtype meets every layout somewhere.
VARIANTS = [
    (torch.float32, "nchw"),
    (torch.float16, "nhwc"),
    (torch.bfloat16, "strided"),
]
# Tile configs, none of which divides the problems above; split-K and GROUP_M=1 included.
CONFIGS = [
    KernelConfig(16, 16, 16, group_m=1),
    KernelConfig(32, 16, 16, split_k=3),
    KernelConfig(64, 32, 32, num_warps=4),
    KernelConfig(16, 64, 16, group_m=4, split_k=2),
    KernelConfig(128, 16, 32, num_warps=8),
]


def run_case(x_shape, w_shape, kwargs, dtype, layout, triton_only, config=None, bias=True, **extra):
    x = make_tensor(x_shape, dtype, layout)
    w = make_tensor(w_shape, dtype, layout)
    b = make_tensor((w_shape[0],), dtype) if bias else None
    x_before, w_before = x.clone(), w.clone()
    problem = triton_conv.functional.validate(x, w, b, **kwargs)
    with triton_only() as proof:
        if config is None:
            y = triton_conv.conv2d(x, w, b, **kwargs)
        else:
            y = triton_conv.conv2d_with_config(x, w, b, **kwargs, config=config, **extra)
    assert proof.launches.get("fprop_kernel", 0) >= 1 or y.numel() == 0
    ref = reference_conv2d(x, w, b, problem)
    assert y.dtype == dtype and y.shape == ref.shape
    err = rel_error(y, ref)
    assert err < bound(dtype), f"relative error {err:.2e} over {bound(dtype):.0e}"
    assert torch.equal(x, x_before) and torch.equal(w, w_before), "conv2d modified its inputs"
    return y


@pytest.mark.parametrize("dtype,layout", VARIANTS, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("feature", list(FEATURES))
def test_features(feature, dtype, layout, triton_only):
    run_case(*FEATURES[feature], dtype, layout, triton_only)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("feature", ["asymmetric", "groups", "channels_37"])
def test_configs(feature, dtype, config, triton_only):
    run_case(*FEATURES[feature], dtype, "nhwc", triton_only, config=config)


def test_float64(triton_only):
    x_shape, w_shape, kwargs = FEATURES["asymmetric"]
    run_case(x_shape, w_shape, kwargs, torch.float64, "nchw", triton_only)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[1]], ids=str)
def test_forced_int64_offsets(config, triton_only):
    run_case(*FEATURES["dilation"], torch.float32, "strided", triton_only, config=config, force_int64=True)


def test_int64_chosen_at_2_pow_31_elements():
    from triton_conv.launchers.common import kernel_flags

    small = torch.empty(4)
    huge = torch.empty(2**31, dtype=torch.int8, device="meta")
    assert not kernel_flags(torch.float16, small).use_int64
    assert kernel_flags(torch.float16, small, huge).use_int64


@pytest.mark.parametrize("bias", [False, True])
def test_without_bias(bias, triton_only):
    run_case(*FEATURES["3x3"], torch.float32, "nchw", triton_only, bias=bias)


def test_empty_batch(triton_only):
    x = torch.randn(0, 5, 9, 11)
    w = torch.randn(7, 5, 3, 3)
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, padding=1)
    assert y.shape == (0, 7, 9, 11) and not proof.launches


@pytest.mark.parametrize("layout,channels_last", [("nchw", False), ("nhwc", True), ("strided", False)])
def test_output_follows_input_layout(layout, channels_last, triton_only):
    y = run_case(*FEATURES["3x3"], torch.float32, layout, triton_only)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert y.is_contiguous() == (not channels_last)


def _channels_last(t):
    return t.to(memory_format=torch.channels_last)


# Layouts that is_contiguous() cannot tell apart, or calls contiguous in neither format: torch reads
# them by the order of their strides (Tensor.suggest_memory_format), for x and weight alike.
AMBIGUOUS_LAYOUTS = {
    "sliced nhwc view": lambda: (_channels_last(torch.randn(2, 4, 9, 6))[:, :, 2:7], torch.randn(3, 4, 3, 3)),
    "channel slice of nhwc": lambda: (
        _channels_last(torch.randn(2, 8, 5, 6))[:, :4],
        torch.randn(3, 4, 3, 3),
    ),
    "one channel nhwc": lambda: (_channels_last(torch.randn(2, 1, 5, 6)), torch.randn(3, 1, 3, 3)),
    "1x1 image nhwc": lambda: (_channels_last(torch.randn(2, 4, 1, 1)), torch.randn(3, 4, 1, 1)),
    "1x1 weight nhwc": lambda: (torch.randn(2, 4, 5, 6), _channels_last(torch.randn(3, 4, 1, 1))),
    "permuted nwhc": lambda: (torch.randn(2, 6, 5, 4).permute(0, 3, 2, 1), torch.randn(3, 4, 3, 3)),
    # NHWC by its strides (8, 1, 4, 2), but made contiguous in NHWC it is (1, 1, 1, 1): torch's CPU
    # convolution looks again there and writes NCHW (cuDNN keeps the caller's weight and NHWC).
    "one channel 1x1 weight sliced from nhwc": lambda: (
        torch.randn(2, 1, 5, 6),
        _channels_last(torch.randn(3, 2, 2, 2))[:, :1, :1, :1],
    ),
    "the same with a one channel nhwc input": lambda: (
        _channels_last(torch.randn(2, 1, 5, 6))[:, :, 1:],
        _channels_last(torch.randn(3, 2, 2, 2))[:, :1, :1, :1],
    ),
}


@pytest.mark.parametrize("case", list(AMBIGUOUS_LAYOUTS))
def test_output_memory_format_is_torchs(case, triton_only):
    """float32 on CPU: either operand channels_last by its strides, as cuDNN's rule, looked at again
    once made contiguous in that format, as torch's CPU convolutions do."""
    x, w = AMBIGUOUS_LAYOUTS[case]()
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, padding=1)
    expected = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    assert proof.launches == {"fprop_kernel": 1}
    assert y.stride() == torch.nn.functional.conv2d(x, w, padding=1).stride(), case
    assert rel_error(y, expected) < bound(torch.float32)  # TF32 on a GPU


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_tf32_follows_cudnn_setting(allow_tf32, set_tf32):
    from triton_conv.launchers.common import kernel_flags

    set_tf32(allow_tf32)
    expected = "tf32" if allow_tf32 else "ieee"
    assert kernel_flags(torch.float32, torch.empty(1)).input_precision == expected
    assert kernel_flags(torch.float16, torch.empty(1)).input_precision == "ieee"


def test_problem_gemm_views():
    problem = ConvProblem.from_shapes((3, 8, 10, 12), (6, 4, 3, 5), stride=(2, 1), padding=(1, 2), groups=2)
    assert problem.output_shape == (3, 6, 5, 12)
    assert problem.gemm("fprop") == (3 * 5 * 12, 3, 4 * 3 * 5)
    assert problem.gemm("dgrad") == (3 * 10 * 12, 4, 3 * 3 * 5)
    assert problem.gemm("wgrad") == (3, 4 * 3 * 5, 3 * 5 * 12)
    assert problem.flops() == 2 * 180 * 3 * 60 * 2


def test_a_weight_whose_layout_torch_reads_twice(triton_only):
    """torch's CPU convolution looks at a weight's layout twice: a (3, 1, 1, 1) slice of an NHWC
    weight (strides (8, 1, 4, 2)) suggests channels_last, but made channels_last-contiguous it no
    longer does, and torch answers in NCHW; so must the forward and both gradients here."""
    full = torch.randn(3, 2, 2, 2).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 5, 5)
    theirs, ours = ([x.clone(), full.clone()[:, :1, :1, :1]] for _ in range(2))
    assert ours[1].stride() == theirs[1].stride() == (8, 1, 4, 2)
    theirs, ours = [t.requires_grad_() for t in theirs], [t.requires_grad_() for t in ours]
    y_ref = torch.nn.functional.conv2d(*theirs)
    dy = torch.randn(y_ref.shape)
    grads_ref = torch.autograd.grad(y_ref, theirs, dy)
    with triton_only() as proof:
        y = triton_conv.conv2d(*ours)
        grads = torch.autograd.grad(y, ours, dy)
    assert proof.launches, "no kernel ran"
    for name, got, want in zip(("y", "dx", "dw"), (y, *grads), (y_ref, *grads_ref)):
        assert got.stride() == want.stride(), f"{name}: strides {got.stride()}, torch's {want.stride()}"
        assert rel_error(got, want) < bound(torch.float32), name  # two TF32 results on a GPU
