"""convert_model and the modules against models an adversarial user builds: a load_state_dict pre-hook
or a backward hook registered on either module, before or after the conversion, a conv both held and
wrapped by torch.compile, a conv that is another conv's child, a patch on torch's class or on the
functional its forward calls, and ConvTranspose2d attributes set to no pair after construction. Each
was found converting silently wrong (or failing) before the fix it pins."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref

import pytest
import torch
from torch import nn

import triton_conv
from triton_conv.launchers.common import launch_counts

from .contract import EXACT, EXACT_TOL
from .reference import rel_error
from .test_adversarial_transposed import _launches


def _count_loads(module, state_dict, prefix, *args):
    """A load_state_dict pre-hook that marks the module it is given (a function of the module, so
    that it pickles)."""
    module.loads_seen = getattr(module, "loads_seen", 0) + 1


def _left_alone_and_reported(model, x, words):
    """convert_model leaves the model's one conv as it is, reports it with `words`, and the model
    computes what it did; returns that output."""
    torch_class, expected, report = type(model[0]), model(x), []
    triton_conv.convert_model(model, report=report)
    assert type(model[0]) is torch_class and len(report) == 1 and words in report[0][1], report
    assert rel_error(model(x), expected) < EXACT_TOL
    return expected


@pytest.mark.parametrize("registered", ["before", "after"])
@pytest.mark.parametrize("then", ["load", "deepcopy", "pickle"])
def test_a_load_state_dict_pre_hook_follows_the_converted_module(then, registered):
    """torch's register_load_state_dict_pre_hook keeps a weak reference to its module: shared as it
    was, it handed the hook the replaced torch module, or, once that was gone, load_state_dict,
    deepcopy and pickle failed ("the hook of a dead Module"). Registered on a reference to the
    torch module kept from before the conversion, it did so after the conversion too."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3).to(EXACT))
    original = model[0]
    if registered == "before":
        handle = original.register_load_state_dict_pre_hook(_count_loads)
    triton_conv.convert_model(model)
    if registered == "after":
        handle = original.register_load_state_dict_pre_hook(_count_loads)
        model.load_state_dict(model.state_dict())  # handed the converted module, not the original
        assert model[0].loads_seen == 1 and not hasattr(original, "loads_seen")
        del model[0].loads_seen
    del original
    gc.collect()  # the torch module is gone
    if then == "deepcopy":
        model = copy.deepcopy(model)
    elif then == "pickle":
        model = pickle.loads(pickle.dumps(model))
    model.load_state_dict(model.state_dict())
    assert model[0].loads_seen == 1 and type(model[0]) is triton_conv.Conv2d
    if then == "load":
        handle.remove()  # the caller's handle still removes it
        model.load_state_dict(model.state_dict())
        assert model[0].loads_seen == 1


@pytest.mark.filterwarnings("ignore:Using a non-full backward hook")  # torch's, for its module too
@pytest.mark.parametrize("registered_on", ["original", "converted"])
@pytest.mark.parametrize("register", ["register_full_backward_hook", "register_backward_hook"])
def test_a_backward_hook_registered_after_the_conversion_fires_on_both_modules(register, registered_on):
    """The two modules share their hook tables, but torch keeps whether a module's backward hooks
    are full ones on the module itself: a full hook registered on a layer reference kept from before
    the conversion (a Grad-CAM target) never fired in the converted model, and one registered on
    the converted module never fired in the original. A copy of the converted model keeps it."""
    torch_model = nn.Sequential(nn.Conv2d(2, 3, 3).to(EXACT))
    model = copy.deepcopy(torch_model)
    original = model[0]
    triton_conv.convert_model(model)
    seen = []

    def hook(module, grad_input, grad_output):
        seen.append(grad_output[0].detach().clone())

    expected = []
    getattr(torch_model[0], register)(lambda module, grad_input, grad_output: expected.append(grad_output[0]))
    getattr(original if registered_on == "original" else model[0], register)(hook)
    x = torch.randn(1, 2, 5, 5, dtype=EXACT, requires_grad=True)
    (torch_model(x) ** 2).sum().backward()
    copied = copy.deepcopy(model)
    for module in (original, model[0], copied[0]):
        seen.clear()
        (module(x) ** 2).sum().backward()
        assert len(seen) == 1 and rel_error(seen[0], expected[0]) < EXACT_TOL, type(module)
    assert type(model[0]) is type(copied[0]) is triton_conv.Conv2d


