"""triton_conv.conv2d as a differentiable op: gradients, needs_input_grad, strides of grad_output,
torch.compile, opcheck and autocast. Kernel-level grids for dgrad and wgrad are in their own files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv.autograd import conv2d_op, input_grad_op, weight_grad_op

from .contract import compiled_against_eager
from .reference import bound, make_tensor, rel_error, tolerance
from .test_fprop import FEATURES


def _leaves(x_shape, w_shape, dtype, layout, bias=True):
    x = make_tensor(x_shape, dtype, layout).requires_grad_()
    w = make_tensor(w_shape, dtype, layout).requires_grad_()
    b = make_tensor((w_shape[0],), dtype).requires_grad_() if bias else None
    return x, w, b


def _reference_grads(x, w, b, kwargs, grad_output):
    """float64 gradients from torch's own conv2d, outside any Triton-only block."""
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = F.conv2d(leaves[0], leaves[1], leaves[2], **kwargs)
    y.backward(grad_output.double())
    return [t.grad if t is not None else None for t in leaves]


@pytest.mark.parametrize(
    "dtype,layout", [(torch.float32, "nchw"), (torch.float16, "nhwc"), (torch.bfloat16, "strided")], ids=str
)
@pytest.mark.parametrize("feature", ["3x3", "asymmetric", "dilation", "groups", "depthwise", "same_even"])
def test_gradients_match_reference(feature, dtype, layout, triton_only):
    x_shape, w_shape, kwargs = FEATURES[feature]
    x, w, b = _leaves(x_shape, w_shape, dtype, layout)
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, b, **kwargs)
        grad_output = torch.randn_like(y)
        y.backward(grad_output)
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
    for name, got, ref in zip(
        "xwb", (x.grad, w.grad, b.grad), _reference_grads(x, w, b, kwargs, grad_output)
    ):
        err = rel_error(got, ref)
        assert err < bound(dtype), f"d{name}: relative error {err:.2e}"
        assert got.dtype == dtype
    assert x.grad.is_contiguous(memory_format=torch.channels_last) == (layout == "nhwc")


LAYOUTS = (torch.contiguous_format, torch.channels_last)


@pytest.mark.parametrize("grad_layout", LAYOUTS, ids=("dy_nchw", "dy_nhwc"))
@pytest.mark.parametrize("w_layout", LAYOUTS, ids=("w_nchw", "w_nhwc"))
@pytest.mark.parametrize("x_layout", LAYOUTS, ids=("x_nchw", "x_nhwc"))
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_gradient_memory_formats_are_torchs(op, x_layout, w_layout, grad_layout, triton_only):
    """Both gradients in channels_last if x or the weight is, whatever dy's layout, as torch's
    convolution_backward lays them out (seen in autograd.grad's results, which no leaf re-lays)."""
    torch_op, ours = getattr(F, op), getattr(triton_conv, op)
    w_shape = (6, 3, 3, 2) if op == "conv2d" else (3, 6, 3, 2)
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64).contiguous(memory_format=x_layout).requires_grad_()
    w = torch.randn(w_shape, dtype=torch.float64).contiguous(memory_format=w_layout).requires_grad_()
    reference = torch_op(x, w, stride=2)
    dy = torch.randn_like(reference).contiguous(memory_format=grad_layout)
    expected = torch.autograd.grad(reference, (x, w), dy)
    with triton_only():
        got = torch.autograd.grad(ours(x, w, stride=2), (x, w), dy)
    for name, g, e in zip(("dx", "dw"), got, expected, strict=True):
        assert g.stride() == e.stride(), f"{name}: strides {g.stride()}, torch's {e.stride()}"
        assert rel_error(g, e) < 1e-12, name


@pytest.mark.parametrize("padding", [1, "same"], ids=("padding1", "same_even_kernel"))
@pytest.mark.parametrize("w_innermost", [False, True], ids=("w_ncl", "w_nlc"))
@pytest.mark.parametrize("x_innermost", [False, True], ids=("x_ncl", "x_nlc"))
def test_conv1d_gradient_layouts_are_torchs(x_innermost, w_innermost, padding, triton_only):
    """conv1d's gradients follow torch's layout rule too (channels innermost if x or the weight has
    them), also for an even kernel's 'same', whose input gradient came back contiguous (found
    2026-12-04: the flat view that re-strides the input's size-1 dimensions made it so)."""

    def make(shape, innermost):
        values = torch.randn(shape[0], shape[2], shape[1], dtype=torch.float64)
        return (values.transpose(1, 2) if innermost else values.transpose(1, 2).contiguous()).requires_grad_()

    x, w = make((2, 3, 7), x_innermost), make((4, 3, 2), w_innermost)
    reference = F.conv1d(x, w, padding=padding)
    dy = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, (x, w), dy)
    with triton_only():
        got = torch.autograd.grad(triton_conv.conv1d(x, w, padding=padding), (x, w), dy)
    for name, g, e in zip(("dx", "dw"), got, expected, strict=True):
        assert g.stride() == e.stride(), f"{name}: strides {g.stride()}, torch's {e.stride()}"
        assert rel_error(g, e) < 1e-12, name


