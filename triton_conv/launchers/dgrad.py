"""Host side of the input gradient: dx allocation and the single launch that covers every stride phase."""

from __future__ import annotations

import math

import torch

from ..configs import KernelConfig, tile_grid
from ..kernels.dgrad import ZERO_SEGMENTS, dgrad_kernel
from ..memo import BoundedMemo
from ..memory_format import empty_in_layout
from ..problem import ConvProblem
from . import common
from .common import Plan, flag_settings, kernel_flags, launch, layout_key, split_k_buffers


def dense_weight_columns(problem: ConvProblem, config: KernelConfig, element_size: int) -> int:
    """BLOCK_N when the weight is better read from a zero-padded copy with BLOCK_N channels (W_DENSE),
    else 0. A few-channel weight (a 3-channel stem) has rows of C/g elements that are not 16-byte
    multiples: the kernel wraps its columns modulo C/g and loads them element by element through
    registers. When C/g fits in one column tile the copy costs no tile and no multiply-add (the
    tile's columns past C/g were computed and dropped anyway), its rows are whole 16-byte vectors,
    and it is K·R·S·BLOCK_N elements (64x7x7x16 bf16, 100 KB, for ResNet-50's stem)."""
    few = problem.in_per_group < config.block_n and (problem.in_per_group * element_size) % 16
    return config.block_n if few else 0


def dense_weight(weight: torch.Tensor, columns: int) -> torch.Tensor:
    """A (K, columns, R, S) view of a new KRSC tensor that holds the weight's channels, zeros after."""
    k, c, r, s = weight.shape
    dense = weight.new_zeros((k, r, s, columns))
    dense[..., :c] = weight.permute(0, 2, 3, 1)
    return dense.permute(0, 3, 1, 2)


def dgrad_plan(
    dy, weight, dx, problem: ConvProblem, config: KernelConfig, force_int64=False, has_bias=False,
    settings=None,
) -> Plan:  # fmt: skip
    """Everything of the launch of dx = conv2d_input(dy, weight) (+ a contiguous bias per channel of
    dx, a transposed convolution's) but the tensors; dy, weight and dx may have any strides, zero
    strides (an expanded dy, as y.sum().backward() makes) included."""
    stride_h, stride_w = problem.stride
    phase0 = problem.dgrad_phases()[0]  # tap steps are the same in all phases
    tiles = math.prod(tile_grid(problem, "dgrad", config))
    grid = (tiles, problem.groups * problem.phase_count, config.split_k)
    split = (config.split_k, tiles * grid[1], config.block_m, config.block_n, dy.dtype, dy.device)
    workspace, _ = split_k_buffers(*split[:5], "meta")  # its size decides int64 (no memory)
    columns = dense_weight_columns(problem, config, weight.element_size())
    if columns:  # the plan is made for the copy that each call makes (dense_weight)
        k, _, r, s = weight.shape
        weight = torch.empty((k, r, s, columns), dtype=weight.dtype, device="meta").permute(0, 3, 1, 2)
    flags = kernel_flags(dy.dtype, dy, weight, dx, workspace, force_int64=force_int64, settings=settings)
    # A row's taps are one bit each of an int32: a phase's, not the filter's (the stem's 7x7 s2
    # phases have at most 4x4 taps).
    most_taps = problem.dgrad_most_taps()
    ints = (
        problem.batch, problem.height, problem.width,
        problem.in_per_group, problem.out_per_group, problem.out_height, problem.out_width,
        stride_h, stride_w, problem.pad_top, problem.pad_left, *problem.dilation,
        problem.kernel_h, problem.kernel_w, phase0.rows.tap_step, phase0.cols.tap_step,
        *dy.stride(), *weight.stride(), *dx.stride(),
    )  # fmt: skip
    constexprs = dict(
        HAS_BIAS=has_bias,
        DY_K_UNIT=dy.stride(1) == 1, W_C_UNIT=weight.stride(1) == 1, DX_C_UNIT=dx.stride(1) == 1,
        POINTWISE=problem.is_pointwise, CHANNELS_ALIGNED=problem.out_per_group % config.block_k == 0,
        TAP_BITS=not problem.is_pointwise and most_taps <= 31,
        W_DENSE=columns > 0,
        USE_INT64=flags.use_int64, INPUT_PRECISION=flags.input_precision, UPCAST=flags.upcast,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        GROUP_M=config.group_m, SPLIT_K=config.split_k,
    )  # fmt: skip
    buffers = split_k_buffers(*split) if config.split_k == 1 else None
    return Plan(dgrad_kernel, grid, ints, constexprs, config.num_warps, config.num_stages, split, buffers)


