"""The weight (and bias) gradient against a float64 reference, under Triton's interpreter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from triton_conv import KernelConfig
from triton_conv.configs import MIN_STEPS_PER_SPLIT, default_wgrad_split
from triton_conv.launchers.wgrad import conv2d_wgrad
from triton_conv.problem import ConvProblem

from .reference import bound, make_tensor, rel_error

# (input shape, weight shape, conv2d keyword arguments): every feature, no dimension a tile multiple
# (but channels_32's C: its column tiles each lie inside one filter tap, as do a 1x1 filter's).
FEATURES = {
    "3x3": ((2, 5, 9, 11), (7, 5, 3, 3), dict(padding=1)),
    "stride2": ((2, 4, 11, 10), (6, 4, 3, 3), dict(stride=2, padding=1)),
    "asymmetric": ((2, 5, 9, 11), (7, 5, 3, 2), dict(stride=(2, 1), padding=(1, 2))),
    "dilation": ((2, 3, 11, 10), (6, 3, 3, 3), dict(dilation=(2, 3), padding=(2, 3))),
    "groups": ((2, 8, 9, 7), (6, 4, 3, 3), dict(groups=2, padding=1)),
    "depthwise": ((2, 6, 8, 7), (12, 1, 3, 3), dict(groups=6, padding=1)),
    "same_even": ((2, 4, 9, 10), (5, 4, 4, 2), dict(padding="same", dilation=(1, 2))),
    "pointwise": ((3, 20, 7, 9), (10, 20, 1, 1), {}),
    "strided_1x1": ((2, 20, 7, 9), (10, 20, 1, 1), dict(stride=2)),
    "5x5_stride3": ((1, 3, 11, 10), (5, 3, 5, 5), dict(stride=3, padding=2)),
    "channels_32": ((2, 32, 5, 4), (12, 32, 3, 3), dict(padding=1)),
}
# (dtype, layout of x and dy): every feature runs in each. "expanded" is the dy of y.sum().backward():
# one value with all strides zero.
VARIANTS = [
    (torch.float32, "nchw"),
    (torch.float16, "nhwc"),
    (torch.bfloat16, "strided"),
    (torch.float32, "expanded"),
]
FEATURE_CONFIG = KernelConfig(16, 16, 32, group_m=2, split_k=2)
# None divides the problems; split 1, 2, 3, 5; 5 splits of one 64-pixel block leave four splits empty.
CONFIGS = [
    KernelConfig(16, 16, 16, group_m=1),
    KernelConfig(16, 32, 16, split_k=2),
    KernelConfig(32, 16, 32, group_m=1, split_k=3),
    KernelConfig(16, 16, 64, split_k=5),
    KernelConfig(64, 64, 16, split_k=2, num_warps=4),
]


def _problem(x_shape, w_shape, kwargs) -> ConvProblem:
    return ConvProblem.from_shapes(x_shape, w_shape, **kwargs)


def _tensor(shape, dtype, layout):
    if layout == "expanded":
        return torch.randn((), dtype=torch.float32).to(dtype).expand(shape)
    return make_tensor(shape, dtype, layout)


def reference_wgrad(dy, x, problem: ConvProblem):
    """float64 (dw, db) by autograd, with the problem's (possibly asymmetric) padding."""
    x64 = F.pad(x.double(), (problem.pad_left, problem.pad_right, problem.pad_top, problem.pad_bottom))
    w64 = torch.zeros(problem.weight_shape, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x64, w64, None, problem.stride, 0, problem.dilation, problem.groups)
    (dw,) = torch.autograd.grad(y, w64, dy.double())
    return dw, dy.double().sum(dim=(0, 2, 3))


def run_wgrad(
    dy, x, problem, config, triton_only, *, weight_dtype=None, channels_last=False, bias=True, **extra
):
    weight_dtype = weight_dtype or x.dtype
    with triton_only() as proof:
        dw, db = conv2d_wgrad(
            dy, x, problem, config,
            weight_dtype=weight_dtype, channels_last=channels_last, need_bias=bias, **extra,
        )  # fmt: skip
    # One launch computes dw and db: no second pass over dy.
    assert proof.launches == {"wgrad_kernel": 1}, proof.launches
    assert dw.shape == problem.weight_shape and dw.dtype == weight_dtype
    assert (db is not None) == bias
    return dw, db


