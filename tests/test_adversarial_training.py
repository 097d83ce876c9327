"""A fourth adversarial pass: what training code and model tools do around converted modules that the
earlier passes (test_adversarial*.py, test_contract*.py, test_vmap*.py) did not reach.

Classes found and closed here: deferred initialisation on the meta device, torch's FLOP counter,
double backward through an empty batch, convert_model on scripted, traced and exported models; what
torch accepts and these refuse (complex tensors, devices mixed with meta). Pinned, because they
matched torch when probed: every requires_grad combination to second order, and a compiled training
step (padding modes, 'same' with an even kernel and dilation, channels_last, dynamic shapes). Values
are compared with torch's in float64; the triton_only fixture proves the kernels did the work.
"""

from __future__ import annotations

import contextlib
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import triton_conv
from triton_conv.launchers.common import launch_counts

from .contract import EXACT, EXACT_TOL, frames_compiled_dynamic
from .reference import rel_error


def _decoder() -> nn.Sequential:
    """All three modules, a non-zero padding mode, a grouped strided conv and 'same' with an even
    kernel and dilation (torch pads such a kernel more on the right)."""
    return nn.Sequential(
        nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect"),
        nn.ConvTranspose2d(6, 2, 3, stride=2, output_padding=1),
        nn.Flatten(2),
        nn.Conv1d(2, 3, 4, padding="same", dilation=2, padding_mode="circular"),
    )


def _grads(model, x):
    y = model(x)
    return [y, *torch.autograd.grad(y.square().sum(), [x, *model.parameters()])]


# --- deferred initialisation: build on meta, convert, materialise ----------------------------------
def test_convert_model_on_the_meta_device_then_materialise(triton_only):
    """The deferred-init recipe (torch.device('meta'), convert, to_empty, load a checkpoint) used to
    leave every convolution on torch ("parameters are on the meta device"): the materialised model
    then ran torch's kernels. Converted on meta, its shapes are torch's, and once materialised it is
    the checkpoint's model on the Triton kernels."""
    reference = _decoder().double()
    with torch.device("meta"):
        model = _decoder().double()
    report = []
    triton_conv.convert_model(model, report=report)
    assert report == [] and [type(m) for m in model][:2] == [triton_conv.Conv2d, triton_conv.ConvTranspose2d]

    x_meta = torch.empty(2, 4, 5, 6, dtype=EXACT, device="meta", requires_grad=True)
    with torch.device("meta"):
        theirs = _decoder().double()
    for ours, expected in zip(_grads(model, x_meta), _grads(theirs, x_meta.detach().requires_grad_())):
        assert ours.device.type == "meta" and ours.shape == expected.shape

    model.to_empty(device=torch.get_default_device())  # the GPU where the tests run there
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 5, 6, dtype=EXACT, requires_grad=True)
    expected = _grads(reference, x)
    with triton_only() as proof:
        got = _grads(model, x)
    assert proof.launches.keys() == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}, proof.launches
    for ours, theirs in zip(got, expected):
        assert rel_error(ours, theirs) < EXACT_TOL


# --- torch.utils.flop_counter ------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False], ids=["forward+backward", "no_grad"])
def test_flop_counter_counts_what_it_counts_for_torch(training, triton_only):
    """FlopCounterMode (MFU figures, model summaries) counted nothing for the ops: a converted model
    had 0 FLOPs. Each op now counts torch's formula for the aten convolution it stands for, so the
    totals, model and per module, are torch's."""
    reference = _decoder().double()
    model = triton_conv.convert_model(copy.deepcopy(reference))
    counts = {}
    for name, net in (("torch", reference), ("ours", model)):
        x = torch.randn(2, 4, 5, 6, dtype=EXACT, requires_grad=training)
        with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(training):
            y = net(x)
            if training:
                y.sum().backward()
        per_module = counter.get_flop_counts()
        counts[name] = {module: sum(ops.values()) for module, ops in per_module.items()}
    assert counts["torch"]["Global"] > 0 and counts["ours"] == counts["torch"]
    x = torch.randn(2, 4, 5, 6, dtype=EXACT)
    with triton_only() as proof, FlopCounterMode(display=False):
        model(x)
    assert proof.launches == {"fprop_kernel": 2, "dgrad_kernel": 1}


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_a_compiled_call_under_a_dispatch_mode_leaves_the_function_working(backend):
    """One compiled call under a TorchDispatchMode (FlopCounterMode), and the next call outside it
    failed: Dynamo then traced into the op's Python kernel (KeyError(torch.uint64) in the
    interpreter's fake run). The kernels are now closed to Dynamo."""
    x, w = torch.randn(1, 2, 5, 5, dtype=EXACT), torch.randn(3, 2, 3, 3, dtype=EXACT)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, w: triton_conv.conv2d(x, w, padding=1), backend=backend)
    with FlopCounterMode(display=False) as counter:
        under_mode = compiled(x, w)
    before = launch_counts["fprop_kernel"]
    again = compiled(x, w)
    assert launch_counts["fprop_kernel"] > before
    expected = F.conv2d(x, w, padding=1)
    assert counter.get_total_flops() > 0
    assert rel_error(under_mode, expected) < EXACT_TOL and rel_error(again, expected) < EXACT_TOL


