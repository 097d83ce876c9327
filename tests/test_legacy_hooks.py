"""torch's legacy backward hooks (`register_backward_hook`, and the global
`register_module_backward_hook`) on this package's modules: each is handed what torch's module hands
it, (grad input, grad weight, grad bias) with None where torch has None, and what it returns is used
as torch uses it. Found by an adversarial try: a converted Conv1d handed the hook one gradient, of
its output's 4-D view, and a module without a bias two gradients; a hook written for torch's tuple
failed, or changed other gradients than it meant to, without an error."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_backward_hook

import triton_conv
from triton_conv.launchers.common import launch_counts

from .contract import EXACT, EXACT_TOL
from .reference import bound, rel_error

pytestmark = pytest.mark.filterwarnings("ignore:Using a non-full backward hook")  # torch's, for its own too

# name -> (module, input shape); strides, padding and output_padding that are not the defaults.
MODULES = {
    "conv1d": (lambda bias: nn.Conv1d(3, 4, 3, padding=1, bias=bias), (2, 3, 7)),
    "conv1d-circular": (
        lambda bias: nn.Conv1d(3, 4, 3, padding=2, padding_mode="circular", bias=bias),
        (2, 3, 5),
    ),
    "conv2d": (lambda bias: nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=bias), (2, 3, 7, 6)),
    "conv2d-reflect": (
        lambda bias: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect", bias=bias),
        (1, 3, 5, 6),
    ),
    "conv_transpose2d": (
        lambda bias: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, bias=bias),
        (2, 3, 4, 5),
    ),
}


def _shapes(grads):
    return [None if g is None else tuple(g.shape) for g in grads]


def _run(module, x, register: str, call=None):
    """Backward through `module` (called as `call`, torch.compile's wrapper of it, where given)
    with a legacy hook that records what it is handed and returns the input gradient doubled and
    the weight gradient tripled."""
    call = module if call is None else call
    seen = []

    def hook(_module, grad_input, grad_output):
        seen.append(([None if g is None else g.clone() for g in grad_input], grad_output[0].clone()))
        scale = (2, 3, 1)[: len(grad_input)]
        return tuple(None if g is None else g * s for g, s in zip(grad_input, scale))

    if register == "module":
        handle = module.register_backward_hook(hook)
    else:
        handle = register_module_backward_hook(hook)
    try:
        grad_output = torch.randn_like(call(x.detach()))
        module.zero_grad()
        x.grad = None
        call(x).backward(grad_output)
    finally:
        handle.remove()
    (grad_input, dy), *rest = seen
    assert not rest
    params = [module.weight.grad, None if module.bias is None else module.bias.grad]
    return grad_input, dy, [x.grad, *params]


def _pair(name: str, bias: bool):
    """torch's module of MODULES[name], ours converted from a copy, and an input needing grad."""
    make, shape = MODULES[name]
    torch_module = make(bias).to(EXACT)
    x = torch.randn(shape, dtype=EXACT, requires_grad=True)
    return torch_module, triton_conv.convert_model(copy.deepcopy(torch_module)), x


def _assert_as_torch(got, expected, name: str) -> None:
    """_run's results against torch's: what the hook saw (shapes, None where torch's has None, and
    values), the incoming gradient, and the gradients it left."""
    (got_input, got_dy, got_grads), (expected_input, expected_dy, expected_grads) = got, expected
    assert _shapes(got_input) == _shapes(expected_input), name
    got_all, expected_all = got_input + [got_dy] + got_grads, expected_input + [expected_dy] + expected_grads
    for g, e in zip(got_all, expected_all, strict=True):
        assert (g is None) == (e is None), name
        if g is not None:
            assert rel_error(g, e) < EXACT_TOL, name


@pytest.mark.parametrize("register", ["module", "global"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_legacy_backward_hook_sees_and_changes_what_torch_s_does(name, bias, register, triton_only):
    torch_module, ours, x = _pair(name, bias)
    seed = torch.randint(1 << 30, ()).item()

    torch.manual_seed(seed)
    expected = _run(torch_module, x, register)
    torch.manual_seed(seed)
    with triton_only() as proof:
        got = _run(ours, x, register)

    _assert_as_torch(got, expected, name)
    assert proof.launches.get("wgrad_kernel", 0) > 0 and proof.launches.get("dgrad_kernel", 0) > 0


@pytest.mark.parametrize(
    "name, bias",
    [*((name, True) for name in sorted(MODULES)), ("conv1d", False), ("conv_transpose2d", False)],
)
def test_under_torch_compile_a_legacy_hook_sees_what_torch_s_eager_module_hands_it(name, bias):
    """A legacy hook makes Dynamo compile the module's forward as a frame of its own, and the hook
    landed on the compiled region's node: a transposed convolution's hook was handed (weight, bias,
    input), and what it did to "the input's gradient" it did to the weight's; a Conv1d's one
    gradient, of the 4-D view. The node is now recorded outside the graph: torch's eager one."""
    torch_module, ours, x = _pair(name, bias)
    seed = torch.randint(1 << 30, ()).item()

    torch.manual_seed(seed)
    expected = _run(torch_module, x, "module")
    torch._dynamo.reset()
    torch.manual_seed(seed)
    # torch.compile does not compile under a dispatch mode (triton_only's): launches counted bare
    before = dict(launch_counts)
    got = _run(ours, x, "module", torch.compile(ours, backend="aot_eager"))
    launched = {k: v - before.get(k, 0) for k, v in launch_counts.items()}

    _assert_as_torch(got, expected, name)
    assert launched.get("wgrad_kernel", 0) > 0 and launched.get("dgrad_kernel", 0) > 0


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_under_torch_func_a_legacy_hook_sees_what_torch_s_hands_it(name, bias, triton_only):
    """torch.func.grad of a functional_call, and per-sample gradients (vmap of grad): the hook was
    handed the op's own node's gradients (a Conv1d's one, of its 4-D view; two without a bias), and
    what it did to the first it did to another. The one node now has functorch's form."""
    torch_module, ours, x = _pair(name, bias)
    x = x.detach()

    def gradients(module, per_sample: bool):
        seen = []

        def hook(_module, grad_input, grad_output):
            seen.append(_shapes(grad_input))
            return tuple(None if g is None else g * s for g, s in zip(grad_input, (2, 3, 1)))

        handle = module.register_backward_hook(hook)
        params = dict(module.named_parameters())

        def loss(xs, p):
            return torch.func.functional_call(module, p, (xs[None] if per_sample else xs,)).pow(2).sum()

        try:
            if per_sample:
                grads = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(0, None))(x, params)
            else:
                grads = torch.func.grad(loss, argnums=(0, 1))(x, params)
        finally:
            handle.remove()
        return seen, [grads[0], *(grads[1][key] for key in sorted(grads[1]))]

    for per_sample in (False, True):
        expected_seen, expected = gradients(torch_module, per_sample)
        with triton_only() as proof:
            got_seen, got = gradients(ours, per_sample)
        assert got_seen == expected_seen, (name, per_sample)
        for g, e in zip(got, expected, strict=True):
            assert rel_error(g, e) < EXACT_TOL
        assert proof.launches.get("wgrad_kernel", 0) > 0 and proof.launches.get("dgrad_kernel", 0) > 0


def test_a_legacy_hook_on_a_first_layer_sees_no_input_gradient(triton_only):
    """An input that needs no gradient (an image into the first layer): None in its place, as torch."""
    torch_module = nn.Conv1d(2, 3, 3).to(EXACT)
    ours = triton_conv.convert_model(copy.deepcopy(torch_module))
    x = torch.randn(2, 2, 6, dtype=EXACT)
    seen = {}
    for label, module in (("torch", torch_module), ("ours", ours)):
        module.register_backward_hook(lambda m, gi, go, label=label: seen.update({label: _shapes(gi)}))
        module(x).sum().backward()
    assert seen["ours"] == seen["torch"] == [None, (3, 2, 3), (3,)]
    assert rel_error(ours.weight.grad, torch_module.weight.grad) < EXACT_TOL


def test_a_legacy_hook_leaves_double_backward_to_the_kernels(triton_only):
    """A gradient penalty through a module with a legacy hook: the backward is recorded, and its
    gradients are again this package's ops."""
    torch_module = nn.Conv2d(2, 3, 3, padding=1).to(EXACT)
    ours = triton_conv.convert_model(copy.deepcopy(torch_module))
    x = torch.randn(2, 2, 5, 4, dtype=EXACT, requires_grad=True)
    grads = {}
    for label, module in (("torch", torch_module), ("ours", ours)):
        module.register_backward_hook(lambda m, gi, go: None)
        (dx,) = torch.autograd.grad((module(x) ** 2).sum(), x, create_graph=True)
        grads[label] = torch.autograd.grad((dx**2).sum(), [x, module.weight])
    for got, expected in zip(grads["ours"], grads["torch"]):
        assert rel_error(got, expected) < EXACT_TOL


@pytest.mark.parametrize("hooked", ["none", "full"])
def test_only_legacy_hooks_take_the_one_node_path(hooked, triton_only):
    """Without a legacy hook the output's node is the op's own, and no forward is recomputed."""
    module = triton_conv.Conv2d(2, 3, 3).to(EXACT)
    if hooked == "full":
        module.register_full_backward_hook(lambda m, gi, go: None)
    x = torch.randn(1, 2, 5, 5, dtype=EXACT, requires_grad=True)
    with triton_only() as proof:
        y = module(x)
        y.sum().backward()
    assert proof.launches.get("fprop_kernel") == 1
    if hooked == "none":
        assert "ConvolutionNode" not in type(y.grad_fn).__name__


@pytest.mark.parametrize("name", ["conv1d", "conv2d", "conv_transpose2d"])
def test_under_autocast_the_hook_sees_the_cast_gradients(name, triton_only):
    """torch's node takes autocast's bf16 casts, so its hook sees bf16 gradients of fp32 parameters;
    and the backward, outside the autocast region, must differentiate the bf16 convolution."""
    make, shape = MODULES[name]
    torch_module = make(True)
    ours = triton_conv.convert_model(copy.deepcopy(torch_module))
    x = torch.randn(shape)
    results = []
    for module in (torch_module, ours):
        seen = []
        module.register_backward_hook(lambda m, gi, go, seen=seen: seen.append([g.dtype for g in gi]))
        leaf = x.clone().requires_grad_()
        with torch.autocast(torch.get_default_device().type, dtype=torch.bfloat16):
            y = module(leaf)
        (y.float() ** 2).sum().backward()
        results.append((seen, y.dtype, leaf.grad, module.weight.grad))
    (seen_torch, dtype_torch, *grads_torch), (seen_ours, dtype_ours, *grads_ours) = results
    assert seen_ours == seen_torch == [[torch.bfloat16] * 3] and dtype_ours == dtype_torch
    for got, expected in zip(grads_ours, grads_torch):
        assert got.dtype == expected.dtype and rel_error(got, expected) < 3e-2


def _both(make):
    torch_module = make().to(EXACT)
    return torch_module, triton_conv.convert_model(copy.deepcopy(torch_module))


def _hooked(module, seen):
    module.register_backward_hook(lambda m, gi, go: seen.append(_shapes(gi)))
    return module


def test_tensor_hooks_on_the_inputs_fire_once(triton_only):
    """The node's backward must not enter the engine again on the caller's tensors: a weight's
    register_hook (doubling its gradient) and an input's retain_grad fired twice there."""
    results = []
    x = torch.randn(2, 3, 6, 6, dtype=EXACT, requires_grad=True)
    for module in _both(lambda: nn.Conv2d(3, 4, 3)):
        calls = []
        _hooked(module, [])
        module.weight.register_hook(lambda grad, calls=calls: (calls.append(1), grad * 2)[1])
        hidden = x * 1
        hidden.retain_grad()
        module(hidden).sum().backward()
        results.append((len(calls), module.weight.grad, hidden.grad))
    (calls_torch, *grads_torch), (calls_ours, *grads_ours) = results
    assert calls_ours == calls_torch == 1
    for got, expected in zip(grads_ours, grads_torch):
        assert rel_error(got, expected) < EXACT_TOL


@pytest.mark.parametrize("name", ["conv1d", "conv2d", "conv_transpose2d"])
def test_an_unbatched_input_is_batched_outside_the_node(name, triton_only):
    """torch batches an unbatched input outside its node and squeezes after: its hook sees the
    squeeze's one gradient, and the output may be changed in place (a ReLU(inplace=True))."""
    make, shape = MODULES[name]
    x = torch.randn(shape[1:], dtype=EXACT)
    seen = {}
    for label, module in zip(("torch", "ours"), _both(lambda: make(True))):
        _hooked(module, seen.setdefault(label, []))
        module(x).sum().backward()
        module(x).relu_().sum().backward()  # the in-place change drops the hooked node, in both
    assert seen["ours"] == seen["torch"] and len(seen["torch"]) == 1 and len(seen["torch"][0]) == 1


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("conv,kernel,shape", [(nn.Conv1d, 2, (2, 3, 7)), (nn.Conv2d, (2, 3), (2, 3, 7, 6))])
def test_an_uneven_same_convolves_a_padded_copy_as_torch_s_does(conv, kernel, shape, triton_only):
    """torch's hook sees the padded copy's gradient, and the caller may change its input in place
    after the forward (torch saved the copy)."""
    seen, grads = {}, {}
    for label, module in zip(("torch", "ours"), _both(lambda: conv(3, 4, kernel, padding="same"))):
        _hooked(module, seen.setdefault(label, []))
        torch.manual_seed(0)
        hidden = torch.randn(shape, dtype=EXACT, requires_grad=True) * 1
        y = module(hidden)
        hidden.mul_(2)
        y.backward(torch.randn_like(y))
        grads[label] = module.weight.grad
    assert seen["ours"] == seen["torch"]
    assert seen["torch"][0][0] != shape  # padded
    assert rel_error(grads["ours"], grads["torch"]) < EXACT_TOL


def test_forward_mode_ad_runs_the_ops_own_formulas(triton_only):
    """A dual level open: the node has no jvp of its own, so the op's runs, as with no hook."""
    import torch.autograd.forward_ad as forward_ad

    x, tangent = torch.randn(1, 3, 5, 5, dtype=EXACT), torch.randn(1, 3, 5, 5, dtype=EXACT)
    tangents = []
    for module in _both(lambda: nn.Conv2d(3, 4, 3)):
        _hooked(module, [])
        with forward_ad.dual_level():
            tangents.append(forward_ad.unpack_dual(module(forward_ad.make_dual(x, tangent))).tangent)
    assert rel_error(tangents[1], tangents[0]) < EXACT_TOL


def test_a_backward_inside_an_autocast_region_does_not_cast_again(triton_only):
    """The forward ran in float32; torch's backward uses the float32 tensors it saved."""
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    grads = []
    for module in _both(lambda: nn.Conv2d(3, 4, 3)):
        module.float()
        _hooked(module, [])
        y = module(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y.backward(torch.ones_like(y))
        grads.append(module.weight.grad)
    assert grads[1].dtype == grads[0].dtype == torch.float32
    assert rel_error(grads[1], grads[0]) < bound(torch.float32)  # 1e-5 here; TF32's on a GPU


@pytest.mark.parametrize("change", [dict(stride=(2,)), dict(dilation=(0,))], ids=["stride", "dilation"])
def test_a_same_module_given_a_bad_geometry_later_is_refused_as_torch_refuses_it(change):
    """'same' with a stride (set after construction, which torch's constructor would refuse) is an
    error in torch's forward: the node's explicit padding must not turn it into a convolution."""
    for module in _both(lambda: nn.Conv1d(3, 4, 2, padding="same")):
        _hooked(module, [])
        for name, value in change.items():
            setattr(module, name, value)
        with pytest.raises(RuntimeError):
            module(torch.randn(2, 3, 7, dtype=EXACT, requires_grad=True))


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("given", [None, [1.0], "numpy"], ids=["None", "list", "numpy"])
def test_a_hooked_module_given_a_non_tensor_raises_the_function_s_error(name, given):
    """A legacy hook must not change which error a wrong input gets: the node's path asked the
    input for .dim() first (AttributeError, neither torch's TypeError nor a RuntimeError)."""
    given = np.zeros(MODULES[name][1]) if given == "numpy" else given
    module = triton_conv.convert_model(MODULES[name][0](True))
    errors = []
    for hooked in (False, True):
        if hooked:
            _hooked(module, [])
        with pytest.raises(TypeError) as raised:  # as torch's module raises
            module(given)
        errors.append(raised.value)
    assert (type(errors[1]), str(errors[1])) == (type(errors[0]), str(errors[0]))


@pytest.mark.parametrize("register", ["module", "global"])
def test_torch_fx_refuses_clearly_to_trace_through_a_module_with_a_legacy_hook(register, triton_only):
    """fx's tracer hands the module a Proxy. The node's path branched on it (a TraceError about
    control flow); given to the function, torch's own module call then loops without end (it
    indexes the Proxy output in search of a tensor, as for any module fx traces through). The
    error says what to use; triton_conv.symbolic_trace keeps the module, hook and all."""
    torch_model = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same", bias=False), nn.ReLU()).to(EXACT)
    model = triton_conv.convert_model(copy.deepcopy(torch_model))
    x = torch.randn(2, 3, 6, 5, dtype=EXACT, requires_grad=True)
    seen = []
    hook = lambda m, gi, go: seen.append(len(gi))
    register_hook = register_module_backward_hook if register == "global" else model[0].register_backward_hook
    handle = register_hook(hook)
    try:
        with pytest.raises(torch.fx.proxy.TraceError, match="triton_conv.symbolic_trace"):
            torch.fx.symbolic_trace(model)
        traced = triton_conv.symbolic_trace(model)
        with triton_only() as proof:
            y = traced(x)
            y.sum().backward()
    finally:
        handle.remove()
    # the node's backward recomputes the forward (the module docstring): two forward launches
    assert proof.launches == {"fprop_kernel": 2, "dgrad_kernel": 1, "wgrad_kernel": 1}
    assert rel_error(y, torch_model(x)) < EXACT_TOL
    assert 3 in seen  # the hook ran in the graph, on torch's (input, weight, bias) node
