"""Adversarial cases against torch's contract for the newer parts: conv_transpose2d, conv1d, the
Conv1d / Conv2d / ConvTranspose2d modules and convert_model (the conv2d pass is test_adversarial.py).

Each test holds a class of inputs to torch's behaviour: ConvTranspose2d's `output_size` over every
legal and illegal size (property), the modules' constructor arguments against torch's modules
(repr, state_dict both ways, dtype), models traced by torch.fx (an `output_size` taken from a skip
connection included), convolutions compiled or patched (`_conv_forward` on the instance) before
convert_model (never silently left on torch's kernels), a clear error from torch.jit.script, and
nested tensors refused naming the tensor.
A failing property case prints the command that reruns it.
"""

from __future__ import annotations

import copy
import inspect
import types
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import triton_conv
from triton_conv.launchers.common import launch_counts

from .conftest import TritonProof
from .contract import EXACT, EXACT_TOL, outcome, refused_as_torch_refuses, reproduction
from .reference import bound, rel_error
from .test_contract_properties import FAST

MODULE = "tests.test_adversarial_transposed"


def _launches(fn):
    """(fn(), kernel launches per kernel name during the call)."""
    before = dict(launch_counts)
    result = fn()
    return result, {k: v - before.get(k, 0) for k, v in launch_counts.items() if v != before.get(k, 0)}


# --- 1. ConvTranspose2d.forward(output_size=...): every legal and illegal size, as torch's --------------
@dataclass(frozen=True)
class OutputSizeCase:
    kwargs: dict  # the module's constructor arguments after (4, 6, kernel)
    kernel: tuple
    x_shape: tuple
    offsets: tuple  # output_size - the smallest legal size, per axis
    leading: tuple  # the dimensions output_size repeats before H, W: (), (C,), (N, C) or others
    seed: int


@st.composite
def output_size_cases(draw):
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kwargs = dict(stride=stride, padding=(draw(st.integers(0, 2)), draw(st.integers(0, 1))),
                  dilation=dilation, groups=draw(st.sampled_from([1, 2])))  # fmt: skip
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    image = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    x_shape = draw(st.sampled_from([(2, 4), (4,)])) + image
    # Offsets from one below the smallest size to one above the largest (stride - 1 above it).
    offsets = tuple(draw(st.integers(-1, s)) for s in stride)
    leading = draw(st.sampled_from([(), (6,), (2, 6), (1,), (2, 6, 1)]))
    return OutputSizeCase(kwargs, kernel, x_shape, offsets, leading, draw(st.integers(0, 2**31 - 1)))


def run_output_size_case(case: OutputSizeCase):
    failure = reproduction(MODULE, f"run_output_size_case({case!r})")
    torch.manual_seed(case.seed)
    reference = nn.ConvTranspose2d(4, 6, case.kernel, **case.kwargs).double()
    module = triton_conv.ConvTranspose2d(4, 6, case.kernel, **case.kwargs).double()
    module.load_state_dict(reference.state_dict())
    x = torch.randn(case.x_shape, dtype=EXACT)
    geometry = (case.kwargs[name] for name in ("stride", "padding", "dilation"))
    smallest = [
        (n - 1) * s - 2 * p + d * (k - 1) + 1
        for n, s, p, d, k in zip(case.x_shape[-2:], *geometry, case.kernel)
    ]
    size = [*case.leading, *(m + o for m, o in zip(smallest, case.offsets))]
    torch_kind, expected = outcome(lambda: reference(x, size))
    with TritonProof() as proof:
        kind, got = outcome(lambda: module(x, size))
    if torch_kind == "ok" and expected.numel() == 0 and kind == "raise":
        # An output of no rows or columns: ours refuses it (README, "Where it differs"); torch's
        # CUDA path returns the empty tensor, as its float32 CPU path does from batch 2 on.
        assert "the output would be" in str(got) and proof.launches == {}, (got, failure)
        return
    assert kind == torch_kind, (got, expected, failure)
    assert proof.launches == ({"dgrad_kernel": 1} if kind == "ok" else {}), (proof.launches, failure)
    if kind == "raise":  # torch's own check (_output_padding), or ours where torch's F refuses
        assert isinstance(got, (ValueError, RuntimeError)), (got, failure)
        assert type(got) is type(expected) or isinstance(got, RuntimeError), (got, expected, failure)
        return
    assert got.shape == expected.shape and rel_error(got, expected) < EXACT_TOL, failure


