"""The ops' autograd formulas: one autograd.Function per op, with a backward and a jvp. All three
passes are bilinear, so each derivative is again one of the three ops (and conv_transpose2d's are
the input-gradient pass's): derivatives of any order run on this package's kernels."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ..launchers.common import accumulator_dtype
from ..memory_format import wants_channels_last
from .checks import transposed_geometry
from .ops import conv2d_op, conv_transpose2d_op, input_grad_op, weight_grad_op


def bias_grad(grad_output: torch.Tensor, out_channels: int) -> torch.Tensor:
    """db = dy summed over N, P, Q, accumulated in float32 (float64 for float64), as torch does; zeros
    when the output has no channels (no input channels: torch's output then ignores the bias)."""
    if grad_output.shape[1] != out_channels:
        return grad_output.new_zeros(out_channels)
    return grad_output.sum(dim=(0, 2, 3), dtype=accumulator_dtype(grad_output.dtype)).to(grad_output.dtype)


def _below_autograd(op, *args):
    """The op's implementation, past autograd at this level (each Function's forward). Under a
    torch.func transform the gradient modes are switched back on for the levels below, as functorch
    does for its own autograd.Function support, so that an outer grad or jvp records the op too."""
    if torch._C._are_functorch_transforms_active():
        with (
            torch.enable_grad(),
            forward_ad._set_fwd_grad_enabled(True),
            torch._C._AutoDispatchBelowAutograd(),
        ):
            return op(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def _forward_below_autograd(op):
    """Each Function's forward: its op, with the op's arguments, run by _below_autograd."""

    def forward(*args):
        return _below_autograd(op, *args)

    return staticmethod(forward)


def _add(total, term):
    return term if total is None else total + term


def _geometry(stride, padding, dilation, groups) -> tuple:
    """The conv2d ops' geometry as ctx keeps it (lists: the ops take SymInt[])."""
    return list(stride), list(padding), list(dilation), groups


def _product_rule(bilinear, x, x_t, w, w_t):
    """The tangent of bilinear(x, w): bilinear(x_t, w) + bilinear(x, w_t), each term only where
    its tangent is given; None when neither is."""
    tangent = None
    if x_t is not None:
        tangent = bilinear(x_t, w)
    if w_t is not None:
        tangent = _add(tangent, bilinear(x, w_t))
    return tangent


class Conv2dFunction(torch.autograd.Function):
    """conv2d(input, weight, bias, stride, padding(t, l, b, r), dilation, groups), differentiable in
    input, weight and bias, in reverse and forward mode; the autograd formula of triton_conv::conv2d.
    The bottom/right padding may be negative (a crop: see ConvProblem.from_sides)."""

    generate_vmap_rule = True
    saved_arguments = (0, 1)  # the op's arguments that setup_context saves for backward

    forward = _forward_below_autograd(conv2d_op)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)
        ctx.geometry = _geometry(stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        ctx.out_channels = weight.shape[0]
        ctx.output_shape = output.shape

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
            grad_bias = bias_grad(grad_output, ctx.out_channels)
        return grad_input, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t, *_):
        input, weight = ctx.saved_tensors
        tangent = _product_rule(
            lambda x, w: conv2d_op(x, w, None, *ctx.geometry), input, input_t, weight, weight_t
        )
        if bias_t is not None and ctx.output_shape[1] == ctx.out_channels:
            tangent = _add(tangent, bias_t.view(1, -1, 1, 1).expand(ctx.output_shape))
        return tangent if tangent is not None else input.new_zeros(ctx.output_shape)


def _input_grad_vjp(grad_output, weight, grad_dx, geometry, needs_dy: bool, needs_w: bool):
    """The backward of dx = conv_input(dy, w) (dgrad, and the transposed convolution's forward):
    <conv_input(dy, w), g> = <dy, conv(g, w)> = <w, conv_weight(dy, g)>."""
    grad_dy = conv2d_op(grad_dx, weight, None, *geometry) if needs_dy else None
    grad_w = weight_grad_op(grad_output, grad_dx, weight, *geometry, False)[0] if needs_w else None
    return grad_dy, grad_w


class InputGradFunction(torch.autograd.Function):
    """dx = conv_input(dy, w), linear in dy and in w; `input` only gives dx's shape and layout."""

    generate_vmap_rule = True
    saved_arguments = (0, 2)

    forward = _forward_below_autograd(input_grad_op)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, weight, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(grad_output, weight)
        ctx.save_for_forward(grad_output, input, weight)
        ctx.geometry = _geometry(stride, padding, dilation, groups)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_dx):
        grad_output, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if grad_dx is None:
            return (None,) * 7
        grad_dy, grad_w = _input_grad_vjp(grad_output, weight, grad_dx, ctx.geometry, needs[0], needs[2])
        return grad_dy, None, grad_w, None, None, None, None

    @staticmethod
    def jvp(ctx, grad_output_t, input_t, weight_t, *_):
        grad_output, input, weight = ctx.saved_tensors

        def dgrad(dy, w):
            return input_grad_op(dy, input, w, *ctx.geometry)

        tangent = _product_rule(dgrad, grad_output, grad_output_t, weight, weight_t)
        return tangent if tangent is not None else torch.zeros_like(input)


