"""Helpers of the contract tests: tensors of any memory layout, placed in poisoned storage, and the
comparison of an outcome of triton_conv with torch's.

A `Layout` says how a tensor lies in memory: the order of its dimensions, gaps between elements,
broadcast (stride 0) dimensions, an overlapping dimension and a storage offset. `place` builds such a
view inside a storage whose every element the view does not cover is NaN: a kernel that reads one
position outside the tensor (beyond it, before it, or in a gap between its elements) and uses it
turns the output into NaN, which `rel_error` refuses. Each case is a dataclass whose repr rebuilds
it, so a failure message is its own reproduction.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import pytest
import torch

from .reference import REL_TOL_FP32_IEEE, bound, rel_error


def reproduction(module: str, call: str) -> str:
    """What a failure prints: a command that runs the failing case alone."""
    return f"reproduce: TRITON_INTERPRET=1 python -c 'import torch; from {module} import *; {call}'"


@dataclass(frozen=True)
class Layout:
    """Memory order (outermost to innermost dimension), per-dimension gap (1 dense, 2 every other
    element), broadcast dimensions (stride 0), one dimension whose stride is halved (an overlapping
    view: two indices share an element), storage offset and trailing room."""

    order: tuple[int, ...]
    gaps: tuple[int, ...]
    broadcast: tuple[bool, ...] = ()
    overlap: int | None = None
    offset: int = 0
    tail: int = 0

    @staticmethod
    def dense(rank: int) -> Layout:
        return Layout(tuple(range(rank)), (1,) * rank)

    def strides(self, shape) -> tuple[int, ...]:
        strides = [0] * len(shape)
        running = 1
        for dim in reversed(self.order):
            if self.broadcast and self.broadcast[dim]:
                continue
            strides[dim] = running * self.gaps[dim]
            if self.overlap == dim:
                strides[dim] = max(1, strides[dim] // 2)
            running = strides[dim] * max(shape[dim], 1)
        return tuple(strides)


def place(shape, dtype, layout: Layout, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(view, storage): a tensor of `shape` laid out as `layout` in a NaN-filled storage; the
    elements the view covers hold random values."""
    strides = layout.strides(shape)
    reach = sum((size - 1) * step for size, step in zip(shape, strides)) if all(shape) else -1
    storage = torch.full((layout.offset + reach + 1 + layout.tail,), math.nan, dtype=dtype)
    if all(shape):
        covered = torch.arange(storage.numel()).as_strided(shape, strides, layout.offset).reshape(-1)
        values = torch.randn(covered.numel(), generator=generator, dtype=torch.float32)
        storage[covered] = values.to(dtype)
    return storage.as_strided(shape, strides, layout.offset), storage


# Every supported Triton runs float64 and bfloat16 through the kernels (tests/test_numerics.py holds
# both to bit-exact results), so the contract is checked against float64 everywhere.
EXACT = torch.float64
EXACT_TOL = 1e-12
LOW_PRECISION = [torch.float16, torch.bfloat16]


def outcome(fn):
    """("ok", value) or ("raise", exception)."""
    try:
        return "ok", fn()
    except Exception as error:  # noqa: BLE001 - the kind is compared by the caller
        return "raise", error


def same_storage(before: torch.Tensor, after: torch.Tensor) -> bool:
    return torch.equal(before.isnan(), after.isnan()) and torch.equal(before.nan_to_num(), after.nan_to_num())


