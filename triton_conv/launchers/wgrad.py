"""Host side of the weight gradient: dw (and db) allocation, the split-K choice and the wgrad launch."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..configs import KernelConfig, tap_channels, tile_grid
from ..kernels.wgrad import wgrad_kernel
from ..memo import BoundedMemo
from ..memory_format import empty_in_layout
from ..problem import ConvProblem
from .common import (
    LaunchSpec,
    Plan,
    accumulator_dtype,
    flag_settings,
    kernel_flags,
    launch,
    layout_key,
    split_k_buffers,
    split_workspace,
)
from .tma import tma_available, tma_matrix


class _WgradPlan(NamedTuple):
    plan: Plan
    db_split: tuple  # split_workspace's arguments: per-split partial bias gradients of dy's row blocks
    db_buffer: torch.Tensor | None  # the cached placeholder when split_k is 1, else None: per call
    groups: int  # of the convolution: padded_input's copy of x pads each group's channels

    def spec(self, dy, x, dw, db) -> LaunchSpec:
        db_workspace = self.db_buffer if self.db_buffer is not None else split_workspace(*self.db_split)
        padded_channels = self.plan.constexprs["TAP_CHANNELS"]
        if padded_channels:
            x = padded_input(x, self.groups, padded_channels)
        return self.plan.spec((dy, x, dw, db if db is not None else dw), (db_workspace,))


def padded_input(x: torch.Tensor, groups: int, channels: int) -> torch.Tensor:
    """A new NHWC tensor with `channels` per group, x's channels first and zeros after, viewed as
    (N, groups·channels, H, W)."""
    n, c, h, w = x.shape
    padded = x.new_zeros((n, h, w, groups, channels))
    padded[..., : c // groups] = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, c // groups)
    return padded.view(n, h, w, groups * channels).permute(0, 3, 1, 2)


def wgrad_plan(
    dy, x, dw, db, problem: ConvProblem, config: KernelConfig, force_int64=False, tma: bool | None = None,
    settings=None,
) -> _WgradPlan:  # fmt: skip
    """Everything of the launch of dw = wgrad(dy, x) (and db = dy summed over N, P, Q when db is
    given) but the tensors.

    dy and x may have any strides, zero strides (an expanded dy) included; dw any strides; db is 1-D
    and contiguous. `tma`: whether the GPU has TMA (None: tma_available of x's device; the compile
    check says for the GPU it compiles for).
    """
    if db is not None and (db.shape != (problem.out_channels,) or db.stride() != (1,)):
        raise ValueError(f"db must be contiguous with shape ({problem.out_channels},), got {tuple(db.shape)}")
    device = x.device
    padded_channels = tap_channels(problem, x.element_size())  # per group; 0: x is read as it is
    if padded_channels:  # the plan is made for the copy of x that each call makes (padded_input)
        n, _, h, w = problem.input_shape
        padded_nhwc = (n, h, w, problem.groups * padded_channels)
        x = torch.empty(padded_nhwc, dtype=x.dtype, device="meta").permute(0, 3, 1, 2)
    tiles_m, tiles_n = tile_grid(problem, "wgrad", config, x.element_size())
    # With a bias, tiles_m more programs per group sum dy's rows (and count their own splits).
    bias_programs = tiles_m if db is not None else 0
    split = (
        config.split_k, problem.groups * tiles_m * tiles_n, config.block_m, config.block_n,
        x.dtype, device, problem.groups * bias_programs,
    )  # fmt: skip
    workspace, _ = split_k_buffers(*split[:5], "meta")  # its size decides int64 (no memory)
    db_split = (config.split_k, problem.groups * tiles_m * config.block_m, x.dtype, device)
    # The workspace is indexed too: a big split-K workspace needs int64 offsets as much as x does.
    flags = kernel_flags(x.dtype, dy, x, dw, workspace, force_int64=force_int64, settings=settings)
    ints = (
        problem.batch, problem.height, problem.width,
        problem.in_per_group, problem.out_per_group, problem.out_height, problem.out_width,
        *problem.stride, problem.pad_top, problem.pad_left, *problem.dilation,
        problem.kernel_h, problem.kernel_w,
        *dy.stride(), *x.stride(), *dw.stride(),
    )  # fmt: skip
    aligned = problem.in_per_group % config.block_n == 0
    one_tap = aligned or problem.kernel_h * problem.kernel_w == 1
    has_tma = tma_available(device) if tma is None else tma
    dy_view, x_view = _tma_views(dy, x, problem, config) if has_tma else (None, None)
    linear, x_lin, q_extra = _linear_rows(x, problem, one_tap or padded_channels > 0, padded_channels)
    ints = (*ints, x_lin, q_extra)  # integer arguments, so the JIT sees their divisibility
    constexprs = dict(
        HAS_BIAS=db is not None,
        DY_K_UNIT=dy.stride(1) == 1, X_C_UNIT=x.stride(1) == 1, DW_C_UNIT=dw.stride(1) == 1,
        ONE_TAP_TILES=one_tap, COLUMNS_ALIGNED=aligned,
        TAP_CHANNELS=padded_channels, LINEAR_ROWS=linear, Q_EXTRA=q_extra != 0,
        DY_TMA=dy_view is not None, X_TMA=x_view is not None,
        USE_INT64=flags.use_int64, INPUT_PRECISION=flags.input_precision, UPCAST=flags.upcast,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        GROUP_M=config.group_m, SPLIT_K=config.split_k,
    )  # fmt: skip
    grid = (tiles_m * tiles_n + bias_programs, problem.groups, config.split_k)
    single = config.split_k == 1
    plan = Plan(
        wgrad_kernel, grid, ints, constexprs, config.num_warps, config.num_stages, split,
        split_k_buffers(*split) if single else None, ((0, dy_view), (1, x_view)),
    )  # fmt: skip
    return _WgradPlan(plan, db_split, split_workspace(*db_split) if single else None, problem.groups)


def _tma_views(dy, x, problem: ConvProblem, config: KernelConfig) -> tuple:
    """The TMA views of dy, as an (N·P·Q, K) matrix, and of x, as (N·H·W, C) for a 1x1 stride-1
    convolution whose dy has one, or None for an operand loaded through pointers. With groups, each
    group's first channel must start a box on a 16-byte boundary too."""
    size = dy.element_size()
    dy_view = x_view = None
    if problem.groups == 1 or (problem.out_per_group * size) % 16 == 0:
        dy_view = tma_matrix(dy, (0, 2, 3), (1,), (config.block_k, config.block_m))
    if (
        dy_view is not None
        and problem.is_pointwise
        and (problem.groups == 1 or (problem.in_per_group * size) % 16 == 0)
    ):
        x_view = tma_matrix(x, (0, 2, 3), (1,), (config.block_k, config.block_n))
    return dy_view, x_view


