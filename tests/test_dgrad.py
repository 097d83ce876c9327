"""The input gradient (dgrad) against a float64 autograd reference, under Triton's interpreter."""

from __future__ import annotations

import itertools

import pytest
import torch
import triton
import triton.language as tl

from triton_conv import KernelConfig
from triton_conv.kernels.dgrad import ZERO_SEGMENTS, phase_axis
from triton_conv.launchers import common as launch_common
from triton_conv.launchers.common import launch, reaches_int32_limit, zero_run
from triton_conv.launchers.dgrad import conv2d_dgrad, dgrad_plan, dgrad_spec
from triton_conv.problem import ConvProblem
from triton_conv.search_space import config_space

from . import bounds, program_order
from .reference import REL_TOL_FP32_IEEE, bound, make_tensor, reference_conv2d, rel_error

# (input shape, weight shape, conv2d keyword arguments): strides, dilations and paddings whose phases
# differ in rows and taps, phases that no tap reaches, and no dimension a multiple of a tile.
FEATURES = {
    "3x3": ((2, 5, 9, 11), (7, 5, 3, 3), dict(padding=1)),
    "stride2": ((2, 5, 9, 11), (7, 5, 3, 3), dict(stride=2, padding=1)),
    "stride21_asym": ((2, 5, 9, 11), (7, 5, 3, 2), dict(stride=(2, 1), padding=(1, 2))),
    "stride32": ((2, 4, 11, 10), (6, 4, 3, 3), dict(stride=(3, 2), padding=(1, 0))),
    "dilation": ((2, 3, 11, 10), (6, 3, 3, 3), dict(dilation=(2, 3), padding=(2, 3))),
    # gcd(stride, dilation) > 1 on one axis: half the phases get no tap there (they must be zeros).
    "dilated_strided": ((1, 3, 11, 10), (6, 3, 5, 4), dict(stride=(3, 2), dilation=(2, 2), padding=(2, 1))),
    "same_even": ((2, 4, 9, 10), (5, 4, 4, 2), dict(padding="same", dilation=(1, 2))),
    "groups": ((2, 8, 9, 7), (6, 4, 3, 3), dict(groups=2, stride=2, padding=1)),
    "depthwise": ((2, 6, 8, 7), (12, 1, 3, 3), dict(groups=6, stride=2, padding=1)),
    "pointwise": ((2, 9, 7, 9), (10, 9, 1, 1), {}),
    "1x1_stride2": ((2, 9, 7, 9), (10, 9, 1, 1), dict(stride=2)),
    "5x5_stride3": ((1, 3, 13, 12), (5, 3, 5, 5), dict(stride=3, padding=2)),
    # H < stride_h: a phase with no rows at all.
    "tiny": ((2, 3, 2, 5), (4, 3, 2, 2), dict(stride=3)),
    # Two channel blocks of 16 in the reduction, two column tiles of 16.
    "channels_20": ((1, 18, 5, 6), (20, 18, 3, 3), dict(stride=2, padding=1)),
}
# (dtype, layout) pairs; every feature runs in each, so every dtype meets every layout somewhere.
# "expanded" is a dy with zero strides (weight contiguous); dx is channels_last exactly for nhwc.
VARIANTS = [
    (torch.float32, "nchw"),
    (torch.float16, "nhwc"),
    (torch.bfloat16, "strided"),
    (torch.float32, "expanded"),
]
DEFAULT = KernelConfig(64, 16, 16)
# Tile configs, none of which divides the problems above; split-K and GROUP_M=1 included.
CONFIGS = [
    KernelConfig(16, 16, 16, group_m=1),
    KernelConfig(32, 16, 16, split_k=3),
    KernelConfig(16, 32, 16, group_m=2, split_k=2),
    KernelConfig(128, 16, 32, num_warps=8),
]


def make_dy(shape, dtype, layout) -> torch.Tensor:
    if layout == "expanded":  # zero strides on the batch and row dimensions
        n, k, p, q = shape
        return torch.randn(1, k, 1, q).to(dtype).expand(n, k, p, q)
    return make_tensor(shape, dtype, layout)


def reference_dgrad(dy, w, problem: ConvProblem) -> torch.Tensor:
    x = torch.zeros(problem.input_shape, dtype=torch.float64, requires_grad=True)
    y = reference_conv2d(x, w, None, problem)
    return torch.autograd.grad(y, x, dy.double())[0]