@settings(max_examples=30, **FAST)
@given(output_size_cases())
def test_conv_transpose2d_output_size_of_every_kind_matches_torch(case):
    run_output_size_case(case)


@pytest.mark.parametrize("shape", [(2, 3), (1, 1, 2, 3, 3)], ids=["rank2", "rank5"])
def test_output_size_with_an_input_of_the_wrong_rank_names_the_input(shape, triton_only):
    """With an output_size, torch's rule reads the input's last dimensions first: a 2-D input gave
    IndexError ("Dimension out of range"), a 5-D one a range of sizes made of its wrong dimensions,
    blamed on output_size. Without one, the input's rank was already named; now with one too."""
    module = triton_conv.ConvTranspose2d(2, 3, 3, stride=2, dtype=EXACT)
    with triton_only() as proof, pytest.raises(RuntimeError, match="input must have 3 or 4 dimensions"):
        module(torch.randn(shape, dtype=EXACT), output_size=(7, 7))
    assert not proof.launches


# --- 2. the modules against torch's: repr, state_dict both ways, dtypes, outputs ---------------------
@dataclass(frozen=True)
class ModuleCase:
    kind: str  # "Conv1d", "Conv2d" or "ConvTranspose2d"
    kwargs: dict
    dtype: torch.dtype
    seed: int


@st.composite
def module_cases(draw):
    kind = draw(st.sampled_from(["Conv1d", "Conv2d", "ConvTranspose2d"]))
    stride, dilation = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kwargs = dict(kernel_size=draw(st.integers(1, 3)), stride=stride, dilation=dilation,
                  groups=draw(st.sampled_from([1, 2])), bias=draw(st.booleans()))  # fmt: skip
    if kind == "ConvTranspose2d":
        kwargs.update(
            padding=draw(st.integers(0, 1)), output_padding=draw(st.integers(0, max(stride, dilation) - 1))
        )
    else:
        padding = draw(st.sampled_from([0, 1, "valid"] + (["same"] if stride == 1 else [])))
        modes = ["zeros", "reflect", "replicate", "circular"] if padding != "valid" else ["zeros"]
        kwargs.update(padding=padding, padding_mode=draw(st.sampled_from(modes)))
    return ModuleCase(
        kind, kwargs, draw(st.sampled_from([EXACT, torch.float32])), draw(st.integers(0, 2**31 - 1))
    )


def run_module_case(case: ModuleCase):
    failure = reproduction(MODULE, f"run_module_case({case!r})")
    torch.manual_seed(case.seed)
    reference = getattr(nn, case.kind)(4, 6, **case.kwargs)
    module = getattr(triton_conv, case.kind)(4, 6, **case.kwargs)
    assert repr(module) == repr(reference) and module.extra_repr() == reference.extra_repr(), failure
    assert list(module.state_dict()) == list(reference.state_dict()), failure
    module.load_state_dict(reference.state_dict(), strict=True)
    reference.load_state_dict(module.state_dict(), strict=True)  # and back: checkpoints load both ways
    module, reference = module.to(case.dtype), reference.to(case.dtype)
    image = (7,) if case.kind == "Conv1d" else (5, 4)
    x = torch.randn(2, 4, *image, dtype=case.dtype)
    for inputs in (x, x[0]):
        torch_kind, expected = outcome(lambda: reference(inputs))  # noqa: B023
        with TritonProof() as proof:
            kind, got = outcome(lambda: module(inputs))  # noqa: B023
        assert kind == torch_kind, (got, expected, failure)
        kernel = "dgrad_kernel" if case.kind == "ConvTranspose2d" else "fprop_kernel"
        assert proof.launches == ({kernel: 1} if kind == "ok" else {}), (proof.launches, failure)
        if kind == "ok":
            assert got.dtype == expected.dtype and got.shape == expected.shape, failure
            allowed = EXACT_TOL if case.dtype == EXACT else bound(case.dtype)  # TF32 on a GPU
            assert rel_error(got, expected) < allowed, failure


@settings(max_examples=15, **FAST)
@given(module_cases())
def test_modules_match_torchs_in_repr_state_and_output(case):
    run_module_case(case)


