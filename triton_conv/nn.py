"""Drop-in torch.nn convolution modules (Conv1d, Conv2d, ConvTranspose2d) and convert_model for whole
networks."""

from __future__ import annotations

import numbers
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .arguments import FLOAT_DTYPES, ConvArgumentError, ConvTypeError
from .functional import conv1d, conv2d, conv_transpose2d


class _FromTorch:
    """from_torch for each module: the same module in all but its class. The constructor is torch's,
    untouched: its signature is what torch.nn.utils.skip_init and other callers inspect."""

    @classmethod
    def from_torch(cls, conv: nn.Module):
        """A module of this class that is `conv` in all but its class: the same parameters and
        buffers (no copy), training mode, attributes and hooks. The hook tables are shared, not
        copied, so the handles a caller holds still remove them; parameters, buffers and submodules
        are new tables holding the same tensors, so that replacing one on the new module leaves
        `conv` alone."""
        new = cls.__new__(cls)
        state = dict(conv.__dict__)
        for table in ("_parameters", "_buffers", "_modules"):
            state[table] = type(state[table])(state[table])
        state["_non_persistent_buffers_set"] = set(state.get("_non_persistent_buffers_set", ()))
        new.__dict__.update(state)
        return new

    def __prepare_scriptable__(self):
        # torch.jit.script would compile the forward to TorchScript, which cannot call Triton
        # kernels; without this it fails deep inside triton_conv.functional with no hint why.
        raise RuntimeError(
            f"triton_conv.{type(self).__name__} cannot be scripted with torch.jit.script (TorchScript "
            "cannot run Triton kernels): use torch.compile, torch.export or torch.jit.trace, or "
            "script the model before convert_model"
        )