def run_case(
    x_shape, w_shape, kwargs, dtype, layout, triton_only, config=DEFAULT, force_int64=False, dy=None
):
    problem = ConvProblem.from_shapes(x_shape, w_shape, **kwargs)
    dy = make_dy(problem.output_shape, dtype, layout) if dy is None else dy
    w = make_tensor(w_shape, dtype, "nchw" if layout == "expanded" else layout)
    dy_before, w_before = dy.clone(), w.clone()
    channels_last = layout == "nhwc"
    with triton_only() as proof:
        dx = conv2d_dgrad(dy, w, problem, config, channels_last=channels_last, force_int64=force_int64)
    assert proof.launches == {"dgrad_kernel": 1}, "one launch covers every stride phase"
    ref = reference_dgrad(dy, w, problem)
    assert dx.dtype == dtype and dx.shape == ref.shape
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert dx.is_contiguous(memory_format=memory_format)
    err = rel_error(dx, ref)
    assert err < bound(dtype), f"relative error {err:.2e} over {bound(dtype):.0e}"
    assert torch.equal(dy, dy_before) and torch.equal(w, w_before), "dgrad modified its inputs"
    return dx


@pytest.mark.parametrize("dtype,layout", VARIANTS, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("feature", list(FEATURES))
def test_features(feature, dtype, layout, triton_only):
    run_case(*FEATURES[feature], dtype, layout, triton_only)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize(
    "feature,dtype",
    [("stride32", torch.float32), ("groups", torch.float16), ("channels_20", torch.float32)],
    ids=lambda v: str(v).replace("torch.", ""),
)
def test_configs(feature, dtype, config, triton_only):
    run_case(*FEATURES[feature], dtype, "nhwc", triton_only, config=config)


@pytest.mark.parametrize("feature", ["stride21_asym", "dilated_strided"])
def test_float64(feature, triton_only):
    run_case(*FEATURES[feature], torch.float64, "nchw", triton_only, config=CONFIGS[1])


@pytest.mark.parametrize("config", [DEFAULT, CONFIGS[1]], ids=str)
def test_forced_int64_offsets(config, triton_only):
    run_case(*FEATURES["stride32"], torch.float32, "strided", triton_only, config=config, force_int64=True)


def test_sum_backward_gradient(triton_only):
    """dy as y.sum().backward() hands it over: one element, every stride zero."""
    x_shape, w_shape, kwargs = FEATURES["stride2"]
    problem = ConvProblem.from_shapes(x_shape, w_shape, **kwargs)
    y = torch.zeros(problem.output_shape, dtype=torch.float16, requires_grad=True)
    (dy,) = torch.autograd.grad(y.sum(), y)
    assert dy.stride() == (0, 0, 0, 0)
    run_case(x_shape, w_shape, kwargs, torch.float16, "nchw", triton_only, dy=dy)


@pytest.mark.parametrize("feature", ["1x1_stride2", "tiny", "dilated_strided"])
@pytest.mark.parametrize("config", [DEFAULT, CONFIGS[2]], ids=str)
def test_every_element_written(feature, config):
    """Phases without taps, or without rows, still write their zeros: dx starts as NaN here."""
    x_shape, w_shape, kwargs = FEATURES[feature]
    problem = ConvProblem.from_shapes(x_shape, w_shape, **kwargs)
    dy, w = torch.randn(problem.output_shape), torch.randn(w_shape)
    dx = torch.full(problem.input_shape, float("nan"))
    launch(dgrad_spec(dy, w, dx, problem, config))
    err = rel_error(dx, reference_dgrad(dy, w, problem))  # fails on any NaN left
    assert err < bound(torch.float32)  # TF32 on a GPU


@pytest.mark.parametrize("channels_last", [False, True])
def test_empty_batch(channels_last, triton_only):
    problem = ConvProblem.from_shapes((0, 5, 9, 11), (7, 5, 3, 3), stride=2, padding=1)
    with triton_only() as proof:
        dx = conv2d_dgrad(
            torch.randn(problem.output_shape), torch.randn(7, 5, 3, 3), problem, DEFAULT,
            channels_last=channels_last,
        )  # fmt: skip
    assert dx.shape == (0, 5, 9, 11) and not proof.launches


def test_no_output_channels(triton_only):
    # conv2d refuses K=0 as torch does (ConvProblem.from_shapes raises); the launcher still copes.
    problem = ConvProblem(2, 4, 6, 6, 0, 3, 3, stride=(2, 2))
    with triton_only() as proof:
        dx = conv2d_dgrad(torch.randn(problem.output_shape), torch.randn(0, 4, 3, 3), problem, DEFAULT,
                          channels_last=False)  # fmt: skip
    assert torch.equal(dx, torch.zeros(2, 4, 6, 6)) and not proof.launches


def test_int64_chosen_for_views_that_reach_2_pow_31():
    small = torch.empty(4)
    big_view = torch.empty(2**31 + 1, dtype=torch.int8, device="meta")[:: 2**31]  # 2 elements
    assert big_view.numel() == 2
    assert not reaches_int32_limit(small) and reaches_int32_limit(small, big_view)
    assert not reaches_int32_limit(torch.empty(2**31, dtype=torch.int8, device="meta").expand(2, -1)[:, :1])


# --- padding rows read a run of zeros, not a masked dy -----------------------------------------

LARGEST_BLOCK_K = max(c.block_k for c in config_space("dgrad"))


def fenced_zero_run(fill=0.0, segment=None, runs=None):
    """A stand-in for launchers.common.zero_run: the run between NaN fences as long as itself (a
    read past either end puts NaN in dx), holding zeros but `fill` in every segment (segment None)
    or in one; each (length, fence) made is appended to `runs` when given."""

    def run(length, run_dtype, device):
        fence = torch.full((3 * length,), float("nan"), dtype=run_dtype, device=device)
        inside = fence[length : 2 * length].zero_()
        block_k = length // ZERO_SEGMENTS.value
        inside[slice(None) if segment is None else slice(segment * block_k, (segment + 1) * block_k)] = fill
        if runs is not None:
            runs.append((length, fence))
        return inside

    return run


@pytest.mark.parametrize(
    "out_channels", [2 * LARGEST_BLOCK_K, LARGEST_BLOCK_K + 24], ids=["aligned", "k_tail"]
)
@pytest.mark.parametrize("dtype,layout", [(torch.float32, "nhwc"), (torch.float16, "nchw")], ids=str)
def test_padding_rows_read_the_zero_run_and_nothing_past_it(
    out_channels, dtype, layout, triton_only, monkeypatch
):
    """With TAP_BITS a row whose tap falls in the padding reads BLOCK_K elements of the launcher's
    zero run (launchers.common.zero_run) instead of a masked dy, from its program's own segment
    (ZERO_SEGMENTS of them). Here the run sits between NaN fences as wide as itself: a read past
    either end would put NaN in dx. Filled with ones instead of zeros, the same launch must give a
    different dx (the padding rows do read the run), and ones in the second segment alone, or in
    the third, must each change a part of it, not the same part (programs 1 and 2 read their own
    segments, not one address shared by every program)."""
    # Even H: the last row (h = 9) reads p = 5, one past dy; stride 1 across: both edges pad.
    x_shape, w_shape, kwargs = (1, 5, 10, 11), (out_channels, 5, 3, 3), dict(stride=(2, 1), padding=1)
    problem = ConvProblem.from_shapes(x_shape, w_shape, **kwargs)
    dy, w = make_dy(problem.output_shape, dtype, layout), make_tensor(w_shape, dtype, layout)
    ref = reference_dgrad(dy, w, problem)
    runs = []

    def launch_with(run, config):
        monkeypatch.setattr(launch_common, "zero_run", run)
        with triton_only():
            return conv2d_dgrad(dy, w, problem, config, channels_last=layout == "nhwc")

    for config in (KernelConfig(16, 16, LARGEST_BLOCK_K), KernelConfig(32, 16, LARGEST_BLOCK_K, split_k=2)):
        monkeypatch.setattr(launch_common, "zero_run", fenced_zero_run(runs=runs))
        dx = run_case(x_shape, w_shape, kwargs, dtype, layout, triton_only, config=config, dy=dy)
        assert not dx.isnan().any()
        length, fence = runs[-1]
        assert length == ZERO_SEGMENTS.value * LARGEST_BLOCK_K
        assert fence[length : 2 * length].eq(0).all(), "the zero run was written"
        ones = launch_with(fenced_zero_run(1.0), config)
        assert rel_error(ones, ref) > 0.1, "the padding rows did not read the run"
        # The same launch again: bit-identical but where the program that owns the filled segment
        # reads padding, a part of dx of its own for each segment.
        zeros = launch_with(fenced_zero_run(), config)
        changed = [launch_with(fenced_zero_run(1.0, segment=k), config) != zeros for k in (1, 2)]
        assert changed[0].any() and changed[1].any(), "programs 1 and 2 did not read their own segments"
        assert not (changed[0] & changed[1]).any(), "two programs read one segment"
    monkeypatch.undo()
    run = zero_run(ZERO_SEGMENTS.value * LARGEST_BLOCK_K, dtype, dy.device)
    assert torch.count_nonzero(run) == 0, "the zero run was written"


@pytest.mark.interpreter  # program_order.chosen_programs picks the programs in Triton's interpreter only
def test_programs_past_the_segment_count_read_inside_the_zero_run(monkeypatch):
    """Programs past the first ZERO_SEGMENTS read segment (program mod ZERO_SEGMENTS): four
    programs of a 2,048-program launch (64 groups x 16 stride phases x 2 tiles), ids 1,214 to
    2,047, each in the phase whose last row and column read padding. A kernel that left out the
    modulus read past the run into its NaN fence."""
    x_shape, w_shape, kwargs = (1, 64, 20, 20), (64, 1, 3, 3), dict(stride=4, padding=1, groups=64)
    problem = ConvProblem.from_shapes(x_shape, w_shape, **kwargs)
    dy, w = torch.randn(problem.output_shape), torch.randn(w_shape)
    dx = torch.full(problem.input_shape, float("nan"))
    monkeypatch.setattr(launch_common, "zero_run", fenced_zero_run())
    spec = dgrad_spec(dy, w, dx, problem, KernelConfig(16, 16, 16))
    tiles, group_phases, _ = spec.grid
    assert (tiles, group_phases) == (2, 64 * 16) and spec.constexprs["TAP_BITS"]
    # Phase (3, 3) of groups 37 and 63: rows h = 3, 7, ..., 19 and the same columns; h = 19 reads p = 5.
    programs = [(tile, 16 * group + 15, 0) for group in (37, 63) for tile in range(tiles)]
    assert min(tile + tiles * phase for tile, phase, _ in programs) >= ZERO_SEGMENTS.value
    with program_order.chosen_programs(spec.grid, programs):
        launch(spec._replace(grid=(len(programs), 1, 1)))
    ref = reference_dgrad(dy, w, problem)
    for group in (37, 63):
        assert rel_error(dx[:, group, 3::4, 3::4], ref[:, group, 3::4, 3::4]) < REL_TOL_FP32_IEEE


@pytest.mark.interpreter  # chosen_programs and addresses_checked: Triton's interpreter only
def test_a_program_past_two_to_the_31_reads_inside_the_zero_run(monkeypatch):
    """A legal launch of 65,539 x 65,534 programs (two groups, stride 32,767 across one column):
    its linear program id wraps in int32, where `program % ZERO_SEGMENTS` went negative and read
    before the run. Two of its programs run (tests/program_order.chosen_programs): tile 0 and the
    last tile of group 1, whose first and last rows read padding; their rows of dx must be right
    and every read inside a tensor (the fence around the run is NaN)."""
    rows = 65538 * 16 + 16
    x_shape, w_shape = (1, 32, rows, 1), (32, 16, 3, 1)
    kwargs = dict(stride=(1, 32767), padding=(1, 0), groups=2)
    problem = ConvProblem.from_shapes(x_shape, w_shape, **kwargs)
    config = KernelConfig(16, 16, 16)
    dy = torch.zeros(problem.output_shape)  # untouched pages: only the rows the programs read are set
    head, tail = slice(0, 17), slice(rows - 17, rows)
    for part in (head, tail):
        dy[:, :, part] = torch.randn(1, 32, 17, 1)
    w = torch.randn(w_shape)
    dx = torch.full(problem.input_shape, float("nan"))
    monkeypatch.setattr(launch_common, "zero_run", fenced_zero_run())
    spec = dgrad_spec(dy, w, dx, problem, config)
    tiles, group_phases, _ = spec.grid
    assert tiles * group_phases >= 2**31 and spec.constexprs["TAP_BITS"]
    group_1 = group_phases // 2  # phase 0 of group 1: the only phase across (stride 32,767) with rows
    programs = [(0, group_1, 0), (tiles - 1, group_1, 0)]
    with program_order.chosen_programs(spec.grid, programs), bounds.addresses_checked() as outside:
        launch(spec._replace(grid=(len(programs), 1, 1)))
    assert not outside.accesses, outside.report()

    def reference(part):  # 17 rows of dy give 16 exact rows of dx at one end
        return torch.nn.grad.conv2d_input(
            (1, 32, 17, 1), w.double(), dy[:, :, part].double(), padding=(1, 0), groups=2
        )[:, 16:]

    assert rel_error(dx[:, 16:, :16], reference(head)[:, :, :16]) < REL_TOL_FP32_IEEE
    assert rel_error(dx[:, 16:, rows - 16 :], reference(tail)[:, :, 1:]) < REL_TOL_FP32_IEEE


# --- the phase decomposition spends no multiply-add on an inserted zero -------------------------


def _real_pairs(size, stride, pad, dil, kernel):
    """Brute force: (input row h, tap r) pairs whose output row p = (h + pad - r*dil) / stride is an
    integer, mapped to that p (which may still fall outside dy: a padding border, masked)."""
    pairs = {}
    for h, r in itertools.product(range(size), range(kernel)):
        offset = h + pad - r * dil
        if offset % stride == 0:
            pairs[(h, r)] = offset // stride
    return pairs


def _phase_pairs(axis, stride):
    pairs = {}
    for i, j in itertools.product(range(axis.count), range(axis.taps)):
        key = (axis.first + i * stride, axis.tap0 + j * axis.tap_step)
        assert key not in pairs, f"{key} visited twice"
        pairs[key] = axis.out_first + i - j * axis.out_step
    return pairs


AXES = list(itertools.product(range(1, 12), range(1, 5), range(3), range(1, 4), range(1, 6)))


def test_phase_axes_enumerate_exactly_the_real_pairs():
    for size, stride, pad, dil, kernel in AXES:
        if size + 2 * pad < dil * (kernel - 1) + 1:
            continue
        problem = ConvProblem.from_shapes((1, 1, size, 1), (1, 1, kernel, 1), (stride, 1), (pad, 0), (dil, 1))
        phases = problem.dgrad_phases()
        visited = {}
        for phase in phases:
            visited.update(_phase_pairs(phase.rows, stride))
        assert visited == _real_pairs(size, stride, pad, dil, kernel), (size, stride, pad, dil, kernel)


def test_image_rows_are_the_largest_phase_of_one_image():
    """dgrad_image_rows, the closed form the launch path asks on every call, is the row count of the
    phase with the most input pixels, as the phases themselves count them (a phase may have none)."""
    widths = itertools.cycle([(7, 3), (1, 1), (12, 2), (3, 5), (5, 4), (11, 1)])
    for (size_h, stride_h, pad, dil, kernel), (size_w, stride_w) in zip(AXES, widths):
        if size_h + 2 * pad < dil * (kernel - 1) + 1:
            continue
        problem = ConvProblem.from_shapes(
            (3, 1, size_h, size_w), (1, 1, kernel, 1), (stride_h, stride_w), (pad, 0), (dil, 1)
        )
        rows = [phase.rows.count * phase.cols.count for phase in problem.dgrad_phases()]
        assert problem.dgrad_image_rows() == max(rows) == rows[0], (size_h, size_w, stride_h, stride_w)
        assert problem.dgrad_launch_rows() == 3 * rows[0]


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        FEATURES[name]
        for name in ("stride2", "stride32", "dilated_strided", "1x1_stride2", "5x5_stride3", "tiny")
    ],
)
def test_phase_macs_equal_real_pairs(x_shape, w_shape, kwargs):
    """Per image and channel pair: sum over phases of rows x taps equals the (pixel, tap) pairs of a
    brute-force scan whose output pixel index is an integer, so no multiply-add meets an inserted zero."""
    problem = ConvProblem.from_shapes(x_shape, w_shape, **kwargs)
    macs = sum(p.rows.count * p.cols.count * p.rows.taps * p.cols.taps for p in problem.dgrad_phases())
    (pad_h, pad_w), (dil_h, dil_w) = (problem.pad_top, problem.pad_left), problem.dilation
    stride_h, stride_w = problem.stride
    real = sum(
        (h + pad_h - r * dil_h) % stride_h == 0 and (w + pad_w - s * dil_w) % stride_w == 0
        for h, w, r, s in itertools.product(
            range(problem.height), range(problem.width), range(problem.kernel_h), range(problem.kernel_w)
        )
    )
    assert macs == real
    # Zero-stuffing spends H*W*R*S multiply-adds here; the phases about 1/(stride_h*stride_w) of that.
    zero_stuffed = problem.height * problem.width * problem.kernel_h * problem.kernel_w
    assert macs * stride_h * stride_w <= 2 * zero_stuffed


