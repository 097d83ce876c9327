"""Each pass on validated tensors: choose the tile config, allocate, launch.

The custom ops in autograd.py call these; they in turn call the launchers. Config choice goes
through triton_conv.tuning (a cached, per-device autotuned choice) when it can time on a GPU.
"""

from __future__ import annotations

import torch

from .configs import KernelConfig, default_config
from .launchers.common import wants_channels_last
from .launchers.dgrad import conv2d_dgrad
from .launchers.fprop import conv2d_fprop
from .launchers.wgrad import conv2d_wgrad, default_wgrad_split
from .problem import ConvProblem


def output_memory_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if wants_channels_last(x, weight) else torch.contiguous_format


def choose_config(problem: ConvProblem, pass_name: str, dtype: torch.dtype, device) -> KernelConfig:
    config = default_config(problem.gemm(pass_name), torch.empty((), dtype=dtype).element_size())
    if pass_name == "wgrad":
        sm_count = (
            torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        )
        split = default_wgrad_split(problem, config, sm_count)
        config = KernelConfig(**{**config.as_dict(), "split_k": split})
    return config


def forward(x, weight, bias, problem: ConvProblem) -> torch.Tensor:
    config = choose_config(problem, "fprop", x.dtype, x.device)
    return conv2d_fprop(x, weight, bias, problem, config)


def input_grad(dy, weight, problem: ConvProblem, *, channels_last: bool) -> torch.Tensor:
    config = choose_config(problem, "dgrad", dy.dtype, dy.device)
    return conv2d_dgrad(dy, weight, problem, config, channels_last=channels_last)


def weight_grad(dy, x, problem: ConvProblem, weight_dtype, *, channels_last: bool, need_bias: bool):
    config = choose_config(problem, "wgrad", dy.dtype, dy.device)
    return conv2d_wgrad(
        dy, x, problem, config, weight_dtype=weight_dtype, channels_last=channels_last, need_bias=need_bias
    )
