"""convert_model: swap torch's Conv1d, Conv2d and ConvTranspose2d in a whole network for triton-conv's
modules, and say what it leaves alone and why."""

from __future__ import annotations

import sys
import types
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .arguments import FLOAT_DTYPES, ConvTypeError, is_dtensor
from .nn import CALLED_BY_FORWARD, CONVERSIONS, bound_to_torch


def _reason_to_skip(module: nn.Module) -> str | None:
    kind = type(module)
    if isinstance(module, tuple(CONVERSIONS.values())):  # parametrizing makes a subclass of ours
        return "already triton-conv's"
    bound = bound_to_torch(module)
    if bound is not None:
        return bound
    if getattr(module, "qconfig", None) is not None:
        return (
            f"{kind.__name__} is prepared for quantization (torch.ao's prepare, prepare_fx or prepare_qat "
            "gave it a qconfig), and torch.ao's convert finds it by its torch class: converted, it "
            "would stay in floating point"
        )
    if isinstance(module, nn.modules.lazy.LazyModuleMixin):
        return (
            f"{kind.__name__} is lazy (its first forward turns it into its torch class, which a "
            "conversion would skip); run one forward, then convert"
        )
    if kind not in CONVERSIONS:
        if getattr(module, "parametrizations", None) is not None:
            return (
                f"{kind.__name__} is parametrized (torch.nn.utils.parametrize: "
                "parametrizations.weight_norm, spectral_norm, ...); convert before parametrizing"
            )
        base = next((torch_class for torch_class in CONVERSIONS if isinstance(module, torch_class)), None)
        if base is not None:
            return (
                f"{kind.__name__} subclasses nn.{base.__name__}: a subclass may change what the module"
                " computes (any subclass is left as it is, even one that adds nothing)"
            )
        return f"{kind.__name__}: triton-conv has no kernels for it (only Conv1d, Conv2d, ConvTranspose2d)"
    patched = _patched_on_torch_class(kind)
    if patched:
        return (
            f"nn.{kind.__name__}.{' and '.join(patched)} was replaced on torch's class (a patch), which "
            f"triton_conv.{kind.__name__} overrides: converted, the module would not run the patch"
        )
    functional = _FUNCTIONAL[kind]
    if getattr(F, functional) is not getattr(torch._C._VariableFunctions, functional):
        return (
            f"torch.nn.functional.{functional} was replaced (a patch), which nn.{kind.__name__}'s "
            "forward calls: converted, the module would not run the patch"
        )
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return "weight is not a tensor"
    if weight.dtype not in FLOAT_DTYPES:
        return f"weight dtype {weight.dtype} is not supported"
    sharded = [name for name in ("weight", "bias") if is_dtensor(getattr(module, name, None))]
    if sharded:
        return (
            f"its {' and '.join(sharded)} {'is a DTensor' if len(sharded) == 1 else 'are DTensors'} "
            "(torch.distributed.tensor): triton-conv's ops have no sharding rules"
        )
    return None


# The function torch's forward of each module calls, as torch.nn.functional.<name>; torch's own is
# the builtin torch._C._VariableFunctions.<name> (torch.<name> and F.<name> are that object, and a
# patch of either name leaves it as it is).
_FUNCTIONAL = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.ConvTranspose2d: "conv_transpose2d"}


def _patched_on_torch_class(kind: type) -> list[str]:
    """The methods of torch's class that triton-conv's overrides and someone replaced (a weight
    standardisation patched onto nn.Conv2d._conv_forward): torch's modules run the patch, a
    converted one would run ours. torch's own are functions of torch.nn.modules.conv, unwrapped."""

    def torchs_own(function) -> bool:
        return getattr(function, "__module__", None) == nn.modules.conv.__name__ and not hasattr(
            function, "__wrapped__"
        )

    overrides = vars(CONVERSIONS[kind])
    return [name for name in CALLED_BY_FORWARD if name in overrides and not torchs_own(getattr(kind, name))]


def _quantized_convolution(module: nn.Module) -> str | None:
    """Why a torch.ao quantized convolution (nnq.Conv2d and its kin: integer kernels, classes of
    their own rather than nn.Conv*'s) is left alone, or None for any other module."""
    # None before torch.ao's import, or while another thread imports it (no instance exists yet)
    quantized = getattr(sys.modules.get("torch.ao.nn.quantized.modules.conv"), "_ConvNd", None)
    if quantized is None or not isinstance(module, quantized):
        return None
    return (
        f"{type(module).__name__} is a quantized convolution (torch.ao) running torch's integer "
        "kernels; triton-conv's are floating point"
    )


