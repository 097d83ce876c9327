"""Drop-in torch.nn convolution modules (Conv1d, Conv2d, ConvTranspose2d); convert.py swaps them into
whole networks."""

from __future__ import annotations

import copy
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from . import legacy_hooks, shared_hooks
from .arguments import ConvArgumentError, ConvTypeError, check_tensor
from .functional import conv1d, conv2d, conv_transpose2d

# The methods torch's forward of a conv module calls.
CALLED_BY_FORWARD = ("forward", "_conv_forward", "_output_padding")


def bound_to_torch(module: nn.Module) -> str | None:
    """Why `module`, given this package's class, would still run torch's convolution on its own
    tensors, or None. An instance forward (accelerate-style wrappers) or _conv_forward (a patched-in
    weight standardisation) is bound to that module, and so is module.compile()'s compiled call:
    a copy of the module's attributes would carry them along."""
    kind = type(module)
    # Only a method torch's class has can be one its forward calls (a Conv2d has no _output_padding).
    patched = [name for name in CALLED_BY_FORWARD if name in vars(module) and hasattr(kind, name)]
    if patched:
        return (
            f"{kind.__name__} has {' and '.join(patched)} of its own on the instance (a wrapper or a "
            "patch) that runs torch's conv"
        )
    if getattr(module, "_compiled_call_impl", None) is not None:
        return (
            f"{kind.__name__} was compiled in place (module.compile()) and would still run torch's "
            "conv; convert before compiling"
        )
    return None


class _FromTorch:
    """from_torch for each module: the same module in all but its class. The constructor is torch's,
    untouched: its signature is what torch.nn.utils.skip_init and other callers inspect."""

    @classmethod
    def from_torch(cls, conv: nn.Module):
        """A module of this class that is `conv` in all but its class: the same parameters and
        buffers (no copy), training mode, attributes and hooks. The hook tables are shared, not
        copied, so the handles a caller holds still remove them; parameters, buffers and submodules
        are new tables holding the same tensors, so that replacing one on the new module leaves
        `conv` alone. `conv` is of torch's class exactly (or of this one): a subclass's forward or
        extra state would be dropped without a word, and another convolution's attributes would make
        a module that computes something else; convert_model leaves those alone and reports them.
        A subclass of this class also takes this class's modules (they add nothing to torch's)."""
        torch_class = next(base for base in cls.__mro__ if base.__module__.startswith("torch.nn."))
        ours = next(base for base in cls.__mro__ if base.__module__ == __name__)
        if type(conv) not in (torch_class, ours, cls):
            also = "" if cls is ours else f" or a {cls.__module__}.{cls.__qualname__}"
            raise ConvTypeError(
                f"conv must be a torch.nn.{torch_class.__name__} (not a subclass) or a "
                f"triton_conv.{ours.__name__}{also}, got {type(conv).__module__}.{type(conv).__qualname__}"
            )
        reason = bound_to_torch(conv)
        if reason is not None:
            raise ConvTypeError(f"conv cannot be converted: {reason}")
        new = cls.__new__(cls)
        state = dict(conv.__dict__)
        state.pop(shared_hooks.FLAG_KEEPER, None)
        state[shared_hooks.OWN_FLAG] = conv._is_full_backward_hook
        for table in ("_parameters", "_buffers", "_modules"):
            state[table] = type(state[table])(state[table])
        state["_non_persistent_buffers_set"] = set(state.get("_non_persistent_buffers_set", ()))
        new.__dict__.update(state)
        shared_hooks.share(new, conv)
        return new

    # torch reads and sets this flag on each module; the hook table it governs is shared.
    _is_full_backward_hook = property(shared_hooks.full_hook_flag, shared_hooks.set_full_hook_flag)

    def _load_from_state_dict(self, *args, **kwargs):
        shared_hooks.point_load_hooks_at(self)  # pre-hooks registered on the original since its conversion
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        # A copy (deepcopy, pickle) shares nothing with the original: it takes the hooks as they
        # stand, each load pre-hook holding this module rather than a copy of the original.
        shared_hooks.point_load_hooks_at(self)
        state = super().__getstate__()
        state.pop(shared_hooks.FLAG_KEEPER, None)
        # Under both names: torch's __setstate__ resets the flag (through the property) when its
        # own name is missing.
        state[shared_hooks.OWN_FLAG] = state[shared_hooks.FULL_HOOK_FLAG] = self._is_full_backward_hook
        return state

    def __deepcopy__(self, memo):
        # copy.deepcopy's own steps around __getstate__, defined here so that torch's parametrize,
        # which gives a parametrized module's class a __deepcopy__ copying __dict__ as it is only
        # where the class has none, does not carry the reference to the original module into the
        # copy (a hook registered on the copy would then set the original's flag). Named, not
        # self.__getstate__: a parametrized class's own raises (it refuses pickling).
        replica = type(self).__new__(type(self))
        memo[id(self)] = replica
        replica.__setstate__(copy.deepcopy(_FromTorch.__getstate__(self), memo))
        return replica

    def _convolve(self, function, input, weight, bias):
        """Conv1d's and Conv2d's _conv_forward with `function`: torch's, on this package's kernels."""
        padding = self.padding
        if self.padding_mode != "zeros":
            # As torch does: pad explicitly in the requested mode, then convolve unpadded.
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        geometry = dict(stride=self.stride, padding=padding, dilation=self.dilation, groups=self.groups)
        return legacy_hooks.convolve(self, function, input, weight, bias, **geometry)

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
        return self._convolve(conv2d, input, weight, bias)