@pytest.mark.filterwarnings("ignore:Using a non-full backward hook")
@pytest.mark.parametrize("register", ["register_full_backward_hook", "register_backward_hook"])
def test_a_converted_module_with_a_backward_hook_compiles(register):
    """torch.compile of a converted module with a backward hook: Dynamo (torch 2.11) read the flag's
    property through `module.__dict__.get(its own name)` as a getattr of that name, which is the
    property again: RecursionError, out of the compile."""
    torch_model = nn.Sequential(nn.Conv2d(2, 3, 3).to(EXACT))
    model = triton_conv.convert_model(copy.deepcopy(torch_model))
    seen, expected = [], []
    getattr(torch_model[0], register)(lambda module, grad_input, grad_output: expected.append(grad_output[0]))
    getattr(model[0], register)(lambda module, grad_input, grad_output: seen.append(grad_output[0]))
    x = torch.randn(1, 2, 5, 5, dtype=EXACT, requires_grad=True)
    (torch_model(x) ** 2).sum().backward()
    expected_grads = [x.grad.clone(), *(p.grad for p in torch_model.parameters())]
    x.grad = None
    torch._dynamo.reset()
    before = launch_counts["wgrad_kernel"]
    (torch.compile(model, backend="aot_eager")(x) ** 2).sum().backward()
    assert launch_counts["wgrad_kernel"] > before  # the compile ran this package's kernels
    assert len(seen) == 1 and rel_error(seen[0], expected[0]) < EXACT_TOL
    for got, want in zip([x.grad, *(p.grad for p in model.parameters())], expected_grads, strict=True):
        assert rel_error(got, want) < EXACT_TOL


@pytest.mark.filterwarnings("ignore:Using a non-full backward hook")
def test_converted_models_with_hooks_compile_one_after_another():
    """Two converted models compiled in turn, legacy hooks on the first, full ones on the second:
    Dynamo (torch 2.13) guarded the lookup of each conv's original in a WeakKeyDictionary on the
    index of its key, which the first model's collected originals had moved: IndexError out of the
    second compile."""
    for register in ("register_backward_hook", "register_full_backward_hook"):
        torch_model = nn.Sequential(*(nn.Conv2d(2, 2, 3, padding=1).to(EXACT) for _ in range(2)))
        model = triton_conv.convert_model(copy.deepcopy(torch_model))
        for conv in model:
            getattr(conv, register)(lambda module, grad_input, grad_output: None)
        x = torch.randn(1, 2, 4, 4, dtype=EXACT, requires_grad=True)
        torch._dynamo.reset()
        (torch.compile(model, backend="aot_eager")(x) ** 2).sum().backward()
        got = [x.grad, *(p.grad for p in model.parameters())]
        x.grad = None
        (torch_model(x) ** 2).sum().backward()
        for g, e in zip(got, [x.grad, *(p.grad for p in torch_model.parameters())], strict=True):
            assert rel_error(g, e) < EXACT_TOL, register


