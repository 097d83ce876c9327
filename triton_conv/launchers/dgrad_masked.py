"""Host side of the masked-gather input gradient (kernels/dgrad_masked.py): the benchmark baseline of
stride-phase decomposition. Not used by the package's autograd."""

from __future__ import annotations

import math

import torch

from ..configs import KernelConfig, tile_grid
from ..kernels.dgrad_masked import dgrad_masked_kernel
from ..memory_format import empty_in_layout
from ..problem import ConvProblem
from .common import LaunchSpec, kernel_flags, launch, split_k_buffers


def masked_tiles(problem: ConvProblem, config: KernelConfig) -> int:
    """Programs of one launch: M = N*H*W rows x C/g columns per group, times groups and split-K."""
    return math.prod(tile_grid(problem, "dgrad_masked", config)) * problem.groups * config.split_k


def masked_macs(problem: ConvProblem) -> int:
    """Multiply-adds the masked kernel issues (zeros included): N*H*W * C * (K/g) * R * S."""
    gemm = problem.gemm("dgrad")
    return gemm.m * gemm.n * gemm.k * problem.groups


def phased_macs(problem: ConvProblem) -> int:
    """Multiply-adds the stride-phase kernel issues: only real (pixel, tap) pairs, summed over phases."""
    pairs = sum(p.rows.count * p.cols.count * p.rows.taps * p.cols.taps for p in problem.dgrad_phases())
    return problem.batch * pairs * problem.in_channels * problem.out_per_group


def dgrad_masked_spec(
    dy: torch.Tensor,
    weight: torch.Tensor,
    dx: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    force_int64: bool = False,
) -> LaunchSpec:
    tiles = math.prod(tile_grid(problem, "dgrad_masked", config))
    grid = (tiles, problem.groups, config.split_k)
    workspace, counters = split_k_buffers(
        config.split_k, tiles * grid[1], config.block_m, config.block_n, dy.dtype, dy.device
    )
    flags = kernel_flags(dy.dtype, dy, weight, dx, workspace, force_int64=force_int64)
    args = (
        dy, weight, dx, workspace, counters,
        problem.batch, problem.height, problem.width,
        problem.in_per_group, problem.out_per_group, problem.out_height, problem.out_width,
        problem.pad_top, problem.pad_left, *problem.dilation, problem.kernel_h, problem.kernel_w,
        *dy.stride(), *weight.stride(), *dx.stride(),
    )  # fmt: skip
    constexprs = dict(
        STRIDE_H=problem.stride[0], STRIDE_W=problem.stride[1],
        USE_INT64=flags.use_int64, INPUT_PRECISION=flags.input_precision, UPCAST=flags.upcast,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        GROUP_M=config.group_m, SPLIT_K=config.split_k,
    )  # fmt: skip
    return LaunchSpec(dgrad_masked_kernel, grid, args, constexprs, config.num_warps, config.num_stages)


def conv2d_dgrad_masked(
    dy: torch.Tensor,
    weight: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    *,
    channels_last: bool,
    force_int64: bool = False,
) -> torch.Tensor:
    """dx as conv2d_dgrad computes it, by masked gathers over all R x S taps (the baseline)."""
    dx = empty_in_layout(problem.input_shape, dy, channels_last)
    if dx.numel() == 0:
        return dx
    if problem.out_per_group == 0:
        return dx.zero_()
    launch(dgrad_masked_spec(dy, weight, dx, problem, config, force_int64))
    return dx
