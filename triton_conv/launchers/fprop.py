"""Host side of the forward pass: output allocation and the fprop kernel's launch."""

from __future__ import annotations

import torch

from ..configs import KernelConfig
from ..kernels.fprop import fprop_kernel
from ..problem import ConvProblem
from .common import LaunchSpec, cdiv, empty_like_layout, kernel_flags, launch, split_k_buffers


def fprop_spec(x, weight, bias, y, problem: ConvProblem, config: KernelConfig, force_int64=False):
    """The launch of y = conv2d(x, weight) + bias; x, weight, y may have any strides."""
    gemm = problem.gemm("fprop")
    tiles = cdiv(gemm.m, config.block_m) * cdiv(gemm.n, config.block_n)
    workspace, counters = split_k_buffers(
        config.split_k, tiles * problem.groups, config.block_m, config.block_n, x.dtype, x.device
    )
    flags = kernel_flags(x.dtype, x, weight, y, workspace, force_int64=force_int64)
    args = (
        x, weight, bias if bias is not None else x, y, workspace, counters,
        problem.batch, problem.height, problem.width,
        problem.in_per_group, problem.out_per_group, problem.out_height, problem.out_width,
        *problem.stride, problem.pad_top, problem.pad_left, *problem.dilation,
        problem.kernel_h, problem.kernel_w,
        *x.stride(), *weight.stride(), *y.stride(),
    )  # fmt: skip
    constexprs = dict(
        HAS_BIAS=bias is not None,
        X_C_UNIT=x.stride(1) == 1, W_C_UNIT=weight.stride(1) == 1, Y_K_UNIT=y.stride(1) == 1,
        POINTWISE=problem.is_pointwise,
        USE_INT64=flags.use_int64, INPUT_PRECISION=flags.input_precision, UPCAST=flags.upcast,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        GROUP_M=config.group_m, SPLIT_K=config.split_k,
    )  # fmt: skip
    grid = (tiles, problem.groups, config.split_k)
    return LaunchSpec(fprop_kernel, grid, args, constexprs, config.num_warps, config.num_stages)


def conv2d_fprop(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    problem: ConvProblem,
    config: KernelConfig,
    force_int64: bool = False,
) -> torch.Tensor:
    """y = conv2d(x, weight) + bias for a validated 4-D problem, with the given tile config."""
    y = empty_like_layout(problem.output_shape, (x, weight), x.dtype, x.device)
    if y.numel() == 0:
        return y
    if problem.in_per_group == 0:  # an empty reduction: the output is the bias
        y.zero_()
        return y if bias is None else y.add_(bias.view(1, -1, 1, 1))
    launch(fprop_spec(x, weight, bias, y, problem, config, force_int64))
    return y
