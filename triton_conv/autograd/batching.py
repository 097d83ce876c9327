"""The ops' vmap batching rules: the vmapped dimension folded into the problem, one launch per op.

torch.func.vmap over one of the ops (and so vmap of grad, per-sample gradients, jacrev, jacfwd,
hessian) would otherwise run torch's BatchedFallback, one launch per sample. Each rule here runs the
op once on a folded problem, as this package folds a batch into the GEMM's M dimension, B being the
vmapped size:

- only the activation-like tensors batched (input; grad_output, and input which only gives a shape):
  B joins N, a reshape that is a view where the strides allow it;
- weight batched, activation not: each group's output channels of the B samples side by side, so
  the groups stay g (group-major order (g, B, K/g), torch's own rule for grouped convolutions);
- both batched (per-sample weights, or weight_grad's per-sample gradients): B joins the channels,
  g·B groups;
- only the bias batched: the convolution once, the B biases added after.

Every rule first runs the op's own checks on one sample's tensors, so a caller sees the op's error
for the per-sample shapes, never one about the folded problem. Where g·B groups would pass the
grid's limit, the passes run the folded problem in chunks of groups (passes.group_chunks).
"""

from __future__ import annotations

import torch

from .checks import checked_grad_problem, checked_problem, checked_transposed_problem
from .ops import conv2d_op, conv_transpose2d_op, input_grad_op, weight_grad_op


# --- moving the vmapped dimension -----------------------------------------------------------------
def _front(tensor, bdim, batch):
    """The tensor with the vmapped dimension first; an unbatched one expanded to `batch` (a view)."""
    return tensor.movedim(bdim, 0) if bdim is not None else tensor.expand(batch, *tensor.shape)


def _mergeable(tensor, dim) -> bool:
    """Dims dim and dim + 1 merge into one without a copy."""
    sizes, strides = tensor.shape, tensor.stride()
    return 1 in (sizes[dim], sizes[dim + 1]) or strides[dim] == strides[dim + 1] * sizes[dim + 1]


def _into(tensor, bdim, dim):
    """The vmapped dimension merged into the per-sample dimension `dim`, outer (a view when the
    strides allow, else a copy)."""
    return tensor.movedim(bdim, dim).flatten(dim, dim + 1)


def _into_batch(tensor, bdim):
    """The vmapped dimension merged into N, outer: a view where the strides allow, else a copy, as
    torch's own rule folds it. Folded N-major (a view of an (N, B, ...) tensor) each sample's result
    would be strided by B (`.view(-1)` on it fails where torch's works)."""
    return _into(tensor, bdim, 0)


