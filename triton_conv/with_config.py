"""conv2d_with_config: the forward kernel at a caller-chosen tile config, for tests and debugging.

It skips tuning and the fallback to torch, and has no autograd: a call whose output would need a
gradient is refused rather than answered without one."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
from torch._C._functorch import is_functorch_wrapped_tensor

from . import passes
from .arguments import ConvArgumentError, ConvTypeError
from .configs import KernelConfig, default_pass_config
from .functional import validate
from .memory_format import wants_channels_last
from .runtime import torchs_precision


def conv2d_with_config(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    config: KernelConfig | None = None,
    force_int64: bool = False,
) -> torch.Tensor:
    """conv2d's forward with a caller-chosen tile config (for tests and debugging); never falls back
    to torch. The forward kernel only: a tensor that needs a gradient is refused, since the output
    would silently have none (for gradients through a fixed config, choices.pin_config it and call
    conv2d).

    `config=None` runs the forward's untuned default (configs.default_pass_config, for any GPU);
    `force_int64` runs the int64-offset variant of the kernel on a small problem.
    """
    problem = validate(input, weight, bias, stride, padding, dilation, groups).canonical()  # as the op
    if config is not None and not isinstance(config, KernelConfig):
        raise ConvTypeError(f"config must be a KernelConfig, got {type(config).__name__}")
    _refuse_gradients(input=input, weight=weight, bias=bias)
    _refuse_wrapped(input=input, weight=weight, bias=bias)
    if input.device.type == "meta":  # shapes only, as conv2d gives them: nothing to launch on
        from .functional import conv2d

        return conv2d(input, weight, bias, stride, padding, dilation, groups)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    if config is None:
        config = default_pass_config(problem, "fprop", x.dtype, channels_last=wants_channels_last(x, weight))
    with torchs_precision(x, weight, problem.groups):  # as conv2d's op
        y = passes.forward(x, weight, bias, problem, config, force_int64)
    return y if batched else y.squeeze(0)


def _refuse_gradients(**tensors) -> None:
    for name, tensor in tensors.items():
        wants_grad = tensor is not None and torch.is_grad_enabled() and tensor.requires_grad
        if wants_grad or (tensor is not None and _has_tangent(tensor)):
            raise ConvArgumentError(
                f"conv2d_with_config runs the forward kernel only and {name} needs a gradient: call it"
                " under torch.no_grad(), or pin the config (triton_conv.choices.pin_config) and call conv2d"
            )


def _refuse_wrapped(**tensors) -> None:
    """A tensor of a torch.func transform (vmap's batched tensor) holds no memory the kernel could
    read: it failed inside the launcher ('Cannot access data pointer')."""
    for name, tensor in tensors.items():
        if tensor is not None and is_functorch_wrapped_tensor(tensor):
            raise ConvArgumentError(
                f"conv2d_with_config launches the kernel on plain tensors, and {name} is one of a"
                " torch.func transform (vmap): call conv2d there"
            )


def _has_tangent(tensor: torch.Tensor) -> bool:
    """Whether forward-mode AD carries a tangent on `tensor` at the current dual level (that of
    torch.autograd.forward_ad, or of torch.func.jvp, which uses the same levels)."""
    return forward_ad.unpack_dual(tensor).tangent is not None