@pytest.mark.parametrize("kind", ["Conv1d", "Conv2d", "ConvTranspose2d"])
def test_modules_keep_torchs_constructor(kind):
    """Callers inspect the constructor: torch.nn.utils.skip_init needs its `device` argument."""
    assert inspect.signature(getattr(triton_conv, kind)) == inspect.signature(getattr(nn, kind))
    module = torch.nn.utils.skip_init(getattr(triton_conv, kind), 2, 3, 2)
    assert type(module) is getattr(triton_conv, kind)


# --- 3. torch.fx: a converted model traces as torch's does, and runs the kernels -----------------------
def _decoder():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1), nn.Flatten(2),
        nn.Conv1d(2, 2, 3, padding="same", padding_mode="circular"),
    ).double()  # fmt: skip


def test_symbolic_trace_of_a_converted_model(triton_only):
    """torch.fx.symbolic_trace passes Proxies where tensors go: torch's convolutions hand them to
    __torch_function__ (recorded as a call), triton-conv's refused them ('input must be a
    torch.Tensor, got Proxy'), so no converted model could be traced (torchvision's feature
    extraction, fx quantization and graph passes all trace)."""
    reference = _decoder()
    model = triton_conv.convert_model(copy.deepcopy(reference))
    traced = torch.fx.symbolic_trace(model)
    targets = {node.target for node in traced.graph.nodes if node.op == "call_function"}
    assert {triton_conv.conv2d, triton_conv.conv_transpose2d, triton_conv.conv1d} <= targets
    x = torch.randn(2, 3, 4, 5, dtype=EXACT)
    with triton_only() as proof:
        y = traced(x)
    assert proof.launches == {"fprop_kernel": 2, "dgrad_kernel": 1}
    assert rel_error(y, reference(x)) < EXACT_TOL


class _SkipDecoder(nn.Module):
    """A U-Net's up step: the transposed convolution sized to the skip connection's image."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return self.up(self.down(x), output_size=x.shape[-2:]) + x


def test_symbolic_trace_of_output_size_from_a_skip_connection(triton_only):
    """torch's ConvTranspose2d is a leaf of torch.fx; ours is traced through, and its forward's
    output_size arithmetic met the tracer's Proxies ("symbolically traced variables cannot be used as
    inputs to control flow"): no converted U-Net could be traced (torchvision's feature extraction,
    fx quantization). The traced graph must resolve each size when it runs, as torch's does."""
    reference = _SkipDecoder().double()
    traced = torch.fx.symbolic_trace(triton_conv.convert_model(copy.deepcopy(reference)))
    assert triton_conv.conv_transpose2d in {node.target for node in traced.graph.nodes}
    for shape in ((1, 2, 6, 7), (2, 2, 9, 8)):  # each parity: output_padding 1 then 0
        x = torch.randn(shape, dtype=EXACT)
        with triton_only() as proof:
            y = traced(x)
        assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1}
        assert y.shape == x.shape and rel_error(y, reference(x)) < EXACT_TOL


