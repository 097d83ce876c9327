"""Host launchers: one per pass. They allocate outputs, pick flags and launch. They take validated
arguments (triton_conv.functional and the ops' checks validate before anything launches) and check
only what is cheap and would otherwise launch wrongly (wgrad: dy's and x's shapes against the
problem, the bias gradient's buffer)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..configs import KernelConfig
from ..problem import ConvProblem
from .dgrad import conv2d_dgrad
from .fprop import conv2d_fprop
from .wgrad import conv2d_wgrad


def pass_launch(
    pass_name: str,
    problem: ConvProblem,
    config: KernelConfig,
    *,
    x: torch.Tensor | None,
    weight: torch.Tensor,
    dy: torch.Tensor | None,
    channels_last: bool,
    bias: torch.Tensor | None = None,
) -> Callable[[], torch.Tensor]:
    """A callable that allocates one pass's output and launches it with `config`, as the custom op
    does (fprop without bias; dgrad with `bias` only as a transposed convolution's forward; wgrad's
    weight gradient alone): what the tuner and the campaign time, so the binary they compile is the
    one the op runs."""
    if bias is not None and pass_name != "dgrad":
        raise ValueError(f"a bias is launched with dgrad only (a transposed convolution's), not {pass_name}")
    if pass_name == "fprop":
        return lambda: conv2d_fprop(x, weight, None, problem, config)
    if pass_name == "dgrad":
        return lambda: conv2d_dgrad(dy, weight, problem, config, channels_last=channels_last, bias=bias)
    if pass_name == "wgrad":
        return lambda: conv2d_wgrad(
            dy, x, problem, config, weight_dtype=weight.dtype, channels_last=channels_last, need_bias=False
        )[0]
    raise ValueError(f"pass_name must be fprop, dgrad or wgrad, got {pass_name!r}")