@triton.jit
def _phase_axis_probe(params_ptr, out_ptr):
    base = params_ptr + tl.program_id(0) * 7
    rows, tap0, taps, out_first = phase_axis(
        tl.load(base), tl.load(base + 1), tl.load(base + 2), tl.load(base + 3),
        tl.load(base + 4), tl.load(base + 5), tl.load(base + 6),
    )  # fmt: skip
    out = out_ptr + tl.program_id(0) * 4
    tl.store(out, rows)
    tl.store(out + 1, tap0)
    tl.store(out + 2, taps)
    tl.store(out + 3, out_first)


def test_kernel_phase_math_matches_problem():
    """The kernel derives each phase's (rows, tap0, taps, out_first) with scalar math; it must agree
    with ConvProblem.dgrad_phases, whose pairs test_phase_axes_enumerate_exactly_the_real_pairs checks."""
    cases, expected = [], []
    for size, stride, pad, dil, kernel in AXES[::7]:
        if size + 2 * pad < dil * (kernel - 1) + 1:
            continue
        problem = ConvProblem.from_shapes((1, 1, size, 1), (1, 1, kernel, 1), (stride, 1), (pad, 0), (dil, 1))
        for phase in problem.dgrad_phases():
            axis = phase.rows
            cases.append((axis.first, size, stride, pad, dil, kernel, axis.tap_step))
            expected.append((axis.count, axis.tap0, axis.taps, axis.out_first))
    params = torch.tensor(cases, dtype=torch.int32)
    out = torch.empty(len(cases), 4, dtype=torch.int32)
    _phase_axis_probe[(len(cases),)](params, out)
    for got, want, case in zip(out.tolist(), expected, cases, strict=True):
        if want[2] == 0:  # no tap: tap0 and out_first are not used
            got, want = got[::2], want[::2]
        assert tuple(got) == tuple(want), case


