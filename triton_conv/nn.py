"""triton_conv.Conv2d, a drop-in torch.nn.Conv2d, and convert_model for whole networks."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .arguments import FLOAT_DTYPES
from .functional import conv2d


class Conv2d(nn.Conv2d):
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

    @classmethod
    def from_torch(cls, conv: nn.Conv2d) -> Conv2d:
        """A triton_conv.Conv2d that is `conv` in all but its class: the same parameters and buffers
        (no copy), training mode, attributes and hooks. The hook tables are shared, not copied, so
        the handles a caller holds still remove them; parameters, buffers and submodules are new
        tables holding the same tensors, so that replacing one on the new module leaves `conv` alone."""
        new = cls.__new__(cls)
        state = dict(conv.__dict__)
        for table in ("_parameters", "_buffers", "_modules"):
            state[table] = type(state[table])(state[table])
        state["_non_persistent_buffers_set"] = set(state.get("_non_persistent_buffers_set", ()))
        new.__dict__.update(state)
        return new


def _reason_to_skip(module: nn.Module) -> str | None:
    if type(module) is Conv2d:
        return "already a triton_conv.Conv2d"
    if type(module) is not nn.Conv2d:
        if getattr(module, "parametrizations", None) is not None:
            return (
                f"{type(module).__name__} is parametrized (torch.nn.utils.parametrize: "
                "parametrizations.weight_norm, spectral_norm, ...); convert before parametrizing"
            )
        return f"{type(module).__name__} subclasses nn.Conv2d with its own behaviour"
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return "weight is not a tensor"
    if weight.dtype not in FLOAT_DTYPES:
        return f"weight dtype {weight.dtype} is not supported"
    if weight.device.type == "meta":
        return "parameters are on the meta device"
    return None


def convert_model(model: nn.Module, report: list | None = None) -> nn.Module:
    """Replace every torch.nn.Conv2d in `model` (nested ones too) with a triton_conv.Conv2d that
    shares its parameters, buffers, attributes and hooks (forward, pre-forward, backward, state-dict;
    the legacy torch.nn.utils.weight_norm / spectral_norm are such hooks and keep working), in place,
    and return the model (a new module if `model` is a Conv2d).

    What is left alone, and why, is appended to `report` as (qualified name, reason) pairs when a
    list is given, and otherwise said in one warning.
    """
    skipped: list[tuple[str, str]] = []
    converted: dict[int, nn.Module] = {}  # a conv used in two places stays one module

    def convert(module: nn.Module, name: str) -> nn.Module:
        if id(module) in converted:
            return converted[id(module)]
        reason = _reason_to_skip(module)
        if reason is None:
            converted[id(module)] = Conv2d.from_torch(module)
            return converted[id(module)]
        if reason != "already a triton_conv.Conv2d":
            skipped.append((name or "<model>", reason))
        return module

    if isinstance(model, nn.Conv2d):
        model = convert(model, "")
    else:
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Conv2d):
                    qualified = f"{name}.{child_name}" if name else child_name
                    setattr(module, child_name, convert(child, qualified))
    if report is not None:
        report.extend(skipped)
    elif skipped:
        listing = "; ".join(f"{name}: {reason}" for name, reason in skipped)
        warnings.warn(f"convert_model left {len(skipped)} convolution(s) alone: {listing}", stacklevel=2)
    return model
