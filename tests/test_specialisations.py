"""Each main-loop specialisation the launchers choose from the tensors, against the float64 reference
under the interpreter, with the choice itself checked: aligned channels (no channel masks), tap bit
masks, the weight as a KRSC matrix, rows and columns wrapped instead of masked, the 3-channel
stem's row spans, few channels per group read from zero-padded copies (dgrad's weight, wgrad's x),
wgrad's linear rows (with the stride's q term), its TMA descriptors for dy and a
pointwise x, and the bias gradient's own programs; and what must not be chosen when the tensors do
not allow it (NCHW, odd channel counts, misaligned groups, a sliced view)."""

from __future__ import annotations

import pytest
import torch

from triton_conv import KernelConfig
from triton_conv.launchers.dgrad import conv2d_dgrad, dgrad_plan
from triton_conv.launchers.fprop import conv2d_fprop, fprop_plan
from triton_conv.launchers.wgrad import conv2d_wgrad, wgrad_plan
from triton_conv.problem import ConvProblem

from .reference import REL_TOL_FP32_IEEE, bound, conv_case, make_tensor, reference_conv2d, rel_error

pytestmark = pytest.mark.interpreter

SMALL = KernelConfig(32, 16, 16, group_m=1)
SPLIT = KernelConfig(64, 32, 32, split_k=3)
WIDE = KernelConfig(16, 64, 16, group_m=4, split_k=2)


def configs_for(dtype) -> tuple:
    """Every config once per case, split between the dtypes: bf16 the unsplit and the wide split-K
    tiles, fp32 the other split. Under the interpreter the index math a config exercises does not
    depend on the dtype, so each dtype checks its numerics on part of the configs (the suite's time
    is bounded; bf16 runs upcast in the interpreter, the slowest)."""
    return (SMALL, WIDE) if dtype == torch.bfloat16 else (SPLIT,)


def _flags(plan, names):
    constexprs = plan.constexprs if hasattr(plan, "constexprs") else plan.plan.constexprs
    return {name: constexprs[name] for name in names}