def test_launchers_copy_a_strided_bias_themselves(triton_only):
    """The kernels read a bias with unit stride; the launchers (not only their callers) copy a
    strided or expanded one, so a direct call cannot read every other element."""
    import torch.nn.functional as F

    from triton_conv.launchers.fprop import conv2d_fprop

    problem = ConvProblem.from_shapes((2, 3, 5, 4), (6, 3, 3, 3), padding=1)
    x = torch.randn(problem.input_shape, dtype=torch.float64)
    w = torch.randn(problem.weight_shape, dtype=torch.float64)
    dy = torch.randn(problem.output_shape, dtype=torch.float64)
    every_other, expanded = torch.randn(12, dtype=torch.float64)[::2], torch.randn(1, dtype=torch.float64)
    with triton_only() as proof:
        y = conv2d_fprop(x, w, every_other, problem, DEFAULT)
        # The transposed convolution of dy (its bias per input channel of the conv2d view).
        dx = conv2d_dgrad(dy, w, problem, DEFAULT, channels_last=False, bias=expanded.expand(3))
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1}
    assert rel_error(y, F.conv2d(x, w, every_other, padding=1)) < 1e-12
    assert rel_error(dx, F.conv_transpose2d(dy, w, expanded.expand(3), padding=1)) < 1e-12


