"""The convolution as differentiable PyTorch ops: one torch.library op per pass.

    triton_conv::conv2d              y  = conv(x, w) + b                      (fprop)
    triton_conv::conv2d_input_grad   dx = conv_input(dy, w)                   (dgrad)
    triton_conv::conv2d_weight_grad  dw, db = conv_weight(dy, x), sum(dy)     (wgrad)
    triton_conv::conv_transpose2d    y  = conv_input(x, w) + b                (dgrad, bias epilogue)

Each op has a real implementation (the Triton passes), a fake one (shapes only, for torch.compile)
and, at the dispatcher's Autograd key, an autograd.Function with a backward and a jvp. All three
passes are bilinear, so the derivatives of each are again the three passes: backward and forward-mode
AD, double backward (gradient penalties), torch.func.grad/vjp/jvp, gradcheck and gradgradcheck all
run on this package's kernels, and torch.compile still sees one opaque op per pass.

The transposed convolution is the input-gradient pass of its conv2d view (ConvProblem.from_transposed)
applied to x, with a bias: its derivatives are the input-gradient pass's (dx = fprop of dy, dw = wgrad
with x in dy's place), on that view's geometry, whose bottom/right padding is negative (a crop) when
output_padding exceeds padding: the ops accept such a crop. conv1d is conv2d on height-one views.

The Autograd-key registration is done by hand: torch.library.custom_op's register_autograd (torch
2.11 to 2.13) has no forward-mode formula, and its generated autograd.Function fails under
torch.func.grad. The kernel here enters the autograd.Function only when a gradient can be asked
for, and otherwise runs the op below autograd, as custom_op does. Padding reaches the ops as four
ints (top, left, bottom, right): strings are resolved before. The ops check their arguments with
the same checks as triton_conv.conv2d (Conv2dFunction is exported and may be called directly).
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
from torch._functorch.utils import enable_single_level_autograd_function, unwrap_dead_wrappers

from . import passes
from .arguments import ConvArgumentError, check_bias, check_tensor, check_tensors
from .problem import ConvProblem

_LIB = torch.library.Library("triton_conv", "DEF")
_PROBLEMS: dict = {}


def _memoised(key, build) -> ConvProblem:
    """build(), remembered under `key`. The dispatcher hands the ops plain ints (never a bool), or
    SymInts under torch.compile's dynamic shapes, which do not hash: those are checked anew."""
    try:
        problem = _PROBLEMS.get(key)
    except TypeError:
        return build()
    if problem is None:
        problem = build()
        if len(_PROBLEMS) >= 4096:
            _PROBLEMS.clear()
        _PROBLEMS[key] = problem
    return problem


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


def transposed_geometry(stride, padding, output_padding, dilation, groups) -> tuple:
    """The conv2d ops' geometry (stride, padding top/left/bottom/right, dilation, groups) of a
    transposed convolution's conv2d view: padding p - output_padding at the bottom/right."""
    pads = [*padding, padding[0] - output_padding[0], padding[1] - output_padding[1]]
    return list(stride), pads, list(dilation), groups


def _channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def _new(like: torch.Tensor, shape, channels_last: bool) -> torch.Tensor:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return like.new_empty(shape).contiguous(memory_format=layout)


def bias_grad(grad_output: torch.Tensor, out_channels: int) -> torch.Tensor:
    """db = dy summed over N, P, Q, accumulated in float32 (float64 for float64), as torch does; zeros
    when the output has no channels (no input channels: torch's output then ignores the bias)."""
    if grad_output.shape[1] != out_channels:
        return grad_output.new_zeros(out_channels)
    accumulate = torch.float64 if grad_output.dtype == torch.float64 else torch.float32
    return grad_output.sum(dim=(0, 2, 3), dtype=accumulate).to(grad_output.dtype)


# --- the three ops: real and fake implementations -------------------------------------------------
def _conv2d(input, weight, bias, stride, padding, dilation, groups):
    problem = checked_problem(input, weight, bias, stride, padding, dilation, groups)
    if input.numel() == 0 or weight.numel() == 0:  # no batch or no input channels: empty, like torch
        return _conv2d_fake(input, weight, bias, stride, padding, dilation, groups)
    # The kernel reads the bias with unit stride; a strided or expanded bias is copied (K elements).
    return passes.forward(input, weight, None if bias is None else bias.contiguous(), problem)


def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    problem = checked_problem(input, weight, bias, stride, padding, dilation, groups)
    return _new(
        input, problem.output_shape, passes.output_memory_format(input, weight) == torch.channels_last
    )