@pytest.mark.filterwarnings("ignore:Using a non-full backward hook")
@pytest.mark.parametrize("register", ["register_full_backward_hook", "register_backward_hook"])
def test_a_backward_hook_registered_on_an_original_that_is_then_freed_still_fires(register):
    """A hook registered in a helper on a layer reference kept from before the conversion, which the
    caller then drops: whether the hook is full or legacy lived on the original only, and the hook
    never fired once the original was freed."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3).to(EXACT))
    original = model[0]
    triton_conv.convert_model(model)
    seen = []
    getattr(original, register)(lambda module, grad_input, grad_output: seen.append(grad_output[0]))
    gone = weakref.ref(original)
    del original
    gc.collect()
    assert gone() is None
    (model(torch.randn(1, 2, 5, 5, dtype=EXACT, requires_grad=True)) ** 2).sum().backward()
    assert len(seen) == 1 and model[0]._is_full_backward_hook is (register == "register_full_backward_hook")


def test_a_converted_model_whose_originals_a_hook_holder_keeps_is_freed():
    """An object that holds the model and its layers from before the conversion and hooks them with
    its own methods (a monitor): the converted model, the originals and the monitor form cycles that
    the collector frees; nothing of triton-conv's may hold them from outside."""

    class Monitor:
        def __init__(self, model):
            self.model, self.layers = model, dict(model.named_children())
            for layer in self.layers.values():
                layer.register_forward_hook(self.record)
                layer.register_full_backward_hook(self.record)

        def record(self, module, inputs, output):
            pass

    def converted():
        model = nn.Sequential(nn.Conv2d(2, 3, 3))
        monitor = Monitor(model)
        triton_conv.convert_model(model)
        return weakref.ref(model[0]), weakref.ref(monitor)

    references = converted()
    gc.collect()
    assert all(reference() is None for reference in references)


@pytest.mark.parametrize("also_torch", [False, True], ids=["F only", "F and torch"])
@pytest.mark.parametrize("kind, name", [("Conv2d", "conv2d"), ("Conv1d", "conv1d"),
                                        ("ConvTranspose2d", "conv_transpose2d")])  # fmt: skip
def test_a_patch_on_the_functional_torchs_module_calls_is_reported_not_dropped(
    monkeypatch, kind, name, also_torch
):
    """torch's modules call torch.nn.functional.<name>: a patch there (a weight standardisation
    written as a wrapper of F.conv2d) was silently dropped by the conversion, nothing reported; and
    then again when torch.<name> was patched with the same function (the check compared the two)."""
    original = getattr(nn.functional, name)
    patched = lambda x, w, *args, **kwargs: original(x, 2 * w, *args, **kwargs)  # noqa: E731
    monkeypatch.setattr(nn.functional, name, patched)
    if also_torch:
        monkeypatch.setattr(torch, name, patched)
    torch_class = getattr(nn, kind)
    model = nn.Sequential(torch_class(2, 3, 3, bias=False).to(EXACT))
    x = torch.randn((1, 2, 5, 5) if kind != "Conv1d" else (1, 2, 5), dtype=EXACT)
    expected = _left_alone_and_reported(model, x, f"torch.nn.functional.{name} was replaced")
    monkeypatch.undo()
    assert rel_error(model(x), expected / 2) < EXACT_TOL  # the patch was what ran


def test_a_patch_on_torchs_name_alone_is_not_one_the_modules_run(monkeypatch):
    """torch's modules call F.conv2d, not torch.conv2d: a patch on torch.conv2d alone does not run
    in them, and the conv was left on torch's with a report of a patch of F.conv2d."""
    original = torch.conv2d
    monkeypatch.setattr(torch, "conv2d", lambda x, w, *args, **kwargs: original(x, 2 * w, *args, **kwargs))
    model, report = nn.Sequential(nn.Conv2d(2, 3, 3).to(EXACT)), []
    triton_conv.convert_model(model, report=report)
    assert report == [] and type(model[0]) is triton_conv.nn.Conv2d


def test_a_dtensor_layer_is_left_alone_and_reported():
    """A layer whose parameters distribute_module made DTensors was converted without a word, and
    its first forward then refused the DTensor: the conversion leaves it on torch's and says so."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_module

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = nn.Sequential(nn.Conv2d(2, 3, 3).to(EXACT))
        distribute_module(model, init_device_mesh("cpu", (1,)))
        report = []
        triton_conv.convert_model(model, report=report)
        assert type(model[0]) is nn.Conv2d and len(report) == 1, report
        assert report[0][0] == "0" and "weight and bias are DTensors" in report[0][1]
    finally:
        dist.destroy_process_group()


def test_a_conv_held_and_wrapped_by_torch_compile_is_reported_for_the_wrapper():
    """Converted where it is held, the conv was then swapped into torch.compile's wrapper from the
    cache without a word, while the wrapper's compiled forward still ran the torch module."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1).to(EXACT)
            self.fast = torch.compile(self.conv, backend="eager")

    torch._dynamo.reset()
    model, report = Net(), []
    x = torch.randn(1, 2, 4, 4, dtype=EXACT)
    expected = model.conv(x)
    triton_conv.convert_model(model, report=report)
    held, held_launches = _launches(lambda: model.conv(x))
    wrapped, wrapped_launches = _launches(lambda: model.fast(x))
    torch._dynamo.reset()
    assert type(model.conv) is triton_conv.Conv2d and held_launches == {"fprop_kernel": 1}
    assert wrapped_launches == {} and [name for name, _ in report] == ["fast._orig_mod"]
    assert "torch.compile" in report[0][1]
    assert rel_error(held, expected) < EXACT_TOL and rel_error(wrapped, expected) < EXACT_TOL