def run_in_layouts(case, ours, theirs, bias_channels: int, failure: str, proof=None):
    """Run `ours` (a triton_conv function) on the case's tensors, each placed in its Layout inside
    NaN-poisoned storage, and backward with the case's dy where a tensor requires grad; hold the
    output and every gradient to `theirs` (torch's function) in float64, and the caller's tensors
    to their values. `case` has x_shape, w_shape, kwargs, dtype, x, w, b, dy (Layouts, b None for no
    bias), needs (of "xwb") and seed. Returns what `proof` (a context such as the triton_only
    fixture) recorded, for the caller to check which kernels ran; None without one."""
    generator = torch.Generator(torch.get_default_device()).manual_seed(case.seed)
    x, x_storage = place(case.x_shape, case.dtype, case.x, generator)
    w, w_storage = place(case.w_shape, case.dtype, case.w, generator)
    b, b_storage = (None, None) if case.b is None else place((bias_channels,), case.dtype, case.b, generator)
    meta = dict(device="meta")  # torch's output shape, from a convolution without data
    y_meta = theirs(torch.empty(case.x_shape, **meta), torch.empty(case.w_shape, **meta), **case.kwargs)
    dy, dy_storage = place(tuple(y_meta.shape), case.dtype, case.dy, generator)
    leaves = {"x": x.detach(), "w": w.detach(), "b": None if b is None else b.detach()}
    for name in case.needs:
        if leaves[name] is not None:
            leaves[name].requires_grad_()
    storages = [s for s in (x_storage, w_storage, b_storage, dy_storage) if s is not None]
    before = [s.clone() for s in storages]
    with (proof or contextlib.nullcontext)() as launched:
        y = ours(leaves["x"], leaves["w"], leaves["b"], **case.kwargs)
        if y.requires_grad:
            y.backward(dy)

    # Fresh float64 copies with the standard strides: the reference gives values, and torch's CPU
    # conv_transpose2d backward refuses some layouts ("grad_weight needs to be contiguous", torch 2.11
    # to 2.13), size-1 dimensions with odd strides among them, which .contiguous() keeps as they are
    # (a tensor with them counts as contiguous).
    def standard(tensor):
        return torch.empty(tensor.shape, dtype=torch.float64).copy_(tensor)

    reference = {k: None if v is None else standard(v.detach()).requires_grad_(v.requires_grad)
                 for k, v in leaves.items()}  # fmt: skip
    y_ref = theirs(reference["x"], reference["w"], reference["b"], **case.kwargs)
    if y_ref.requires_grad:
        y_ref.backward(standard(dy))
    assert y.dtype == case.dtype and y.shape == y_ref.shape, failure
    assert rel_error(y, y_ref) < bound(case.dtype), failure
    for name, leaf in leaves.items():
        if leaf is not None and leaf.requires_grad:
            assert leaf.grad is not None and leaf.grad.dtype == case.dtype, (name, failure)
            assert rel_error(leaf.grad, reference[name].grad) < 2 * bound(case.dtype), (name, failure)
    assert all(same_storage(a, s) for a, s in zip(before, storages)), f"a caller's tensor changed; {failure}"
    return launched


def same_outcome_as_torch(torch_outcome, our_outcome, failure: str, torch_crops: bool = False) -> bool:
    """Hold a degenerate case's outcome (outcome()'s pair) to torch's: where triton_conv raises, an
    error catchable both as torch's RuntimeError and as the ValueError/TypeError of torch's checks,
    and torch raised too; where it computes, torch computed the same tensor. With `torch_crops`,
    the one refusal where torch answers is allowed: 'same' padding with a zero-size kernel, whose
    output torch shapes by cropping the input (it is empty). True where both computed."""
    (torch_kind, expected), (kind, got) = torch_outcome, our_outcome
    if kind == "raise":
        assert isinstance(got, RuntimeError) and isinstance(got, (ValueError, TypeError)), (got, failure)
        refused_same = torch_crops and "padding='same' needs a non-empty kernel" in str(got)
        assert torch_kind == "raise" or refused_same, (got, failure)
        return False
    assert torch_kind == "ok", (expected, failure)
    assert got.shape == expected.shape and torch.allclose(got, expected), failure
    return True