def _compiled_wrapper(module: nn.Module) -> bool:
    """`module` is torch.compile's wrapper (OptimizedModule), whose compiled forward is bound to the
    module it wraps: replacing that child would leave the forward calling the torch module."""
    # None before its import, or while another thread imports it: no wrapper can exist yet
    wrapper = getattr(sys.modules.get("torch._dynamo.eval_frame"), "OptimizedModule", None)
    return wrapper is not None and isinstance(module, wrapper)


# torch's convolutions by the names its functions and aten ops go by
_TORCH_CONV_NAMES = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_TORCH_CONV_FUNCTIONS = {getattr(torch._C._VariableFunctions, name) for name in _TORCH_CONV_NAMES}
_ATEN_CONVOLUTIONS = {f"aten::{name}" for name in (*_TORCH_CONV_NAMES, "convolution", "_convolution")}


def _calls_torch_convolution(node: torch.fx.Node) -> bool:
    packet = getattr(node.target, "_overloadpacket", None)  # an aten OpOverload's
    return node.op == "call_function" and (
        node.target in _TORCH_CONV_FUNCTIONS
        or getattr(packet, "_qualified_op_name", None) in _ATEN_CONVOLUTIONS
    )


def _script_calls_torch_convolution(module: torch.jit.ScriptModule) -> bool:
    return any(node.kind() in _ATEN_CONVOLUTIONS for node in module.inlined_graph.nodes())


def _frozen_convolution(module: nn.Module) -> str | None:
    """Why `module` runs torch's convolution in code that no module swap reaches, or None: a
    TorchScript module (torch.jit.script, trace or freeze compiled its forward), or a graph
    (torch.export's .module() or unflatten's modules, an fx graph of functions) whose nodes call
    torch's convolution."""
    if isinstance(module, torch.jit.ScriptModule):
        # Said once, where the call is: by the innermost module whose code calls it (a traced
        # triton_conv.Conv2d calls triton_conv's op; torch.jit.freeze inlines the children).
        calls = _script_calls_torch_convolution
        if not calls(module) or any(calls(child) for child in module.children()):
            return None
        return (
            f"{module.original_name} was compiled by torch.jit.script, trace or freeze, whose code runs "
            "torch's conv; convert before tracing (torch.jit.script cannot run Triton kernels)"
        )
    if not isinstance(getattr(module, "graph", None), torch.fx.Graph):
        # an fx GraphModule, or torch.export.unflatten's InterpreterModule (no GraphModule subclass)
        return None
    calls = [node.name for node in module.graph.nodes if _calls_torch_convolution(node)]
    if not calls:
        return None
    return (
        f"its graph calls torch's convolution ({', '.join(calls)}): a graph (torch.export, fx) keeps "
        "its calls; convert the model before exporting or tracing it"
    )


# How deep into an attribute's containers (list, tuple, dict, set) a search for an old module looks
_REFERENCE_DEPTH = 4
_REGISTERED = ("_modules", "_parameters", "_buffers")  # what walk() already replaced or shares


def _stale_references(model: nn.Module, replaced: dict[int, str]) -> list[tuple[str, str]]:
    """Where a module of `model` still holds a torch conv that convert_model replaced (`replaced`:
    id of the torch module -> the name it was converted under) outside its registered children: in a
    plain list, tuple, dict or set attribute, or as a bound method (`self.up = self.conv.forward`).
    A forward that reaches it there runs torch's conv, and parameters later assigned to the
    converted module (load_state_dict(assign=True)) do not reach it: a different answer unsaid."""
    found = []

    def search(value, path: str, depth: int, seen: set) -> None:
        target = value.__self__ if isinstance(value, types.MethodType) else value  # a bound method's module
        if isinstance(target, nn.Module):
            if id(target) in replaced:
                found.append((path, replaced[id(target)]))
            return
        if depth == 0 or id(value) in seen or not isinstance(value, (list, tuple, dict, set, frozenset)):
            return
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            search(item, f"{path}[{key!r}]", depth - 1, seen)

    for name, module in model.named_modules(remove_duplicate=True):
        if _compiled_wrapper(module):  # reported whole; its forward's own record of the module aside
            continue
        for attribute, value in vars(module).items():
            if attribute not in _REGISTERED:
                search(value, f"{name}.{attribute}" if name else attribute, _REFERENCE_DEPTH, set())
    return [
        (
            path,
            f"holds the torch module converted as '{converted_as}' (a plain attribute, not a registered "
            "submodule): a forward through it runs torch's conv, and parameters assigned to the converted "
            "module later (load_state_dict(assign=True)) do not reach it; hold modules in nn.ModuleList or "
            "nn.ModuleDict",
        )
        for path, converted_as in found
    ]


