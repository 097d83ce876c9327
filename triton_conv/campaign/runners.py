"""The callable a campaign times besides benchmarking's (pass_function: triton-conv's custom ops, cuDNN,
the Inductor peer; images_one_at_a_time): one pass launched with a chosen config.

`launch_with_config` makes exactly the launch that triton-conv's custom op makes for the same
tensors (autograd.py: fprop without bias, dgrad's output in the input's layout, wgrad's in the
weight's), with `config` in place of the tuned choice. So a candidate's compiled kernel is the very
binary the op runs once that candidate is its winner, and the compile step can compile both at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..configs import KernelConfig, tuning_key
from ..launchers.common import wants_channels_last
from ..launchers.dgrad import conv2d_dgrad
from ..launchers.fprop import conv2d_fprop
from ..launchers.wgrad import conv2d_wgrad
from ..problem import ConvProblem


def op_channels_last(pass_name: str, tensors: dict) -> bool:
    """The channels_last flag the custom op passes for this pass (and keys its tuning on): the layout
    of x for fprop and dgrad, of the weight for wgrad. A tensor whose two layouts coincide (a 1x1
    weight) counts as contiguous."""
    return wants_channels_last(tensors["w"] if pass_name == "wgrad" else tensors["x"])


def op_tuning_key(problem: ConvProblem, pass_name: str, tensors: dict) -> str:
    return tuning_key(problem, pass_name, tensors["x"].dtype, op_channels_last(pass_name, tensors))


def launch_with_config(
    pass_name: str, problem: ConvProblem, tensors: dict, config: KernelConfig
) -> Callable[[], torch.Tensor]:
    """The custom op's launch of `pass_name` on `tensors` (benchmarking.make_inputs: x, w, dy) with
    `config`; returns the pass's result (y, dx or dw)."""
    x, w, dy = tensors["x"], tensors["w"], tensors["dy"]
    channels_last = op_channels_last(pass_name, tensors)
    if pass_name == "fprop":
        return lambda: conv2d_fprop(x, w, None, problem, config)
    if pass_name == "dgrad":
        return lambda: conv2d_dgrad(dy, w, problem, config, channels_last=channels_last)
    if pass_name == "wgrad":
        return lambda: conv2d_wgrad(
            dy, x, problem, config, weight_dtype=w.dtype, channels_last=channels_last, need_bias=False
        )[0]
    raise ValueError(f"pass_name must be fprop, dgrad or wgrad, got {pass_name!r}")
