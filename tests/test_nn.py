"""triton_conv.Conv2d and convert_model against torch.nn.Conv2d."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import triton_conv

from .contract import EXACT, EXACT_TOL
from .reference import bound, rel_error


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv2d_module_matches_torch(padding_mode, triton_only):
    kwargs = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2, padding_mode=padding_mode)
    reference = nn.Conv2d(4, 6, (3, 2), **kwargs).double()
    module = triton_conv.Conv2d(4, 6, (3, 2), **kwargs).double()
    module.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    with triton_only() as proof:
        y = module(x)
        grad_output = torch.randn_like(y)
        y.backward(grad_output)
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
    y_ref = reference(x_ref)
    y_ref.backward(grad_output)
    assert rel_error(y, y_ref) < 1e-12
    assert rel_error(x.grad, x_ref.grad) < 1e-12
    assert rel_error(module.weight.grad, reference.weight.grad) < 1e-12
    assert rel_error(module.bias.grad, reference.bias.grad) < 1e-12


def test_checkpoints_load_both_ways():
    ours = triton_conv.Conv2d(3, 5, 3, padding=1, bias=True)
    theirs = nn.Conv2d(3, 5, 3, padding=1, bias=True)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    assert torch.equal(theirs.weight, ours.weight)
    ours2 = triton_conv.Conv2d(3, 5, 3, padding=1)
    ours2.load_state_dict(theirs.state_dict())
    assert torch.equal(ours2.bias, theirs.bias)
    assert isinstance(ours, nn.Conv2d)


class Block(nn.Module):
    """Convolutions, batch norm, a residual, a depthwise conv and a strided 1x1 downsample."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.body = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.downsample = nn.Conv2d(8, 12, 1, stride=2, bias=False)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = x + self.pointwise(torch.relu(self.depthwise(x)))
        x = self.body(x) + self.downsample(x)
        return self.head(x.mean(dim=(2, 3)))


def test_converted_network_matches_original(triton_only):
    torch.manual_seed(torch.initial_seed())
    original = Block().double()
    converted = triton_conv.convert_model(Block().double())
    converted.load_state_dict(original.state_dict())
    conv_count = sum(isinstance(m, triton_conv.Conv2d) for m in converted.modules())
    assert conv_count == 5
    x = torch.randn(3, 3, 9, 10, dtype=torch.float64)
    with triton_only() as proof:
        out = converted(x)
        out.square().sum().backward()
    assert proof.launches["fprop_kernel"] == 5 and proof.launches["wgrad_kernel"] == 5
    out_ref = original(x)
    out_ref.square().sum().backward()
    assert rel_error(out, out_ref) < 1e-12
    for (name, p), p_ref in zip(converted.named_parameters(), original.parameters()):
        assert rel_error(p.grad, p_ref.grad) < 1e-10, name


def test_convert_model_shares_parameters_and_reports_what_it_left():
    class CustomConv(nn.Conv2d):
        pass

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Conv2d(4, 4, 1), CustomConv(4, 4, 1)))
    weights = [model[0].weight, model[1][0].weight]
    report = []
    assert triton_conv.convert_model(model, report=report) is model
    assert type(model[0]) is triton_conv.Conv2d and type(model[1][0]) is triton_conv.Conv2d
    assert model[0].weight is weights[0] and model[1][0].weight is weights[1]
    assert type(model[1][1]) is CustomConv
    assert len(report) == 1 and report[0][0] == "1.1"
    assert report[0][1].startswith("CustomConv subclasses nn.Conv2d: a subclass may change what")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        triton_conv.convert_model(model)
    assert len(caught) == 1 and "1.1" in str(caught[0].message)


def test_convert_a_bare_conv_and_keep_training_mode():
    conv = nn.Conv2d(2, 3, 3).eval()
    converted = triton_conv.convert_model(conv)
    assert type(converted) is triton_conv.Conv2d and not converted.training
    assert converted.weight is conv.weight


def test_converted_float32_model(triton_only):
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 2, 3, stride=2))
    reference = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(2, 3, 8, 9)
    expected = model(x)
    triton_conv.convert_model(model)
    with triton_only():
        got = model(x)
    assert rel_error(got, expected) < bound(torch.float32)  # torch's and ours, each TF32 on a GPU
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), reference))


