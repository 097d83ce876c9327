"""What the three launchers share: runtime flags, split-K buffers and the per-shape
launch plans.

A launch plan is everything of a launch that depends only on the call's geometry (shapes, strides,
dtype, device, problem, tile config and flags): the grid, the integer arguments and the constexprs.
Each launcher keeps its plans in a `memo.BoundedMemo` keyed on exactly those, so a repeated call only
allocates its output, fetches the plan and launches. Nothing on the launch path reads a tensor's
data or synchronises with the device (but `zero_run`'s first fill, once per device, dtype and
length, and never during a capture), so the passes can be captured in a CUDA graph.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from collections import Counter
from typing import Any, NamedTuple

import torch

from ..kernels.common import split_counters
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


# Triton's interpreter keeps the running program's id and grid in module globals and patches
# triton.language for the length of a launch: two threads interpreting at once read each other's
# program ids (errors, or wrong values). On a GPU launches need no lock.
_INTERPRETER = threading.RLock()


def _renew_interpreter_lock() -> None:
    global _INTERPRETER
    _INTERPRETER = threading.RLock()


# A fork waits for the launch in progress: a child forked in the middle of one would inherit the lock
# held by a thread that does not exist there (every launch of the child would wait for ever) and a
# half-patched triton.language. The lambdas read the lock the module holds at the time of the fork.
os.register_at_fork(
    before=lambda: _INTERPRETER.acquire(),
    after_in_parent=lambda: _INTERPRETER.release(),
    after_in_child=_renew_interpreter_lock,
)


def launch(spec: LaunchSpec) -> None:
    launch_counts[spec.kernel.__name__] += 1
    # Triton's launch itself (argument binding, specialisation key, the driver call) is Triton's.
    run = spec.kernel[spec.grid]
    with _INTERPRETER if interpreter_active() else contextlib.nullcontext():
        run(*spec.args, **spec.constexprs, num_warps=spec.num_warps, num_stages=spec.num_stages)


def positional_arguments(spec: LaunchSpec) -> tuple:
    """Every parameter of the spec's kernel in the kernel's order, the constexprs among them (their
    defaults where the spec gives none): what a compiled kernel's runner (`compiled[grid](*args)`,
    Triton 3.6 to 3.9) takes, bypassing the JIT's argument binding and cache lookup.
    bench/host_overhead.py times that runner beside the JIT's launch on a GPU."""
    parameters = list(inspect.signature(spec.kernel.fn).parameters.values())
    unknown = set(spec.constexprs) - {parameter.name for parameter in parameters[len(spec.args) :]}
    if unknown:
        raise TypeError(f"{spec.kernel.__name__}: {sorted(unknown)} are not its trailing parameters")
    rest = []
    for parameter in parameters[len(spec.args) :]:
        value = spec.constexprs.get(parameter.name, parameter.default)
        if value is inspect.Parameter.empty:
            raise TypeError(f"{spec.kernel.__name__}: no value for {parameter.name}")
        rest.append(value)
    return (*spec.args, *rest)


class KernelFlags(NamedTuple):
    use_int64: bool
    input_precision: str
    upcast: bool


def reaches_int32_limit(*tensors: torch.Tensor | None) -> bool:
    """True when some element of a tensor lies 2**31 elements or more past its start (a sliced view
    can with few elements), or the tensor has that many elements (an expanded one, whose flat pixel
    indices still count that high, though its strides reach little)."""
    for t in tensors:
        if t is None or t.numel() == 0:
            continue
        reach = sum((size - 1) * abs(step) for size, step in zip(t.shape, t.stride()))
        if max(reach + 1, t.numel()) >= INT32_LIMIT:
            return True
    return False


class FlagSettings(NamedTuple):
    """The process-wide settings a launch's kernel depends on, read once per call (flag_settings)."""

    tf32: bool  # an fp32 dot in TF32 (as torch would for the call: runtime.fp32_uses_tf32)
    upcast: bool  # bf16 operands upcast before the dot (Triton's interpreter only)


def flag_settings(dtype: torch.dtype) -> FlagSettings:
    """The settings kernel_flags depends on, for a plan cache's key: the TF32 setting for fp32 (read
    anew each call: torch.backends can change between calls), the interpreter for bf16; other
    dtypes depend on neither."""
    return FlagSettings(
        dtype == torch.float32 and fp32_uses_tf32(), dtype == torch.bfloat16 and interpreter_active()
    )


def kernel_flags(
    dtype: torch.dtype,
    *tensors: torch.Tensor,
    force_int64: bool = False,
    settings: FlagSettings | None = None,
) -> KernelFlags:
    """int64 offsets when a tensor (workspaces included) reaches 2**31 elements, or when the caller
    forces it, as tests do; TF32 for fp32 only when cuDNN would use it; the bf16 upcast only under
    the interpreter. `settings`: flag_settings(dtype) as the caller read it for its plan cache's key,
    not read again here (another thread could have changed TF32 in between, and the plan cached
    under one setting would launch the other's kernel); read now when not given."""
    settings = settings or flag_settings(dtype)
    use_int64 = force_int64 or reaches_int32_limit(*tensors)
    return KernelFlags(use_int64, "tf32" if settings.tf32 else "ieee", settings.upcast)