class Conv2d(_FromTorch, nn.Conv2d):
    """torch.nn.Conv2d whose convolution runs on triton-conv's kernels.

    Same constructor, parameters and state_dict keys as torch.nn.Conv2d, so checkpoints load
    both ways; every padding_mode torch supports ('zeros', 'reflect', 'replicate', 'circular').
    """

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            # As torch does: pad explicitly in the requested mode, then convolve unpadded.
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(_FromTorch, nn.Conv1d):
    """torch.nn.Conv1d on triton-conv's kernels (conv2d of height one): same constructor,
    parameters, state_dict and padding modes as torch's."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv1d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def output_padding_for(input, output_size, stride, padding, kernel_size, num_spatial_dims, dilation):
    """The output_padding that makes a transposed convolution's output `output_size`, by torch's own
    rule (_output_padding, which reads nothing of its module when an output_size is given). A leaf of
    torch.fx (wrapped below): traced, its size arithmetic and checks would meet Proxies (a U-Net's
    `up(x, output_size=skip.shape)`).

    torch's rule raises ValueError for a size out of range or of the wrong length, and a bare
    TypeError ("object of type 'int' has no len()") for what is no list of ints; a float size
    passes it and fails later, named output_padding. Each is raised here as ConvArgumentError or
    ConvTypeError (torch's kind, and RuntimeError), naming output_size."""
    try:
        output_padding = nn.ConvTranspose2d._output_padding(
            None, input, output_size, stride, padding, kernel_size, num_spatial_dims, dilation
        )
    except ValueError as error:
        raise ConvArgumentError(f"output_size: {error}") from None
    except TypeError as error:
        raise ConvTypeError(f"output_size must be a list of ints, got {output_size!r} ({error})") from None
    fractional = lambda p: isinstance(p, numbers.Real) and not isinstance(p, numbers.Integral)  # noqa: E731
    if any(fractional(p) or torch.is_tensor(p) and p.is_floating_point() for p in output_padding):
        raise ConvTypeError(f"output_size must be a list of ints, got {output_size!r}")
    return output_padding


torch.fx.wrap("output_padding_for")


class ConvTranspose2d(_FromTorch, nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d on triton-conv's kernels: same constructor, parameters and
    state_dict, and forward's `output_size`, resolved by torch's own _output_padding."""

    def _output_padding(
        self, input, output_size, stride, padding, kernel_size, num_spatial_dims, dilation=None
    ) -> list[int]:
        # torch's, with the size arithmetic in a torch.fx leaf; forward calls it as torch's forward
        # does, so that a subclass's own _output_padding is still the one used.
        if output_size is None:
            return super()._output_padding(
                input, None, stride, padding, kernel_size, num_spatial_dims, dilation
            )
        return output_padding_for(
            input, output_size, stride, padding, kernel_size, num_spatial_dims, dilation
        )

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ConvArgumentError(
                "Only `zeros` padding mode is supported for ConvTranspose2d "
                f"(padding_mode={self.padding_mode!r})"
            )
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        return conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
            self.dilation,
        )  # fmt: skip


# torch's class -> triton-conv's drop-in
CONVERSIONS: dict[type, type] = {nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d}


# The methods that torch's forward of each convolution calls: one set on the instance replaces ours.
_CALLED_BY_FORWARD = ("forward", "_conv_forward", "_output_padding")


def _reason_to_skip(module: nn.Module) -> str | None:
    kind = type(module)
    if isinstance(module, tuple(CONVERSIONS.values())):  # parametrizing makes a subclass of ours
        return "already triton-conv's"
    patched = [name for name in _CALLED_BY_FORWARD if name in vars(module)]
    if patched:
        # An instance forward (accelerate-style wrappers), or an instance _conv_forward (a patched-in
        # weight standardisation), is bound to the torch module: converted, the module would still
        # run torch's convolution.
        return (
            f"{kind.__name__} has {' and '.join(patched)} of its own on the instance (a wrapper or a "
            "patch) that runs torch's conv"
        )
    if getattr(module, "_compiled_call_impl", None) is not None:
        # module.compile() compiled the torch module's own call; a converted module would run it.
        return (
            f"{kind.__name__} was compiled in place (module.compile()) and would still run torch's "
            "conv; convert before compiling"
        )
    if isinstance(module, nn.modules.lazy.LazyModuleMixin):
        return (
            f"{kind.__name__} is lazy (its parameters are uninitialized until a first forward, which "
            "turns it into a torch module); run one forward, then convert"
        )
    if kind not in CONVERSIONS:
        if getattr(module, "parametrizations", None) is not None:
            return (
                f"{kind.__name__} is parametrized (torch.nn.utils.parametrize: "
                "parametrizations.weight_norm, spectral_norm, ...); convert before parametrizing"
            )
        base = next((torch_class for torch_class in CONVERSIONS if isinstance(module, torch_class)), None)
        if base is not None:
            return f"{kind.__name__} subclasses nn.{base.__name__} with its own behaviour"
        return f"{kind.__name__}: triton-conv has no kernels for it (only Conv1d, Conv2d, ConvTranspose2d)"
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return "weight is not a tensor"
    if weight.dtype not in FLOAT_DTYPES:
        return f"weight dtype {weight.dtype} is not supported"
    return None


def _compiled_wrapper(module: nn.Module) -> bool:
    """`module` is torch.compile's wrapper (OptimizedModule), whose compiled forward is bound to the
    module it wraps: replacing that child would leave the forward calling the torch module."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # none can exist before it is imported
    return eval_frame is not None and isinstance(module, eval_frame.OptimizedModule)


# torch's convolutions by the names its functions and aten ops go by
_TORCH_CONV_NAMES = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_TORCH_CONV_FUNCTIONS = {getattr(F, name) for name in _TORCH_CONV_NAMES}  # torch.conv2d is F.conv2d
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
    (torch.export's .module(), an fx graph of functions) whose nodes call torch's convolution."""
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
    if not isinstance(module, torch.fx.GraphModule):
        return None
    calls = [node.name for node in module.graph.nodes if _calls_torch_convolution(node)]
    if not calls:
        return None
    return (
        f"its graph calls torch's convolution ({', '.join(calls)}): a graph (torch.export, fx) keeps "
        "its calls; convert the model before exporting or tracing it"
    )


def convert_model(model: nn.Module, report: list | None = None) -> nn.Module:
    """Replace every torch.nn.Conv1d, Conv2d and ConvTranspose2d in `model` (nested ones too) with
    triton-conv's module that shares its parameters, buffers, attributes and hooks (forward,
    pre-forward, backward, state-dict; the legacy torch.nn.utils.weight_norm / spectral_norm are
    such hooks and keep working), in place, and return the model (a new module if `model` is one).

    What is left alone, and why, is appended to `report` as (qualified name, reason) pairs when a
    list is given, and otherwise said in one warning: every other convolution (Conv3d,
    ConvTranspose1d/3d), lazy modules, subclasses, parametrized modules, modules whose forward
    (or _conv_forward, _output_padding) was replaced on the instance, modules compiled
    (torch.compile(conv), conv.compile()) before conversion, whose compiled code would still run
    torch's convolution; and where no module can be replaced, the convolutions of TorchScript
    modules and of graphs (torch.export's .module()).
    """
    if not isinstance(model, nn.Module):
        raise ConvTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if report is not None and not isinstance(report, list):
        # Checked before the model changes: a report that cannot be appended to would raise after.
        raise ConvTypeError(f"report must be a list or None, got {type(report).__name__}")
    skipped: list[tuple[str, str]] = []
    converted: dict[int, nn.Module] = {}  # a conv used in two places stays one module

    def convert(module: nn.Module, name: str, wrapped: bool = False) -> nn.Module:
        if id(module) in converted:
            return converted[id(module)]
        reason = _reason_to_skip(module)
        if reason is None and wrapped:
            reason = (
                "torch.compile wraps it and its compiled forward would still run torch's conv; "
                "convert before compiling"
            )
        if reason is None:
            converted[id(module)] = CONVERSIONS[type(module)].from_torch(module)
            return converted[id(module)]
        if reason != "already triton-conv's":
            skipped.append((name or "<model>", reason))
        return module

    convolution = nn.modules.conv._ConvNd
    if isinstance(model, convolution):
        model = convert(model, "")
    else:
        for name, module in list(model.named_modules()):
            frozen = _frozen_convolution(module)
            if frozen is not None:
                skipped.append((name or "<model>", frozen))
            # Every name, not named_children(), which gives a module held under two names once:
            # the second name would keep torch's module, and a forward through it torch's conv.
            for child_name, child in list(module._modules.items()):
                if isinstance(child, convolution):
                    qualified = f"{name}.{child_name}" if name else child_name
                    setattr(module, child_name, convert(child, qualified, _compiled_wrapper(module)))
    if report is not None:
        report.extend(skipped)
    elif skipped:
        listing = "; ".join(f"{name}: {reason}" for name, reason in skipped)
        warnings.warn(f"convert_model left {len(skipped)} convolution(s) alone: {listing}", stacklevel=2)
    return model