def test_convert_model_keeps_every_hook(triton_only):
    """Forward hooks (with kwargs and always_called too), pre-hooks, full backward hooks and
    state-dict hooks move with the conversion; the caller's handles still remove them."""
    calls = []
    conv = nn.Conv2d(2, 3, 3, padding=1).to(EXACT)
    handles = [
        conv.register_forward_pre_hook(lambda m, args: calls.append("pre") or (args[0] * 2,)),
        conv.register_forward_hook(lambda m, args, out: calls.append("post") or out + 1),
        conv.register_forward_hook(lambda m, a, k, out: calls.append("kwargs") or None, with_kwargs=True),
        conv.register_full_backward_hook(lambda m, gin, gout: calls.append("backward") or None),
        conv.register_forward_pre_hook(lambda m, a, k: calls.append("pre_kwargs") or None, with_kwargs=True),
    ]
    conv._register_state_dict_hook(lambda m, sd, prefix, local: calls.append("state_dict") or None)
    model = nn.Sequential(conv)
    x = torch.randn(1, 2, 5, 4, dtype=EXACT, requires_grad=True)
    expected = model(x)
    expected.sum().backward()
    expected_calls, calls[:] = list(calls), []
    triton_conv.convert_model(model)
    assert type(model[0]) is triton_conv.Conv2d
    with triton_only() as proof:
        got = model(x)
        got.sum().backward()
    assert proof.launches["fprop_kernel"] == 1
    assert calls == expected_calls and rel_error(got, expected) < EXACT_TOL
    model.state_dict()
    assert calls[-1] == "state_dict"
    for handle in handles:
        handle.remove()
    calls.clear()
    with triton_only():
        plain = model(x)
    assert (
        calls == []
        and rel_error(plain, nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)) < EXACT_TOL
    )


def test_convert_model_keeps_legacy_weight_norm_working(triton_only):
    """The legacy torch.nn.utils.weight_norm is a pre-hook that recomputes `weight` from weight_g and
    weight_v: converted with it, the gradients reach g and v, and remove_weight_norm still works."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = torch.nn.utils.weight_norm(nn.Conv2d(3, 4, 3).to(EXACT))
        original = torch.nn.utils.weight_norm(nn.Conv2d(3, 4, 3).to(EXACT))
    original.load_state_dict(reference.state_dict())
    converted = triton_conv.convert_model(original)
    assert type(converted) is triton_conv.Conv2d
    x = torch.randn(2, 3, 6, 5, dtype=EXACT)
    with triton_only() as proof:
        got = converted(x)
        got.square().sum().backward()
    assert proof.launches == {"fprop_kernel": 1, "wgrad_kernel": 1}
    expected = reference(x)
    expected.square().sum().backward()
    assert rel_error(got, expected) < EXACT_TOL
    for name in ("weight_g", "weight_v", "bias"):
        assert rel_error(getattr(converted, name).grad, getattr(reference, name).grad) < EXACT_TOL, name
    torch.nn.utils.remove_weight_norm(converted)
    assert isinstance(converted.weight, nn.Parameter) and not converted._forward_pre_hooks


def test_convert_model_skips_parametrized_convs_with_a_report():
    parametrized = torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3))
    shared = nn.Conv2d(4, 4, 1)
    model = nn.Sequential(parametrized, shared, nn.Sequential(shared))
    report = []
    triton_conv.convert_model(model, report=report)
    assert model[0] is parametrized
    assert [name for name, _ in report] == ["0"] and "parametrized" in report[0][1]
    assert type(model[1]) is triton_conv.Conv2d and model[2][0] is model[1]  # a shared conv stays one


@pytest.mark.parametrize(
    ("torch_class", "ours"),
    [
        (nn.Conv2d, triton_conv.Conv2d),
        (nn.Conv1d, triton_conv.Conv1d),
        (nn.ConvTranspose2d, triton_conv.ConvTranspose2d),
    ],
    ids=lambda c: c.__name__,
)
def test_from_torch_shares_the_tensors_not_the_parameter_table(torch_class, ours):
    """The converted module holds the torch module's weight and bias, and a parameter replaced or
    removed on one module leaves the other's alone."""
    conv = torch_class(2, 3, 3)
    weight, bias = conv.weight, conv.bias
    converted = ours.from_torch(conv)
    assert converted.weight is weight and converted.bias is bias
    converted.weight = nn.Parameter(torch.zeros_like(weight))
    converted.register_parameter("bias", None)
    assert conv.weight is weight and conv.bias is bias


