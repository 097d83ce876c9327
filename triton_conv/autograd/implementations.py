"""The ops' real implementations (the Triton passes) and fake ones (shapes and layouts only, for
torch.compile). Each checks its arguments first; empty problems return empty (or zero) tensors, as
torch's do, without launching."""

from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .. import passes
from ..arguments import ConvArgumentError
from ..memory_format import empty_in_layout, wants_channels_last
from ..runtime import kernels_run_on, torchs_precision
from .checks import checked_grad_problem, checked_problem, checked_transposed_problem


def _bounded(shape, least: int) -> tuple:
    """A forward op's output shape for its fake tensor: under torch.compile's dynamic shapes each
    symbolic height and width as Max(least, size), `least` being the smallest size the checks accept
    (1; 0 for a transposed convolution whose batch may be empty). The value is the same whenever the
    real call accepts the sizes, but the shape engine gets a lower bound it cannot derive from an
    expression such as H - R + 1: without one, torch 2.13's inductor fails on a view of the output
    ("Exponent must be non-negative"), and a vmapped op's result is such a view
    (pytorch/pytorch#188323); and a size the real call refuses never makes a negative one here."""
    return (*shape[:2], *(s if isinstance(s, int) else torch.sym_max(s, least) for s in shape[2:]))


def _empty_input(input) -> bool:
    """No batch (or no input channels): torch's convolutions then take their empty path on every
    device, whose output is a view of an empty product, contiguous whatever the inputs' layouts,
    and whose gradients are zeros_like(input) and zeros_like(weight), each in its tensor's layout."""
    return statically_known_true(input.numel() == 0)


def _output_layout(input, weight) -> bool:
    return not _empty_input(input) and wants_channels_last(input, weight)


def _check_launchable(op: str, input) -> None:
    """The functions fall back to torch's convolution on a device the kernels cannot run on; a
    program traced, exported or compiled with these ops (torch.jit, torch.export, AOTInductor) calls
    the ops themselves, and Triton failed at the launch ('0 active drivers')."""
    if not kernels_run_on(input.device):
        raise ConvArgumentError(
            f"triton_conv::{op}: input is on the {input.device.type}, where this package's Triton "
            "kernels do not run (they run on CUDA devices, and on the CPU under TRITON_INTERPRET=1 "
            "set before triton is imported); a program traced or exported with them runs only there: "
            "trace or export the torch model for this device, or move the tensors to a CUDA device"
        )


def conv2d(input, weight, bias, stride, padding, dilation, groups):
    problem = checked_problem(input, weight, bias, stride, padding, dilation, groups)
    if input.numel() == 0 or weight.numel() == 0:  # no batch or no input channels: empty, like torch
        return conv2d_fake(input, weight, bias, stride, padding, dilation, groups)
    _check_launchable("conv2d", input)
    with torchs_precision(input, weight, problem.groups):
        return passes.forward(input, weight, bias, problem)


def conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    problem = checked_problem(input, weight, bias, stride, padding, dilation, groups)
    return empty_in_layout(_bounded(problem.output_shape, 1), input, _output_layout(input, weight))


def input_grad(grad_output, input, weight, stride, padding, dilation, groups):
    problem = checked_grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    if input.numel() == 0:
        return input_grad_fake(grad_output, input, weight, stride, padding, dilation, groups)
    _check_launchable("conv2d_input_grad", input)
    # torch's rule for both gradients: channels_last if the input or the weight is.
    channels_last = wants_channels_last(input, weight)
    with torchs_precision(input, weight, problem.groups):
        return passes.input_grad(grad_output, weight, problem, channels_last=channels_last)


def input_grad_fake(grad_output, input, weight, stride, padding, dilation, groups):
    checked_grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    if _empty_input(input):
        return torch.empty_like(input, dtype=grad_output.dtype, device=grad_output.device)
    return empty_in_layout(input.shape, grad_output, wants_channels_last(input, weight))


def weight_grad(grad_output, input, weight, stride, padding, dilation, groups, with_bias):
    """(dw, db); db is an empty tensor when with_bias is False (an op cannot return None)."""
    problem = checked_grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    if input.numel() == 0 or weight.numel() == 0:  # an empty reduction, or nothing to reduce into
        dw, db = weight_grad_fake(grad_output, input, weight, stride, padding, dilation, groups, with_bias)
        return dw.zero_(), db.zero_()
    _check_launchable("conv2d_weight_grad", input)
    channels_last = wants_channels_last(input, weight)
    with torchs_precision(input, weight, problem.groups):
        dw, db = passes.weight_grad(
            grad_output, input, problem, weight.dtype, channels_last=channels_last, need_bias=with_bias
        )
    return dw, db if db is not None else grad_output.new_empty(0)


def weight_grad_fake(grad_output, input, weight, stride, padding, dilation, groups, with_bias):
    checked_grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    if _empty_input(input):
        dw = torch.empty_like(weight)
    else:
        dw = empty_in_layout(weight.shape, weight, wants_channels_last(input, weight))
    return dw, grad_output.new_empty(weight.shape[0] if with_bias else 0)


def conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    problem = checked_transposed_problem(
        input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    if input.numel() == 0:  # no batch (a transposed convolution always has input channels)
        return conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups, dilation)
    _check_launchable("conv_transpose2d", input)
    with torchs_precision(input, weight, problem.groups, transposed=True):
        return passes.input_grad(
            input, weight, problem, channels_last=wants_channels_last(input, weight), bias=bias
        )


def conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups, dilation):
    problem = checked_transposed_problem(
        input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    # As the checks: an empty batch may have an empty output image.
    least = 1 if statically_known_true(problem.batch != 0) else 0
    return empty_in_layout(_bounded(problem.input_shape, least), input, _output_layout(input, weight))
