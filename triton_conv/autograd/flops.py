"""The ops' FLOP counts for torch.utils.flop_counter.FlopCounterMode (and what reads its registry):
without them the mode counts nothing for this package's ops, and a model's FLOPs (an MFU figure)
drop by every convolution once it is converted.

Each op counts what torch counts for the aten convolution it stands for, with torch's own formula
(conv_flop_count), so a converted model reports torch's numbers: conv2d is aten.convolution; the
transposed convolution is aten.convolution with transposed=True; the input-gradient and
weight-gradient ops are the two halves of aten.convolution_backward (the gradient ops of the
transposed convolution, run with input and grad_output exchanged, count as torch's do too).
"""

from __future__ import annotations

from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from .ops import conv2d_op, conv_transpose2d_op, input_grad_op, weight_grad_op


def _channels_first(shape) -> list:
    """(N, C, ...) as (C, N, ...): the weight gradient is a convolution over the batch."""
    return [shape[1], shape[0], *shape[2:]]


@register_flop_formula(conv2d_op.overloadpacket)
def conv2d_flops(input, weight, *_, out_shape, **__) -> int:
    return conv_flop_count(input, weight, out_shape)


@register_flop_formula(conv_transpose2d_op.overloadpacket)
def conv_transpose2d_flops(input, weight, *_, out_shape, **__) -> int:
    return conv_flop_count(input, weight, out_shape, transposed=True)


@register_flop_formula(input_grad_op.overloadpacket)
def input_grad_flops(grad_output, input, weight, *_, out_shape, **__) -> int:
    return conv_flop_count(grad_output, weight, out_shape, transposed=True)


@register_flop_formula(weight_grad_op.overloadpacket)
def weight_grad_flops(grad_output, input, weight, *_, out_shape, **__) -> int:
    grad_weight_shape = out_shape[0]
    return conv_flop_count(
        _channels_first(input), _channels_first(grad_output), _channels_first(grad_weight_shape)
    )