@pytest.mark.parametrize("root", [False, True], ids=["in_a_model", "as_the_model"])
def test_a_conv_child_of_a_conv_is_converted_in_the_converted_parent(root):
    """The outer conv was replaced first (its children table copied), then the inner one swapped on
    the old outer module; passed as the model, the outer conv's children were never visited."""
    outer = nn.Conv2d(2, 2, 3, padding=1).to(EXACT)
    outer.refine = nn.Conv2d(2, 2, 1).to(EXACT)
    outer.register_forward_hook(lambda module, args, out: module.refine(out))
    model = outer if root else nn.Sequential(outer)
    x = torch.randn(1, 2, 4, 4, dtype=EXACT)
    expected = model(x)
    report = []
    model = triton_conv.convert_model(model, report=report)
    y, launched = _launches(lambda: model(x))
    converted = model if root else model[0]
    assert type(converted) is triton_conv.Conv2d and type(converted.refine) is triton_conv.Conv2d
    assert report == [] and launched == {"fprop_kernel": 2} and rel_error(y, expected) < EXACT_TOL


def _standardised_conv2d(self, x, weight, bias):
    weight = (weight - weight.mean(dim=(1, 2, 3), keepdim=True)) / weight.std(dim=(1, 2, 3), keepdim=True)
    return nn.functional.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


@pytest.mark.parametrize(
    "kind, name, patch",
    [
        ("Conv2d", "_conv_forward", lambda original: _standardised_conv2d),
        ("ConvTranspose2d", "forward", lambda original: lambda self, x, size=None: 2 * original(self, x)),
    ],
)
def test_a_method_patched_on_torchs_class_is_reported_not_dropped(monkeypatch, kind, name, patch):
    """A patch on torch's class (a weight standardisation on nn.Conv2d._conv_forward) of a method
    triton-conv's module overrides was silently dropped: a different answer, nothing reported."""
    torch_class = getattr(nn, kind)
    monkeypatch.setattr(torch_class, name, patch(getattr(torch_class, name)))
    model = nn.Sequential(torch_class(2, 3, 3).to(EXACT))
    _left_alone_and_reported(model, torch.randn(1, 2, 5, 5, dtype=EXACT), f"nn.{kind}.{name} was replaced")


def test_a_patch_triton_convs_module_does_not_override_still_converts(monkeypatch):
    """nn.Conv2d.forward is not triton-conv's: a patch there runs in the converted module too."""
    calls = []
    original = nn.Conv2d.forward
    monkeypatch.setattr(nn.Conv2d, "forward", lambda self, x: calls.append(1) or original(self, x))
    model, report = nn.Sequential(nn.Conv2d(2, 3, 3).to(EXACT)), []
    x = torch.randn(1, 2, 5, 5, dtype=EXACT)
    expected = model(x)
    triton_conv.convert_model(model, report=report)
    y, launched = _launches(lambda: model(x))
    assert report == [] and launched == {"fprop_kernel": 1} and calls == [1, 1]
    assert rel_error(y, expected) < EXACT_TOL


