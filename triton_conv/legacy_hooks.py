"""torch's legacy backward hooks (`Module.register_backward_hook`, not the full kind) on this package's
modules.

torch runs such a hook on the autograd node that made the module's output, handing it that node's
gradients: for torch's convolutions one node (ConvolutionBackward0), whose gradients are always
(input, weight, bias), the bias's None when there is none. This package's output comes from another
node: conv1d's is a view of a conv2d of height one (one gradient, of the 4-D output), and an op
called without a bias has no bias input at all (two gradients). A legacy hook written for torch's
tuple would fail, or change other gradients than it meant to, without an error.

So while a module has such a hook, its convolution is recorded as one node of torch's shape, with
torch's steps around it: an unbatched input gets its batch dimension outside the node (torch's
hook then sees the squeeze's one gradient), and 'same' with uneven pads convolves an explicitly
padded copy (torch's hook sees the padded input's gradient). The node's forward runs this package's
op below autograd; its backward differentiates a recomputation of the forward with torch.func.vjp
(this package's kernels again, one more forward kernel per backward), on functorch's own wrappers of
the saved tensors: the engine is not entered again on the caller's tensors, whose tensor hooks
(`register_hook`, `retain_grad`) would fire twice. A module without legacy hooks never comes here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch.nn.modules import module as torch_module

from .functional import autocast_arguments, validate, validate1d


def has_legacy_backward_hooks(module: torch.nn.Module) -> bool:
    """The module's or the global non-full backward hooks, as Module._call_impl finds them."""
    own = bool(module._backward_hooks) and module._is_full_backward_hook is False
    shared = bool(torch_module._global_backward_hooks) and torch_module._global_is_full_backward_hook is False
    return own or shared


class _ConvolutionNode(torch.autograd.Function):
    """One node with torch's convolution's inputs (input, weight, bias). A missing bias is a
    zero-element placeholder that needs no gradient: the node still has a bias input, whose gradient
    reaches the hook as None, as torch's does."""

    generate_vmap_rule = True  # the forward is the op, which has its own vmap rule

    @staticmethod
    def forward(run: Callable, has_bias: bool, input, weight, bias):
        return run(input, weight, bias if has_bias else None)

    @staticmethod
    def setup_context(ctx, inputs, output):
        run, has_bias, input, weight, bias = inputs
        ctx.run, ctx.has_bias = run, has_bias
        ctx.save_for_backward(input, weight, bias if has_bias else None)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, bias = ctx.saved_tensors
        needed = ctx.needs_input_grad[2:]
        if not any(needed):
            return None, None, None, None, None
        primals = (input, weight, bias) if ctx.has_bias else (input, weight)
        # The casts were made before the node: a backward run inside an autocast region must not
        # cast again. Under create_graph the vjp's ops are recorded on the saved tensors, as
        # torch's double backward is.
        with torch.autocast(input.device.type, enabled=False):
            _, vjp = torch.func.vjp(lambda x, w, b=None: ctx.run(x, w, b), *primals)
            grads = (*vjp(grad_output), None)
        return None, None, *(grad if need else None for grad, need in zip(grads, needed))


def _same_as_torch(input, weight, bias, arguments: dict) -> tuple:
    """torch's 'same' for conv2d and conv1d: uneven pads (an even kernel extent) convolve a copy of
    the input padded on the far side of each axis by the odd one, with the even split as padding.
    The pads are the function's own (its checks first: a 'same' it refuses is refused here)."""
    check = validate1d if weight.dim() == 3 else validate
    top, left, bottom, right = check(input, weight, bias, **arguments).pads
    if weight.dim() == 3:  # the height-one view's pads
        far, near = (0, right - left), (left,)
    else:  # F.pad lists the last axis first
        far, near = (0, right - left, 0, bottom - top), (top, left)
    if any(far):
        input = F.pad(input, far)
    return input, {**arguments, "padding": near}


def convolve(module: torch.nn.Module, function: Callable, input, weight, bias, **arguments):
    """function(input, weight, bias, **arguments), recorded as one node of torch's shape while the
    module has legacy backward hooks that would see it (torch.func's grad, vjp and vmap included:
    the node has functorch's form). Under forward-mode AD it runs as is: the tangents need the
    ops' own formulas, and no backward hook runs there."""
    if not (module._backward_hooks or torch_module._global_backward_hooks):
        return function(input, weight, bias, **arguments)
    if not torch.compiler.is_compiling():
        return _recorded(module, function, input, weight, bias, **arguments)
    if torch.is_grad_enabled() and has_legacy_backward_hooks(module):
        # A legacy hook makes Dynamo compile the module's forward as a frame of its own, and the hook
        # lands on the compiled region's node, whose gradients come in the order the graph first
        # read its inputs (a transposed convolution's weight first). Recorded outside the graph, the
        # node is torch's eager one.
        return _outside_the_graph(module, function, input, weight, bias, **arguments)
    return function(input, weight, bias, **arguments)


def _recorded(module: torch.nn.Module, function: Callable, input, weight, bias, **arguments):
    if isinstance(input, torch.fx.Proxy) and has_legacy_backward_hooks(module):
        # torch's Module call then looks for a tensor in the traced output by indexing it, and a
        # Proxy indexed is another Proxy: it loops, growing, for any module fx traces through.
        raise torch.fx.proxy.TraceError(
            f"torch.fx.symbolic_trace cannot trace through {type(module).__name__} while it has a "
            "legacy backward hook (register_backward_hook or register_module_backward_hook): torch's "
            "module call loops on the traced output. triton_conv.symbolic_trace keeps triton-conv's "
            "modules as call_module nodes, as torch's trace keeps torch's; or use "
            "register_full_backward_hook"
        )
    # Any other non-tensor input (a wrong argument) goes to the function as it would without the
    # hook, and gets the function's own error.
    if (
        not isinstance(input, torch.Tensor)
        or not torch.is_grad_enabled()
        or getattr(forward_ad, "_current_level", -1) >= 0
        or not has_legacy_backward_hooks(module)
    ):
        return function(input, weight, bias, **arguments)
    if input.dim() == weight.dim() - 1:  # unbatched: torch batches outside its node, and squeezes
        return _recorded(module, function, input.unsqueeze(0), weight, bias, **arguments).squeeze(0)
    if arguments.get("padding") == "same":
        input, arguments = _same_as_torch(input, weight, bias, arguments)
    # Under autocast, torch's node takes the cast tensors (its hook sees bf16 gradients of fp32
    # parameters), and the backward's recomputation, outside the autocast region, must run in the
    # forward's dtype: cast here, as the op would have.
    input, weight, bias = autocast_arguments(input, weight, bias)
    placeholder = bias if bias is not None else weight.new_empty(0)

    def run(x, w, b):
        return function(x, w, b, **arguments)

    return _ConvolutionNode.apply(run, bias is not None, input, weight, placeholder)


_outside_the_graph = torch.compiler.disable(_recorded, recursive=True)
