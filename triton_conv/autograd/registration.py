"""The ops' kernels at the dispatcher: the real implementation (CompositeExplicitAutograd), the fake
one, at the Autograd key the op's autograd.Function, entered only when a gradient can be asked
for (otherwise the op runs below autograd, as torch.library.custom_op's ops do), and the vmap
batching rule (batching.py)."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
from torch._functorch.utils import enable_single_level_autograd_function, unwrap_dead_wrappers

from ..arguments import inference_tensor_error
from . import implementations as impl
from .batching import RULES
from .functions import Conv2dFunction, ConvTranspose2dFunction, InputGradFunction, WeightGradFunction
from .ops import LIBRARY, conv2d_op, conv_transpose2d_op, input_grad_op, weight_grad_op


def _needs_autograd(args) -> bool:
    """A gradient can be asked for: reverse mode (grad mode on and an input requiring grad, which
    includes torch.func.grad/vjp's wrapped inputs) or forward mode (a dual level is open, as in
    torch.autograd.forward_ad.dual_level or torch.func.jvp). A graph that torch.compile traces
    opens its dual level in C++, which leaves forward_ad's record at -1: while it traces, an
    argument with a tangent at level 0 (torch nests no dual levels) says so."""
    if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
        return True
    if getattr(forward_ad, "_current_level", -1) >= 0:
        return True
    return torch._guards.TracingContext.try_get() is not None and any(
        isinstance(arg, torch.Tensor) and torch._VF._unpack_dual(arg, 0).tangent is not None for arg in args
    )


def _refuse_inference_tensors(op, function: type[torch.autograd.Function], args) -> None:
    """torch's error for an inference tensor that autograd would save for backward, raised before the
    op computes anything, as torch's convolutions raise it (they save their inputs first; the
    Function saves them after its forward ran). Only where reverse mode records and the tensor is
    the caller's own: under a torch.func transform functorch hands the op wrappers, which it saves."""
    if not (torch.is_grad_enabled() and torch._C._any_requires_grad(*args)):
        return
    for index in function.saved_arguments:
        if args[index].is_inference():
            raise inference_tensor_error(str(op._schema.name), op._schema.arguments[index].name)


def _single_level(function: type[torch.autograd.Function]) -> type:
    """function's formulas on a bare _SingleLevelFunction, as functorch builds one for each level
    of a transform (torch._functorch.autograd_function.generate_single_level_function). From torch
    2.14 the apply of a torch.autograd.Function subclass is C++ that hands the call to functorch
    (custom_function_call) whenever a transform is active, and that call, made from this Autograd
    kernel, finds no kernel (torch 2.14.1: 23 tests of torch.func transforms failed so). A
    _SingleLevelFunction's apply records the node at the current level, on every torch."""
    formulas = {name: function.__dict__[name] for name in ("forward", "setup_context", "backward", "jvp")}
    return type(function.__name__, (torch.autograd.function._SingleLevelFunction,), formulas)


def _apply(function: type[torch.autograd.Function], single_level: type, args):
    """function.apply, as the dispatcher's Autograd key runs it. Under a torch.func transform,
    autograd.Function.apply hands the call to functorch (custom_function_call), but at this key
    functorch has already handed the op to autograd at the transform's level, as it does for torch's
    own ops: the plain (C++) apply of the single-level twin is what records the node there. Outside
    a transform the Function's own node is recorded (compiled autograd asks its class for a key)."""
    if not torch._C._are_functorch_transforms_active():
        return super(torch.autograd.Function, function).apply(*unwrap_dead_wrappers(args))
    with enable_single_level_autograd_function():
        return single_level.apply(*args)


def _register(op, implementation, fake, function: type[torch.autograd.Function]) -> None:
    name = op._schema.name.split("::", 1)[1]
    # Kernels Dynamo never traces into: after a compiled call under a TorchDispatchMode (a
    # FlopCounterMode), Dynamo traced through the op's Python kernels on the next call and failed
    # (about 0.4 µs per call on the development CPU).
    LIBRARY.impl(name, torch.compiler.disable(implementation), "CompositeExplicitAutograd")
    torch.library.register_fake(f"triton_conv::{name}", fake, lib=LIBRARY)

    single_level = _single_level(function)

    def autograd_kernel(*args):
        if _needs_autograd(args):
            _refuse_inference_tensors(op, function, args)
            return _apply(function, single_level, args)
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    LIBRARY.impl(name, torch.compiler.disable(autograd_kernel), "Autograd")
    torch.library.register_vmap(op, RULES[op], lib=LIBRARY)


_register(conv2d_op, impl.conv2d, impl.conv2d_fake, Conv2dFunction)
_register(input_grad_op, impl.input_grad, impl.input_grad_fake, InputGradFunction)
_register(weight_grad_op, impl.weight_grad, impl.weight_grad_fake, WeightGradFunction)
_register(conv_transpose2d_op, impl.conv_transpose2d, impl.conv_transpose2d_fake, ConvTranspose2dFunction)
