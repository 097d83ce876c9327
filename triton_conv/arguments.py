"""What the convolutions accept, checked once before anything launches: the errors they raise, the
integer arguments (stride, padding, dilation, groups) and the tensors.

torch raises RuntimeError for a bad convolution argument, and code written around F.conv2d catches
that; a Python caller expects ValueError or TypeError. The two error classes here are both, and each
message names the argument at fault. The geometry itself (shapes, groups, kernel against padded
input) is checked for ConvProblem by geometry_checks.py, which uses these helpers.
"""

from __future__ import annotations

import operator
import sys

import numpy as np
import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

# Every geometry value the kernels see (a padded extent, a stride, a dilation) is a 32-bit int.
INT32_MAX = 2**31 - 1
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ConvArgumentError(RuntimeError, ValueError):
    """A convolution argument with a wrong value (catchable as torch's RuntimeError or ValueError)."""


class ConvTypeError(RuntimeError, TypeError):
    """A convolution argument of a wrong kind (catchable as torch's RuntimeError or TypeError)."""


def inference_tensor_error(op: str, argument: str) -> ConvArgumentError:
    """torch's refusal to save an inference tensor for backward, naming the op and the argument."""
    return ConvArgumentError(
        f"{op}: {argument} is an inference tensor (made under torch.inference_mode), and inference "
        f"tensors cannot be saved for backward, which this call needs: clone {argument} outside inference "
        "mode to get a normal tensor, or run the call under torch.inference_mode or torch.no_grad"
    )


class ConvDtypeError(ConvTypeError, NotImplementedError):
    """A tensor of a dtype the kernels do not compute in: also a NotImplementedError, which torch
    raises for a dtype its convolution has no kernel for (bool, float8), itself a RuntimeError."""


def as_int(value, name: str) -> int:
    """An int from what torch accepts for an int argument: a Python int, a NumPy integer, or an
    integer tensor of one element, within int64's range. bool is refused, as torch refuses it (and
    so are bool tensors, which torch takes as 0 or 1 in some positions and refuses in others).
    A SymInt (torch.compile's or torch.export's symbolic size: an output_padding that
    ConvTranspose2d computed from `output_size`) is kept as it is: reading its value would pin the
    size to it, a guard and a recompile per value that torch's own convolution does not make."""
    if isinstance(value, torch.SymInt):
        return value
    number = _as_int(value, name)
    if not -(2**63) <= number < 2**63:
        raise ConvArgumentError(f"{name}={number} is out of range: torch takes 64-bit ints")
    return number


def _as_int(value, name: str) -> int:
    if isinstance(value, torch.Tensor):  # any one-element integer tensor, of any rank, as torch takes it
        if value.numel() != 1 or value.dtype.is_floating_point or value.is_complex():
            raise ConvTypeError(
                f"{name} must be an int, got a {value.dtype} tensor of shape {tuple(value.shape)}"
            )
        if value.dtype == torch.bool:
            raise ConvTypeError(f"{name} must be an int, got a bool tensor")
        return int(value.item())
    if isinstance(value, (bool, np.bool_)):
        raise ConvTypeError(f"{name} must be an int, got {value!r}")
    if type(value) is int:  # as it is: torch.compile shows this code a symbolic size as an int
        return value
    try:
        return operator.index(value)  # int, NumPy integers, anything else with __index__
    except TypeError:
        raise ConvTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


def int_tuple(value, name: str, count: int) -> tuple[int, ...]:
    """`count` ints from one int-like value (repeated) or a tuple/list of 1 or `count` of them."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (1, count):
            raise ConvTypeError(
                f"{name} must be an int or {count} ints, got {len(value)} values: {tuple(value)!r}"
            )
        ints = tuple(as_int(v, name) for v in value)
        return ints * count if len(ints) == 1 else ints
    if isinstance(value, str):
        raise ConvTypeError(f"{name} must be an int or {count} ints, got the string {value!r}")
    return (as_int(value, name),) * count


def is_dtensor(value) -> bool:
    # None before DTensor's import; while another thread imports it, the module is in sys.modules
    # without the class yet (and no DTensor can exist)
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    return dtensor is not None and isinstance(value, dtensor)


def check_tensor(value, name: str, ranks: tuple[int, ...]) -> None:
    if not isinstance(value, torch.Tensor):
        raise ConvTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided or value.is_nested:
        # A nested tensor of strided layout has no sizes to read: reading them raised torch's
        # internal "NestedTensorImpl doesn't support sizes", naming no argument.
        kind = "a nested tensor" if value.is_nested else f"layout {value.layout}"
        raise ConvTypeError(f"{name} must be a dense (strided) tensor, got {kind}")
    if is_dtensor(value):
        # Without this, DTensor's dispatch refuses the op later ("does not have a sharding
        # strategy registered"), naming the op, not the argument.
        raise ConvTypeError(
            f"{name} is a DTensor: triton-conv's ops have no sharding rules; convolve its local "
            "tensor (to_local() or full_tensor()), or leave this layer on torch's convolution"
        )
    if value.dtype not in FLOAT_DTYPES:
        # A quantized tensor reaches a converted conv when torch.ao quantized the model after
        # convert_model: its prepare and convert find convs by torch's classes and skip ours.
        advice = (
            " (a quantized tensor: triton-conv has no integer kernels; quantize the torch model, "
            "before convert_model or without it)"
            if value.is_quantized
            else ""
        )
        raise ConvDtypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {value.dtype}{advice}"
        )
    if value.dim() not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ConvArgumentError(f"{name} must have {expected} dimensions, got shape {tuple(value.shape)}")


def check_tensors(input, weight, bias, input_ranks: tuple[int, ...], weight_rank: int) -> None:
    """Kinds, dtypes, ranks and devices of a convolution's tensors (shapes are ConvProblem's)."""
    check_tensor(input, "input", input_ranks)
    check_tensor(weight, "weight", (weight_rank,))
    tensors = [("weight", weight)]
    if bias is not None:
        check_tensor(bias, "bias", (1,))
        tensors.append(("bias", bias))
    for name, tensor in tensors:
        if tensor.dtype != input.dtype:
            raise ConvTypeError(f"{name}'s dtype {tensor.dtype} differs from input's {input.dtype}")
        if tensor.device != input.device:
            raise ConvArgumentError(
                f"{name} is on device {tensor.device} but input is on device {input.device}"
            )


def size_check_fails(condition) -> bool:
    """Whether a size check fails. With ints (or torch.jit.trace's 0-d tensors), the check itself;
    with the symbolic sizes of torch.compile(dynamic=True) or torch.export, only when it fails for
    every size the tracer allows: a branch on a symbolic size would add a range guard that torch's
    own convolution does not, or fail outright on a data-dependent size, and the op's real call
    checks the sizes it is given."""
    if isinstance(condition, torch.Tensor):
        return bool(condition)
    return statically_known_true(condition)


def check_bias(bias, channels: int, what: str) -> None:
    """A bias has one element per output channel (`what` says which channels those are)."""
    if bias is not None and size_check_fails(bias.shape[0] != channels):
        raise ConvArgumentError(f"bias must have {channels} elements ({what}), got {bias.shape[0]}")
