"""torch's legacy backward hooks (`Module.register_backward_hook`, not the full kind) on this package's
modules.

torch runs such a hook on the autograd node that made the module's output, handing it that node's
gradients: for torch's convolutions one node (ConvolutionBackward0), whose gradients are always
(input, weight, bias), the bias's None when there is none. This package's output comes from another
node: conv1d's is a view of a conv2d of height one (one gradient, of the 4-D output), and an op
called without a bias has no bias input at all (two gradients). A legacy hook written for torch's
tuple would fail, or change other gradients than it meant to, without an error.

So while a module has such a hook, its convolution is recorded as one node of torch's shape: the
forward runs this package's op below autograd; the backward runs the op's own autograd formulas
(this package's kernels again) on a recomputation of the forward, which costs one more forward
kernel per backward. A module without legacy hooks never comes here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.modules import module as torch_module

from .functional import autocast_arguments


def has_legacy_backward_hooks(module: torch.nn.Module) -> bool:
    """The module's or the global non-full backward hooks, as Module._call_impl finds them."""
    # The tables first: empty in nearly every call, and cheaper than the flag, a property here.
    own = bool(module._backward_hooks) and module._is_full_backward_hook is False
    shared = bool(torch_module._global_backward_hooks) and torch_module._global_is_full_backward_hook is False
    return own or shared


class _ConvolutionNode(torch.autograd.Function):
    """One node with torch's convolution's inputs (input, weight, bias). A missing bias is a
    zero-element placeholder that needs no gradient: the node still has a bias input, whose gradient
    reaches the hook as None, as torch's does."""

    @staticmethod
    def forward(ctx, run: Callable, has_bias: bool, input, weight, bias):
        ctx.run, ctx.has_bias = run, has_bias
        ctx.save_for_backward(input, weight, bias)
        return run(input, weight, bias if has_bias else None)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, bias = ctx.saved_tensors
        needed = ctx.needs_input_grad[2:]
        wanted = [tensor for tensor, need in zip((input, weight, bias), needed) if need]
        if not wanted:
            return None, None, None, None, None
        with torch.enable_grad():
            output = ctx.run(input, weight, bias if ctx.has_bias else None)
        # create_graph when the backward itself is recorded (double backward): the gradients then
        # come from the op's autograd formulas with their own graph back to input and weight.
        grads = iter(torch.autograd.grad(output, wanted, grad_output, create_graph=torch.is_grad_enabled()))
        return None, None, *(next(grads) if need else None for need in needed)


def convolve(module: torch.nn.Module, run: Callable, input, weight, bias):
    """run(input, weight, bias), recorded as one node of torch's shape while the module has legacy
    backward hooks that would see it. Under torch.compile or a torch.func transform torch's hooks are
    not this node's concern (Dynamo traces the module; functorch records its own nodes): run as is."""
    if (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or not torch.is_grad_enabled()
        or not has_legacy_backward_hooks(module)
    ):
        return run(input, weight, bias)
    # Under autocast, torch's node takes the cast tensors (its hook sees bf16 gradients of fp32
    # parameters), and the backward's recomputation, outside the autocast region, must run in the
    # forward's dtype: cast here, as the op would have.
    input, weight, bias = autocast_arguments(input, weight, bias)
    placeholder = bias if bias is not None else weight.new_empty(0)
    return _ConvolutionNode.apply(run, bias is not None, input, weight, placeholder)
