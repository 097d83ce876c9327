"""Each pass on validated tensors: choose the tile config, allocate, launch.

The custom ops (triton_conv/autograd/implementations.py) call these; they in turn call the launchers.
Config choice goes through triton_conv.tuning (a cached, per-device autotuned choice) on a GPU.

CUDA graphs: nothing here or in the launchers reads tensor data or synchronises, so the passes can
be captured. Only tuning cannot: timing configs while a stream is capturing would launch and
synchronise inside the capture. During a capture the config therefore comes from what is already
known (the process's memo or the persistent cache, as a warm-up run before capture leaves it) or,
for a shape never seen, the untuned default, with a one-time warning.
"""

from __future__ import annotations

import warnings

import torch

from . import tuning
from .configs import KernelConfig, default_pass_config, tuning_key
from .launchers.common import wants_channels_last
from .launchers.dgrad import conv2d_dgrad
from .launchers.fprop import conv2d_fprop
from .launchers.wgrad import conv2d_wgrad
from .problem import ConvProblem
from .tuning import select_config
from .tuning_cache import TuneResult, get_cache


def output_memory_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if wants_channels_last(x, weight) else torch.contiguous_format


def choose_config(problem: ConvProblem, pass_name: str, dtype, device, channels_last: bool) -> KernelConfig:
    """The tuned config for this problem's tuning key: the persistent cache, else a timed search on
    a GPU, else (CPU, interpreter) the untuned default. Memoised per problem in this process.
    During CUDA-graph capture nothing is timed (see the module's docstring)."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return config_during_capture(problem, pass_name, dtype, device, channels_last)
    return select_config(problem, pass_name, dtype, channels_last, device)


_warned_capture_default = False


def config_during_capture(problem: ConvProblem, pass_name: str, dtype, device, channels_last: bool):
    """The config select_config would return, without timing: this process's choice for the problem
    (select_config's memo, or tuning.pin_config), else the persistent cache's entry (which a tuning
    before capture wrote), else the default config, with a one-time warning."""
    global _warned_capture_default
    remembered = tuning.remembered_config(problem, pass_name, dtype, channels_last, device)
    if remembered is not None:
        return remembered
    name, live = tuning.device_identity(device)
    key = tuning_key(problem, pass_name, dtype, channels_last)
    entry = get_cache(name).get(key)
    if entry is not None:
        return TuneResult.from_entry(key, entry).best
    if not _warned_capture_default:
        _warned_capture_default = True
        warnings.warn(
            f"triton_conv: {pass_name} of {problem} ({key}) was never tuned and cannot be tuned while "
            "a CUDA graph is being captured; it runs the untuned default config. Run the model once "
            "before capture (the usual warm-up) or tune it ahead of time (triton_conv.tune_model).",
            RuntimeWarning,
            stacklevel=2,
        )
    return default_pass_config(
        problem, pass_name, dtype, sm_count=live.sm_count, capability=live.compute_capability
    )


def forward(x, weight, bias, problem: ConvProblem) -> torch.Tensor:
    config = choose_config(problem, "fprop", x.dtype, x.device, wants_channels_last(x, weight))
    return conv2d_fprop(x, weight, bias, problem, config)


def input_grad(dy, weight, problem: ConvProblem, *, channels_last: bool, bias=None) -> torch.Tensor:
    """dgrad; with a bias, the forward of the transposed convolution whose conv2d view is `problem`
    (the same kernel, tuned under the same key)."""
    config = choose_config(problem, "dgrad", dy.dtype, dy.device, channels_last)
    return conv2d_dgrad(dy, weight, problem, config, channels_last=channels_last, bias=bias)


def weight_grad(dy, x, problem: ConvProblem, weight_dtype, *, channels_last: bool, need_bias: bool):
    config = choose_config(problem, "wgrad", dy.dtype, dy.device, channels_last)
    return conv2d_wgrad(
        dy, x, problem, config, weight_dtype=weight_dtype, channels_last=channels_last, need_bias=need_bias
    )