@pytest.mark.parametrize(
    "wanted,launched",
    [
        ("x", {"dgrad_kernel"}),
        ("w", {"wgrad_kernel"}),
        ("b", set()),  # the bias gradient alone is a sum over dy: no GEMM
        ("wb", {"wgrad_kernel"}),  # fused: one wgrad launch computes both
        ("xwb", {"dgrad_kernel", "wgrad_kernel"}),
    ],
)
def test_only_needed_gradients_are_computed(wanted, launched, triton_only):
    x, w, b = (t.detach() for t in _leaves((2, 4, 6, 5), (3, 4, 3, 3), torch.float32, "nchw"))
    for name, tensor in zip("xwb", (x, w, b)):
        tensor.requires_grad_(name in wanted)
    y = triton_conv.conv2d(x, w, b, padding=1)
    grad_output = torch.randn_like(y)
    with triton_only() as proof:
        y.backward(grad_output)
    assert set(proof.launches) == launched
    refs = _reference_grads(x, w, b, dict(padding=1), grad_output)
    for name, tensor, ref in zip("xwb", (x, w, b), refs):
        if name in wanted:
            assert rel_error(tensor.grad, ref) < bound(torch.float32)  # TF32's where the GPU uses it
        else:
            assert tensor.grad is None


@pytest.mark.parametrize("kind", ["sum", "channels_last", "transposed", "sliced"])
def test_grad_output_of_any_strides(kind, triton_only):
    x, w, b = _leaves((2, 4, 7, 6), (6, 4, 3, 3), torch.float32, "nchw")
    kwargs = dict(stride=(2, 1), padding=1)
    with triton_only():
        y = triton_conv.conv2d(x, w, b, **kwargs)
        if kind == "sum":  # expanded ones: every stride is zero
            grad_output = torch.ones(()).expand_as(y)
            y.sum().backward()
        else:
            if kind == "channels_last":
                grad_output = torch.randn_like(y).to(memory_format=torch.channels_last)
            elif kind == "transposed":
                grad_output = torch.randn(y.shape[0], y.shape[1], y.shape[3], y.shape[2]).transpose(2, 3)
            else:
                grad_output = torch.randn(*y.shape[:3], y.shape[3] * 2)[..., ::2]
            y.backward(grad_output)
    for got, ref in zip((x.grad, w.grad, b.grad), _reference_grads(x, w, b, kwargs, grad_output)):
        assert rel_error(got, ref) < bound(torch.float32)  # TF32's where the GPU uses it


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((1, 2, 5, 4), (2, 1, 2, 3), dict(stride=(2, 1), padding=(1, 0), groups=2)),
        ((1, 2, 5, 5), (3, 2, 3, 2), dict(dilation=(2, 1), padding="same")),
    ],
)
def test_gradcheck_float64(x_shape, w_shape, kwargs, triton_only):
    x, w, b = _leaves(x_shape, w_shape, torch.float64, "nchw")
    with triton_only() as proof:  # gradcheck's own arithmetic has no convolution: ours are checked
        assert torch.autograd.gradcheck(
            lambda x, w, b: triton_conv.conv2d(x, w, b, **kwargs), (x, w, b), fast_mode=True
        )
    assert proof.launches.keys() == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}


