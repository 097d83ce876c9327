"""Each pass on validated tensors: choose the tile config, allocate, launch.

The custom ops (triton_conv/autograd/implementations.py) call these; they in turn call the launchers.
Config choice goes through triton_conv.choices (a pin, the process's memo, else tuning's cached,
per-device autotuned choice on a GPU; the untimed default in deterministic mode).

CUDA graphs: nothing here or in the launchers reads tensor data or synchronises (but the first fill
of launchers.common.zero_run's zeros, once per device, dtype and length, never during a capture),
so the passes can be captured. Only tuning cannot: timing configs while a stream is capturing would launch and
synchronise inside the capture. During a capture the config therefore comes from what is already
known (the process's memo or the persistent cache, as a warm-up run before capture leaves it) or,
for a shape never seen, the untuned default, with a one-time warning.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import torch

from . import choices, runtime, tuning
from .arguments import ConvArgumentError
from .choices import select_config
from .configs import CONFIG_BOUNDS, KernelConfig
from .launchers.common import INT32_LIMIT, accumulator_dtype
from .launchers.dgrad import conv2d_dgrad
from .launchers.fprop import conv2d_fprop
from .launchers.wgrad import conv2d_wgrad
from .memory_format import empty_in_layout, wants_channels_last
from .problem import ConvProblem
from .tuning_keys import tuning_key


def pass_channels_last(pass_name: str, x, weight, dy, transposed: bool = False) -> bool:
    """The layout flag a convolution's pass (fprop: its forward, dgrad, wgrad) runs its kernel with
    and keys its tuning on. Every op lays its output out by its own input and the weight, as torch
    lays out all three (autograd.implementations); a transposed convolution's backward ops are
    conv2d's ops with dy in the input's place."""
    return wants_channels_last(dy if transposed and pass_name != "fprop" else x, weight)


def choose_config(problem: ConvProblem, pass_name: str, dtype, channels_last: bool, device) -> KernelConfig:
    """The tuned config for this problem's tuning key: the persistent cache, else a timed search on
    a GPU, else (CPU, interpreter) the untuned default. Memoised per problem in this process.
    During CUDA-graph capture nothing is timed (see the module's docstring); in torch's
    deterministic mode nothing is timed or read from the cache (choices.untimed_config)."""
    if runtime.deterministic_convolutions():
        return choices.untimed_config(problem, pass_name, dtype, channels_last, device)
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return config_during_capture(problem, pass_name, dtype, channels_last, device)
    return select_config(problem, pass_name, dtype, channels_last, device)


_warned_capture_default = False


def config_during_capture(problem: ConvProblem, pass_name: str, dtype, channels_last: bool, device):
    """The config select_config would return, without timing: this process's choice for the problem
    (select_config's memo, or choices.pin_config), else the persistent cache's entry (which a tuning
    before capture wrote), else the default config, with a one-time warning."""
    global _warned_capture_default
    remembered = choices.remembered_config(problem, pass_name, dtype, channels_last, device)
    if remembered is not None:
        return remembered
    name, live = tuning.device_identity(device)
    key = tuning_key(problem, pass_name, dtype, channels_last)
    cached, launchable = tuning.cached_result(key, problem, pass_name, dtype, tuning.get_cache(name), live)
    if cached is not None and launchable:
        return cached.best  # (an entry too big for this GPU's shared memory gets the default, as a miss)
    if not _warned_capture_default:
        _warned_capture_default = True
        warnings.warn(
            f"triton_conv: {pass_name} of {problem} ({key}) was never tuned and cannot be tuned while "
            "a CUDA graph is being captured; it runs the untuned default config. Run the model once "
            "before capture (the usual warm-up) or tune it ahead of time (triton_conv.tune_model).",
            RuntimeWarning,
            stacklevel=2,
        )
    return tuning.untimed_default(problem, pass_name, dtype, channels_last, live)


# The launchers put the groups (times dgrad's stride phases, which run side by side) on the grid's y
# axis, which CUDA caps at 65535 (x, the tiles, allows 2**31 - 1). Past it (a depthwise convolution of
# 65536 channels, or 16384 at stride 2 in dgrad) a pass runs in chunks of groups, one launch each;
# one group's phases past it (stride_h x stride_w > 65535) are refused.
GRID_Y_LIMIT = 65535


def group_chunks(problem: ConvProblem, programs_per_group: int) -> list[tuple[int, int]]:
    """(first group, groups) of each launch: one chunk unless the grid's y axis would pass its limit."""
    per_launch = max(1, GRID_Y_LIMIT // programs_per_group)
    return [
        (first, min(per_launch, problem.groups - first)) for first in range(0, problem.groups, per_launch)
    ]


def _chunk(problem: ConvProblem, first: int, groups: int):
    """The problem of `groups` groups from `first` on, and the slices of its input and output channels."""
    in_group, out_group = problem.in_per_group, problem.out_per_group
    part = dataclasses.replace(
        problem, groups=groups, in_channels=groups * in_group, out_channels=groups * out_group
    )
    return (
        part,
        slice(first * in_group, (first + groups) * in_group),
        slice(first * out_group, (first + groups) * out_group),
    )


# The kernels index a launch's GEMM rows (fprop's output pixels, dgrad's input pixels of a stride
# phase, wgrad's reduction over output pixels) with 32-bit ints, the last tile's rows past the end
# included; the int64 variants widen offsets, not these indices. Past the limit a pass runs in
# chunks of images, one launch each, as torch splits a batch for cuDNN's 32-bit indexing.
# The largest tile side a config may have (configs.CONFIG_BOUNDS: 512).
ROWS_LIMIT = INT32_LIMIT - max(CONFIG_BOUNDS[side] for side in ("block_m", "block_n", "block_k"))


def batch_chunks(problem: ConvProblem, pass_name: str) -> list[tuple[int, int]]:
    """(first image, images) of each launch of `pass_name`: one chunk unless the batch's GEMM rows
    would pass ROWS_LIMIT. An image whose own rows pass it cannot be split: a clear error."""
    # dgrad: a stride phase's rows, as the kernel counts them
    per_image = problem.dgrad_image_rows() if pass_name == "dgrad" else problem.out_height * problem.out_width
    per_launch = ROWS_LIMIT // max(per_image, 1)
    if per_launch == 0:
        raise ConvArgumentError(
            f"input: one image is {per_image} rows of the {pass_name} GEMM ({problem}); the kernels "
            f"index a launch's rows with 32-bit ints, at most {ROWS_LIMIT}"
        )
    if problem.batch <= per_launch:
        return [(0, problem.batch)]
    return [(first, min(per_launch, problem.batch - first)) for first in range(0, problem.batch, per_launch)]


def on_tensors_device(pass_fn):
    """Runs a pass with its first tensor's CUDA device current (runtime.device_guard): its tuning,
    allocations and launches then follow the tensors."""

    @functools.wraps(pass_fn)
    def guarded(tensor, *args, **kwargs):
        with runtime.device_guard(tensor.device):
            return pass_fn(tensor, *args, **kwargs)

    return guarded


@on_tensors_device
def forward(x, weight, bias, problem: ConvProblem, config=None, force_int64: bool = False) -> torch.Tensor:
    """The forward pass in as many launches as the grid and the 32-bit row indices need, each in
    `config` (conv2d_with_config's) or the tuned one."""
    images = batch_chunks(problem, "fprop")
    if len(images) > 1:
        y = empty_in_layout(problem.output_shape, x, wants_channels_last(x, weight))
        for first, count in images:
            part = slice(first, first + count)
            y[part] = forward(x[part], weight, bias, problem.with_batch(count), config, force_int64)
        return y
    chunks = group_chunks(problem, 1)
    if len(chunks) > 1:
        y = empty_in_layout(problem.output_shape, x, wants_channels_last(x, weight))
        for first, groups in chunks:
            part, cin, cout = _chunk(problem, first, groups)
            part_bias = None if bias is None else bias[cout]
            y[:, cout] = forward(x[:, cin], weight[cout], part_bias, part, config, force_int64)
        return y
    if config is None:
        config = choose_config(problem, "fprop", x.dtype, wants_channels_last(x, weight), x.device)
    return conv2d_fprop(x, weight, bias, problem, config, force_int64=force_int64)


@on_tensors_device
def input_grad(dy, weight, problem: ConvProblem, *, channels_last: bool, bias=None) -> torch.Tensor:
    """dgrad; with a bias, the forward of the transposed convolution whose conv2d view is `problem`
    (the same kernel, tuned under the same key)."""
    phases = problem.phase_count
    if phases > GRID_Y_LIMIT:  # one group's phases fill the y axis; chunks of groups cannot split them
        raise ConvArgumentError(
            f"stride: the input gradient (and a transposed convolution's forward) runs its "
            f"stride_h x stride_w = {phases} stride phases side by side on the grid's y axis, whose "
            f"limit is {GRID_Y_LIMIT}; got stride={tuple(problem.stride)}"
        )
    images = batch_chunks(problem, "dgrad")
    if len(images) > 1:
        dx = empty_in_layout(problem.input_shape, dy, channels_last)
        for first, count in images:
            part = slice(first, first + count)
            dx[part] = input_grad(
                dy[part], weight, problem.with_batch(count), channels_last=channels_last, bias=bias
            )
        return dx
    chunks = group_chunks(problem, phases)
    if len(chunks) > 1:
        dx = empty_in_layout(problem.input_shape, dy, channels_last)
        for first, groups in chunks:
            part, cin, cout = _chunk(problem, first, groups)
            dx[:, cin] = input_grad(
                dy[:, cout], weight[cout], part, channels_last=channels_last,
                bias=None if bias is None else bias[cin],
            )  # fmt: skip
        return dx
    config = choose_config(problem, "dgrad", dy.dtype, channels_last, dy.device)
    return conv2d_dgrad(dy, weight, problem, config, channels_last=channels_last, bias=bias)


@on_tensors_device
def weight_grad(dy, x, problem: ConvProblem, weight_dtype, *, channels_last: bool, need_bias: bool):
    images = batch_chunks(problem, "wgrad")
    if len(images) > 1:  # each chunk's sums in float32 (float64 for float64), added, then rounded once
        sum_dtype = accumulator_dtype(weight_dtype)
        parts = [
            weight_grad(
                dy[first : first + count], x[first : first + count], problem.with_batch(count), sum_dtype,
                channels_last=channels_last, need_bias=need_bias,
            )
            for first, count in images
        ]  # fmt: skip
        dw = functools.reduce(torch.add, (part_dw for part_dw, _ in parts)).to(weight_dtype)
        if not need_bias:
            return dw, None
        return dw, functools.reduce(torch.add, (part_db for _, part_db in parts)).to(weight_dtype)
    chunks = group_chunks(problem, 1)
    if len(chunks) > 1:
        dw = empty_in_layout(problem.weight_shape, x, channels_last, dtype=weight_dtype)
        db = x.new_empty(problem.out_channels, dtype=weight_dtype) if need_bias else None
        for first, groups in chunks:
            part, cin, cout = _chunk(problem, first, groups)
            dw[cout], part_db = weight_grad(
                dy[:, cout], x[:, cin], part, weight_dtype, channels_last=channels_last, need_bias=need_bias
            )
            if db is not None:
                db[cout] = part_db
        return dw, db
    config = choose_config(problem, "wgrad", dy.dtype, channels_last, dy.device)
    return conv2d_wgrad(
        dy, x, problem, config, weight_dtype=weight_dtype, channels_last=channels_last, need_bias=need_bias
    )
