"""The geometry checks torch makes on a convolution's shapes and integer arguments, before any tensor
is read: the work behind ConvProblem.from_shapes, from_sides and from_transposed (problem.py).

Each check returns ConvProblem's fields in order (batch, in_channels, height, width, out_channels,
kernel_h, kernel_w, stride, pad_top, pad_left, pad_bottom, pad_right, dilation, groups), or raises
ConvArgumentError / ConvTypeError (arguments.py) naming the argument at fault.
"""

from __future__ import annotations

import numbers

import torch

from .arguments import INT32_MAX, ConvArgumentError, ConvTypeError, as_int, int_tuple
from .arguments import size_check_fails as _fails


def _is_traced_size(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()


def _dimension(value, name: str):
    """One size of a shape: an int; a SymInt when torch.compile traces with dynamic shapes; a 0-d
    integer tensor under torch.jit.trace, which records sizes as tensors; a NumPy integer (a shape
    written by hand), as torch.Size takes it."""
    if isinstance(value, torch.SymInt):
        return value
    if _is_traced_size(value) or (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        return int(value)
    raise ConvTypeError(f"{name}'s dimensions must be integers, got {value!r}")


def checked_shape(value, rank: int, name: str) -> tuple[int, ...]:
    try:
        shape = tuple(d if type(d) is int else _dimension(d, name) for d in value)
    except ConvTypeError:
        raise
    except TypeError as error:  # not a sequence of sizes at all
        raise ConvTypeError(f"{name} must be a shape of {rank} integers, got {value!r}") from error
    if len(shape) != rank or not all(d >= 0 for d in shape):
        raise ConvArgumentError(f"{name} must have {rank} non-negative dimensions, got shape {shape}")
    return shape


def conv2d_fields(input_shape, weight_shape, stride, padding, dilation, groups) -> tuple:
    """F.conv2d's checks: padding is an int, a pair, 'same' or 'valid' (see ConvProblem.from_shapes)."""
    weight_shape = checked_shape(weight_shape, 4, "weight")
    stride = int_tuple(stride, "stride", 2)
    dilation = int_tuple(dilation, "dilation", 2)
    if not isinstance(padding, str):
        pad_h, pad_w = int_tuple(padding, "padding", 2)
        pads = (pad_h, pad_w, pad_h, pad_w)
    elif padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding != "same":
        raise ConvArgumentError(f"padding must be 'same', 'valid', an int or a pair, got {padding!r}")
    elif stride != (1, 1):
        raise ConvArgumentError(f"padding='same' needs stride 1, got stride={stride}")
    elif 0 in weight_shape[2:]:
        raise ConvArgumentError(
            f"padding='same' needs a non-empty kernel, got weight of shape {weight_shape}"
        )
    else:
        # torch pads the extra row/column of an even kernel at the bottom/right.
        total_h = dilation[0] * (weight_shape[2] - 1)
        total_w = dilation[1] * (weight_shape[3] - 1)
        pads = (total_h // 2, total_w // 2, total_h - total_h // 2, total_w - total_w // 2)
    return sided_conv2d_fields(input_shape, weight_shape, stride, pads, dilation, groups)


def sided_conv2d_fields(input_shape, weight_shape, stride, padding, dilation, groups) -> tuple:
    """The same checks, padding given as four sides (see ConvProblem.from_sides)."""
    batch, in_channels, height, width = checked_shape(input_shape, 4, "input")
    out_channels, channels_per_group, kernel_h, kernel_w = checked_shape(weight_shape, 4, "weight")
    stride = int_tuple(stride, "stride", 2)
    dilation = int_tuple(dilation, "dilation", 2)
    pads = int_tuple(padding, "padding", 4)
    groups = as_int(groups, "groups")
    if min(stride) <= 0:
        raise ConvArgumentError(f"stride must be positive, got {stride}")
    if min(dilation) <= 0:
        raise ConvArgumentError(f"dilation must be positive, got {dilation}")
    if min(pads[:2]) < 0:
        raise ConvArgumentError(f"padding must be non-negative, got {pads}")
    if groups <= 0:
        raise ConvArgumentError(f"groups must be positive, got {groups}")
    if _fails(out_channels < groups) or _fails(out_channels % groups != 0):
        raise ConvArgumentError(
            f"groups={groups} must divide the weight's output channels ({out_channels}), which "
            f"cannot be 0: weight has shape {tuple(weight_shape)}"
        )
    if _fails(in_channels % groups != 0):
        raise ConvArgumentError(f"groups={groups} must divide the input channels ({in_channels})")
    if _fails(channels_per_group * groups != in_channels):
        raise ConvArgumentError(
            f"weight expects {channels_per_group * groups} input channels "
            f"({channels_per_group} per group x groups={groups}), but input has {in_channels}"
        )
    extent_h = dilation[0] * (kernel_h - 1) + 1
    extent_w = dilation[1] * (kernel_w - 1) + 1
    padded_h, padded_w = height + pads[0] + pads[2], width + pads[1] + pads[3]
    if _fails(padded_h < extent_h) or _fails(padded_w < extent_w):
        kernel = f"{extent_h}x{extent_w}: {kernel_h}x{kernel_w}, dilation={dilation}"
        raise ConvArgumentError(
            f"weight's dilated kernel ({kernel}) is larger than the padded input "
            f"({padded_h}x{padded_w}: padding={pads})"
        )
    if any(_fails(size > INT32_MAX) for size in (padded_h, padded_w, extent_h, extent_w)):
        raise ConvArgumentError(
            f"padding={pads} and dilation={dilation} make a padded input of {padded_h}x{padded_w} "
            f"and a kernel extent of {extent_h}x{extent_w}; the kernels take at most {INT32_MAX}"
        )
    if _fails(in_channels != 0) and (kernel_h == 0 or kernel_w == 0):
        raise ConvArgumentError(f"weight must have a non-empty kernel, got shape {tuple(weight_shape)}")
    if _fails(in_channels != 0) and _fails(batch != 0) and (_fails(height == 0) or _fails(width == 0)):
        raise ConvArgumentError(
            f"input has an empty image (shape {tuple(input_shape)}): like torch, only an empty "
            "batch or zero input channels are accepted"
        )
    return (
        batch, in_channels, height, width, out_channels, kernel_h, kernel_w,
        stride, *pads, dilation, groups,
    )  # fmt: skip


def transposed_view_fields(input_shape, weight_shape, stride, padding, output_padding, dilation, groups):
    """conv_transpose2d's checks, as torch makes them, and its conv2d view (see
    ConvProblem.from_transposed)."""
    batch, in_channels, height, width = checked_shape(input_shape, 4, "input")
    weight_shape = checked_shape(weight_shape, 4, "weight")
    weight_in, out_per_group, kernel_h, kernel_w = weight_shape
    stride = int_tuple(stride, "stride", 2)
    pads = int_tuple(padding, "padding", 2)
    output_padding = int_tuple(output_padding, "output_padding", 2)
    dilation = int_tuple(dilation, "dilation", 2)
    groups = as_int(groups, "groups")
    for name, values, least in (
        ("stride", stride, 1), ("dilation", dilation, 1), ("padding", pads, 0),
        ("output_padding", output_padding, 0), ("groups", (groups,), 1),
    ):  # fmt: skip
        if any(_fails(value < least) for value in values):
            raise ConvArgumentError(f"{name} must be {'positive' if least else 'non-negative'}, got {values}")
    if any(_fails(o >= max(s, d)) for o, s, d in zip(output_padding, stride, dilation)):
        raise ConvArgumentError(
            f"output_padding={output_padding} must be smaller than stride={stride} or "
            f"dilation={dilation} (on each axis)"
        )
    if _fails(weight_in < groups) or _fails(weight_in % groups != 0):
        raise ConvArgumentError(
            f"groups={groups} must divide the weight's input channels ({weight_in}, its first "
            f"dimension), which cannot be 0: weight has shape {weight_shape}"
        )
    if _fails(in_channels != weight_in):
        raise ConvArgumentError(f"weight expects {weight_in} input channels, but input has {in_channels}")
    if 0 in (out_per_group, kernel_h, kernel_w):
        raise ConvArgumentError(f"weight must have output channels and a kernel, got shape {weight_shape}")
    if _fails(batch != 0) and (_fails(height == 0) or _fails(width == 0)):
        raise ConvArgumentError(
            f"input has an empty image (shape {tuple(input_shape)}): like torch, only an empty batch "
            "is accepted"
        )
    extents = [d * (k - 1) + 1 for d, k in zip(dilation, (kernel_h, kernel_w))]
    out_h, out_w = (
        (size - 1) * s - 2 * p + e + o
        for size, s, p, e, o in zip((height, width), stride, pads, extents, output_padding)
    )
    least = 1 if _fails(batch != 0) else 0  # as torch: an empty batch may have an empty output image
    padded = (out_h + 2 * pads[0], out_w + 2 * pads[1], *extents)
    if _fails(out_h < least) or _fails(out_w < least) or any(_fails(size > INT32_MAX) for size in padded):
        raise ConvArgumentError(
            f"the output would be {out_h}x{out_w} for an input of {height}x{width} (stride={stride}, "
            f"padding={pads}, dilation={dilation}, output_padding={output_padding}): it must be at "
            f"least {least}x{least}, and padded output and kernel extent at most {INT32_MAX}"
        )
    return (
        batch, out_per_group * groups, out_h, out_w, in_channels, kernel_h, kernel_w, stride,
        pads[0], pads[1], pads[0] - output_padding[0], pads[1] - output_padding[1], dilation, groups,
    )  # fmt: skip
