"""What the three launchers share: runtime flags, output layout and split-K buffers."""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import torch

from ..runtime import fp32_uses_tf32, interpreter_active

INT32_LIMIT = 2**31


class LaunchSpec(NamedTuple):
    """Everything one kernel launch needs. The launcher builds it; `launch` runs it and the sm_90
    compile check (triton_conv.compile_check) compiles exactly the same arguments without a GPU."""

    kernel: Any  # a @triton.jit function
    grid: tuple[int, int, int]
    args: tuple  # runtime arguments, in the kernel's order
    constexprs: dict
    num_warps: int
    num_stages: int


# Kernel launches per kernel name: tests read it to prove that the Triton path did the work.
launch_counts: Counter = Counter()


def launch(spec: LaunchSpec) -> None:
    launch_counts[spec.kernel.__name__] += 1
    spec.kernel[spec.grid](
        *spec.args, **spec.constexprs, num_warps=spec.num_warps, num_stages=spec.num_stages
    )


class KernelFlags(NamedTuple):
    use_int64: bool
    input_precision: str
    upcast: bool


def reaches_int32_limit(*tensors: torch.Tensor | None) -> bool:
    """True when some element of a tensor lies 2**31 elements or more past its start, or the tensor
    has that many elements. A sliced view can reach that with few elements; an expanded one can
    have many elements and reach none."""
    for t in tensors:
        if t is None or t.numel() == 0:
            continue
        reach = sum((size - 1) * abs(step) for size, step in zip(t.shape, t.stride()))
        if max(reach + 1, t.numel()) >= INT32_LIMIT:
            return True
    return False


def kernel_flags(dtype: torch.dtype, *tensors: torch.Tensor, force_int64: bool = False) -> KernelFlags:
    """int64 offsets when a tensor (workspaces included) reaches 2**31 elements, or when the caller
    forces it, as tests do; TF32 for fp32 only when cuDNN would use it; the bf16 upcast only under
    the interpreter."""
    use_int64 = force_int64 or reaches_int32_limit(*tensors)
    precision = "tf32" if dtype == torch.float32 and fp32_uses_tf32() else "ieee"
    upcast = dtype == torch.bfloat16 and interpreter_active()
    return KernelFlags(use_int64, precision, upcast)


def wants_channels_last(*tensors: torch.Tensor) -> bool:
    """The output follows its inputs' memory format, as cuDNN does: channels_last if either is."""
    return any(
        t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        for t in tensors
    )


def empty_like_layout(shape, like: tuple[torch.Tensor, ...], dtype, device) -> torch.Tensor:
    memory_format = torch.channels_last if wants_channels_last(*like) else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)


_placeholders: dict = {}


def split_k_buffers(split_k: int, tile_slots: int, block_m: int, block_n: int, dtype, device):
    """Partial tiles (in the accumulator's dtype) and zeroed arrival counters for deterministic
    split-K; with split_k 1 the kernel never touches them, and one cached placeholder pair per
    device serves (no allocation on the launch path)."""
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if split_k == 1:
        key = (torch.device(device), acc_dtype)
        if key not in _placeholders:
            _placeholders[key] = (
                torch.empty(1, dtype=acc_dtype, device=device),
                torch.empty(1, dtype=torch.int32, device=device),
            )
        return _placeholders[key]
    workspace = torch.empty(tile_slots * split_k * block_m * block_n, dtype=acc_dtype, device=device)
    counters = torch.zeros(tile_slots, dtype=torch.int32, device=device)
    return workspace, counters


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