class WeightGradFunction(torch.autograd.Function):
    """(dw, db) = (conv_weight(dy, x), sum(dy)), linear in dy and in x; `weight` only gives dw's
    shape, dtype and layout."""

    generate_vmap_rule = True
    saved_arguments = (0, 1)

    forward = _forward_below_autograd(weight_grad_op)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, weight, stride, padding, dilation, groups, with_bias = inputs
        ctx.save_for_backward(grad_output, input)
        ctx.save_for_forward(grad_output, input, weight)
        ctx.geometry = _geometry(stride, padding, dilation, groups)
        ctx.with_bias = with_bias
        ctx.out_channels = weight.shape[0]
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_dw, grad_db):
        grad_output, input = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_dy = grad_x = None
        if grad_dw is not None:
            # <conv_weight(dy, x), g> = <dy, conv(x, g)> = <x, conv_input(dy, g)>
            if needs[0]:
                grad_dy = conv2d_op(input, grad_dw, None, *ctx.geometry)
            if needs[1]:
                grad_x = input_grad_op(grad_output, input, grad_dw, *ctx.geometry)
        if needs[0] and ctx.with_bias and grad_db is not None and grad_output.shape[1] == ctx.out_channels:
            grad_dy = _add(grad_dy, grad_db.view(1, -1, 1, 1).expand(grad_output.shape))
        return grad_dy, grad_x, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, grad_output_t, input_t, weight_t, *_):
        grad_output, input, weight = ctx.saved_tensors
        dw_t = db_t = None
        if grad_output_t is not None:
            dw_t, db_t = weight_grad_op(grad_output_t, input, weight, *ctx.geometry, ctx.with_bias)
        if input_t is not None:
            dw_t = _add(dw_t, weight_grad_op(grad_output, input_t, weight, *ctx.geometry, False)[0])
        if dw_t is None:
            dw_t = torch.zeros_like(weight)
        if db_t is None:
            db_t = grad_output.new_zeros(ctx.out_channels if ctx.with_bias else 0)
        return dw_t, db_t


def _vmapped(tensor: torch.Tensor) -> bool:
    """Whether a vmap batches the tensor at any functorch level (under a grad transform the batched
    tensor sits inside a gradient-tracking wrapper)."""
    if torch.compiler.is_dynamo_compiling():
        # Dynamo traces a backward only as compiled autograd's, whose tensors no vmap wraps; it
        # cannot trace functorch's wrapper checks (and AOTAutograd's tracing under vmap runs them).
        return False
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(tensor):
        if functorch.is_batchedtensor(tensor):
            return True
        tensor = functorch.get_unwrapped(tensor)
    return False


def _laid_out(grad, memory_format):
    """The gradient in torch's layout. Under vmap the layout of a sample is not the caller's to see,
    and torch 2.11's vmap cannot clone to channels_last: left as it is there."""
    if grad is None or _vmapped(grad):
        return grad
    return grad.contiguous(memory_format=memory_format)


def _empty_batch_grads(input, weight, grad_output):
    """The input and weight gradients of a transposed convolution of an empty input: zeros, kept in
    the autograd graph (as torch's are) through sums of empty slices, which add exact zeros whatever
    the tensors hold, so that a double backward (create_graph=True) differentiates them as torch's."""
    nothing = sum(tensor.flatten()[:0].sum() for tensor in (input, weight, grad_output))
    return torch.zeros_like(input) + nothing, torch.zeros_like(weight) + nothing


class ConvTranspose2dFunction(torch.autograd.Function):
    """conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation) (the
    order of aten's), differentiable in input, weight and bias, in reverse and forward mode; the
    autograd formula of triton_conv::conv_transpose2d. Its forward is the input-gradient pass of its
    conv2d view applied to x, so its backward is that pass's (InputGradFunction's) plus the bias sum."""

    generate_vmap_rule = True
    saved_arguments = (0, 1)

    forward = _forward_below_autograd(conv_transpose2d_op)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, output_padding, groups, dilation = inputs
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)
        ctx.arguments = (list(stride), list(padding), list(output_padding), groups, list(dilation))
        ctx.geometry = transposed_geometry(stride, padding, output_padding, dilation, groups)
        ctx.has_bias = bias is not None
        ctx.output_shape = output.shape

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        # No batch: the view's geometry may have an empty image; no reduction. A size torch.compile
        # cannot decide (a data-dependent batch) takes the general path, whose ops take empty inputs.
        if statically_known_true(input.numel() == 0):
            grad_input, grad_weight = _empty_batch_grads(input, weight, grad_output)
        else:
            grad_input, grad_weight = _input_grad_vjp(input, weight, grad_output, ctx.geometry, *needs[:2])
            # The ops lay both out by the incoming gradient and the weight; torch by x and the weight.
            layout = torch.channels_last if wants_channels_last(input, weight) else torch.contiguous_format
            grad_input, grad_weight = (_laid_out(grad, layout) for grad in (grad_input, grad_weight))
        grad_bias = bias_grad(grad_output, ctx.output_shape[1]) if ctx.has_bias and needs[2] else None
        return grad_input if needs[0] else None, grad_weight if needs[1] else None, grad_bias, *(None,) * 5

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t, *_):
        input, weight = ctx.saved_tensors
        tangent = _product_rule(
            lambda x, w: conv_transpose2d_op(x, w, None, *ctx.arguments), input, input_t, weight, weight_t
        )
        if bias_t is not None:
            tangent = _add(tangent, bias_t.view(1, -1, 1, 1).expand(ctx.output_shape))
        return tangent if tangent is not None else input.new_zeros(ctx.output_shape)
