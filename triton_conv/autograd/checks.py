"""The ops' argument checks: every check of triton_conv.conv2d's, on the ops' plain arguments, and
the problem each op runs (memoised)."""

from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ..arguments import ConvArgumentError, check_bias, check_tensor, check_tensors
from ..memo import BoundedMemo, hashable
from ..problem import ConvProblem

_PROBLEMS = BoundedMemo()


def _memoised(key, build) -> ConvProblem:
    """build(), remembered under `key`. The dispatcher hands the ops plain ints (never a bool), or
    SymInts under torch.compile's dynamic shapes, which do not hash: those are checked anew. So is
    every problem built while torch.compile or torch.export traces: build's canonical() leaves the
    problem as it is then (ConvProblem.canonical), and remembered it would reach the eager calls of
    the same shapes uncut (export traces with plain ints)."""
    if torch.compiler.is_compiling() or not hashable(key):
        return build()
    return _PROBLEMS.get(key, build)


def checked_problem(input, weight, bias, stride, padding, dilation, groups) -> ConvProblem:
    """The op's problem after every check of its tensors and geometry, in the canonical form the
    passes run (memoised on plain ints)."""
    check_tensors(input, weight, bias, (4,), 4)
    key = ("conv2d", input.shape, weight.shape, *stride, None, *padding, None, *dilation, groups)
    problem = _memoised(
        key,
        lambda: ConvProblem.from_sides(
            input.shape, weight.shape, stride, padding, dilation, groups
        ).canonical(),
    )
    check_bias(bias, weight.shape[0], "weight's output channels")
    return problem


def checked_transposed_problem(
    input, weight, bias, stride, padding, output_padding, groups, dilation
) -> ConvProblem:
    """The conv2d view of conv_transpose2d's arguments after every check, canonical (memoised)."""
    check_tensors(input, weight, bias, (4,), 4)
    key = ("transposed", input.shape, weight.shape, *stride, None, *padding, None, *output_padding,
           None, *dilation, groups)  # fmt: skip
    problem = _memoised(
        key,
        lambda: ConvProblem.from_transposed(
            input.shape, weight.shape, stride, padding, output_padding, dilation, groups
        ).canonical(),
    )
    check_bias(bias, problem.in_channels, "weight's output channels x groups")
    return problem


def checked_grad_problem(grad_output, input, weight, stride, padding, dilation, groups) -> ConvProblem:
    """The gradient ops' problem: conv2d's checks, and grad_output's dtype, device and shape."""
    problem = checked_problem(input, weight, None, stride, padding, dilation, groups)
    check_tensor(grad_output, "grad_output", (4,))
    if grad_output.dtype != input.dtype or grad_output.device != input.device:
        raise ConvArgumentError(
            f"grad_output ({grad_output.dtype}, {grad_output.device}) must have input's dtype and "
            f"device ({input.dtype}, {input.device})"
        )
    # Size by size, raising only where they provably differ (as geometry_checks compares sizes):
    # under dynamic shapes grad_output has the forward fake's bounded sizes (Max(1, P)), and
    # comparing them with P would add a guard, or refuse in the backward's trace a size that the
    # forward's real call names.
    # (The geometry may be symbolic where the tensors are not: the output shape is then too.)
    if grad_output._has_symbolic_sizes_strides or not all(type(size) is int for size in problem.output_shape):
        pairs = zip(grad_output.shape, problem.output_shape)
        differs = any(statically_known_true(got != want) for got, want in pairs)
    else:  # plain ints on both sides (the usual eager call): one tuple comparison
        differs = tuple(grad_output.shape) != problem.output_shape
    if differs:
        raise ConvArgumentError(
            f"grad_output must have the output's shape {problem.output_shape}, got {tuple(grad_output.shape)}"
        )
    return problem


def transposed_geometry(stride, padding, output_padding, dilation, groups) -> tuple:
    """The conv2d ops' geometry (stride, padding top/left/bottom/right, dilation, groups) of a
    transposed convolution's conv2d view: padding p - output_padding at the bottom/right. Each
    argument is one value for both axes or two (as the op takes them)."""
    padding, output_padding = _pair(padding), _pair(output_padding)
    pads = [*padding, padding[0] - output_padding[0], padding[1] - output_padding[1]]
    return _pair(stride), pads, _pair(dilation), groups


def _pair(values) -> list:
    values = list(values)
    return values * 2 if len(values) == 1 else values
