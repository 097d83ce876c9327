"""Adversarial cases against torch's contract that the other contract tests do not reach: 32-bit
offset products in the int64 kernels (a read outside the tensor), shape-polymorphic tracing
(torch.compile dynamic=True, torch.export, torch.jit.trace), convert_model on modules whose
`forward` is an instance attribute or that were parametrized after conversion, and wider coverage
of conv1d's integer arguments, ConvTranspose2d's `output_size` and converted models (copies,
pickling, memory formats, tied modules, pruning).

A case marked xfail(strict=True) is a defect found here: it fails today and must pass once fixed
(then the mark goes). Every check compares with torch (float64 where values are compared).
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import triton_conv
from triton_conv.launchers.common import launch_counts

from .bounds import checked_script
from .conftest import CHECK_ADDRESSES, interpreter_problem
from .contract import EXACT, EXACT_TOL, frames_compiled_dynamic, outcome
from .reference import rel_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launches(fn):
    """(fn(), kernel launches per kernel name during the call)."""
    before = dict(launch_counts)
    result = fn()
    return result, {k: v - before.get(k, 0) for k, v in launch_counts.items() if v != before.get(k, 0)}


# --- 1. int64 offsets: every product of a coordinate and a stride must be 64-bit -------------------
# A view whose elements lie 2**31 or more apart switches the kernels to int64 offsets
# (reaches_int32_limit), but fprop forms `left * x_sw` (kernels/fprop.py, x_rows) and
# `r * w_sr + s * w_ss + ...` (b_offset) in int32: the product wraps negative and the kernel reads
# 4 GiB before the tensor. The storage is 2**31 + 1 half-precision elements (4 GiB of address space,
# of which only the touched pages are ever backed), in a subprocess because the wrong read crashes.
_FAR_VIEWS = {
    # conv2d, x's width axis spans 2**31 elements: column q = 1 reads x[..., 2] at left * x_sw = 2**31.
    "x_width": """
        x = storage.as_strided((1, 1, 1, 3), (3, 3, 3, 2**30))
        x.copy_(torch.randn(1, 1, 1, 3).half())
        w = torch.randn(1, 1, 1, 1).half()
        kwargs = dict(stride=(1, 2))
        ours, theirs = triton_conv.conv2d, F.conv2d
    """,
    # conv1d, the weight's taps 2**30 apart (conv1d copies a far input to a contiguous one, as
    # torch's does; the weight it reads where it lies).
    "conv1d_weight_taps": """
        w = storage.as_strided((1, 1, 3), (3, 3, 2**30))
        w.copy_(torch.randn(1, 1, 3).half())
        x = torch.randn(1, 1, 7).half()
        kwargs = dict(stride=2)
        ours, theirs = triton_conv.conv1d, F.conv1d
    """,
    # The same weight at stride 2: dgrad's stride phases step two tap rows (2**31) at a time.
    "weight_rows_stride_2": """
        w = storage.as_strided((1, 1, 3, 1), (3, 3, 2**30, 1))
        w.copy_(torch.randn(1, 1, 3, 1).half())
        x = torch.randn(1, 1, 7, 1).half()
        kwargs = dict(stride=2)
        ours, theirs = triton_conv.conv2d, F.conv2d
    """,
    # conv2d, the weight's rows 2**30 apart: tap r = 2 sits at r * w_sr = 2**31.
    "weight_rows": """
        w = storage.as_strided((1, 1, 3, 1), (3, 3, 2**30, 1))
        w.copy_(torch.randn(1, 1, 3, 1).half())
        x = torch.randn(1, 1, 5, 1).half()
        kwargs = {}
        ours, theirs = triton_conv.conv2d, F.conv2d
    """,
}


_PRELUDE = textwrap.dedent("""
    import torch, torch.nn.functional as F
    import triton_conv
    from triton_conv.launchers.common import launch_counts, reaches_int32_limit
    storage = torch.empty(2**31 + 1, dtype=torch.float16)  # address space only: pages untouched