def test_autograd_function_and_op_agree(triton_only):
    x, w, b = _leaves((2, 3, 6, 5), (4, 3, 3, 3), torch.float32, "nchw")
    geometry = ((1, 2), (1, 0, 1, 2), (1, 1), 1)
    grad_output = None
    grads = []
    for fn in (triton_conv.Conv2dFunction.apply, conv2d_op):
        for t in (x, w, b):
            t.grad = None
        with triton_only():
            y = fn(x, w, b, *geometry)
            grad_output = torch.randn_like(y) if grad_output is None else grad_output
            y.backward(grad_output)
        grads.append((y.detach(), x.grad, w.grad, b.grad))
    for first, second in zip(*grads):
        assert torch.equal(first, second)
    # The op's autograd formula is the Function: both are checked against torch's own in float64
    # (pads top 1, left 0, bottom 1, right 2, as F.pad's (left, right, top, bottom)).
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y = F.conv2d(F.pad(leaves[0], (0, 2, 1, 1)), leaves[1], leaves[2], stride=(1, 2))
    y.backward(grad_output.double())
    for name, got, want in zip(("y", "dx", "dw", "db"), grads[0], (y, *(t.grad for t in leaves))):
        assert rel_error(got, want) < bound(torch.float32), name


def test_gradient_accumulation_matches_a_batch(triton_only):
    """N micro-batches of one image accumulate the weight gradient of one batch of N."""
    x = torch.randn(4, 3, 7, 6, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    with triton_only():
        triton_conv.conv2d(x, w, b, padding=1).square().sum().backward()
        batch_grads = (w.grad.clone(), b.grad.clone())
        w.grad = b.grad = None
        for image in x.split(1):
            triton_conv.conv2d(image, w, b, padding=1).square().sum().backward()
    assert rel_error(w.grad, batch_grads[0]) < 1e-12
    assert rel_error(b.grad, batch_grads[1]) < 1e-12


def test_opcheck():
    x, w, b = _leaves((2, 4, 6, 5), (6, 2, 3, 3), torch.float64, "nchw")
    torch.library.opcheck(conv2d_op, (x, w, b, (2, 1), (1, 1, 0, 2), (1, 2), 2))
    x, w, _ = _leaves((1, 3, 5, 5), (4, 3, 1, 1), torch.float32, "nhwc", bias=False)
    torch.library.opcheck(conv2d_op, (x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1))
    # The backward passes are ops of their own, so torch.compile traces the backward too.
    x, w, _ = (t.detach() for t in _leaves((2, 4, 6, 5), (6, 2, 3, 3), torch.float64, "nchw"))
    geometry = ((2, 1), (1, 1, 0, 2), (1, 2), 2)
    grad_output = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    torch.library.opcheck(input_grad_op, (grad_output, x, w, *geometry))
    torch.library.opcheck(weight_grad_op, (grad_output, x, w, *geometry, True))


def test_compiled_model_has_no_graph_break():
    """fullgraph=True: one graph, no fallback; the graphs show that torch's convolution is absent and
    ours present, and the compiled model's gradients are the eager one's."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 1, stride=2)
    )
    x = torch.randn(2, 3, 8, 7, requires_grad=True)
    launched, forward_ops, backward_ops = compiled_against_eager(model, x)
    assert launched["fprop_kernel"] == 2 and launched["wgrad_kernel"] == 2 and launched["dgrad_kernel"] == 2
    assert "triton_conv.conv2d.default" in forward_ops
    assert {"triton_conv.conv2d_input_grad.default", "triton_conv.conv2d_weight_grad.default"} <= backward_ops
    assert not any("convolution" in op for op in forward_ops | backward_ops)


def test_autocast_runs_in_the_autocast_dtype(triton_only):
    x, w, b = (t.detach() for t in _leaves((2, 4, 6, 5), (3, 4, 3, 3), torch.float32, "nchw"))
    with torch.autocast(torch.get_default_device().type, dtype=torch.bfloat16):
        expected = F.conv2d(x, w, b, padding=1)
        with triton_only() as proof:
            y = triton_conv.conv2d(x, w, b, padding=1)
    assert proof.launches == {"fprop_kernel": 1}
    assert y.dtype == expected.dtype == torch.bfloat16
    assert rel_error(
        y, F.conv2d(x.bfloat16().double(), w.bfloat16().double(), b.bfloat16().double(), padding=1)
    ) < (tolerance(torch.bfloat16))


def test_hessian_through_the_weight_gradient_with_a_bias(triton_only):
    """Forward over reverse through the weight-gradient op: its jvp carries the bias gradient's
    tangent too. Every block of the Hessian over (w, b), float64, against torch's."""
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)

    def loss(conv):
        return lambda w, b: (conv(x, w, b, padding=1, groups=2) ** 3).sum()

    want = torch.func.hessian(loss(F.conv2d), argnums=(0, 1))(w, b)
    with triton_only() as proof:
        got = torch.func.hessian(loss(triton_conv.conv2d), argnums=(0, 1))(w, b)
    assert proof.launches.get("wgrad_kernel"), proof.launches
    for row in range(2):
        for column in range(2):
            err = rel_error(got[row][column], want[row][column])
            assert err < 1e-12, f"H[{row}][{column}]: relative error {err:.2e}"