class Conv1d(_FromTorch, nn.Conv1d):
    """torch.nn.Conv1d on triton-conv's kernels (conv2d of height one): same constructor,
    parameters, state_dict and padding modes as torch's."""

    def _conv_forward(self, input, weight, bias):
        return self._convolve(conv1d, input, weight, bias)


class ConvPaddingNotATuple(ConvTypeError, AssertionError):
    """ConvTranspose2d's padding set to no tuple after construction: torch's forward raises an
    AssertionError for it, which this error also is."""


def _is_sequence_of(value, length: int) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == length


def output_padding_for(input, output_size, stride, padding, kernel_size, num_spatial_dims, dilation):
    """The output_padding that makes a transposed convolution's output `output_size`, by torch's own
    rule (_output_padding, which reads nothing of its module when an output_size is given). A leaf of
    torch.fx (wrapped below): traced, its size arithmetic and checks would meet Proxies (a U-Net's
    `up(x, output_size=skip.shape)`).

    torch's rule raises ValueError for a size out of range or of the wrong length, and a bare
    TypeError ("object of type 'int' has no len()") for what is no list of ints; a float size
    passes it and fails later, named output_padding. Each is raised here as ConvArgumentError or
    ConvTypeError (torch's kind, and RuntimeError), naming output_size. A module attribute that
    torch's rule indexes but that is no pair (`conv.stride = 2` set after construction: torch's
    TypeError) is named as itself."""
    if output_size is not None:
        # torch's rule reads the input's last dimensions: the wrong rank gave an IndexError, or a
        # range of sizes made of the wrong dimensions, named output_size
        check_tensor(input, "input", (num_spatial_dims + 1, num_spatial_dims + 2))
    geometry = {"stride": stride, "padding": padding, "kernel_size": kernel_size, "dilation": dilation}
    for name, value in geometry.items():
        if output_size is not None and value is not None and not _is_sequence_of(value, num_spatial_dims):
            raise ConvTypeError(f"{name} must be a tuple of {num_spatial_dims} ints, got {value!r}")
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
        if not isinstance(self.padding, tuple):
            raise ConvPaddingNotATuple(f"self.padding must be a tuple, got {self.padding!r}")
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        geometry = dict(
            stride=self.stride, padding=self.padding, output_padding=output_padding, groups=self.groups,
            dilation=self.dilation,
        )  # fmt: skip
        return legacy_hooks.convolve(self, conv_transpose2d, input, self.weight, self.bias, **geometry)


# torch's class -> triton-conv's drop-in
CONVERSIONS: dict[type, type] = {nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d}