def _linear_rows(x, problem: ConvProblem, whole_rows: bool, padded_channels: int) -> tuple[bool, int, int]:
    """(LINEAR_ROWS, x_lin, q_extra). x's pixels of the output grid (n, p·stride_h, q·stride_w) lie
    x_lin apart in u = (n, p, q) order, plus q_extra per q when stride_w > 1: the rows' addresses
    then move by a scalar per step. `whole_rows`: the tiles' rows are whole pixels (one tap per tile,
    or a padded copy, whose x_lin the kernel computes as a whole number of padded pixels)."""
    row_step = problem.stride[0] * x.stride(2)
    linear = (
        whole_rows and row_step % (problem.out_width * max(padded_channels, 1)) == 0
        and x.stride(0) == problem.out_height * row_step
    )  # fmt: skip
    if not linear:
        return False, 0, 0
    x_lin = row_step // problem.out_width
    return True, x_lin, problem.stride[1] * x.stride(3) - x_lin


def wgrad_spec(
    dy, x, dw, db, problem: ConvProblem, config: KernelConfig, force_int64=False, tma: bool | None = None
) -> LaunchSpec:
    """The launch of dw = wgrad(dy, x) (and db when given); uncached: the compile check and tests."""
    return wgrad_plan(dy, x, dw, db, problem, config, force_int64, tma).spec(dy, x, dw, db)


# Per shape: everything the launch depends on but the data. dw's and db's strides follow from their
# shapes and memory format (problem and channels_last), so they are not part of the key.
plans = BoundedMemo()


def conv2d_wgrad(
    dy: torch.Tensor,
    x: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    *,
    weight_dtype: torch.dtype,
    channels_last: bool,
    need_bias: bool,
    force_int64: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dw, db) of y = conv2d(x, w) + b given dy = dL/dy; db is None unless need_bias.

    dw has problem.weight_shape and `weight_dtype`, channels_last or contiguous as asked; db has
    problem.out_channels elements. dy and x are the 4-D (batched) tensors, with any strides.
    """
    dtype = x.dtype
    settings = flag_settings(dtype)  # read once: the key and the plan built under it
    key = (
        problem, config, layout_key(dy), layout_key(x), channels_last, need_bias, dtype, x.device,
        force_int64, settings,
    )  # fmt: skip
    if key not in plans and (dy.shape != problem.output_shape or x.shape != problem.input_shape):
        raise ValueError(
            f"wgrad expects dy {problem.output_shape} and x {problem.input_shape}, "
            f"got {tuple(dy.shape)} and {tuple(x.shape)}"
        )
    dw = empty_in_layout(problem.weight_shape, x, channels_last, dtype=weight_dtype)
    db = torch.empty(problem.out_channels, dtype=weight_dtype, device=x.device) if need_bias else None
    if problem.batch == 0:  # an empty reduction
        dw.zero_()
        return dw, None if db is None else db.zero_()
    if dw.numel() == 0:  # no input channels: no tiles, but db is still dy's sum
        if db is not None:
            db.copy_(dy.sum(dim=(0, 2, 3), dtype=accumulator_dtype(dy.dtype)))
        return dw, db
    plan = plans.get(key, lambda: wgrad_plan(dy, x, dw, db, problem, config, force_int64, settings=settings))
    launch(plan.spec(dy, x, dw, db))
    return dw, db