def _input_grad(grad_output, input, weight, stride, padding, dilation, groups):
    problem = _grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    if input.numel() == 0:
        return _new(grad_output, input.shape, _channels_last(input))
    return passes.input_grad(grad_output, weight, problem, channels_last=_channels_last(input))


def _input_grad_fake(grad_output, input, weight, stride, padding, dilation, groups):
    _grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    return _new(grad_output, input.shape, _channels_last(input))


def _weight_grad(grad_output, input, weight, stride, padding, dilation, groups, with_bias):
    """(dw, db); db is an empty tensor when with_bias is False (an op cannot return None)."""
    problem = _grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    if input.numel() == 0 or weight.numel() == 0:  # an empty reduction, or nothing to reduce into
        dw, db = _weight_grad_fake(grad_output, input, weight, stride, padding, dilation, groups, with_bias)
        return dw.zero_(), db.zero_()
    dw, db = passes.weight_grad(
        grad_output, input, problem, weight.dtype, channels_last=_channels_last(weight), need_bias=with_bias
    )
    return dw, db if db is not None else grad_output.new_empty(0)


def _weight_grad_fake(grad_output, input, weight, stride, padding, dilation, groups, with_bias):
    _grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    dw = _new(weight, weight.shape, _channels_last(weight))
    return dw, grad_output.new_empty(weight.shape[0] if with_bias else 0)


def _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    problem = checked_transposed_problem(
        input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    if input.numel() == 0:  # no batch (a transposed convolution always has input channels)
        return _conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups, dilation)
    channels_last = passes.output_memory_format(input, weight) == torch.channels_last
    # The kernel reads the bias with unit stride; a strided or expanded bias is copied (C_out elements).
    bias = None if bias is None else bias.contiguous()
    return passes.input_grad(input, weight, problem, channels_last=channels_last, bias=bias)