# (x shape, w shape, conv2d kwargs, layout, fprop flags, dgrad flags, wgrad flags): flags the
# launchers must choose for SMALL's tile (BLOCK_N 16, BLOCK_K 16).
CASES = {
    "3x3 aligned nhwc": (
        (2, 32, 7, 9), (32, 32, 3, 3), dict(padding=1), "nhwc",
        dict(CHANNELS_ALIGNED=True, W_MATRIX=True, TAP_BITS=True, ROW_SPANS=False),
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(ONE_TAP_TILES=True, LINEAR_ROWS=True, Q_EXTRA=False, DY_TMA=True, X_TMA=False),
    ),
    "3x3 stride 2 even": (
        (2, 16, 8, 10), (32, 16, 3, 3), dict(stride=2, padding=1), "nhwc",
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(ONE_TAP_TILES=True, LINEAR_ROWS=True, Q_EXTRA=True, DY_TMA=True),
    ),
    "3x3 stride 2 odd": (
        (2, 16, 9, 7), (16, 16, 3, 3), dict(stride=2, padding=1), "nhwc",
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(ONE_TAP_TILES=True, LINEAR_ROWS=False, DY_TMA=True),
    ),
    "dilated groups": (
        (2, 32, 9, 10), (32, 16, 3, 2), dict(padding=(2, 1), dilation=(2, 1), groups=2), "nhwc",
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(ONE_TAP_TILES=True, LINEAR_ROWS=False, DY_TMA=True),
    ),
    "pointwise": (
        (3, 32, 5, 6), (48, 32, 1, 1), {}, "nhwc",
        dict(POINTWISE=True, CHANNELS_ALIGNED=True, TAP_BITS=False),
        dict(POINTWISE=True, CHANNELS_ALIGNED=True),
        dict(ONE_TAP_TILES=True, DY_TMA=True, X_TMA=True),
    ),
    # A 1x1 filter at stride 2 is no GEMM over x's rows: x's pixels of the output grid are every
    # other one, so neither the pointwise loops nor wgrad's (N·H·W, C) descriptor of x may be chosen.
    "1x1 stride 2 nhwc": (
        (2, 32, 9, 11), (48, 32, 1, 1), dict(stride=2), "nhwc",
        dict(POINTWISE=False, CHANNELS_ALIGNED=True, W_MATRIX=True, TAP_BITS=True),
        dict(POINTWISE=False, CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(ONE_TAP_TILES=True, LINEAR_ROWS=False, DY_TMA=True, X_TMA=False),
    ),
    "3-channel stem": (
        (1, 3, 20, 18), (16, 3, 7, 7), dict(padding=3, stride=2), "nhwc",
        dict(CHANNELS_ALIGNED=False, ROW_SPANS=True, TAP_BITS=True),
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True, W_DENSE=True),  # a phase has at most 4x4 taps
        dict(ONE_TAP_TILES=False, TAP_CHANNELS=4, LINEAR_ROWS=True, Q_EXTRA=True, DY_TMA=True, X_TMA=False),
    ),
    "nchw aligned": (
        (2, 32, 7, 9), (32, 32, 3, 3), dict(padding=1), "nchw",
        dict(CHANNELS_ALIGNED=True, W_MATRIX=False, TAP_BITS=True, ROW_SPANS=False),
        dict(CHANNELS_ALIGNED=True, TAP_BITS=True),
        dict(ONE_TAP_TILES=True, LINEAR_ROWS=False, DY_TMA=False, X_TMA=False),
    ),
    "odd channels, misaligned groups": (
        (2, 20, 6, 7), (12, 10, 3, 3), dict(padding=1, groups=2), "nhwc",
        dict(CHANNELS_ALIGNED=False, ROW_SPANS=False, TAP_BITS=True),
        dict(CHANNELS_ALIGNED=False, TAP_BITS=True, W_DENSE=True),  # 10 channels, 16-wide tiles
        dict(ONE_TAP_TILES=False, TAP_CHANNELS=0, DY_TMA=False),
    ),
    "sliced view": (
        (2, 16, 6, 7), (16, 16, 3, 3), dict(padding=1), "strided",
        dict(CHANNELS_ALIGNED=True, W_MATRIX=False),
        dict(CHANNELS_ALIGNED=True),
        dict(LINEAR_ROWS=False, DY_TMA=False, X_TMA=False),
    ),
    "big kernel": (
        (1, 16, 12, 11), (16, 16, 6, 6), dict(padding="same"), "nhwc",
        dict(TAP_BITS=False),  # 36 taps
        dict(TAP_BITS=False),
        dict(ONE_TAP_TILES=True),
    ),
    # Linear rows with unequal strides: the q term steps by the width's stride, not the height's.
    "3x3 stride (2, 1)": (
        (2, 16, 8, 10), (8, 16, 3, 3), dict(stride=(2, 1), padding=1), "nhwc",
        {}, {},
        dict(ONE_TAP_TILES=True, LINEAR_ROWS=True, Q_EXTRA=True),
    ),
    # 3 channels padded to 4 (TAP_CHANNELS) and a row of 6 pixels that Q = 4 does not divide (though
    # it divides 4 x 6): rows are not linear in the padded copy's pixels.
    "3 channels, rows of 6 pixels": (
        (2, 3, 5, 6), (4, 3, 3, 3), dict(padding=(1, 0)), "nchw",
        {}, {},
        dict(TAP_CHANNELS=4, ONE_TAP_TILES=False, LINEAR_ROWS=False),
    ),
    # wgrad pads x to 4 channels per group below 4 (configs.tap_channels), 2 here: linear rows with
    # the stride's q term over the copy.
    "two channels per group": (
        (2, 6, 8, 8), (9, 2, 3, 3), dict(stride=2, padding=1, groups=3), "nhwc",
        {}, {},
        dict(TAP_CHANNELS=4, ONE_TAP_TILES=False, LINEAR_ROWS=True, Q_EXTRA=True, DY_TMA=False),
    ),
}  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_specialisation(case, dtype, triton_only):
    x_shape, w_shape, kwargs, layout, fprop_flags, dgrad_flags, wgrad_flags = CASES[case]
    problem, x, w, b, dy, ref = conv_case(x_shape, w_shape, kwargs, dtype, layout)
    channels_last = layout == "nhwc"
    y = torch.empty(problem.output_shape, dtype=dtype).to(memory_format=torch.channels_last)
    y = y if channels_last else y.contiguous()
    assert _flags(fprop_plan(x, w, b, y, problem, SMALL), fprop_flags) == fprop_flags
    assert _flags(dgrad_plan(dy, w, x, problem, SMALL), dgrad_flags) == dgrad_flags
    dw = torch.empty_like(w)
    assert _flags(wgrad_plan(dy, x, dw, b.clone(), problem, SMALL), wgrad_flags) == wgrad_flags
    for config in configs_for(dtype):
        with triton_only() as proof:
            got_y = conv2d_fprop(x, w, b, problem, config)
            got_dx = conv2d_dgrad(dy, w, problem, config, channels_last=channels_last)
            got_dw, got_db = conv2d_wgrad(
                dy, x, problem, config, weight_dtype=dtype, channels_last=channels_last, need_bias=True
            )
        assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
        for name, got in (("y", got_y), ("dx", got_dx), ("dw", got_dw), ("db", got_db)):
            err = rel_error(got, ref[name])
            assert err < bound(dtype), f"{case} {config} {name}: relative error {err:.2e}"