def test_forward_over_reverse_of_the_weight_gradient_without_a_bias(triton_only):
    """Without a bias the weight-gradient op's bias output is empty, so its tangent must be empty too:
    a tangent of one element per output channel is refused by autograd. Its jvp has two ways in, both
    taken: the tangent through grad_output (w moved, a cubic loss) and through the input alone (x
    moved, a loss linear in y, whose grad_output has no tangent). float64, against torch's."""
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    target = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    x_t, w_t = torch.randn_like(x), torch.randn_like(w)

    def weight_gradient(conv, loss):
        return lambda x, w: torch.func.grad(lambda w: loss(conv(x, w, None, padding=1, groups=2)))(w)

    def cubic(y):
        return (y**3).sum()

    def linear(y):
        return (y * target).sum()

    routes = {
        "through grad_output": (cubic, lambda f: torch.func.jvp(lambda w: f(x, w), (w,), (w_t,))),
        "through the input": (linear, lambda f: torch.func.jvp(lambda x: f(x, w), (x,), (x_t,))),
    }
    for route, (loss, forward_over_reverse) in routes.items():
        want = forward_over_reverse(weight_gradient(F.conv2d, loss))
        with triton_only() as proof:
            got = forward_over_reverse(weight_gradient(triton_conv.conv2d, loss))
        assert proof.launches.get("wgrad_kernel"), (route, proof.launches)
        for name, ours, theirs in zip(("dw", "its tangent"), got, want, strict=True):
            err = rel_error(ours, theirs)
            assert err < 1e-12, f"{route}, {name}: relative error {err:.2e}"


def test_input_grad_op_is_differentiable_in_the_weight_when_the_input_needs_no_gradient(triton_only):
    """The input-gradient op's `input` only gives dx's shape and layout: whether its backward makes
    the weight's gradient follows the weight's requires_grad, not the input's (a frozen input, as a
    transposed convolution's or a gradient penalty's may be). float64, against torch's."""
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)  # requires no gradient
    w = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    geometry = ((2, 1), (1, 1, 1, 1), (1, 1), 1)  # pads top, left, bottom, right
    dy = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    g = torch.randn_like(x)  # the gradient arriving at dx
    with triton_only() as proof:
        dx = input_grad_op(dy, x, w, *geometry)
        (got,) = torch.autograd.grad(dx, w, g)
    assert proof.launches == {"dgrad_kernel": 1, "wgrad_kernel": 1}
    # torch's: dx as the input gradient of its conv2d (create_graph keeps it differentiable in w)
    x_ref, w_ref = x.clone().requires_grad_(), w.detach().clone().requires_grad_()
    y = F.conv2d(x_ref, w_ref, stride=(2, 1), padding=1)
    (dx_ref,) = torch.autograd.grad(y, x_ref, dy, create_graph=True)
    (want,) = torch.autograd.grad(dx_ref, w_ref, g)
    assert rel_error(dx.detach(), dx_ref.detach()) < 1e-12
    assert rel_error(got, want) < 1e-12


def test_gradient_ops_refuse_a_grad_output_of_another_dtype(triton_only):
    """The gradient ops are public (torch.ops.triton_conv) and their kernels compute in one dtype: a
    grad_output of another is a RuntimeError naming it, before any launch, not a failure inside the
    kernel (Triton's "Both operands must be same dtype", which names nothing the caller gave)."""
    x = torch.randn(2, 4, 7, 6)
    w = torch.randn(3, 4, 3, 3)
    geometry = ((2, 1), (1, 1, 1, 1), (1, 1), 1)
    for dtype in (torch.float64, torch.float16):
        dy = torch.randn(2, 3, 4, 6, dtype=dtype)
        refused = rf"grad_output \({dtype}.* must have input's dtype"
        for op, extra in ((input_grad_op, ()), (weight_grad_op, (True,))):
            with triton_only() as proof, pytest.raises(RuntimeError, match=refused):
                op(dy, x, w, *geometry, *extra)
            assert proof.launches == {}, (op, dtype, proof.launches)
