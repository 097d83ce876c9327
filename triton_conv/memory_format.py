"""The memory format of a convolution's outputs, torch's rule, and inputs made in a chosen format.

Every pass's output (and both gradients) follows this one rule, so the launchers, the autograd
formulas and the tuner agree on the layout, and therefore on the binary, of every call."""

from __future__ import annotations

import torch
from torch._prims_common import (
    are_strides_like_channels_last_or_false,
    is_channels_last_contiguous_2d,
    make_channels_last_strides_for,
    suggest_memory_format,
)

from .memo import BoundedMemo


def wants_channels_last(*tensors: torch.Tensor) -> bool:
    """The output follows its inputs' memory format, as torch's convolutions do: channels_last if
    torch suggests it for either (Tensor.suggest_memory_format: strides in NHWC order, so a sliced
    NHWC view, a 1x1 weight (K, C, 1, 1) with strides (C, 1, C, C) and an NHWC tensor of one channel
    count, which `is_contiguous()` alone cannot tell apart), except in float64 on a GPU, which cuDNN
    keeps in NCHW.

    torch's CPU convolutions decide twice: again on the inputs made contiguous in the format the
    first look chose, where a (K, 1, 1, 1) weight sliced out of an NHWC one (strides (8, 1, 4, 2))
    has lost the strides that said channels_last, and the output is NCHW. cuDNN's second look keeps
    the caller's weight (only the input is made contiguous first), so on a GPU the first look
    stands."""
    if any(t._has_symbolic_sizes_strides for t in tensors):
        return _decide_channels_last(tensors)
    # The rule reads only sizes, strides, dtypes and devices, and torch's helpers that it calls go
    # through symbolic-shape guards: a quarter of a call's host time before this memo.
    key = tuple((t.shape, t.stride(), t.dtype, t.device.type, t.layout) for t in tensors)
    return _DECIDED.get(key, lambda: _decide_channels_last(tensors))


_DECIDED = BoundedMemo()


def _decide_channels_last(tensors: tuple[torch.Tensor, ...]) -> bool:
    if any(t.dtype == torch.float64 and t.device.type == "cuda" for t in tensors):
        return False
    tensors = tuple(t for t in tensors if t.dim() == 4)
    chosen = any(suggest_memory_format(t) == torch.channels_last for t in tensors)
    if not chosen or any(t.device.type != "cpu" for t in tensors):
        return chosen
    return any(are_strides_like_channels_last_or_false(t.shape, _channels_last_strides(t)) for t in tensors)


def empty_in_layout(shape, like: torch.Tensor, channels_last: bool, dtype=None) -> torch.Tensor:
    """An empty output of `shape` on `like`'s device (in its dtype, or `dtype`), laid out as every
    pass lays its outputs out: torch.empty in the memory format. Not .contiguous(memory_format=...)
    of a contiguous tensor, which keeps contiguous strides where size-1 dimensions let them pass for
    channels_last too (a 1x1 output): one call's output would then differ from another's."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=layout)


def _channels_last_strides(tensor: torch.Tensor) -> tuple:
    """The strides of tensor.contiguous(memory_format=torch.channels_last), without the copy: its
    own where it already is channels_last contiguous (size-one dimensions' strides kept)."""
    if is_channels_last_contiguous_2d(tensor, false_if_dde=True):
        return tuple(tensor.stride())
    return make_channels_last_strides_for(tensor.shape)


def random_in_layout(shape, dtype, device, channels_last: bool, generator=None) -> torch.Tensor:
    """Fresh random values in the memory format asked for, with the strides Module.to(memory_format=)
    gives a model's tensors: a 1x1 weight in channels_last gets (C, 1, C, C), where
    .contiguous(memory_format=) keeps (C, 1, 1, 1). The kernels take strides as arguments and Triton
    specialises on those equal to 1, so the two are different binaries; whatever times or compiles a
    pass ahead (the tuner, the benchmarks, the campaign) makes its inputs here and gets the binary a
    converted model runs. `generator`: where the values come from (torch's default one if None)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    values = torch.randn(shape, dtype=dtype, device=device, generator=generator)
    return values.to(memory_format=layout)
