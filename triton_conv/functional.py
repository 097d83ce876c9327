"""triton_conv.conv2d: torch.nn.functional.conv2d's signature and semantics on Triton kernels.

Every argument is checked here, before anything launches, as torch checks it (arguments.py,
ConvProblem.from_shapes); the caller's tensors are only read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .arguments import ConvArgumentError, ConvTypeError, check_tensors
from .autograd import conv2d_op
from .configs import KernelConfig, default_config
from .launchers.fprop import conv2d_fprop
from .problem import ConvProblem
from .runtime import runs_triton


def validate(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> ConvProblem:
    """Check every argument of conv2d as torch does and return the problem (with a batch dimension).
    Raises ConvArgumentError / ConvTypeError (RuntimeError and ValueError / TypeError)."""
    check_tensors(input, weight, bias, (3, 4), 4)
    shape = input.shape if input.dim() == 4 else (1, *input.shape)
    problem = _problem(shape, weight.shape, stride, padding, dilation, groups)
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ConvArgumentError(
            f"bias must have {weight.shape[0]} elements (weight's output channels), got {bias.shape[0]}"
        )
    return problem


def _plain(value):
    """`value` as a key for _problem's memo: an int, a str, or a tuple of the ints of a tuple or
    list; None for anything else (a bool, which equals an int but is an error, a tensor, ...)."""
    kind = type(value)
    if kind is int or kind is str:
        return value
    if (kind is tuple or kind is list) and all(type(v) is int for v in value):
        return tuple(value)
    return None


_PROBLEMS: dict = {}


def _problem(shape, weight_shape, stride, padding, dilation, groups) -> ConvProblem:
    """ConvProblem.from_shapes in canonical form, memoised on arguments that hash unambiguously
    (only valid problems are remembered: an invalid one raises anew on every call)."""
    geometry = (_plain(stride), _plain(padding), _plain(dilation), _plain(groups))
    if None in geometry:
        return ConvProblem.from_shapes(shape, weight_shape, stride, padding, dilation, groups).canonical()
    key = (tuple(shape), tuple(weight_shape), *geometry)
    problem = _PROBLEMS.get(key)
    if problem is None:
        problem = ConvProblem.from_shapes(shape, weight_shape, stride, padding, dilation, groups).canonical()
        if len(_PROBLEMS) >= 4096:
            _PROBLEMS.clear()
        _PROBLEMS[key] = problem
    return problem


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
    """conv2d with a caller-chosen tile config (for tests and debugging); never falls back to torch.

    `force_int64` runs the int64-offset variant of the kernel on a small problem.
    """
    problem = validate(input, weight, bias, stride, padding, dilation, groups)
    if config is not None and not isinstance(config, KernelConfig):
        raise ConvTypeError(f"config must be a KernelConfig, got {type(config).__name__}")
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    if config is None:
        config = default_config(problem.gemm("fprop"), x.element_size())
    # The kernel reads the bias with unit stride; a strided or expanded bias is copied (K elements).
    bias = None if bias is None else bias.contiguous()
    y = conv2d_fprop(x, weight, bias, problem, config, force_int64=force_int64)
    return y if batched else y.squeeze(0)


def _autocast(input, weight, bias):
    """Under torch.autocast, cast as torch's own conv2d is cast: it is on autocast's lower-precision
    list on CUDA and on the CPU, which casts every floating-point tensor on the autocast device to
    the autocast dtype, except float64 (left alone, so a float64 convolution stays float64)."""
    if not isinstance(input, torch.Tensor) or input.device.type not in ("cuda", "cpu"):
        return input, weight, bias
    device_type = input.device.type
    if not torch.is_autocast_enabled(device_type):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device_type)

    def cast(tensor):
        eligible = (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and tensor.dtype != torch.float64
            and tensor.device.type == device_type
        )
        return tensor.to(dtype) if eligible else tensor

    return cast(input), cast(weight), cast(bias)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Drop-in torch.nn.functional.conv2d computed by triton-conv's implicit-GEMM kernels,
    differentiable in input, weight and bias in reverse and forward mode, to any order (the
    derivatives of each pass are the passes: see autograd.py).

    CUDA tensors, and CPU tensors under TRITON_INTERPRET=1, run the Triton kernels; other CPU
    tensors fall back to torch's conv2d with a one-time warning.
    """
    input, weight, bias = _autocast(input, weight, bias)
    problem = validate(input, weight, bias, stride, padding, dilation, groups)
    if not runs_triton(input):
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    pads = (problem.pad_top, problem.pad_left, problem.pad_bottom, problem.pad_right)
    y = conv2d_op(x, weight, bias, problem.stride, pads, problem.dilation, problem.groups)
    return y if batched else y.squeeze(0)