@pytest.mark.parametrize("attribute", ["stride", "padding", "dilation", "kernel_size"])
@pytest.mark.parametrize("output_size", [None, [11, 11]])
def test_transposed_geometry_attributes_set_to_no_pair(attribute, output_size):
    """`conv.padding = 1` after construction: torch's forward refuses it (AssertionError); with an
    output_size its rule cannot index an int stride or dilation (TypeError). triton-conv computed an
    output for the first and blamed the valid output_size for the second."""
    torch_module = nn.ConvTranspose2d(4, 2, 3, stride=2).to(EXACT)
    setattr(torch_module, attribute, 2 if attribute != "padding" else 1)
    converted = triton_conv.convert_model(copy.deepcopy(torch_module))
    x = torch.randn(1, 4, 5, 5, dtype=EXACT)
    try:
        expected = torch_module(x, output_size)
    except (AssertionError, TypeError) as error:
        with pytest.raises(type(error)) as raised:
            converted(x, output_size)
        assert isinstance(raised.value, RuntimeError) and attribute in str(raised.value)
        return
    y, launched = _launches(lambda: converted(x, output_size))
    assert launched == {"dgrad_kernel": 1} and rel_error(y, expected) < EXACT_TOL


def test_torch_aos_quantized_convolutions_are_reported_not_passed_over():
    """torch.ao's quantized convolutions (integer kernels) are classes of their own, not nn.Conv*'s:
    left alone, and said so, wherever they sit, the model itself included; the float conv beside
    them is converted."""
    import warnings

    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch 2.13: quantized tensors are deprecated
        quantized = [nnq.Conv2d(2, 2, 3), nnq.ConvTranspose2d(2, 2, 3), nniq.ConvReLU2d(2, 2, 3),
                     nnqd.Conv1d(2, 2, 3)]  # fmt: skip
    model, report = nn.Sequential(*quantized, nn.Conv2d(2, 2, 3)), []
    triton_conv.convert_model(model, report=report)
    assert [name for name, _ in report] == ["0", "1", "2", "3"]
    assert all("quantized convolution (torch.ao)" in reason for _, reason in report), report
    assert all(model[i] is quantized[i] for i in range(4)) and isinstance(model[4], triton_conv.Conv2d)
    alone = []
    assert triton_conv.convert_model(quantized[0], report=alone) is quantized[0]
    assert [name for name, _ in alone] == ["<model>"]


def _prepared(kind: str, model: nn.Module, x: torch.Tensor) -> nn.Module:
    from torch.ao import quantization as tq
    from torch.ao.quantization import quantize_fx

    if kind == "prepare_fx":
        return quantize_fx.prepare_fx(model.eval(), tq.get_default_qconfig_mapping("fbgemm"), (x,))
    if kind == "prepare_qat_fx":
        return quantize_fx.prepare_qat_fx(model.train(), tq.get_default_qat_qconfig_mapping("fbgemm"), (x,))
    model.eval().qconfig = tq.get_default_qconfig("fbgemm")
    return tq.prepare(tq.fuse_modules(model, [["0", "1"]]))  # eager: the first conv fused with its ReLU


def _quantized(prepared: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from torch.ao import quantization as tq
    from torch.ao.quantization import quantize_fx

    prepared(x)  # calibrates the observers
    if isinstance(prepared, torch.fx.GraphModule):
        return quantize_fx.convert_fx(prepared.eval())(x)
    quantized = tq.convert(prepared)
    return quantized(torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)).dequantize()


@pytest.mark.parametrize("kind", ["prepare", "prepare_fx", "prepare_qat_fx"])
def test_convolutions_prepared_for_quantization_are_reported_and_quantize_as_torchs(kind):
    """Converted between torch.ao's prepare and convert, a conv that convert finds by its torch class
    stayed in floating point (silently, after prepare_fx: the quantized model differed from
    torch's). A conv with a qconfig is left alone and reported; the model quantizes as torch's."""
    import warnings

    torch.manual_seed(0)
    # torch.ao's fbgemm quantization is the CPU's, whatever the suite's device: the model, its input
    # and every observer and quantized module made on the way are made there (nothing here runs a
    # Triton kernel: every conv is left alone)
    with torch.device("cpu"), warnings.catch_warnings():
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1))
        x = torch.randn(2, 3, 7, 6)
        warnings.simplefilter("ignore")  # torch 2.13: torch.ao.quantization is deprecated
        prepared = _prepared(kind, model, x)
        ours, report = copy.deepcopy(prepared), []
        triton_conv.convert_model(ours, report=report)
        assert report and all("prepared for quantization" in reason for _, reason in report), report
        assert not any(isinstance(m, tuple(triton_conv.nn.CONVERSIONS.values())) for m in ours.modules())
        assert torch.equal(_quantized(ours, x), _quantized(prepared, x))