@pytest.mark.parametrize(
    ("kernel", "padding"),
    [((1, 31), (0, 15)), ((4, 8), (2, 3)), ((16, 2), (7, 1)), ((3, 11), (1, 5))],
    ids=["31 taps", "32 taps 4x8", "32 taps 16x2", "33 taps"],
)
def test_tap_bits_on_both_sides_of_32_taps(kernel, padding, triton_only):
    """One bit per tap of a phase in an int32 (TAP_BITS) holds 31 taps; a phase of 32 or more is
    tested tap by tap. Padded edges, so that rows skip taps."""
    problem = ConvProblem.from_shapes((2, 3, 9, 40), (5, 3, *kernel), padding=padding)
    dy = make_tensor(problem.output_shape, torch.float32, "nchw")
    w = make_tensor(problem.weight_shape, torch.float32, "nchw")
    config = KernelConfig(32, 16, 16)
    taps = kernel[0] * kernel[1]
    x_like = torch.empty(problem.input_shape)
    assert dgrad_plan(dy, w, x_like, problem, config).constexprs["TAP_BITS"] == (taps <= 31)
    with triton_only():
        dx = conv2d_dgrad(dy, w, problem, config, channels_last=False)
    err = rel_error(dx, reference_dgrad(dy, w, problem))
    assert err < bound(torch.float32), f"relative error {err:.2e}"  # TF32 on a GPU