def _conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups, dilation):
    problem = checked_transposed_problem(
        input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    return _new(input, problem.input_shape, passes.output_memory_format(input, weight) == torch.channels_last)


def _grad_problem(grad_output, input, weight, stride, padding, dilation, groups) -> ConvProblem:
    problem = checked_problem(input, weight, None, stride, padding, dilation, groups)
    check_tensor(grad_output, "grad_output", (4,))
    if grad_output.dtype != input.dtype or grad_output.device != input.device:
        raise ConvArgumentError(
            f"grad_output ({grad_output.dtype}, {grad_output.device}) must have input's dtype and "
            f"device ({input.dtype}, {input.device})"
        )
    if tuple(grad_output.shape) != problem.output_shape:
        raise ConvArgumentError(
            f"grad_output must have the output's shape {problem.output_shape}, got {tuple(grad_output.shape)}"
        )
    return problem


# --- their derivatives -------------------------------------------------------------------------
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


def _add(total, term):
    return term if total is None else total + term


class Conv2dFunction(torch.autograd.Function):
    """conv2d(input, weight, bias, stride, padding(t, l, b, r), dilation, groups), differentiable in
    input, weight and bias, in reverse and forward mode; the autograd formula of triton_conv::conv2d.
    The bottom/right padding may be negative (a crop: see ConvProblem.from_sides)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups):
        return _below_autograd(conv2d_op, input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)
        ctx.geometry = (list(stride), list(padding), list(dilation), groups)
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
        tangent = None
        if input_t is not None:
            tangent = conv2d_op(input_t, weight, None, *ctx.geometry)
        if weight_t is not None:
            tangent = _add(tangent, conv2d_op(input, weight_t, None, *ctx.geometry))
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

    @staticmethod
    def forward(grad_output, input, weight, stride, padding, dilation, groups):
        return _below_autograd(input_grad_op, grad_output, input, weight, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, weight, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(grad_output, weight)
        ctx.save_for_forward(grad_output, input, weight)
        ctx.geometry = (list(stride), list(padding), list(dilation), groups)
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
        tangent = None
        if grad_output_t is not None:
            tangent = input_grad_op(grad_output_t, input, weight, *ctx.geometry)
        if weight_t is not None:
            tangent = _add(tangent, input_grad_op(grad_output, input, weight_t, *ctx.geometry))
        return tangent if tangent is not None else torch.zeros_like(input)


class WeightGradFunction(torch.autograd.Function):
    """(dw, db) = (conv_weight(dy, x), sum(dy)), linear in dy and in x; `weight` only gives dw's
    shape, dtype and layout."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, input, weight, stride, padding, dilation, groups, with_bias):
        args = (grad_output, input, weight, stride, padding, dilation, groups, with_bias)
        return _below_autograd(weight_grad_op, *args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, weight, stride, padding, dilation, groups, with_bias = inputs
        ctx.save_for_backward(grad_output, input)
        ctx.save_for_forward(grad_output, input, weight)
        ctx.geometry = (list(stride), list(padding), list(dilation), groups)
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


class ConvTranspose2dFunction(torch.autograd.Function):
    """conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation) (the
    order of aten's), differentiable in input, weight and bias, in reverse and forward mode; the
    autograd formula of triton_conv::conv_transpose2d. Its forward is the input-gradient pass of its
    conv2d view applied to x, so its backward is that pass's (InputGradFunction's) plus the bias sum."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, stride, padding, output_padding, groups, dilation):
        args = (input, weight, bias, stride, padding, output_padding, groups, dilation)
        return _below_autograd(conv_transpose2d_op, *args)

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
        if input.numel() == 0:  # no batch: the view's geometry may have an empty image; no reduction
            grad_input, grad_weight = torch.zeros_like(input), torch.zeros_like(weight)
        else:
            grad_input, grad_weight = _input_grad_vjp(input, weight, grad_output, ctx.geometry, *needs[:2])
        grad_bias = bias_grad(grad_output, ctx.output_shape[1]) if ctx.has_bias and needs[2] else None
        return grad_input if needs[0] else None, grad_weight if needs[1] else None, grad_bias, *(None,) * 5

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t, *_):
        input, weight = ctx.saved_tensors
        tangent = None
        if input_t is not None:
            tangent = conv_transpose2d_op(input_t, weight, None, *ctx.arguments)
        if weight_t is not None:
            tangent = _add(tangent, conv_transpose2d_op(input, weight_t, None, *ctx.arguments))
        if bias_t is not None:
            tangent = _add(tangent, bias_t.view(1, -1, 1, 1).expand(ctx.output_shape))
        return tangent if tangent is not None else input.new_zeros(ctx.output_shape)


# --- registration ---------------------------------------------------------------------------------
def _needs_autograd(args) -> bool:
    """A gradient can be asked for: reverse mode (grad mode on and an input requiring grad, which
    includes torch.func.grad/vjp's wrapped inputs) or forward mode (a dual level is open, as in
    torch.autograd.forward_ad.dual_level or torch.func.jvp)."""
    if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
        return True
    return getattr(forward_ad, "_current_level", -1) >= 0


def _apply(function: type[torch.autograd.Function], args):
    """function.apply, as the dispatcher's Autograd key runs it. Under a torch.func transform,
    autograd.Function.apply hands the call to functorch (custom_function_call), but at this key
    functorch has already handed the op to autograd at the transform's level, as it does for torch's
    own ops: the plain (C++) apply is what records the node there."""
    apply = super(torch.autograd.Function, function).apply
    if not torch._C._are_functorch_transforms_active():
        return apply(*unwrap_dead_wrappers(args))
    with enable_single_level_autograd_function():
        return apply(*args)


def _define(schema: str, implementation, fake, function: type[torch.autograd.Function]):
    name = schema.split("(", 1)[0]
    _LIB.define(schema, tags=(torch.Tag.pt2_compliant_tag,))
    _LIB.impl(name, implementation, "CompositeExplicitAutograd")
    torch.library.register_fake(f"triton_conv::{name}", fake, lib=_LIB)
    op = getattr(torch.ops.triton_conv, name).default

    def autograd_kernel(*args):
        if _needs_autograd(args):
            return _apply(function, args)
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    _LIB.impl(name, autograd_kernel, "Autograd")
    return op


_GEOMETRY = "SymInt[] stride, SymInt[] padding, SymInt[] dilation, SymInt groups"
conv2d_op = _define(
    f"conv2d(Tensor input, Tensor weight, Tensor? bias, {_GEOMETRY}) -> Tensor",
    _conv2d, _conv2d_fake, Conv2dFunction,
)  # fmt: skip
input_grad_op = _define(
    f"conv2d_input_grad(Tensor grad_output, Tensor input, Tensor weight, {_GEOMETRY}) -> Tensor",
    _input_grad, _input_grad_fake, InputGradFunction,
)  # fmt: skip
weight_grad_op = _define(
    f"conv2d_weight_grad(Tensor grad_output, Tensor input, Tensor weight, {_GEOMETRY}, bool with_bias)"
    " -> (Tensor, Tensor)",
    _weight_grad, _weight_grad_fake, WeightGradFunction,
)  # fmt: skip
conv_transpose2d_op = _define(
    "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride, SymInt[] padding, "
    "SymInt[] output_padding, SymInt groups, SymInt[] dilation) -> Tensor",
    _conv_transpose2d, _conv_transpose2d_fake, ConvTranspose2dFunction,
)  # fmt: skip
