"""Host side of the forward pass: output allocation and the fprop kernel's launch."""

from __future__ import annotations

import math

import torch

from ..configs import KernelConfig, row_spans, tile_grid
from ..kernels.fprop import fprop_kernel
from ..memo import BoundedMemo
from ..memory_format import wants_channels_last
from ..problem import ConvProblem
from .common import (
    Plan,
    flag_settings,
    kernel_flags,
    launch,
    layout_key,
    split_k_buffers,
)
from .tma import matrix_row_stride


def fprop_plan(
    x, weight, bias, y, problem: ConvProblem, config: KernelConfig, force_int64=False, settings=None
) -> Plan:
    """Everything of the launch of y = conv2d(x, weight) + bias but the tensors; x, weight, y may
    have any strides; `settings` as kernel_flags takes them."""
    tiles = math.prod(tile_grid(problem, "fprop", config))
    split = (config.split_k, tiles * problem.groups, config.block_m, config.block_n, x.dtype, x.device)
    workspace, _ = split_k_buffers(*split[:5], "meta")  # its size decides int64 as x's does
    flags = kernel_flags(x.dtype, x, weight, y, workspace, force_int64=force_int64, settings=settings)
    ints = (
        problem.batch, problem.height, problem.width,
        problem.in_per_group, problem.out_per_group, problem.out_height, problem.out_width,
        *problem.stride, problem.pad_top, problem.pad_left, *problem.dilation,
        problem.kernel_h, problem.kernel_w,
        *x.stride(), *weight.stride(), *y.stride(),
    )  # fmt: skip
    aligned = problem.in_per_group % config.block_k == 0
    w_matrix = matrix_row_stride(weight, (0,), (2, 3, 1)) is not None  # KRSC: a (K, R·S·C/g) matrix
    # Few channels: walk each tap row's (s, c) as one contiguous run (NHWC x, KRSC w, one group).
    spans = row_spans(problem) and w_matrix and x.stride(1) == 1 and x.stride(3) == problem.in_channels
    constexprs = dict(
        HAS_BIAS=bias is not None,
        X_C_UNIT=x.stride(1) == 1, W_C_UNIT=weight.stride(1) == 1, Y_K_UNIT=y.stride(1) == 1,
        POINTWISE=problem.is_pointwise, CHANNELS_ALIGNED=aligned,
        W_MATRIX=w_matrix, ROW_SPANS=spans,
        TAP_BITS=not problem.is_pointwise and problem.kernel_h * (1 if spans else problem.kernel_w) <= 31,
        USE_INT64=flags.use_int64, INPUT_PRECISION=flags.input_precision, UPCAST=flags.upcast,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        GROUP_M=config.group_m, SPLIT_K=config.split_k,
    )  # fmt: skip
    grid = (tiles, problem.groups, config.split_k)
    buffers = split_k_buffers(*split) if config.split_k == 1 else None
    return Plan(fprop_kernel, grid, ints, constexprs, config.num_warps, config.num_stages, split, buffers)


def fprop_spec(x, weight, bias, y, problem: ConvProblem, config: KernelConfig, force_int64=False):
    """The launch of y = conv2d(x, weight) + bias (uncached: the compile check and tests)."""
    plan = fprop_plan(x, weight, bias, y, problem, config, force_int64)
    return plan.spec(_tensors(x, weight, bias, y))


def _tensors(x, weight, bias, y) -> tuple:
    """The kernel's tensor arguments, as both the cached launch and fprop_spec pass them (with no
    bias, x stands in for the pointer HAS_BIAS never reads)."""
    return (x, weight, bias if bias is not None else x, y)


class _OutputPlan:
    """A cached fprop launch and its output's allocation (shape, memory format; y's strides follow)."""

    __slots__ = ("shape", "memory_format", "plan")

    def __init__(self, x, weight, bias, problem, config, force_int64, settings):
        self.shape = problem.output_shape
        channels_last = wants_channels_last(x, weight)  # the output follows the inputs, as cuDNN's
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        y = torch.empty(self.shape, dtype=x.dtype, device=x.device, memory_format=self.memory_format)
        self.plan = fprop_plan(x, weight, bias, y, problem, config, force_int64, settings)


# Per shape: everything the launch depends on but the data. y is allocated from the plan, so its
# strides follow from x's and weight's and are not part of the key.
plans = BoundedMemo()


def conv2d_fprop(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    problem: ConvProblem,
    config: KernelConfig,
    force_int64: bool = False,
) -> torch.Tensor:
    """y = conv2d(x, weight) + bias for a validated 4-D problem, with the given tile config."""
    dtype = x.dtype
    bias = None if bias is None else bias.contiguous()  # read with unit stride (K elements if copied)
    settings = flag_settings(dtype)  # read once: the key and the plan built under it
    key = (
        problem, config, layout_key(x), layout_key(weight), bias is not None, dtype, x.device,
        force_int64, settings,
    )  # fmt: skip
    cached = plans.get(key, lambda: _OutputPlan(x, weight, bias, problem, config, force_int64, settings))
    y = torch.empty(cached.shape, dtype=dtype, device=x.device, memory_format=cached.memory_format)
    if y.numel() == 0:  # no input channels included: torch's output then has no channels either
        return y
    launch(cached.plan.spec(_tensors(x, weight, bias, y)))
    return y