def check_case(x_shape, w_shape, kwargs, dtype, layout, triton_only, config, **extra):
    problem = _problem(x_shape, w_shape, kwargs)
    x = _tensor(problem.input_shape, dtype, "nchw" if layout == "expanded" else layout)
    dy = _tensor(problem.output_shape, dtype, layout)
    ref_dw, ref_db = reference_wgrad(dy, x, problem)  # outside triton_only: torch's conv is barred there
    x_before, dy_before = x.clone(), dy.clone()
    dw, db = run_wgrad(dy, x, problem, config, triton_only, **extra)
    # 16-bit products are exact in fp32, so a 16-bit problem with an fp32 weight only sees fp32
    # accumulation: the weight's dtype sets the bound.
    limit = bound(dw.dtype)
    err_w, err_b = rel_error(dw, ref_dw), rel_error(db, ref_db)
    assert err_w < limit, f"dw relative error {err_w:.2e} over {limit:.0e}"
    assert err_b < limit, f"db relative error {err_b:.2e} over {limit:.0e}"
    assert torch.equal(x, x_before) and torch.equal(dy, dy_before), "wgrad modified its inputs"
    return dw, db


@pytest.mark.parametrize("dtype,layout", VARIANTS, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("feature", list(FEATURES))
def test_features(feature, dtype, layout, triton_only):
    dw, _ = check_case(
        *FEATURES[feature], dtype, layout, triton_only, FEATURE_CONFIG, channels_last=layout == "nhwc"
    )
    assert dw.is_contiguous(
        memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format
    )


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("feature", ["asymmetric", "groups", "5x5_stride3"])
def test_configs(feature, dtype, config, triton_only):
    check_case(*FEATURES[feature], dtype, "nhwc", triton_only, config, channels_last=True)


@pytest.mark.parametrize("feature", ["same_even", "depthwise", "pointwise"])
def test_float64(feature, triton_only):
    check_case(*FEATURES[feature], torch.float64, "strided", triton_only, CONFIGS[2])


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_fp32_bias_paths(allow_tf32, set_tf32, triton_only):
    """Without TF32 the bias gradient is a dot with ones; with it, a sum in registers (exact dy)."""
    set_tf32(allow_tf32)
    check_case(*FEATURES["groups"], torch.float32, "nchw", triton_only, CONFIGS[1])


def test_fp16_inputs_fp32_weight(triton_only):
    """Mixed precision: fp16 activations and gradients, an fp32 master weight's gradient."""
    check_case(*FEATURES["3x3"], torch.float16, "nhwc", triton_only, CONFIGS[1], weight_dtype=torch.float32)


@pytest.mark.parametrize("bias", [False, True])
def test_without_bias(bias, triton_only):
    problem = _problem(*FEATURES["3x3"])
    x, dy = torch.randn(problem.input_shape), torch.randn(problem.output_shape)
    ref_dw, _ = reference_wgrad(dy, x, problem)
    dw, db = run_wgrad(dy, x, problem, CONFIGS[2], triton_only, bias=bias)
    assert rel_error(dw, ref_dw) < bound(torch.float32)  # IEEE's under the interpreter; TF32's on a GPU


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_split_k_is_deterministic(dtype, triton_only):
    """Splits are summed in split order, whichever arrives last: the same input gives the same bits.
    (Each launch runs its programs in its own order here, as on a GPU: tests/program_order.py.)"""
    problem = _problem(*FEATURES["dilation"])
    x = make_tensor(problem.input_shape, dtype, "nhwc")
    dy = make_tensor(problem.output_shape, dtype, "nhwc")
    config = KernelConfig(16, 16, 16, split_k=3)
    first = run_wgrad(dy, x, problem, config, triton_only)
    second = run_wgrad(dy, x, problem, config, triton_only)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_gradient_accumulates_over_the_batch(triton_only):
    """dw of a batch is the sum of the per-image dw: the batch only lengthens the reduction."""
    problem = _problem(*FEATURES["asymmetric"]).with_batch(3)
    x = torch.randn(problem.input_shape, dtype=torch.float64)
    dy = torch.randn(problem.output_shape, dtype=torch.float64)
    config = KernelConfig(16, 16, 16, split_k=2)
    dw, db = run_wgrad(dy, x, problem, config, triton_only)
    single = problem.with_batch(1)
    parts = [run_wgrad(dy[n : n + 1], x[n : n + 1], single, config, triton_only) for n in range(3)]
    assert rel_error(sum(p[0] for p in parts), dw) < 1e-13
    assert rel_error(sum(p[1] for p in parts), db) < 1e-13


def test_a_step_past_one_image_runs_on_into_the_next(triton_only):
    """A BLOCK_K of 32 over images of 4x5 output pixels (NCHW: no linear rows), one split: each
    reduction step's pixels run on past the image's end into the next one, and a split takes
    several such steps (the split-K configs above give each split one step)."""
    check_case(*FEATURES["strided_1x1"], torch.float32, "nchw", triton_only, KernelConfig(16, 16, 32))


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2]], ids=str)
def test_forced_int64_offsets(config, triton_only):
    check_case(*FEATURES["dilation"], torch.float32, "strided", triton_only, config, force_int64=True)