def dgrad_spec(dy, weight, dx, problem: ConvProblem, config: KernelConfig, force_int64=False, bias=None):
    """The launch of dx = conv2d_input(dy, weight) + bias (uncached: the compile check and tests)."""
    plan = dgrad_plan(dy, weight, dx, problem, config, force_int64, bias is not None)
    return plan.spec(_tensors(plan, dy, weight, bias, dx))


def _tensors(plan: Plan, dy, weight, bias, dx) -> tuple:
    """The kernel's tensor arguments, as both the cached launch and dgrad_spec pass them (with no
    bias, dy stands in for the pointer HAS_BIAS never reads)."""
    return (dy, _weight_operand(plan, weight), dy if bias is None else bias, dx, _zeros(plan, dy))


def _zeros(plan: Plan, dy: torch.Tensor) -> torch.Tensor:
    """What padding rows read with TAP_BITS: a segment of BLOCK_K zeros of dy's dtype per program
    (ZERO_SEGMENTS of them), else an unread dy."""
    return (
        common.zero_run(ZERO_SEGMENTS.value * plan.constexprs["BLOCK_K"], dy.dtype, dy.device)
        if plan.constexprs["TAP_BITS"]
        else dy
    )


def _weight_operand(plan: Plan, weight: torch.Tensor) -> torch.Tensor:
    """The weight as the plan reads it: itself, or (W_DENSE) a fresh zero-padded copy per call."""
    return dense_weight(weight, plan.constexprs["BLOCK_N"]) if plan.constexprs["W_DENSE"] else weight


# Per shape: everything the launch depends on but the data. dx's strides follow from its shape and
# memory format (problem and channels_last), so they are not part of the key.
plans = BoundedMemo()


def conv2d_dgrad(
    dy: torch.Tensor,
    weight: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    *,
    channels_last: bool,
    bias: torch.Tensor | None = None,
    force_int64: bool = False,
) -> torch.Tensor:
    """dx, the gradient of conv2d(x, weight) with respect to x, for a validated 4-D problem; with a
    bias, the transposed convolution of dy with weight, plus the bias.

    dx has problem.input_shape and dy's dtype, in channels_last or contiguous memory as asked.
    """
    dtype = dy.dtype
    bias = None if bias is None else bias.contiguous()  # read with unit stride (C elements if copied)
    dx = empty_in_layout(problem.input_shape, dy, channels_last)
    if dx.numel() == 0:
        return dx
    if problem.out_per_group == 0:  # an empty reduction
        return dx.zero_() if bias is None else dx.copy_(bias.view(1, -1, 1, 1).expand_as(dx))
    has_bias = bias is not None
    settings = flag_settings(dtype)  # read once: the key and the plan built under it
    key = (
        problem, config, layout_key(dy), layout_key(weight), channels_last, has_bias, dtype, dy.device,
        force_int64, settings,
    )  # fmt: skip
    plan = plans.get(
        key, lambda: dgrad_plan(dy, weight, dx, problem, config, force_int64, has_bias, settings)
    )
    launch(plan.spec(_tensors(plan, dy, weight, bias, dx)))
    return dx
