"""The convolution as a differentiable PyTorch op.

`Conv2dFunction` holds the one definition of forward, setup_context and backward. The same
setup_context and backward are registered as the autograd formula of the torch.library custom op
`triton_conv::conv2d`, which is what triton_conv.conv2d calls: torch.compile sees one opaque op
with a fake (shape-only) implementation, and the backward runs two more custom ops, one per pass.
Padding reaches the ops as four ints (top, left, bottom, right): strings are resolved before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import passes
from .problem import ConvProblem


def _problem(input_shape, weight_shape, stride, padding, dilation, groups) -> ConvProblem:
    top, left, bottom, right = padding
    return ConvProblem(
        *input_shape, weight_shape[0], weight_shape[2], weight_shape[3],
        tuple(stride), top, left, bottom, right, tuple(dilation), groups,
    )  # fmt: skip


def _channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


# --- the three passes as custom ops -------------------------------------------------------------
@torch.library.custom_op("triton_conv::conv2d", mutates_args=())
def conv2d_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    problem = _problem(input.shape, weight.shape, stride, padding, dilation, groups)
    return passes.forward(input, weight, bias, problem)


@conv2d_op.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    problem = _problem(input.shape, weight.shape, stride, padding, dilation, groups)
    layout = passes.output_memory_format(input, weight)
    return input.new_empty(problem.output_shape).contiguous(memory_format=layout)


@torch.library.custom_op("triton_conv::conv2d_input_grad", mutates_args=())
def input_grad_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    problem = _problem(input.shape, weight.shape, stride, padding, dilation, groups)
    return passes.input_grad(grad_output, weight, problem, channels_last=_channels_last(input))


@input_grad_op.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups):
    layout = torch.channels_last if _channels_last(input) else torch.contiguous_format
    return grad_output.new_empty(input.shape).contiguous(memory_format=layout)


@torch.library.custom_op("triton_conv::conv2d_weight_grad", mutates_args=())
def weight_grad_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    with_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dw, db); db is an empty tensor when with_bias is False (an op cannot return None)."""
    problem = _problem(input.shape, weight.shape, stride, padding, dilation, groups)
    dw, db = passes.weight_grad(
        grad_output, input, problem, weight.dtype, channels_last=_channels_last(weight), need_bias=with_bias
    )
    return dw, db if db is not None else grad_output.new_empty(0)


@weight_grad_op.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups, with_bias):
    layout = torch.channels_last if _channels_last(weight) else torch.contiguous_format
    dw = weight.new_empty(weight.shape).contiguous(memory_format=layout)
    return dw, grad_output.new_empty(weight.shape[0] if with_bias else 0)


# --- autograd -----------------------------------------------------------------------------------
class Conv2dFunction(torch.autograd.Function):
    """conv2d(input, weight, bias, stride, padding(t, l, b, r), dilation, groups), differentiable
    in input, weight and bias; backward computes only the gradients that are asked for."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups):
        return conv2d_op(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(input, weight)
        ctx.geometry = (list(stride), list(padding), list(dilation), groups)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_input = grad_weight = grad_bias = None
        if needs[0]:
            grad_input = input_grad_op(grad_output, input, weight, *ctx.geometry)
        with_bias = ctx.has_bias and needs[2]
        if needs[1]:  # the bias gradient rides along in the weight-gradient kernel
            grad_weight, db = weight_grad_op(grad_output, input, weight, *ctx.geometry, with_bias)
            grad_bias = db if with_bias else None
        elif with_bias:
            grad_bias = grad_output.sum(dim=(0, 2, 3), dtype=torch.float32).to(grad_output.dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None


conv2d_op.register_autograd(Conv2dFunction.backward, setup_context=Conv2dFunction.setup_context)
