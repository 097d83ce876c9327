"""triton_conv.conv2d: torch.nn.functional.conv2d's signature and semantics on Triton kernels.

Every argument is checked here, once, before anything launches; the caller's tensors are only read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .autograd import conv2d_op
from .configs import KernelConfig, default_config
from .launchers.fprop import conv2d_fprop
from .problem import ConvProblem
from .runtime import runs_triton

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(value, name: str, ranks: tuple[int, ...]) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {value.dtype}")
    if value.dim() not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have {expected} dimensions, got shape {tuple(value.shape)}")


def validate(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> ConvProblem:
    """Check every argument of conv2d and return the problem (with a batch dimension)."""
    _check_tensor(input, "input", (3, 4))
    _check_tensor(weight, "weight", (4,))
    if weight.dtype != input.dtype:
        raise TypeError(f"weight's dtype {weight.dtype} differs from input's {input.dtype}")
    if weight.device != input.device:
        raise RuntimeError(f"weight is on device {weight.device} but input is on device {input.device}")
    if bias is not None:
        _check_tensor(bias, "bias", (1,))
        if bias.dtype != input.dtype:
            raise TypeError(f"bias's dtype {bias.dtype} differs from input's {input.dtype}")
        if bias.device != input.device:
            raise RuntimeError(f"bias is on device {bias.device} but input is on device {input.device}")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"bias must have {weight.shape[0]} elements (weight's output channels), got {bias.shape[0]}"
            )
    shape = input.shape if input.dim() == 4 else (1, *input.shape)
    return _problem(shape, weight.shape, stride, padding, dilation, groups)


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
    """ConvProblem.from_shapes, memoised on arguments that hash unambiguously (only valid problems
    are remembered: an invalid one raises anew on every call)."""
    geometry = (_plain(stride), _plain(padding), _plain(dilation), _plain(groups))
    if None in geometry:
        return ConvProblem.from_shapes(shape, weight_shape, stride, padding, dilation, groups)
    key = (tuple(shape), tuple(weight_shape), *geometry)
    problem = _PROBLEMS.get(key)
    if problem is None:
        problem = ConvProblem.from_shapes(shape, weight_shape, stride, padding, dilation, groups)
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
        raise TypeError(f"config must be a KernelConfig, got {type(config).__name__}")
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    if config is None:
        config = default_config(problem.gemm("fprop"), x.element_size())
    y = conv2d_fprop(x, weight, bias, problem, config, force_int64=force_int64)
    return y if batched else y.squeeze(0)


def _autocast(*tensors):
    """Under torch.autocast, run in the autocast dtype as torch's own conv2d does (it is on
    autocast's lower-precision list on CUDA and on the CPU)."""
    first = tensors[0]
    if not isinstance(first, torch.Tensor) or first.device.type not in ("cuda", "cpu"):
        return tensors
    if not torch.is_autocast_enabled(first.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors)


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
    differentiable in input, weight and bias.

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