@pytest.mark.parametrize("name", ["conv2d", "conv1d", "conv_transpose2d"])
def test_functions_speak_torch_function_as_torchs_do(name):
    """A TorchFunctionMode (and a tensor subclass's __torch_function__) sees each function as it
    sees torch.nn.functional's, with the caller's arguments."""
    from torch.overrides import TorchFunctionMode

    class Recorder(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls.append((func, args[3]))
            return func(*args, **(kwargs or {}))

    ours, theirs = getattr(triton_conv, name), getattr(F, name)
    x_shape, w_shape = ((2, 4, 7), (4, 4, 3)) if name == "conv1d" else ((2, 4, 5, 6), (4, 4, 3, 3))
    x, w = torch.randn(x_shape, dtype=EXACT), torch.randn(w_shape, dtype=EXACT)
    results = {}
    for conv in (theirs, ours):
        with Recorder() as recorder:
            results[conv] = conv(x, w, None, 2)
        assert [func for func, _ in recorder.calls] == [conv] and recorder.calls[0][1] == 2, recorder.calls
    assert rel_error(results[ours], results[theirs]) < EXACT_TOL


# --- 4. convert_model on convolutions compiled before conversion -------------------------------------
def _compiled_before(kind: str, how: str):
    """(model, conv): a one-conv model whose conv was compiled in place (`conv.compile()`) or
    wrapped by torch.compile as a child or as the whole model, before any conversion."""
    conv = {"Conv1d": nn.Conv1d(2, 2, 3), "Conv2d": nn.Conv2d(2, 2, 3),
            "ConvTranspose2d": nn.ConvTranspose2d(2, 2, 3, stride=2)}[kind].double()  # fmt: skip
    if how == "in_place":
        conv.compile(backend="eager")
        return nn.Sequential(conv), conv
    if how == "wrapped_child":
        return nn.Sequential(torch.compile(conv, backend="eager")), conv
    return torch.compile(conv, backend="eager"), conv


@pytest.mark.parametrize("how", ["in_place", "wrapped_child", "wrapped_root"])
@pytest.mark.parametrize("kind", ["Conv1d", "Conv2d", "ConvTranspose2d"])
def test_convert_model_never_leaves_a_compiled_conv_on_torch_silently(kind, how):
    """A compiled call is bound to the torch module: conv.compile() keeps it in the module's
    __dict__ (which the converted module copied), torch.compile(conv) in its wrapper's forward.
    convert_model swapped the class (or the wrapper's child) and reported nothing, yet torch's
    convolution ran. Each must run the Triton kernel or be reported."""
    torch._dynamo.reset()
    model, conv = _compiled_before(kind, how)
    x = torch.randn((1, 2, 5) if kind == "Conv1d" else (1, 2, 5, 5), dtype=EXACT)
    expected = conv.forward(x)
    report = []
    model = triton_conv.convert_model(model, report=report)
    y, launched = _launches(lambda: model(x))
    torch._dynamo.reset()
    assert rel_error(y, expected) < EXACT_TOL
    ran_triton = launched.get("dgrad_kernel" if kind == "ConvTranspose2d" else "fprop_kernel", 0) == 1
    assert ran_triton or (len(report) == 1 and "compil" in report[0][1]), (launched, report)


def test_a_compiled_parent_still_converts_its_convolutions():
    """The compiled wrapper of a container calls the container, which finds its (converted)
    children at run time: nothing to report, and the kernels run."""
    torch._dynamo.reset()
    model = torch.compile(nn.Sequential(nn.Conv2d(2, 2, 3).double()), backend="eager")
    report = []
    model = triton_conv.convert_model(model, report=report)
    x = torch.randn(1, 2, 5, 5, dtype=EXACT)
    _, launched = _launches(lambda: model(x))
    torch._dynamo.reset()
    assert report == [] and launched == {"fprop_kernel": 1}


def _standardised(self, x, weight, bias):
    """A weight-standardised convolution, as codebases patch it into a torch module's _conv_forward."""
    weight = (weight - weight.mean(dim=(1, 2), keepdim=True)) / weight.std(dim=(1, 2), keepdim=True)
    conv = F.conv1d if weight.dim() == 3 else F.conv2d
    return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


@pytest.mark.parametrize("kind", ["Conv1d", "Conv2d"])
def test_convert_model_reports_a_conv_forward_patched_on_the_instance(kind):
    """torch's Conv1d/Conv2d.forward calls self._conv_forward: one set on the instance (bound to
    the torch module) was copied into the converted module with the rest of its attributes, so torch's
    convolution ran while the report said converted. It must run the Triton kernel or be reported."""
    conv = getattr(nn, kind)(2, 3, 3).double()
    conv._conv_forward = types.MethodType(_standardised, conv)
    x = torch.randn((1, 2, 6) if kind == "Conv1d" else (1, 2, 5, 5), dtype=EXACT)
    expected = conv(x)
    model, report = nn.Sequential(conv), []
    triton_conv.convert_model(model, report=report)
    y, launched = _launches(lambda: model(x))
    assert rel_error(y, expected) < EXACT_TOL
    assert launched.get("fprop_kernel") == 1 or (len(report) == 1 and "_conv_forward" in report[0][1]), (
        launched,
        report,
    )


def test_an_instance_attribute_no_forward_calls_is_no_patch():
    """A Conv2d holding an `_output_padding` of its own (a name only ConvTranspose2d's forward
    calls) was left on torch's convolution as 'patched'."""
    conv = nn.Conv2d(2, 3, 3).double()
    conv._output_padding = "anything"
    model, report = nn.Sequential(conv), []
    triton_conv.convert_model(model, report=report)
    y, launched = _launches(lambda: model(torch.randn(1, 2, 5, 5, dtype=EXACT)))
    assert report == [] and launched.get("fprop_kernel") == 1


def test_convert_model_converts_a_conv_held_under_two_names():
    """named_children() gives a module held under two names once: the second name kept torch's
    module, and a forward through it ran torch's convolution with nothing reported."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = self.second = nn.ConvTranspose2d(2, 2, 2).double()

        def forward(self, x):
            return self.second(self.first(x))

    model, report = Twice(), []
    x = torch.randn(1, 2, 3, 3, dtype=EXACT)
    expected = model(x)
    triton_conv.convert_model(model, report=report)
    y, launched = _launches(lambda: model(x))
    assert model.first is model.second and isinstance(model.second, triton_conv.ConvTranspose2d)
    assert report == [] and launched == {"dgrad_kernel": 2} and rel_error(y, expected) < EXACT_TOL


def test_convert_model_refuses_bad_arguments_before_changing_the_model():
    model = nn.Sequential(nn.Conv1d(2, 2, 1), nn.Conv3d(1, 1, 1))
    with pytest.raises(RuntimeError, match="report must be a list"):
        triton_conv.convert_model(model, report=())  # a tuple cannot take the Conv3d's entry
    assert type(model[0]) is nn.Conv1d
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        triton_conv.convert_model([nn.Conv1d(2, 2, 1)])


# --- 5. torch.jit.script: a clear error --------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_scripting_a_converted_model_says_what_to_use_instead():
    model = triton_conv.convert_model(_decoder())
    with pytest.raises(RuntimeError, match=r"torch\.jit\.script.*torch\.compile"):
        torch.jit.script(model)


# --- 6. tensors that are not dense: nested tensors ------------------------------------------------
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("position", ["input", "weight", "bias"])
@pytest.mark.parametrize("name", ["conv2d", "conv1d", "conv_transpose2d"])
def test_nested_tensors_are_refused_naming_the_tensor(name, position):
    """A nested tensor has strided layout but no sizes: torch's convolutions refuse it
    (NotImplementedError, a RuntimeError); ours raised torch's internal "NestedTensorImpl doesn't
    support sizes. Please file an issue", naming no argument."""
    x_shape, w_shape = ((2, 4, 7), (4, 4, 3)) if name == "conv1d" else ((2, 4, 5, 6), (4, 4, 3, 3))
    args = dict(input=torch.randn(x_shape), weight=torch.randn(w_shape), bias=torch.randn(4))
    args[position] = torch.nested.nested_tensor(list(args[position].unsqueeze(0)))
    words = f"{position} must be a dense.*nested"
    refused_as_torch_refuses(getattr(triton_conv, name), getattr(F, name), args, words)


def test_the_weight_gradient_of_a_strided_transposed_weight_where_torch_refuses():
    """torch's CPU conv_transpose2d backward raises 'grad_weight needs to be contiguous' for this
    weight view in float64 and float16 (float32 computes): ours computes the weight gradient, which
    is torch's on contiguous copies of the same values (found 2026-12-05, torch 2.11 and 2.13)."""
    geometry = dict(stride=(3, 2), padding=(2, 1), output_padding=(0, 1), groups=3, dilation=(1, 2))
    x = torch.randn(1, 4, 1, 12, dtype=EXACT).permute(0, 3, 1, 2)  # (1, 12, 4, 1)
    w = torch.empty_strided((12, 4, 1, 2), (8, 1, 96, 4), dtype=EXACT).copy_(torch.randn(12, 4, 1, 2))
    dy = torch.randn(1, 12, 6, 2, dtype=EXACT)
    views = [t.detach().requires_grad_() for t in (x, w)]
    expected = torch.autograd.grad(
        F.conv_transpose2d(*(t.contiguous() for t in views), **geometry), views, dy
    )
    views = [t.detach().requires_grad_() for t in (x, w)]
    got, launched = _launches(
        lambda: torch.autograd.grad(triton_conv.conv_transpose2d(*views, **geometry), views, dy)
    )
    assert launched.get("fprop_kernel", 0) == 1 and launched.get("wgrad_kernel", 0) == 1, launched
    for ours, theirs in zip(got, expected, strict=True):
        assert rel_error(ours, theirs) < EXACT_TOL