""")
# Forward and both gradients: fprop and wgrad read the far x, fprop and dgrad the far weight.
_CHECK = textwrap.dedent("""
    assert reaches_int32_limit(x, w)
    x.requires_grad_(True)
    w.requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    w64 = w.detach().double().requires_grad_(True)
    before = dict(launch_counts)
    got = ours(x, w, **kwargs)
    expected = theirs(x64, w64, **kwargs)
    dy = torch.randn_like(expected).half()  # the reference gets the same fp16 values, widened: a
    # gradient of a few cancelling products would otherwise carry dy's rounding as its own error
    pairs = [(got, expected)]
    ours_grads = torch.autograd.grad(got, (x, w), dy)
    launched = {k for k, v in launch_counts.items() if v > before.get(k, 0)}
    assert launched == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}, launched  # the kernels ran
    pairs += zip(ours_grads, torch.autograd.grad(expected, (x64, w64), dy.double()))
    for name, (ours_, torchs) in zip(("y", "dx", "dw"), pairs):
        error = ((ours_.double() - torchs).norm() / torchs.norm()).item()
        assert error < 3e-3, (name, ours_, torchs)
""")


@pytest.mark.parametrize("case", list(_FAR_VIEWS))
def test_views_reaching_past_int32_read_inside_the_tensor(case):
    if reason := interpreter_problem():
        pytest.skip(reason)
    script = checked_script(_PRELUDE + textwrap.dedent(_FAR_VIEWS[case]) + _CHECK, CHECK_ADDRESSES)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": ROOT}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    crash = "a crash (-11 is a read outside the tensor)" if run.returncode < 0 else "a wrong result"
    assert run.returncode == 0, f"{case}: {crash}, exit {run.returncode}\n{run.stderr[-2000:]}"


# --- 2. shape-polymorphic tracing ---------------------------------------------------------------------
FUNCTIONAL = {
    "conv2d": (triton_conv.conv2d, F.conv2d, (3, 6, 5), (4, 3, 3, 3), dict(padding=1, stride=2)),
    "conv1d": (triton_conv.conv1d, F.conv1d, (3, 9), (4, 3, 3), dict(padding=1)),
    "conv_transpose2d": (
        triton_conv.conv_transpose2d, F.conv_transpose2d, (3, 4, 5), (3, 2, 3, 3),
        dict(stride=2, padding=1, output_padding=1),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_compile_with_dynamic_shapes_compiles_once(name):
    """torch.compile(dynamic=True) traces torch's convolutions once for every batch size; ours is
    recompiled for each (and after the recompile limit dynamo gives up on the frame)."""
    ours, theirs, x_shape, w_shape, kwargs = FUNCTIONAL[name]
    w = torch.randn(w_shape, dtype=EXACT)
    inputs = [torch.randn(batch, *x_shape, dtype=EXACT) for batch in (2, 3, 5)]
    counts = frames_compiled_dynamic(ours, theirs, w, kwargs, inputs)
    # (torch's conv_transpose2d itself recompiles once: the bar is torch's count, not 1)
    assert counts["ours"] <= counts["torch"], f"{name}: frames compiled for 3 batch sizes {counts}"


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_a_compiled_convolution_is_not_recompiled_by_imports_elsewhere(name, monkeypatch):
    """Traced by Dynamo, the check for a running ONNX export read sys.modules, and Dynamo guarded on
    that dict's size: every import anywhere in the program recompiled the frame (a first call, which
    imports modules, compiled twice), and past the recompile limit (8) fullgraph=True failed."""
    import types

    from torch._dynamo.testing import CompileCounter

    ours, theirs, x_shape, w_shape, kwargs = FUNCTIONAL[name]
    w, x = torch.randn(w_shape, dtype=EXACT), torch.randn(2, *x_shape, dtype=EXACT)
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(lambda x: ours(x, w, **kwargs), backend=counter, fullgraph=True)
    for index in range(10):
        monkeypatch.setitem(sys.modules, f"triton_conv_test_import_{index}", types.ModuleType("m"))
        got, launched = _launches(lambda: compiled(x))
        assert launched and rel_error(got, theirs(x, w, **kwargs)) < EXACT_TOL, (name, index)
    torch._dynamo.reset()
    assert counter.frame_count == 1, f"{name}: {counter.frame_count} frames for one shape"


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_a_strict_export_asks_whether_onnx_is_exporting_each_time(name, monkeypatch):
    """Dynamo keeps the answer as a constant of a compiled graph; an export traces anew: a strict
    torch.export (torch.onnx's dynamo=True exporter falls back to one) records torch's convolution
    while torch.onnx exports, ours before and after."""
    flags = pytest.importorskip("torch.onnx._internal.exporter._flags")
    ours, theirs, x_shape, w_shape, kwargs = FUNCTIONAL[name]
    model = _FunctionalModel(ours, w_shape, kwargs)
    x = torch.randn(2, *x_shape, dtype=EXACT)
    recorded = []
    for exporting in (False, True, False):
        monkeypatch.setattr(flags, "_is_onnx_exporting", exporting)
        program = torch.export.export(model, (x,), strict=True)
        targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
        recorded.append({target.split(".")[0] for target in targets if "conv" in target})
    assert recorded == [{"triton_conv"}, {"aten"}, {"triton_conv"}], recorded


class _FunctionalModel(nn.Module):
    def __init__(self, conv, w_shape, kwargs):
        super().__init__()
        self.conv, self.kwargs = conv, kwargs
        self.weight = nn.Parameter(torch.randn(w_shape, dtype=EXACT))

    def forward(self, x):
        return self.conv(x, self.weight, **self.kwargs)


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_export_with_a_dynamic_batch(name, triton_only):
    ours, theirs, x_shape, w_shape, kwargs = FUNCTIONAL[name]
    x = torch.randn(2, *x_shape, dtype=EXACT)
    batch = torch.export.Dim("batch", min=1, max=16)
    model = _FunctionalModel(ours, w_shape, kwargs)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    x3 = torch.randn(3, *x_shape, dtype=EXACT)
    expected = theirs(x3, exported.module().weight, **kwargs)
    with triton_only() as proof:  # the exported program calls our op, whose kernel runs
        got = exported.module()(x3)
    assert len(proof.launches) == 1 and rel_error(got, expected) < EXACT_TOL, (name, proof.launches)


SPATIAL = {  # layers whose torch export takes every spatial size unbounded (a stride-2 conv2d does not)
    "conv2d": (triton_conv.conv2d, F.conv2d, (6, 2, 3, 3), dict(padding=1, groups=2), (5, 7), (1, 30)),
    "conv1d": (triton_conv.conv1d, F.conv1d, (6, 4, 3), dict(padding="same", dilation=2), (9,), (1,)),
    "conv_transpose2d": (
        triton_conv.conv_transpose2d, F.conv_transpose2d, (4, 3, 3, 3),
        dict(stride=2, padding=1, output_padding=1), (4, 5), (1, 9),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SPATIAL))
def test_export_with_dynamic_image_sizes_guards_as_torch_does(name, triton_only):
    """torch.export with the batch and every spatial size dynamic (unbounded Dims): ours exports with
    the value ranges torch's gets (its size checks add no guard), and the program checks the sizes
    it is given when it runs."""
    ours, theirs, w_shape, kwargs, traced, other = SPATIAL[name]
    weight = torch.randn(w_shape, dtype=EXACT)

    class Model(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x, weight, **kwargs)

    x = torch.randn(2, 4, *traced, dtype=EXACT)
    dims = {0: torch.export.Dim("n"), **{2 + i: torch.export.Dim(f"s{i}") for i in range(len(traced))}}
    programs = {label: torch.export.export(Model(conv), (x,), dynamic_shapes=(dims,))
                for label, conv in (("torch", theirs), ("ours", ours))}  # fmt: skip
    ranges = {label: sorted((str(r.lower), str(r.upper)) for r in p.range_constraints.values())
              for label, p in programs.items()}  # fmt: skip
    assert ranges["ours"] == ranges["torch"], ranges
    x_other = torch.randn(3, 4, *other, dtype=EXACT)
    with triton_only() as proof:
        got = programs["ours"].module()(x_other)
    assert len(proof.launches) == 1, proof.launches
    assert rel_error(got, theirs(x_other, weight, **kwargs)) < EXACT_TOL
    with pytest.raises(RuntimeError):  # an empty image in a non-empty batch: refused when it runs
        programs["ours"].module()(torch.randn(2, 4, *(0 for _ in traced), dtype=EXACT))


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_jit_trace(name, triton_only):
    ours, theirs, x_shape, w_shape, kwargs = FUNCTIONAL[name]
    w = torch.randn(w_shape, dtype=EXACT)
    x = torch.randn(2, *x_shape, dtype=EXACT)
    with warnings.catch_warnings():  # as torch's convolutions trace: without a TracerWarning
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(lambda x: ours(x, w, **kwargs), (x,))
    x_other = torch.randn(3, *x_shape[:-1], x_shape[-1] + 2, dtype=EXACT)  # the trace is not of one shape
    with triton_only() as proof:  # the trace recorded our op, whose kernel runs
        got, got_other = traced(x), traced(x_other)
    assert sum(proof.launches.values()) == 2 and len(proof.launches) == 1, proof.launches
    assert rel_error(got, theirs(x, w, **kwargs)) < EXACT_TOL, name
    assert rel_error(got_other, theirs(x_other, w, **kwargs)) < EXACT_TOL, name


def test_jit_trace_leaves_the_record_of_shown_warnings_alone():
    """Python shows a 'default' warning once per place; a traced call must not make it forget
    (warnings.catch_warnings, which the checks once ran in, resets that record process-wide on
    exit, and swaps every thread's filters meanwhile)."""
    ours, _, x_shape, w_shape, kwargs = FUNCTIONAL["conv2d"]
    w, x = torch.randn(w_shape, dtype=EXACT), torch.randn(2, *x_shape, dtype=EXACT)
    torch.jit.trace(lambda x: ours(x, w, **kwargs), (x,))  # whatever a first trace imports, before
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's own
        for _ in range(2):
            warnings.warn("the caller's warning", UserWarning, stacklevel=1)
            torch.jit.trace(lambda x: ours(x, w, **kwargs), (x,))
    assert [str(w.message) for w in shown if w.category is UserWarning] == ["the caller's warning"]


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_jit_trace_of_a_sliced_example_passes_the_traces_own_check(name, triton_only):
    """torch.jit.trace checks its graph by tracing again on a dense copy of the example: the graph
    must not depend on whether the example was dense (conv1d copies its input contiguous, which a
    trace of a dense example once named differently); the trace then runs any layout."""
    ours, theirs, x_shape, w_shape, kwargs = FUNCTIONAL[name]
    w = torch.randn(w_shape, dtype=EXACT)
    sliced = torch.randn(2, *x_shape, 2, dtype=EXACT)[..., 0]  # every stride doubled: not dense
    traced = torch.jit.trace(lambda x: ours(x, w, **kwargs), (sliced,), check_trace=True)
    for x in (sliced, sliced.contiguous()):
        with triton_only() as proof:
            got = traced(x)
        assert proof.launches and rel_error(got, theirs(x, w, **kwargs)) < EXACT_TOL, name


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_jit_trace_of_a_small_example_keeps_the_callers_stride(name, triton_only):
    """A trace records the op's arguments as constants: they must be the caller's geometry, not the
    problem canonicalized for the example's size (a stride capped at a 1-pixel example's span, which
    a larger input then ran with: a wrong shape, or the right shape with wrong values)."""
    ours, theirs, x_shape, w_shape, kwargs = FUNCTIONAL[name]
    kwargs = {**kwargs, "stride": 4, "padding": 0}
    w = torch.randn(*w_shape[:2], *(1 for _ in w_shape[2:]), dtype=EXACT)  # the example is one tap wide
    example = torch.randn(1, x_shape[0], *(1 for _ in x_shape[1:]), dtype=EXACT)
    traced = torch.jit.trace(lambda x: ours(x, w, **kwargs), (example,))
    x = torch.randn(2, x_shape[0], *(9 for _ in x_shape[1:]), dtype=EXACT)
    with triton_only() as proof:
        got = traced(x)
    want = theirs(x, w, **kwargs)
    assert proof.launches and got.shape == want.shape and rel_error(got, want) < EXACT_TOL, name


@pytest.mark.parametrize("name", ["conv2d", "conv1d"])
def test_jit_trace_says_that_same_padding_becomes_constant_pads(name):
    """Our op takes explicit pads, so a trace records the pads 'same' makes of the traced weight's
    size; with a weight of another size the traced call would use them. Said, as torch's tracer says
    what it makes constant; none to say when the pads are zero (a 1-tap weight)."""
    ours, theirs, x_shape, w_shape, _ = FUNCTIONAL[name]
    x = torch.randn(2, *x_shape, dtype=EXACT)
    w = torch.randn(w_shape, dtype=EXACT)
    with pytest.warns(torch.jit.TracerWarning, match="padding='same'"):
        traced = torch.jit.trace(lambda x, w: ours(x, w, padding="same"), (x, w))
    assert rel_error(traced(x, w), theirs(x, w, padding="same")) < EXACT_TOL
    one_tap = torch.randn(*w_shape[:2], *(1 for _ in w_shape[2:]), dtype=EXACT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        torch.jit.trace(lambda x, w: ours(x, w, padding="same"), (x, one_tap))


@pytest.mark.parametrize("layer", ["Conv2d", "Conv1d"])
def test_jit_trace_of_a_module_with_even_same_padding_passes_the_traces_own_check(layer, triton_only):
    """An even kernel's 'same' copies its input when autograd records (as torch's padded copy is
    saved); torch.jit.trace checks its graph by tracing again without grad, so a copy made only
    with grad gave two graphs and a TracingCheckError. Traced, the copy is always made."""
    ours = getattr(triton_conv.nn, layer)(2, 3, 2, padding="same", dtype=EXACT)
    theirs = getattr(torch.nn, layer)(2, 3, 2, padding="same", dtype=EXACT)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 2, *(5 for _ in range(ours.weight.dim() - 2)), dtype=EXACT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # 'same' made constant pads: said
        traced = torch.jit.trace(ours, (x,), check_trace=True)
    with triton_only() as proof:
        got = traced(x)
    assert proof.launches and rel_error(got, theirs(x)) < EXACT_TOL


# --- 3. convert_model's corner cases -----------------------------------------------------------------
def test_convert_model_never_silently_keeps_torchs_convolution():
    """A conv whose `forward` is an instance attribute bound to it (as wrappers such as accelerate's
    device hooks install) is reported as converted, yet the new module calls the old one's forward:
    torch's convolution runs. Converting must either run the Triton kernel or report the module."""
    conv = nn.Conv2d(3, 4, 3).double()
    original_forward = conv.forward
    conv.forward = lambda *args, **kwargs: original_forward(*args, **kwargs)
    model, report = nn.Sequential(conv), []
    triton_conv.convert_model(model, report=report)
    x = torch.randn(1, 3, 5, 5, dtype=EXACT)
    y, launched = _launches(lambda: model(x))
    assert rel_error(y, F.conv2d(x, conv.weight, conv.bias)) < EXACT_TOL
    assert launched.get("fprop_kernel") == 1 or [name for name, _ in report] == ["0"], (
        type(model[0]).__name__,
        launched,
        report,
    )


def test_convert_model_does_not_report_its_own_modules_parametrized_later():
    model = triton_conv.convert_model(nn.Sequential(nn.Conv2d(3, 4, 3).double()))
    torch.nn.utils.parametrizations.weight_norm(model[0])
    report = []
    triton_conv.convert_model(model, report=report)
    _, launched = _launches(lambda: model(torch.randn(1, 3, 4, 4, dtype=EXACT)))
    assert launched == {"fprop_kernel": 1}  # it runs the kernel...
    assert report == [], report  # ...so "convert before parametrizing" is wrong advice


def _decoder():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 2, 2, stride=2),
        nn.Flatten(2), nn.Conv1d(2, 2, 3, padding="same", padding_mode="circular"),
    ).double()  # fmt: skip


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save", "channels_last"])
def test_converted_model_survives_copies_and_memory_formats(how):
    reference = _decoder()
    model = triton_conv.convert_model(copy.deepcopy(reference))
    if how == "deepcopy":
        model = copy.deepcopy(model)
    elif how == "pickle":
        model = pickle.loads(pickle.dumps(model))
    elif how == "torch.save":
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        model = torch.load(buffer, weights_only=False)
    x = torch.randn(2, 3, 4, 5, dtype=EXACT)
    if how == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    kinds = [type(m) for m in model]
    assert kinds[0] is triton_conv.Conv2d and kinds[2] is triton_conv.ConvTranspose2d
    assert kinds[4] is triton_conv.Conv1d
    y, launched = _launches(lambda: model(x))
    assert launched == {"fprop_kernel": 2, "dgrad_kernel": 1}, launched
    assert rel_error(y, reference(x)) < EXACT_TOL
    state = model.state_dict()
    assert list(state) == list(reference.state_dict())
    fresh = _decoder()
    fresh.load_state_dict(state)
    assert rel_error(fresh(x), reference(x)) < EXACT_TOL


def test_convert_model_converts_a_conv_shared_across_containers_once(triton_only):
    shared = nn.Conv2d(3, 3, 3, padding=1).double()
    tied_a, tied_b = nn.Conv2d(3, 3, 1).double(), nn.Conv2d(3, 3, 1).double()
    tied_b.weight = tied_a.weight

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = shared
            self.blocks = nn.ModuleList([shared, nn.Sequential(shared)])
            self.named = nn.ModuleDict({"conv": shared, "line": nn.Conv1d(3, 3, 1).double()})
            self.tied_a, self.tied_b = tied_a, tied_b

        def forward(self, x):
            x = self.named["conv"](self.blocks[1](self.blocks[0](self.first(x))))
            n, c, h, w = x.shape
            x = self.named["line"](x.flatten(2)).view(n, c, h, w)
            return self.tied_b(self.tied_a(x))

    net = Net()
    x = torch.randn(2, 3, 4, 4, dtype=EXACT, requires_grad=True)
    expected = net(x)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    report = []
    triton_conv.convert_model(net, report=report)
    converted = [net.first, net.blocks[0], net.blocks[1][0], net.named["conv"]]
    assert all(m is converted[0] for m in converted) and type(converted[0]) is triton_conv.Conv2d
    assert type(net.named["line"]) is triton_conv.Conv1d and net.tied_b.weight is net.tied_a.weight
    assert report == [] and len(list(net.parameters())) == 7
    with triton_only() as proof:
        got = net(x)
        (grad,) = torch.autograd.grad(got.square().sum(), x)
    assert proof.launches["fprop_kernel"] == 7
    assert rel_error(got, expected) < EXACT_TOL and rel_error(grad, grad_expected) < EXACT_TOL


def test_convert_model_keeps_pruning_and_legacy_spectral_norm(triton_only):
    import torch.nn.utils.prune as prune

    pruned = nn.Conv2d(3, 4, 3).double()
    prune.l1_unstructured(pruned, "weight", amount=0.5)
    normed = torch.nn.utils.spectral_norm(nn.Conv2d(3, 4, 3).double()).eval()
    x = torch.randn(1, 3, 5, 5, dtype=EXACT)
    expected = [pruned(x), normed(x)]
    model = triton_conv.convert_model(nn.Sequential(pruned, normed))
    with triton_only() as proof:
        got = [model[0](x), model[1](x)]
    assert proof.launches == {"fprop_kernel": 2}
    for a, b in zip(got, expected):
        assert rel_error(a, b) < EXACT_TOL
    again = torch.nn.utils.spectral_norm(nn.Conv2d(3, 4, 3).double()).eval()
    again.load_state_dict(model[1].state_dict())
    assert rel_error(again(x), expected[1]) < EXACT_TOL


# --- 4. conv1d's integer arguments and ConvTranspose2d's output_size, against torch ----------------
CONV1D_KINDS = [
    dict(stride=(2,)), dict(stride=[2]), dict(stride=torch.tensor(2)), dict(stride=np.int64(2)),
    dict(padding=(1,)), dict(padding=torch.tensor(1)), dict(padding=torch.tensor([1])),
    dict(dilation=[2]), dict(groups=torch.tensor(2)), dict(groups=np.int32(2)),
    dict(padding=(1, 1)), dict(stride=(1, 1)), dict(dilation=(2, 2)), dict(stride=()),
    dict(padding="SAME"), dict(padding="same", stride=2), dict(padding=torch.tensor([1, 1])),
    dict(stride=2.0), dict(padding=None), dict(groups=True),
]  # fmt: skip


@pytest.mark.parametrize("kwargs", CONV1D_KINDS, ids=repr)
def test_conv1d_integer_argument_kinds_match_torch(kwargs):
    x, w, b = (torch.randn(shape, dtype=EXACT) for shape in ((2, 4, 9), (6, 2, 3), (6,)))
    kwargs = {"groups": 2, **kwargs}
    torch_kind, expected = outcome(lambda: F.conv1d(x, w, b, **kwargs))
    kind, got = outcome(lambda: triton_conv.conv1d(x, w, b, **kwargs))
    assert kind == torch_kind, (kwargs, got, expected)
    if kind == "raise":
        assert isinstance(got, RuntimeError), (kwargs, got)
        for natural in (TypeError, ValueError):
            assert not isinstance(expected, natural) or isinstance(got, natural), (kwargs, got, expected)
    else:
        assert got.shape == expected.shape and rel_error(got, expected) < EXACT_TOL, kwargs


@pytest.mark.parametrize(
    "kwargs", [dict(stride=2), dict(stride=(3, 2), padding=1, dilation=2, groups=2)], ids=["s2", "dilated"]
)
def test_conv_transpose2d_module_output_size_kinds_match_torch(kwargs):
    reference = nn.ConvTranspose2d(4, 6, 3, **kwargs).double()
    module = triton_conv.ConvTranspose2d(4, 6, 3, **kwargs).double()
    module.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 3, 4, dtype=EXACT)
    h, w = reference(x).shape[-2:]
    sizes = [
        (h + 1, w), [h + 1, w + 1], torch.Size([2, 6, h, w + 1]), [6, h, w], [1, 1, h, w],
        [torch.tensor(h + 1), w], [torch.tensor([[h + 1]]), w], [h], [], [h + 9, w], [h - 1, w], [-1, -1],
    ]  # fmt: skip
    for inputs in (x, x[0]):
        for size in sizes:
            torch_kind, expected = outcome(lambda: reference(inputs, size))  # noqa: B023
            kind, got = outcome(lambda: module(inputs, size))  # noqa: B023
            assert kind == torch_kind, (size, tuple(inputs.shape), got, expected)
            if kind == "raise":  # torch's error, also a RuntimeError, naming output_size
                assert isinstance(got, type(expected)) and isinstance(got, RuntimeError), size
                assert str(expected) in str(got) and "output_size" in str(got), size
            else:
                assert got.shape == expected.shape and rel_error(got, expected) < EXACT_TOL, size