def convert_model(model: nn.Module, report: list | None = None) -> nn.Module:
    """Replace every torch.nn.Conv1d, Conv2d and ConvTranspose2d in `model` (nested ones too) with
    triton-conv's module that shares its parameters, buffers, attributes and hooks (forward,
    pre-forward, backward, state-dict; the legacy torch.nn.utils.weight_norm / spectral_norm are
    such hooks and keep working), in place, and return the model (a new module if `model` is one).

    What is left alone, and why, is appended to `report` as (qualified name, reason) pairs when a
    list is given, and otherwise said in one warning: every other convolution (Conv3d,
    ConvTranspose1d/3d, torch.ao's quantized ones), convs prepared for quantization (a qconfig),
    lazy modules, subclasses, parametrized modules,
    modules whose forward (or _conv_forward, _output_padding) was replaced on the instance or, for a
    method triton-conv's module overrides, on torch's class, modules compiled (torch.compile(conv),
    conv.compile()) before conversion, whose compiled code would still run torch's convolution,
    modules whose weight or bias is a DTensor; and where no module can be replaced, the
    convolutions of TorchScript modules and of graphs (torch.export's .module(),
    torch.export.unflatten's), and the model's plain references to a conv it converted (a list,
    tuple, dict or set attribute, a bound method), which still reach torch's module.

    A conv held in two places of `model` stays one module; one shared by two models stays one only
    when both are converted in one call (of a module that holds both): each call makes its own.
    """
    if not isinstance(model, nn.Module):
        raise ConvTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if report is not None and not isinstance(report, list):
        # Checked before the model changes: a report that cannot be appended to would raise after.
        raise ConvTypeError(f"report must be a list or None, got {type(report).__name__}")
    skipped: list[tuple[str, str]] = []
    converted: dict[int, nn.Module] = {}  # a conv used in two places stays one module
    converted_as: dict[int, str] = {}  # the torch module's id -> where it was first converted

    def convert(module: nn.Module, name: str, wrapped: bool = False) -> nn.Module:
        if wrapped:
            # Even when the same conv is converted where it is held directly: torch.compile's
            # compiled forward stays bound to the torch module, so the wrapper keeps it.
            reason = _reason_to_skip(module) or (
                "torch.compile wraps it and its compiled forward would still run torch's conv; "
                "convert before compiling"
            )
        elif id(module) in converted:
            return converted[id(module)]
        else:
            reason = _reason_to_skip(module)
        if reason is None:
            converted[id(module)] = CONVERSIONS[type(module)].from_torch(module)
            converted_as[id(module)] = name or "<model>"
            return converted[id(module)]
        if reason != "already triton-conv's":
            skipped.append((name or "<model>", reason))
        return module

    visited: set[int] = set()

    def walk(module: nn.Module, name: str) -> None:
        # Down the converted modules, not a list of the old ones made before: a conv's child (a
        # conv applied by a hook) must be replaced in the module that replaced its parent.
        if id(module) in visited:
            return
        visited.add(id(module))
        left = _frozen_convolution(module) or _quantized_convolution(module)
        if left is not None:
            skipped.append((name or "<model>", left))
        # Every name, not named_children(), which gives a module held under two names once: the
        # second name would keep torch's module, and a forward through it torch's conv.
        for child_name, child in list(module._modules.items()):
            if child is None:
                continue
            qualified = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.modules.conv._ConvNd):
                child = convert(child, qualified, _compiled_wrapper(module))
                setattr(module, child_name, child)
            walk(child, qualified)

    if isinstance(model, nn.modules.conv._ConvNd):
        model = convert(model, "")
    walk(model, "")
    skipped += _stale_references(model, converted_as)
    if report is not None:
        report.extend(skipped)
    elif skipped:
        listing = "; ".join(f"{name}: {reason}" for name, reason in skipped)
        warnings.warn(f"convert_model left {len(skipped)} convolution(s) alone: {listing}", stacklevel=2)
    return model