def layout_key(tensor: torch.Tensor) -> tuple:
    """What of a tensor a launch depends on: shape and strides (zero strides of an expanded tensor
    included) and whether its data is 16-byte aligned (what TMA needs). dtype and device enter the
    key once, the operands': the outputs follow them, but for wgrad's dw in the accumulator's dtype
    when it sums chunks (passes.weight_grad), which changes no plan value (offsets count elements)."""
    return (tensor.shape, tensor.stride(), tensor.data_ptr() % 16 == 0)


class Plan(NamedTuple):
    """A launch without its tensors: what a launcher's plan memo keeps per shape. `spec(tensors)` puts the
    call's tensors (and the split-K buffers) in front of the integer arguments."""

    kernel: Any
    grid: tuple[int, int, int]
    ints: tuple  # the runtime integer arguments, after the tensors, in the kernel's order
    constexprs: dict
    num_warps: int
    num_stages: int
    split: tuple  # split_k_buffers' arguments
    buffers: tuple | None  # the cached placeholder pair when split_k is 1, else None: per call
    tma: tuple = ()  # (i, TmaMatrix or None): tensors[i] is followed by its descriptor argument

    def spec(self, tensors: tuple, extra: tuple = ()) -> LaunchSpec:
        """The launch with `tensors` first, each with a descriptor slot followed by its TMA
        descriptor (or by itself, unused, when the kernel loads it through pointers), then the
        split-K buffers after `extra` (wgrad's db workspace sits between the workspace and the
        counters), then the integers."""
        workspace, counters = self.buffers if self.buffers is not None else split_k_buffers(*self.split)
        if self.tma:
            views = dict(self.tma)
            tensors = tuple(
                arg
                for i, tensor in enumerate(tensors)
                for arg in (
                    (tensor,)
                    if i not in views
                    else (tensor, tensor if views[i] is None else views[i].descriptor(tensor))
                )
            )
        args = (*tensors, workspace, *extra, counters, *self.ints)
        return LaunchSpec(self.kernel, self.grid, args, self.constexprs, self.num_warps, self.num_stages)


_placeholders: dict = {}


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """What sums of `dtype` products accumulate in: float64 for float64, else float32 (as torch's)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _placeholder(dtype: torch.dtype, device) -> torch.Tensor:
    """One element of `dtype` per device, cached: the argument of a buffer the kernel never touches."""
    key = (torch.device(device), dtype)
    if key not in _placeholders:
        _placeholders[key] = torch.empty(1, dtype=dtype, device=device)
    return _placeholders[key]


def split_workspace(split_k: int, elements: int, dtype, device) -> torch.Tensor:
    """`split_k` partial results of `elements` each, in the accumulator's dtype of `dtype`; with
    split_k 1 the kernel never touches it and a cached placeholder serves (no allocation on the
    launch path)."""
    acc_dtype = accumulator_dtype(dtype)
    if split_k == 1:
        return _placeholder(acc_dtype, device)
    return torch.empty(split_k * elements, dtype=acc_dtype, device=device)


@functools.cache
def _counters_per_slot(split_k: int) -> int:
    """split_counters, remembered: the constexpr function takes microseconds per host call."""
    return int(split_counters(split_k))


def split_k_buffers(
    split_k: int, tile_slots: int, block_m: int, block_n: int, dtype, device, extra_counters: int = 0
):
    """Partial tiles (split_workspace) and zeroed arrival counters for deterministic split-K; with
    split_k 1 the kernel never touches them, and cached placeholders serve.

    With split_k > 1 both are allocated per call, on the current stream, the counters zeroed by a
    memset that a CUDA graph captures like any kernel. They are deliberately not cached, although
    the kernel's last split re-zeroes each counter it used: one cached buffer shared by launches on
    two streams (or by a graph replayed on one stream while eager launches run on another) would let
    two launches count arrivals in the same counters and finish each other's tiles. The caching
    allocator already makes the per-call allocation cheap and stream-safe. `extra_counters` more
    slots follow the tiles' (wgrad's bias-gradient programs count their splits there); each slot has
    split_counters(split_k) counters (one per group of splits, and one for the groups)."""
    workspace = split_workspace(split_k, tile_slots * block_m * block_n, dtype, device)
    if split_k == 1:
        return workspace, _placeholder(torch.int32, device)
    slots = tile_slots + extra_counters
    counters = torch.zeros(slots * _counters_per_slot(split_k), dtype=torch.int32, device=device)
    return workspace, counters


_zero_runs: dict = {}


def zero_run(length: int, dtype: torch.dtype, device) -> torch.Tensor:
    """`length` zeros of `dtype` on `device`, allocated once and never written: a kernel points the
    loads of padding rows here instead of masking them (dgrad's TAP_BITS reads BLOCK_K of them).

    The first fill is waited for once, so a launch on another stream never reads it unfilled. One
    first asked for while a CUDA stream is capturing is not kept: its fill is part of the graph and
    runs only when the graph replays."""
    key = (torch.device(device), dtype, length)
    if key in _zero_runs:
        return _zero_runs[key]
    zeros = torch.zeros(length, dtype=dtype, device=device)
    if key[0].type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return zeros
        torch.cuda.current_stream(key[0]).synchronize()
    _zero_runs[key] = zeros
    return zeros