def test_weight_gradient_of_an_image_whose_batch_stride_overlaps_it():
    """An N=1 NHWC input whose batch stride (20) is below C·H·W (100), grouped, with a channels_last
    weight: torch 2.11's and 2.13's CPU weight gradient of it is wrong (an error of 17.7 against the
    same values contiguous). Ours is checked against that contiguous float64 reference, not torch's
    answer on the view, and the kernel must run."""
    x = torch.randn(4000, dtype=EXACT).as_strided((1, 4, 5, 5), (20, 1, 20, 4))
    w = torch.randn(4, 2, 2, 1, dtype=EXACT).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(1, 4, 4, 5, dtype=EXACT)

    def weight_gradient(conv, x, w):
        w = w.detach().requires_grad_()
        return torch.autograd.grad(conv(x, w, groups=2), w, dy)[0]

    expected = weight_gradient(F.conv2d, x.contiguous(), w.contiguous())
    got, launches = _launches(lambda: weight_gradient(triton_conv.conv2d, x, w))
    assert launches.get("wgrad_kernel") == 1 and rel_error(got, expected) < EXACT_TOL


def test_forward_tangent_under_vmap_of_a_batched_bias():
    """vmap over the bias of a jvp of conv1d (stride 2, dilation 2): reported wrong in torch's tangent
    on 2026-12-01 (not reproduced with torch 2.11 or 2.13 on 2026-12-04); ours equals
    conv1d(tangent of x, w) + conv1d(x, tangent of w) for every bias."""
    from torch.func import jvp, vmap

    x, w = torch.randn(2, 1, 5, dtype=EXACT), torch.randn(1, 1, 2, dtype=EXACT)
    biases = torch.randn(3, 1, dtype=EXACT)
    args = dict(stride=2, dilation=2)

    def one(bias):
        return jvp(lambda x, w: triton_conv.conv1d(x, w, bias, **args), (x, w), (x.cos(), w.sin()))

    (outputs, tangents), launches = _launches(lambda: vmap(one)(biases))
    assert launches.get("fprop_kernel")  # the Triton kernel computed it, not torch's convolution
    for bias, output, tangent in zip(biases, outputs, tangents):
        assert rel_error(output, F.conv1d(x, w, bias, **args)) < EXACT_TOL
        expected = F.conv1d(x.cos(), w, None, **args) + F.conv1d(x, w.sin(), None, **args)
        assert rel_error(tangent, expected) < EXACT_TOL