def test_a_model_quantized_after_conversion_says_so_before_any_launch():
    """torch.ao's prepare and convert find convs by torch's classes: on a converted model they leave
    ours in floating point and hand them the QuantStub's quantized tensor. The error said only
    'got torch.quint8'; it says what happened and what to do, and nothing is launched."""
    import warnings

    from torch.ao import quantization as tq

    torch.manual_seed(0)
    # torch.ao's fbgemm quantization is the CPU's, whatever the suite's device; the refusal comes
    # from the argument checks, before the device is looked at.
    model = nn.Sequential(tq.QuantStub(), nn.Conv2d(3, 4, 3), tq.DeQuantStub()).cpu()
    x = torch.randn(2, 3, 7, 6, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13: torch.ao.quantization is deprecated
        converted = triton_conv.convert_model(model)
        converted.eval().qconfig = tq.get_default_qconfig("fbgemm")
        prepared = tq.prepare(converted)
        prepared(x)
        quantized = tq.convert(prepared)
    assert isinstance(quantized[1], triton_conv.Conv2d)  # left in floating point by torch.ao
    before = dict(launch_counts)
    with pytest.raises(RuntimeError, match="a quantized tensor: triton-conv has no integer kernels"):
        quantized(x)
    assert dict(launch_counts) == before


@pytest.mark.parametrize("name", ["torch._dynamo.eval_frame", "torch.ao.nn.quantized.modules.conv"])
def test_a_module_half_imported_by_another_thread_is_not_read_for_its_class(monkeypatch, name):
    """While another thread imports torch.compile's or torch.ao's module, it is in sys.modules
    without its classes: reading `.OptimizedModule` or `._ConvNd` there raised AttributeError
    ("partially initialized module") out of convert_model. No instance can exist yet."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    model, report = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv1d(2, 2, 1)), []
    triton_conv.convert_model(model, report=report)
    assert isinstance(model[0], triton_conv.Conv2d) and isinstance(model[1], triton_conv.Conv1d)
    assert report == []


@pytest.mark.parametrize("register_first", ["register_full_backward_hook", "register_backward_hook"])
def test_a_deep_copy_of_a_parametrized_converted_conv_shares_nothing_with_the_original(register_first):
    """torch's parametrize gives a parametrized module's class a __deepcopy__ that copies its
    __dict__ as it is (where the class has none), which kept the converted module's reference to
    the torch module it replaced: a backward hook registered on the copy (an EMA or teacher model)
    set the original's full-hook flag, and a hook of the other kind on the live model then raised
    'Cannot use both regular backward hooks and full backward hooks'."""
    kinds = ["register_full_backward_hook", "register_backward_hook"]
    other = kinds[1 - kinds.index(register_first)]
    model = nn.Sequential(nn.Conv2d(2, 3, 3).to(EXACT))
    original = model[0]
    triton_conv.convert_model(model)
    torch.nn.utils.parametrizations.weight_norm(model[0])
    copied = copy.deepcopy(model)
    getattr(copied[0], register_first)(lambda module, grad_input, grad_output: None)
    assert original._is_full_backward_hook is model[0]._is_full_backward_hook is None
    getattr(model[0], other)(lambda module, grad_input, grad_output: None)  # raised before the fix
    x = torch.randn(1, 2, 5, 5, dtype=EXACT)
    # the copy computes what the model does, on its own tensors, through the Triton kernel
    y, launched = _launches(lambda: copied(x))
    assert rel_error(y, model(x)) < EXACT_TOL and launched.get("fprop_kernel", 0) == 1
    assert copied[0].parametrizations.weight.original0 is not model[0].parametrizations.weight.original0