def test_wgrad_bias_programs_count_their_own_splits(triton_only):
    """With split-K the bias-gradient programs reduce their partial sums in a fixed order, in the
    counters after the weight tiles': repeated runs give the same bits, and db is right."""
    shapes = ((2, 32, 7, 9), (40, 32, 3, 3), dict(padding=1))
    problem, x, w, b, dy, ref = conv_case(*shapes, torch.float32, "nhwc")
    config = KernelConfig(32, 16, 16, split_k=4)
    plan = wgrad_plan(dy, x, torch.empty_like(w), b.clone(), problem, config)
    tiles = -(-40 // 32) * -(-(32 * 9) // 16)
    assert plan.plan.grid == (tiles + 2, 1, 4)  # two 32-row bias programs after the weight tiles
    runs = [
        conv2d_wgrad(dy, x, problem, config, weight_dtype=torch.float32, channels_last=True, need_bias=True)
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert rel_error(runs[0][1], ref["db"]) < REL_TOL_FP32_IEEE
    assert rel_error(runs[0][0], ref["dw"]) < REL_TOL_FP32_IEEE


def test_misaligned_data_pointer_keeps_the_pointer_path(triton_only):
    """TMA needs 16-byte aligned data: a view starting one element in is loaded through pointers,
    and the launch plan for the aligned tensor is not reused for it."""
    problem, x, w, b, dy, ref = conv_case((2, 32, 5, 6), (48, 32, 1, 1), {}, torch.float32, "nhwc")
    shifted = torch.empty(dy.numel() + 1)[1:].view(dy.permute(0, 2, 3, 1).shape).permute(0, 3, 1, 2)
    shifted.copy_(dy)
    assert shifted.stride() == dy.stride() and shifted.data_ptr() % 16
    plan = wgrad_plan(shifted, x, torch.empty_like(w), None, problem, SMALL)
    assert not plan.plan.constexprs["DY_TMA"]
    options = dict(weight_dtype=torch.float32, channels_last=True, need_bias=False)
    aligned = conv2d_wgrad(dy, x, problem, SMALL, **options)
    moved = conv2d_wgrad(shifted, x, problem, SMALL, **options)
    assert rel_error(moved[0], ref["dw"]) < REL_TOL_FP32_IEEE
    assert rel_error(aligned[0], ref["dw"]) < REL_TOL_FP32_IEEE


@pytest.mark.parametrize("operand", ["dy expanded", "x rows overlapping"])
def test_zero_and_overlapping_row_strides_keep_the_pointer_path(operand, triton_only):
    """A TMA descriptor is built only for rows that do not overlap: an expanded dy (row stride 0, as
    `y.sum().backward()` with one output channel gives) and an NHWC view whose pixels overlap
    (W stride 4 < C = 8) are read through pointers, with the right weight gradient."""
    k = 1 if operand == "dy expanded" else 8
    x = torch.randn(2, 8, 3, 4).contiguous(memory_format=torch.channels_last)
    if operand == "x rows overlapping":
        x = torch.randn(100).as_strided((2, 8, 3, 4), (48, 1, 16, 4))
    w = torch.randn(k, 8, 1, 1)
    problem = ConvProblem.from_shapes(x.shape, w.shape)
    dy = torch.randn(2, k, 3, 4).contiguous(memory_format=torch.channels_last)
    if operand == "dy expanded":
        dy = torch.randn(1, 1, 1, 1).expand(2, 1, 3, 4)
    flags = _flags(wgrad_plan(dy, x, torch.empty_like(w), None, problem, SMALL), ("DY_TMA", "X_TMA"))
    assert flags == {"DY_TMA": k != 1, "X_TMA": False}  # (an expanded dy also keeps x off TMA)
    x64, w64 = x.double(), w.double().requires_grad_()
    (want,) = torch.autograd.grad(reference_conv2d(x64, w64, None, problem), w64, dy.double())
    with triton_only() as proof:
        options = dict(weight_dtype=torch.float32, channels_last=True, need_bias=False)
        got, _ = conv2d_wgrad(dy, x, problem, SMALL, **options)
    assert proof.launches == {"wgrad_kernel": 1}
    assert rel_error(got, want) < REL_TOL_FP32_IEEE


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_row_spans_with_one_channel_and_an_nchw_weight(dtype, triton_only):
    """One channel: a contiguous (K, 1, R, S) weight is a KRSC matrix too, though its channel
    stride is R·S, not 1; the run of (s, c) must step by one element (it once stepped by R·S)."""
    x = make_tensor((2, 1, 6, 9), dtype, "nhwc")
    w = make_tensor((2, 1, 2, 2), dtype)
    b = make_tensor((2,), dtype)
    problem = ConvProblem.from_shapes(x.shape, w.shape, padding=(1, 2))
    y = torch.empty(problem.output_shape, dtype=dtype).to(memory_format=torch.channels_last)
    flags = _flags(fprop_plan(x, w, b, y, problem, SMALL), ("ROW_SPANS", "W_MATRIX", "W_C_UNIT"))
    assert flags == dict(ROW_SPANS=True, W_MATRIX=True, W_C_UNIT=False)
    with triton_only():
        got = conv2d_fprop(x, w, b, problem, SMALL)
    assert rel_error(got, reference_conv2d(x, w, b, problem)) < bound(dtype)


@pytest.mark.parametrize("gapped", [False, True])
def test_row_spans_need_pixels_one_channel_run_apart(gapped, triton_only):
    """A tap row's S·C elements are one run only where the next pixel starts C elements on: an NHWC
    view of every other column (a W stride of 2·C) is read tap by tap instead."""
    x = make_tensor((2, 3, 9, 22 if gapped else 11), torch.float32, "nhwc")
    x = x[..., ::2] if gapped else x
    w = make_tensor((5, 3, 3, 3), torch.float32, "nhwc")
    b = make_tensor((5,), torch.float32)
    problem = ConvProblem.from_shapes(x.shape, w.shape, padding=1)
    y = torch.empty(problem.output_shape).to(memory_format=torch.channels_last)
    assert _flags(fprop_plan(x, w, b, y, problem, SMALL), ("ROW_SPANS",)) == dict(ROW_SPANS=not gapped)
    with triton_only():
        got = conv2d_fprop(x, w, b, problem, SMALL)
    assert rel_error(got, reference_conv2d(x, w, b, problem)) < REL_TOL_FP32_IEEE


def test_row_spans_with_more_tap_rows_than_tap_bits(triton_only):
    """32 tap rows leave no bit per row (TAP_BITS): each row's padding test is then per tap row,
    and a row span's columns are its own range test's (a padded left edge once masked whole rows)."""
    x = make_tensor((1, 2, 34, 6), torch.float32, "nhwc")
    w = make_tensor((3, 2, 32, 3), torch.float32, "nhwc")
    b = make_tensor((3,), torch.float32)
    problem = ConvProblem.from_shapes(x.shape, w.shape, padding=(1, 2))
    y = torch.empty(problem.output_shape).to(memory_format=torch.channels_last)
    flags = _flags(fprop_plan(x, w, b, y, problem, SMALL), ("ROW_SPANS", "TAP_BITS"))
    assert flags == dict(ROW_SPANS=True, TAP_BITS=False)
    with triton_only():
        got = conv2d_fprop(x, w, b, problem, SPLIT)
    assert rel_error(got, reference_conv2d(x, w, b, problem)) < REL_TOL_FP32_IEEE


# Few channels per group (C/g = 3, two groups, a 5x5 stride-2 filter), at shapes that are no tile's
# multiple: dgrad reads a zero-padded weight, wgrad a zero-padded x, and neither alters its inputs.
FEW = ((3, 6, 11, 13), (8, 3, 5, 5), dict(stride=2, padding=2, groups=2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_few_channel_groups_read_zero_padded_copies(dtype, layout, triton_only):
    problem, x, w, b, dy, ref = conv_case(*FEW, dtype, layout)
    channels_last = layout == "nhwc"
    originals = [t.clone() for t in (x, w, dy)]
    for config in configs_for(dtype):
        assert _flags(dgrad_plan(dy, w, x, problem, config), ("W_DENSE", "TAP_BITS")) == dict(
            W_DENSE=True, TAP_BITS=True
        )
        plan = wgrad_plan(dy, x, torch.empty_like(w), b.clone(), problem, config)
        flags = _flags(plan, ("TAP_CHANNELS", "ONE_TAP_TILES", "LINEAR_ROWS"))
        assert flags == dict(TAP_CHANNELS=4, ONE_TAP_TILES=False, LINEAR_ROWS=False)  # H is not 2·P
        # One row tile (4 output channels per group) and its bias program; the GEMM's columns are
        # the padded ones, 4 channels x 25 taps.
        assert plan.plan.grid[0] == -(-4 * 25 // config.block_n) + 1
        with triton_only() as proof:
            got_dx = conv2d_dgrad(dy, w, problem, config, channels_last=channels_last)
            got_dw, got_db = conv2d_wgrad(
                dy, x, problem, config, weight_dtype=dtype, channels_last=channels_last, need_bias=True
            )
        assert proof.launches == {"dgrad_kernel": 1, "wgrad_kernel": 1}
        for name, got in (("dx", got_dx), ("dw", got_dw), ("db", got_db)):
            err = rel_error(got, ref[name])
            assert err < bound(dtype), f"{layout} {config} {name}: relative error {err:.2e}"
    for before, after in zip(originals, (x, w, dy)):
        assert torch.equal(before, after) and before.stride() == after.stride()


@pytest.mark.parametrize(
    ("dtype", "groups", "channels"),
    [(torch.float32, 2, 8), (torch.float16, 4, 32), (torch.float32, 3, 12)],
    ids=str,
)
def test_wgrad_reads_each_groups_channels_through_tma(dtype, groups, channels, triton_only):
    """A grouped pointwise layer in channels_last whose groups' channel runs are 16-byte rows: x's
    descriptor box starts at its group's first channel (X_TMA), and every group's dw is its own."""
    problem, x, w, b, dy, ref = conv_case(
        (2, channels, 5, 6), (2 * channels, channels // groups, 1, 1), dict(groups=groups), dtype, "nhwc"
    )
    plan = wgrad_plan(dy, x, torch.empty_like(w), None, problem, SMALL)
    assert _flags(plan, ("X_TMA",)) == dict(X_TMA=True)
    with triton_only():
        got, _ = conv2d_wgrad(dy, x, problem, SMALL, weight_dtype=dtype, channels_last=True, need_bias=False)
    err = rel_error(got, ref["dw"])
    assert err < bound(dtype), f"relative error {err:.2e}"