class _Scaled(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 10


@pytest.mark.parametrize(
    ("ours", "conv"),
    [
        (triton_conv.ConvTranspose2d, nn.Conv2d(4, 4, 3)),  # would run a transposed conv of its weight
        (triton_conv.Conv2d, nn.ConvTranspose2d(4, 4, 3)),
        (triton_conv.Conv2d, _Scaled(4, 4, 3)),  # its forward would be dropped
        (triton_conv.Conv1d, nn.Conv2d(4, 4, 3)),
        (triton_conv.Conv2d, nn.Linear(4, 4)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nn.Module) else value.__name__,
)
def test_from_torch_refuses_a_module_it_would_not_be(ours, conv):
    """from_torch makes a module that is `conv` in all but its class: of another class, or a subclass
    with its own forward, it would compute something else without a word."""
    with pytest.raises(triton_conv.ConvTypeError, match=f"conv must be a torch.nn.{ours.__name__}"):
        ours.from_torch(conv)
    with pytest.raises(RuntimeError):
        ours.from_torch(conv)


def test_from_torch_takes_its_own_class_and_a_subclass_of_it_takes_torchs():
    conv = nn.Conv2d(2, 3, 3)
    ours = triton_conv.Conv2d.from_torch(conv)
    assert type(triton_conv.Conv2d.from_torch(ours)) is triton_conv.Conv2d

    class Mine(triton_conv.Conv2d):
        pass

    mine = Mine.from_torch(conv)
    x = torch.randn(1, 2, 5, 5)
    tol = bound(torch.float32)  # 1e-5 as IEEE; torch's and ours each TF32 on a GPU
    assert type(mine) is Mine and torch.allclose(mine(x), conv(x), rtol=tol, atol=tol)
    from_ours = Mine.from_torch(ours)  # ours adds nothing to torch's: a subclass of ours takes it
    assert type(from_ours) is Mine and torch.allclose(from_ours(x), conv(x), rtol=tol, atol=tol)

    class Theirs(triton_conv.Conv2d):
        def forward(self, input):
            return 2 * super().forward(input)

    with pytest.raises(triton_conv.ConvTypeError, match="not a subclass"):
        Mine.from_torch(Theirs.from_torch(conv))  # another subclass's forward would be dropped


@pytest.mark.parametrize("patch", ["compile", "forward", "_conv_forward"])
@pytest.mark.parametrize("ours", [triton_conv.Conv1d, triton_conv.Conv2d, triton_conv.ConvTranspose2d])
def test_from_torch_refuses_a_module_bound_to_torchs_convolution(ours, patch):
    """A conv compiled in place, or with a method of its own on the instance, carries a call bound to
    itself: from_torch took it, and the new module ran torch's convolution on the original's weights,
    so after a load_state_dict(assign=True) it computed with the old ones. convert_model reports
    such a conv; from_torch now refuses it (RuntimeError)."""
    conv = next(base for base in ours.__mro__ if base.__module__.startswith("torch.nn."))(2, 2, 3)
    if patch == "compile":
        conv.compile(backend="eager")
    elif patch == "forward":
        original_forward = conv.forward
        conv.forward = lambda input: original_forward(input)  # an accelerate-style wrapper
    elif hasattr(type(conv), "_conv_forward"):
        conv._conv_forward = conv._conv_forward  # a bound method of its own
    else:  # ConvTranspose2d's forward calls _output_padding, not _conv_forward
        conv._output_padding = conv._output_padding
    with pytest.raises(triton_conv.ConvTypeError, match="cannot be converted") as raised:
        ours.from_torch(conv)
    assert isinstance(raised.value, RuntimeError)
    torch._dynamo.reset()