def test_empty_batch(triton_only):
    problem = _problem((0, 5, 9, 11), (7, 5, 3, 3), dict(padding=1))
    dy, x = torch.randn(problem.output_shape), torch.randn(problem.input_shape)
    with triton_only() as proof:
        dw, db = conv2d_wgrad(
            dy, x, problem, CONFIGS[0], weight_dtype=torch.float32, channels_last=True, need_bias=True
        )
    assert not proof.launches
    assert dw.shape == problem.weight_shape and not dw.any() and db.shape == (7,) and not db.any()
    assert dw.is_contiguous(memory_format=torch.channels_last)


def test_shape_mismatch_is_an_error():
    problem = _problem(*FEATURES["3x3"])
    with pytest.raises(ValueError, match="wgrad expects dy"):
        conv2d_wgrad(
            torch.randn(problem.input_shape), torch.randn(problem.input_shape), problem, CONFIGS[0],
            weight_dtype=torch.float32, channels_last=False, need_bias=False,
        )  # fmt: skip


def test_default_split_fills_one_wave():
    config = KernelConfig(64, 64, 32)
    # ResNet-50's 3x3 layer at 14x14, C=K=256: 4 x 36 = 144 tiles already fill 132 SMs.
    layer = ConvProblem.from_shapes((1, 256, 14, 14), (256, 256, 3, 3), padding=1)
    assert default_wgrad_split(layer, config, 132) == 1
    # A 64-channel 1x1 layer: one tile; N·P·Q = 8·56·56 makes 784 steps: split up to one wave.
    small = ConvProblem.from_shapes((8, 64, 56, 56), (64, 64, 1, 1))
    assert default_wgrad_split(small, config, 132) == 132
    # The same layer at N=1, 14x14: 7 steps leave room for a single split of >= 4 steps.
    tiny = ConvProblem.from_shapes((1, 64, 14, 14), (64, 64, 1, 1))
    assert default_wgrad_split(tiny, config, 132) == 7 // MIN_STEPS_PER_SPLIT == 1
    # Never past one wave: 40 tiles on 132 SMs split 3 ways (120 CTAs), not 4 (160).
    forty = ConvProblem.from_shapes((8, 64, 56, 56), (640, 64, 1, 1))
    assert default_wgrad_split(forty, KernelConfig(16, 64, 32), 132) == 3
    assert default_wgrad_split(ConvProblem.from_shapes((0, 4, 5, 5), (4, 4, 3, 3)), config, 132) == 1


def test_default_split_counts_the_columns_the_launch_tiles():
    """A 3-channel stem's x is read from a copy padded to 4 channels: 4·7·7 = 196 columns, 4 column
    tiles of 64 (not 147, 3 tiles). The rule's wave is the launch's: tiles x split within 132 CTAs."""
    from triton_conv.model.tiles import launch_tiles

    stem = ConvProblem.from_shapes((32, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    config = KernelConfig(64, 64, 64)
    for element_size in (2, 4):
        split = default_wgrad_split(stem, config, 132, element_size)
        assert split == 132 // 4
        launched = launch_tiles(stem, "wgrad", KernelConfig(**{**config.as_dict(), "split_k": split}))
        assert launched == 4 * split <= 132
