"""Each pass on validated tensors: choose the tile config, allocate, launch.

The custom ops in autograd.py call these; they in turn call the launchers. Config choice goes
through triton_conv.tuning (a cached, per-device autotuned choice) when it can time on a GPU.
"""

from __future__ import annotations

import torch

from .configs import KernelConfig
from .launchers.common import wants_channels_last
from .launchers.dgrad import conv2d_dgrad
from .launchers.fprop import conv2d_fprop
from .launchers.wgrad import conv2d_wgrad
from .problem import ConvProblem
from .tuning import select_config


def output_memory_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if wants_channels_last(x, weight) else torch.contiguous_format


def choose_config(problem: ConvProblem, pass_name: str, dtype, device, channels_last: bool) -> KernelConfig:
    """The tuned config for this problem's tuning key: the persistent cache, else a timed search on
    a GPU, else (CPU, interpreter) the untuned default. Memoised per problem in this process."""
    return select_config(problem, pass_name, dtype, channels_last, device)


def forward(x, weight, bias, problem: ConvProblem) -> torch.Tensor:
    config = choose_config(problem, "fprop", x.dtype, x.device, wants_channels_last(x, weight))
    return conv2d_fprop(x, weight, bias, problem, config)


def input_grad(dy, weight, problem: ConvProblem, *, channels_last: bool) -> torch.Tensor:
    config = choose_config(problem, "dgrad", dy.dtype, dy.device, channels_last)
    return conv2d_dgrad(dy, weight, problem, config, channels_last=channels_last)


def weight_grad(dy, x, problem: ConvProblem, weight_dtype, *, channels_last: bool, need_bias: bool):
    config = choose_config(problem, "wgrad", dy.dtype, dy.device, channels_last)
    return conv2d_wgrad(
        dy, x, problem, config, weight_dtype=weight_dtype, channels_last=channels_last, need_bias=need_bias
    )