def compiled_against_eager(model, x):
    """Convert `model` (triton_conv.convert_model), compile it with fullgraph=True (one graph, no
    fallback) through an AOT backend that records each graph's call targets, and backward the
    squared sum of its output on `x`, with no warning from dynamo; every gradient must match the
    eager converted model's. Returns
    (launches: the kernels the compiled run launched, forward graph's ops, backward graph's ops).
    torch.compile refuses to run under a dispatch mode, so the graphs are what show whose ops ran."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    import triton_conv
    from triton_conv.launchers.common import launch_counts

    graphs = []

    def record(graph_module, example_inputs):
        graphs.append({str(node.target) for node in graph_module.graph.nodes if node.op == "call_function"})
        return make_boxed_func(graph_module.forward)

    torch._dynamo.reset()
    eager = triton_conv.convert_model(model)
    backend = aot_autograd(fw_compiler=record, bw_compiler=record)
    compiled = torch.compile(eager, backend=backend, fullgraph=True)
    before = dict(launch_counts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled(x).square().sum().backward()
    # Dynamo warns when it traces through something it cannot treat as written (a cached function)
    assert not [str(w.message) for w in caught if "Dynamo" in str(w.message)]
    # Kernels launched here only: one that an earlier test of this process launched shows 0 otherwise
    launched = {k: v - before.get(k, 0) for k, v in launch_counts.items() if v != before.get(k, 0)}
    grads = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
    model.zero_grad()
    x.grad = None
    eager(x).square().sum().backward()
    for got, expected in zip(grads, [p.grad for p in model.parameters()] + [x.grad], strict=True):
        assert rel_error(got, expected) < REL_TOL_FP32_IEEE
    forward_ops, backward_ops = graphs
    return launched, forward_ops, backward_ops


def frames_compiled_dynamic(ours, theirs, w, kwargs: dict, inputs) -> dict[str, int]:
    """torch.compile(dynamic=True) of `conv(x, w, **kwargs)` for torch's conv and ours, each called
    on every tensor of `inputs` (each result checked against torch's eager one in float64): the
    frames dynamo compiled for each, {"torch": ..., "ours": ...}."""
    from torch._dynamo.testing import CompileCounter

    from triton_conv.launchers.common import launch_counts

    frames = {}
    for label, conv in (("torch", theirs), ("ours", ours)):
        torch._dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(lambda x, conv=conv: conv(x, w, **kwargs), backend=counter, dynamic=True)
        for x in inputs:
            before = sum(launch_counts.values())
            got = compiled(x)
            launched = sum(launch_counts.values()) - before  # ours' compiled graph runs our kernels
            assert launched == (label == "ours"), (label, tuple(x.shape), launched)
            assert rel_error(got, theirs(x, w, **kwargs)) < EXACT_TOL, (label, tuple(x.shape))
        frames[label] = counter.frame_count
    torch._dynamo.reset()
    return frames


def gradchecks_run_our_kernels(conv, inputs) -> None:
    """gradcheck, gradgradcheck and forward-mode gradcheck of `conv` in float64, with torch's
    convolutions barred (gradcheck's own arithmetic has none) and all three kernels launched."""
    from .conftest import TritonProof

    with TritonProof() as proof:
        assert torch.autograd.gradcheck(conv, inputs, fast_mode=True)
        assert torch.autograd.gradgradcheck(conv, inputs, fast_mode=True)
        assert torch.autograd.gradcheck(
            conv, inputs, fast_mode=True, check_forward_ad=True, check_backward_ad=False
        )
    assert proof.launches.keys() == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}


def refused_as_torch_refuses(ours, theirs, args: dict, words: str) -> None:
    """torch's `theirs` refuses `args`; triton_conv's `ours` refuses them too, with an error that
    names the argument (`words`, a regex), is catchable as torch's RuntimeError and as the
    ValueError/TypeError of argument checks, and is a TypeError where torch's is."""
    torch_kind, expected = outcome(lambda: theirs(**args))
    assert torch_kind == "raise", expected
    with pytest.raises(RuntimeError, match=words) as caught:
        ours(**args)
    assert isinstance(caught.value, (ValueError, TypeError))
    if isinstance(expected, TypeError):
        assert isinstance(caught.value, TypeError)