def _split_batch(tensor, batch):
    """_into_batch's result split again: (tensor, its vmapped dimension: 0)."""
    return tensor.unflatten(0, (batch, tensor.shape[0] // batch)), 0


def _outof(tensor, dim, batch):
    """Dimension `dim` of size B·X split into (B, X)."""
    return tensor.unflatten(dim, (batch, tensor.shape[dim] // batch))


def _group_major(tensor, dim, groups):
    """Dims (B, g·X) at dim, dim + 1 merged into one of order (g, B, X): each group's channels of
    all samples side by side, so that a convolution with g groups serves all samples."""
    channels = tensor.shape[dim + 1]
    tensor = tensor.unflatten(dim + 1, (groups, channels // groups)).transpose(dim, dim + 1)
    return tensor.flatten(dim, dim + 2)


def _ungroup(tensor, dim, groups, batch):
    """_group_major's inverse: dimension `dim` of order (g, B, X) split into (B, g·X)."""
    per_group = tensor.shape[dim] // (groups * batch)
    tensor = tensor.unflatten(dim, (groups, batch, per_group)).transpose(dim, dim + 1)
    return tensor.flatten(dim + 1, dim + 2)


def _batch_first(tensor, dim):
    """(the result with its vmapped dimension `dim` moved first, 0): a view, the same tensor for
    vmap's caller. Left at `dim`, vmap moved it itself, and torch.export (non-strict) recorded that
    move as an operation on a constant it then refused (a weight-vmapped ensemble did not export)."""
    return tensor.movedim(dim, 0), 0


def _carrier(tensor, bdim, dim, batch):
    """A stand-in for an argument the op reads only for its shape and layout (input_grad's input,
    weight_grad's weight) with the vmapped dimension folded into `dim`: the tensor's own view where
    that needs no copy (it keeps the layout), else an expanded scalar, which takes no memory."""
    if bdim is not None:
        moved = tensor.movedim(bdim, dim)
        if _mergeable(moved, dim):
            return moved.flatten(dim, dim + 1)
        tensor = moved.select(dim, 0)
    shape = list(tensor.shape)
    shape[dim] *= batch
    return tensor.new_empty(()).expand(shape)


def _sample(tensor, bdim):
    return tensor if bdim is None else tensor.select(bdim, 0)


def _samples(args, in_dims, batch) -> list:
    """One sample's arguments, for the op's checks: a view of each batched tensor's first sample;
    with an empty batch, meta tensors of the per-sample shapes (nothing runs then)."""
    if batch:
        return [_sample(arg, bdim) for arg, bdim in zip(args, in_dims)]
    return [
        _meta_sample(arg, bdim) if isinstance(arg, torch.Tensor) else arg for arg, bdim in zip(args, in_dims)
    ]


def _meta_sample(tensor, bdim):
    shape = tensor.shape if bdim is None else tensor.movedim(bdim, 0).shape[1:]
    return torch.empty(shape, dtype=tensor.dtype, device="meta")


# --- the folded problems --------------------------------------------------------------------------
def _with_batched_bias(y, y_dim, bias, bias_dim, batch):
    """y plus a batched bias, broadcast over N and the image (torch's output of a convolution with
    no input channels has no channels, and no bias: an unbatched y is then only expanded to B)."""
    rows = bias.movedim(bias_dim, 0).view(batch, 1, -1, 1, 1)
    if y_dim is not None:
        y = y.movedim(y_dim, 0)
    if y.shape[-3] != rows.shape[2]:
        y = y if y_dim is not None else y.unsqueeze(0)
        return y.expand(batch, *y.shape[1:]), 0
    # An unbatched y is broadcast by the add, not unsqueezed first, as torch's rule adds: under an
    # outer vmap (of the weight) an unsqueezed y's size-1 dimension let the add order the two
    # vmapped dimensions the other way round, and a .view() of the result failed.
    return y + rows, 0


def _fold_forward(batch, in_dims, input, weight, bias, run, weight_alone, groups):
    """conv2d and conv_transpose2d: run(x, w, b, groups) is the op; weight_alone(w, bdim) folds B
    weights into one of group-major output channels, for a single input."""
    bx, bw, bb = in_dims[:3]
    if bw is None:
        if bx is None:
            y, y_dim = run(input, weight, None, groups), None
        else:
            y, y_dim = _split_batch(
                run(_into_batch(input, bx), weight, bias if bb is None else None, groups), batch
            )
        return _with_batched_bias(y, y_dim, bias, bb, batch) if bb is not None else (y, y_dim)
    bias_rows = None if bias is None else _front(bias, bb, batch)
    if bx is None:
        b = None if bias is None else _group_major(bias_rows, 0, groups)
        return _batch_first(_ungroup(run(input, weight_alone(weight, bw), b, groups), 1, groups, batch), 1)
    b = None if bias is None else bias_rows.flatten()
    y = run(_into(input, bx, 1), _into(weight, bw, 0), b, groups * batch)
    return _batch_first(_outof(y, 1, batch), 1)


def _fold_conv2d(batch, in_dims, input, weight, bias, stride, padding, dilation, groups):
    def run(x, w, b, groups):
        return conv2d_op(x, w, b, stride, padding, dilation, groups)

    def weight_alone(w, bdim):  # (B, K, C/g, R, S) -> ((g, B, K/g), C/g, R, S)
        return _group_major(w.movedim(bdim, 0), 0, groups)

    return _fold_forward(batch, in_dims, input, weight, bias, run, weight_alone, groups)


def _fold_conv_transpose2d(
    batch, in_dims, input, weight, bias, stride, padding, output_padding, groups, dilation
):
    def run(x, w, b, groups):
        return conv_transpose2d_op(x, w, b, stride, padding, output_padding, groups, dilation)

    def weight_alone(w, bdim):  # (B, C_in, C_out/g, R, S) -> (C_in, (B, C_out/g), R, S)
        return _into(w, bdim, 1)

    return _fold_forward(batch, in_dims, input, weight, bias, run, weight_alone, groups)


def _fold_input_grad(batch, in_dims, grad_output, input, weight, stride, padding, dilation, groups):
    bdy, bx, bw = in_dims[:3]

    def run(dy, x, w, groups):
        return input_grad_op(dy, x, w, stride, padding, dilation, groups)

    if bw is None and bdy is None:  # only input, a shape carrier, is batched: one result for all
        return run(grad_output, _sample(input, bx), weight, groups), None
    if bw is None:
        dy = _into_batch(grad_output, bdy)
        return _split_batch(run(dy, _carrier(input, bx, 0, batch), weight, groups), batch)
    x = _carrier(input, bx, 1, batch)
    if bdy is None:  # (K, (B, C/g), R, S): each group's input channels of all samples side by side
        return _batch_first(_ungroup(run(grad_output, x, _into(weight, bw, 1), groups), 1, groups, batch), 1)
    dx = run(_into(grad_output, bdy, 1), x, _into(weight, bw, 0), groups * batch)
    return _batch_first(_outof(dx, 1, batch), 1)


def _fold_weight_grad(
    batch, in_dims, grad_output, input, weight, stride, padding, dilation, groups, with_bias
):
    bdy, bx, bw = in_dims[:3]

    def run(dy, x, w, groups):
        return weight_grad_op(dy, x, w, stride, padding, dilation, groups, with_bias)

    if bdy is None and bx is None:  # only weight, a shape carrier, is batched: one result for all
        return run(grad_output, input, _sample(weight, bw), groups), (None, None)
    if bx is None:  # B gradients against one input: group-major output channels
        dy = _group_major(_front(grad_output, bdy, batch).transpose(0, 1), 1, groups)
        dw, db = run(dy, input, _carrier(weight, bw, 0, batch), groups)
        db = _ungroup(db, 0, groups, batch) if with_bias else db
        return (_ungroup(dw, 0, groups, batch), db), (0, 0 if with_bias else None)
    if bdy is None:  # one gradient against B inputs: group-major input channels; db is shared
        x = _group_major(_front(input, bx, batch).transpose(0, 1), 1, groups)
        dw, db = run(grad_output, x, _carrier(weight, bw, 1, batch), groups)
        dw, _ = _batch_first(_outof(dw, 1, batch), 1)
        return (dw, db), (0, None)
    dy, x = _into(grad_output, bdy, 1), _into(input, bx, 1)
    dw, db = run(dy, x, _carrier(weight, bw, 0, batch), groups * batch)
    db = _outof(db, 0, batch) if with_bias else db
    return (_outof(dw, 0, batch), db), (0, 0 if with_bias else None)


# --- the rules ------------------------------------------------------------------------------------
def _rule(fold, check):
    """A batching rule: the op's checks on one sample (`check` returns the per-sample output
    shapes), an empty result for an empty batch, else `fold`."""

    def rule(info, in_dims, *args):
        batch = info.batch_size  # in_dims of a list argument is a list of Nones: made one None
        in_dims = [bdim if isinstance(arg, torch.Tensor) else None for arg, bdim in zip(args, in_dims)]
        shapes = check(*_samples(args, in_dims, batch))
        if batch == 0:
            outputs = tuple(args[0].new_empty((0, *shape)) for shape in shapes)
            return (outputs, (0,) * len(shapes)) if len(shapes) > 1 else (outputs[0], 0)
        return fold(batch, in_dims, *args)

    return rule


def _check_conv2d(input, weight, bias, stride, padding, dilation, groups):
    return (checked_problem(input, weight, bias, stride, padding, dilation, groups).output_shape,)


def _check_input_grad(grad_output, input, weight, stride, padding, dilation, groups):
    checked_grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    return (tuple(input.shape),)


def _check_weight_grad(grad_output, input, weight, stride, padding, dilation, groups, with_bias):
    checked_grad_problem(grad_output, input, weight, stride, padding, dilation, groups)
    return (tuple(weight.shape), (weight.shape[0] if with_bias else 0,))


def _check_conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    problem = checked_transposed_problem(
        input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    return (problem.input_shape,)


RULES = {
    conv2d_op: _rule(_fold_conv2d, _check_conv2d),
    input_grad_op: _rule(_fold_input_grad, _check_input_grad),
    weight_grad_op: _rule(_fold_weight_grad, _check_weight_grad),
    conv_transpose2d_op: _rule(_fold_conv_transpose2d, _check_conv_transpose2d),
}