# --- pins: what matched torch when this pass probed it --------------------------------------------------
GRADIENT_CASES = {
    "conv2d": (
        F.conv2d, triton_conv.conv2d, (2, 4, 5, 6), (6, 2, 3, 2), 6, dict(stride=(2, 1), padding=1, groups=2),
    ),
    "conv1d": (F.conv1d, triton_conv.conv1d, (2, 4, 7), (6, 4, 4), 6, dict(padding="same", dilation=2)),
    "conv_transpose2d": (
        F.conv_transpose2d, triton_conv.conv_transpose2d, (2, 4, 3, 4), (4, 3, 3, 2), 3,
        dict(stride=2, padding=1, output_padding=1),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_every_requires_grad_combination_to_second_order(name, triton_only):
    """Input, weight and bias each requiring grad or not (the seven non-empty combinations), first
    and second derivatives (create_graph) against torch's."""
    theirs, ours, x_shape, w_shape, channels, kwargs = GRADIENT_CASES[name]
    leaves = [torch.randn(shape, dtype=EXACT) for shape in (x_shape, w_shape, channels)]
    for mask in itertools.product((False, True), repeat=3):
        if not any(mask):
            continue
        results = {}
        for label, conv in (("torch", theirs), ("ours", ours)):
            tensors = [t.clone().requires_grad_(wanted) for t, wanted in zip(leaves, mask)]
            wanted = [t for t in tensors if t.requires_grad]
            with triton_only() if label == "ours" else contextlib.nullcontext():
                y = conv(*tensors, **kwargs)
                grads = torch.autograd.grad(y.square().sum(), wanted, create_graph=True)
                penalty = sum(g.square().sum() for g in grads)
                second = torch.autograd.grad(penalty, wanted, allow_unused=True, materialize_grads=True)
            results[label] = (y, *grads, *second)
        for got, expected in zip(results["ours"], results["torch"], strict=True):
            assert rel_error(got, expected) < EXACT_TOL, (name, mask)


def test_compiled_training_step_in_channels_last_with_dynamic_shapes():
    """torch.compile(fullgraph=True, dynamic=True) of a converted model (padding modes, 'same' with
    an even kernel and dilation, all three modules) in channels_last: forward and backward of two
    batch sizes match eager torch, on the Triton kernels."""
    reference = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.ReLU(),
        nn.ConvTranspose2d(4, 4, 2, stride=2),
        nn.Conv2d(4, 2, (2, 3), padding="same", dilation=2),
    ).double()
    reference = reference.to(memory_format=torch.channels_last)
    model = triton_conv.convert_model(copy.deepcopy(reference))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    try:
        before = dict(launch_counts)
        for batch in (2, 3):
            x = torch.randn(batch, 3, 5, 6, dtype=EXACT).to(memory_format=torch.channels_last)
            x.requires_grad_()
            got, expected = _grads(compiled, x), _grads(reference, x)
            assert got[0].stride() == expected[0].stride()
            for ours, theirs in zip(got, expected, strict=True):
                assert rel_error(ours, theirs) < EXACT_TOL
    finally:
        torch._dynamo.reset()
    launched = {k: v - before.get(k, 0) for k, v in launch_counts.items() if v != before.get(k, 0)}
    assert launched == {"fprop_kernel": 2 * 3, "dgrad_kernel": 2 * 3, "wgrad_kernel": 2 * 3}, launched


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_dynamic_shapes_compile_once_for_any_height_and_width(name):
    """torch.compile(dynamic=True) compiles torch's convolution once for images wider and then taller
    than they are high; ours compiled again when the wider side changed."""
    theirs, ours, _, w_shape, _, kwargs = GRADIENT_CASES[name]
    w = torch.randn(w_shape, dtype=EXACT)
    inputs = [torch.randn(2, 4, height, width, dtype=EXACT) for height, width in ((5, 7), (9, 6), (6, 11))]
    frames = frames_compiled_dynamic(ours, theirs, w, kwargs, inputs)
    assert frames["ours"] <= frames["torch"], frames


# --- double backward through an empty batch ----------------------------------------------------------
EMPTY_BATCH = {
    "conv2d": (F.conv2d, triton_conv.conv2d, (0, 4, 5, 6), (6, 2, 3, 2), 6, dict(stride=2, groups=2)),
    "conv1d": (F.conv1d, triton_conv.conv1d, (0, 4, 7), (6, 4, 3), 6, dict(padding=1)),
    "conv_transpose2d": (
        F.conv_transpose2d, triton_conv.conv_transpose2d, (0, 4, 3, 4), (4, 3, 3, 2), 3,
        dict(stride=2, padding=1, output_padding=1),
    ),
    # an empty image too: the transposed convolution's conv2d view has a negative height here
    "conv_transpose2d_no_rows": (
        F.conv_transpose2d, triton_conv.conv_transpose2d, (0, 4, 0, 4), (4, 3, 1, 1), 3,
        dict(stride=2, output_padding=1),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(EMPTY_BATCH))
def test_double_backward_of_an_empty_batch(name):
    """A gradient penalty over a batch that happens to be empty: the transposed convolution's
    gradients of an empty input were plain zeros outside the graph, so differentiating them again
    raised "element 0 of tensors does not require grad", where torch's answer is zeros."""
    theirs, ours, x_shape, w_shape, channels, kwargs = EMPTY_BATCH[name]
    leaves = [
        torch.randn(x_shape, dtype=EXACT),
        torch.randn(w_shape, dtype=EXACT),
        torch.randn(channels, dtype=EXACT),
    ]
    results = {}
    for label, conv in (("torch", theirs), ("ours", ours)):
        tensors = [t.clone().requires_grad_() for t in leaves]
        y = conv(*tensors, **kwargs)
        grads = torch.autograd.grad(y.sum(), tensors, create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        second = torch.autograd.grad(penalty, tensors, allow_unused=True, materialize_grads=True)
        results[label] = (y, *grads, *second)
    for got, expected in zip(results["ours"], results["torch"]):
        assert got.shape == expected.shape and torch.equal(got, expected)


# --- convert_model on models whose convolutions no module swap reaches --------------------------------
class _Functional(nn.Module):
    def forward(self, x, w):
        return F.conv2d(x, w)


def _frozen(how):
    model, x = (
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ConvTranspose2d(4, 2, 2)),
        torch.randn(1, 3, 5, 5),
    )
    if how == "script":
        return torch.jit.script(model), ["0", "2"]
    if how == "trace":
        return torch.jit.trace(model, x), ["0", "2"]
    if how == "freeze":  # the children's code inlined into the model's
        return torch.jit.freeze(torch.jit.script(model.eval())), ["<model>"]
    if how == "export":
        return torch.export.export(model, (x,)).module(), ["<model>"]
    if how == "unflatten":  # modules of their own, each with its graph (no GraphModule subclass)
        return torch.export.unflatten(torch.export.export(model, (x,))), ["0", "2"]
    return torch.fx.symbolic_trace(_Functional()), ["<model>"]


@pytest.mark.parametrize("how", ["script", "trace", "freeze", "export", "unflatten", "fx of F.conv2d"])
def test_convert_model_reports_convolutions_compiled_into_code_or_graphs(how):
    """A scripted, traced, frozen or exported model runs torch's convolutions from its code or graph,
    which replacing modules cannot change: convert_model left them without a word (its report
    empty). Each is reported once, by the module whose own code calls it."""
    model, expected = _frozen(how)
    report = []
    assert triton_conv.convert_model(model, report=report) is model
    assert [name for name, _ in report] == expected, report
    assert all("torch's conv" in reason for _, reason in report)


def test_convert_model_reports_nothing_for_graphs_of_its_own_or_of_modules(triton_only):
    """Traced after conversion, a model calls triton_conv's ops; an fx graph that calls torch's
    Conv2d as a module is converted as any model is."""
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).double()
    x = torch.randn(1, 3, 5, 5, dtype=EXACT)
    traced = torch.jit.trace(triton_conv.convert_model(copy.deepcopy(reference)), x)
    graph = torch.fx.symbolic_trace(copy.deepcopy(reference))
    for model in (traced, graph):
        report = []
        triton_conv.convert_model(model, report=report)
        assert report == []
        with triton_only() as proof:
            y = model(x)
        assert proof.launches == {"fprop_kernel": 1} and rel_error(y, reference(x)) < EXACT_TOL


# --- what torch accepts and these refuse (README, "Where it differs from torch") ----------------------
FUNCTIONS = {
    "conv2d": (triton_conv.conv2d, (2, 3, 5, 5), (4, 3, 3, 3), 4),
    "conv1d": (triton_conv.conv1d, (2, 3, 5), (4, 3, 3), 4),
    "conv_transpose2d": (triton_conv.conv_transpose2d, (2, 3, 5, 5), (3, 4, 3, 3), 4),
}


@pytest.mark.parametrize("case", ["complex", "meta weight", "meta bias", "meta input"])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_complex_tensors_and_devices_mixed_with_meta_raise_naming_the_tensor(name, case, triton_only):
    """torch answers both (a complex convolution; a meta tensor for a CPU input and a meta weight):
    these raise a RuntimeError naming the tensor, before anything launches."""
    conv, x_shape, w_shape, channels = FUNCTIONS[name]
    dtype = torch.complex128 if case == "complex" else EXACT
    devices = {"input": "cpu", "weight": "cpu", "bias": "cpu"}
    if case.startswith("meta"):
        devices[case.split()[1]] = "meta"
    x, w, b = (
        torch.randn(shape, dtype=dtype, device=devices[arg])
        for shape, arg in ((x_shape, "input"), (w_shape, "weight"), ((channels,), "bias"))
    )
    assert getattr(F, name)(x, w, b).shape  # torch answers
    named = "input" if case == "complex" else "weight" if case == "meta input" else case.split()[1]
    with triton_only() as proof, pytest.raises(RuntimeError, match=named):
        conv(x, w, b)
    assert not proof.launches


def test_symbolic_trace_keeps_the_modules_and_their_hooks(triton_only):
    """torch.fx's default tracer traces through triton-conv's modules (torch.nn's alone are leaves):
    a forward hook ran once at trace time, never in the graph, and a pruned conv's pre-hook left an
    fx Proxy as the module's weight. triton_conv.symbolic_trace keeps them as call_module nodes, so
    hooks run on every call, as torch's modules' do in torch's trace."""
    from torch.nn.utils import prune

    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).double()
    model = triton_conv.convert_model(copy.deepcopy(reference))
    prune.l1_unstructured(model[2], "weight", amount=0.5)
    prune.l1_unstructured(reference[2], "weight", amount=0.5)
    scale = {"k": 1.0}
    for net in (model, reference):
        net[0].register_forward_hook(lambda module, args, output: output * scale["k"])
    graph, theirs = triton_conv.symbolic_trace(model), torch.fx.symbolic_trace(reference)
    assert isinstance(model[2].weight, torch.Tensor)  # not a Proxy left by tracing
    assert [n.op for n in graph.graph.nodes] == [n.op for n in theirs.graph.nodes]
    assert isinstance(graph.get_submodule("0"), triton_conv.Conv2d)
    x = torch.randn(2, 3, 7, 6, dtype=EXACT)
    for k in (2.0, -3.0):  # the hook reads its state on every call
        scale["k"] = k
        with triton_only() as proof:
            y = graph(x)
        assert proof.launches == {"fprop_kernel": 2} and rel_error(y, theirs(x)) < EXACT_TOL
