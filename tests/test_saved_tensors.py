"""What the backward passes keep, and how: through autograd's saved tensors, as torch's do.

Code around a convolution relies on that: autograd's in-place check (an input modified after the
forward must fail the backward, not feed it other values), `saved_tensors_hooks` (activation
offloading and compression pack what each op saves, and the backward sees only the unpacked copy)
and activation checkpointing (the forward runs again inside the backward). A backward that kept a
reference of its own to an input would pass the plain gradient tests and give other values here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import triton_conv

from .reference import rel_error

# Each op: (ours, torch's, input shape, weight shape, arguments, the kernel of its forward).
OPS = {
    "conv2d": (triton_conv.conv2d, F.conv2d, (2, 3, 7, 6), (4, 3, 3, 3), {"padding": 1, "stride": (2, 1)},
               "fprop_kernel"),
    "conv1d": (triton_conv.conv1d, F.conv1d, (2, 3, 9), (4, 3, 3), {"padding": 2, "dilation": 2},
               "fprop_kernel"),
    "conv_transpose2d": (triton_conv.conv_transpose2d, F.conv_transpose2d, (2, 3, 5, 4), (3, 4, 3, 3),
                         {"stride": 2, "padding": 1, "output_padding": 1}, "dgrad_kernel"),
}  # fmt: skip


def _leaves(name):
    _, _, x_shape, w_shape, _, _ = OPS[name]
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)
    out_channels = w_shape[1] if name == "conv_transpose2d" else w_shape[0]
    b = torch.randn(out_channels, dtype=torch.float64, requires_grad=True)
    return x, w, b


def _reference(name, x, w, b, then=lambda y: y):
    """torch's gradients of sum(then(op(x, w, b)) * probe) at the leaves' present values."""
    _, theirs, _, _, kwargs, _ = OPS[name]
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    y = then(theirs(*leaves, **kwargs))
    probe = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * probe).sum().backward()
    return [t.grad for t in leaves]


def _assert_close(ours, theirs):
    for got, want, what in zip(ours, theirs, ("input", "weight", "bias")):
        assert rel_error(got, want) < 1e-12, f"{what} gradient: rel error {rel_error(got, want):.2e}"


@pytest.mark.parametrize("name", OPS)
def test_an_operand_changed_in_place_after_the_forward_fails_the_backward_as_torchs_does(name):
    ours, theirs, _, _, kwargs, _ = OPS[name]
    for op in (theirs, ours):
        for changed in (0, 1):  # the input, then the weight
            x, w, b = _leaves(name)
            operands = [x * 1, w * 1]
            y = op(operands[0], operands[1], b, **kwargs)
            operands[changed].add_(1)
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                y.sum().backward()


@pytest.mark.parametrize("name", ["conv2d", "conv1d"])
def test_an_input_changed_in_place_after_an_even_kernels_same_padding_is_torchs_copy(name, triton_only):
    """torch pads an even kernel's padding='same' by a copy of the input and saves the copy, so a
    caller may change its input in place before backward; ours then saves a copy too."""
    ours, theirs, x_shape, w_shape, _, _ = OPS[name]
    x = torch.randn(x_shape, dtype=torch.float64)
    w = torch.randn((*w_shape[:2], *(2 for _ in w_shape[2:])), dtype=torch.float64, requires_grad=True)

    def weight_grad(op):
        caller = x.clone()
        y = op(caller, w, padding="same")
        caller.mul_(2)
        probe = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        return torch.autograd.grad((y * probe).sum(), w)[0]

    expected = weight_grad(theirs)
    with triton_only() as proof:
        got = weight_grad(ours)
    assert proof.launches == {"fprop_kernel": 1, "wgrad_kernel": 1}, proof.launches
    assert rel_error(got, expected) < 1e-12


@pytest.mark.parametrize("name", OPS)
def test_the_backward_reads_only_what_the_saved_tensor_hooks_unpack(name, triton_only):
    """The hooks pack a copy; the operands are then changed in place. torch's check cannot see the
    copies, so the backward runs, and it must use the copies (the forward's values), not the live
    operands. Ours packs as torch's packs: the same number of saved tensors."""
    ours, theirs, _, _, kwargs, kernel = OPS[name]
    x, w, b = _leaves(name)
    want = _reference(name, x, w, b)
    packed = {}
    for label, op in (("torch", theirs), ("ours", ours)):
        packed[label] = 0

        def pack(tensor, label=label):
            packed[label] += 1
            return tensor.clone()

        for leaf in (x, w, b):
            leaf.grad = None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            operands = [x * 1, w * 1]
            if label == "ours":
                with triton_only() as proof:
                    y = op(operands[0], operands[1], b, **kwargs)
                assert proof.launches == {kernel: 1}
            else:
                y = op(operands[0], operands[1], b, **kwargs)
        for operand in operands:
            operand.mul_(-3).add_(7)
        probe = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        (y * probe).sum().backward()
        got = [x.grad, w.grad, b.grad]
    _assert_close(got, want)
    assert packed["ours"] >= 2, "the operands were kept outside autograd's saved tensors"


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("name", OPS)
def test_activation_checkpointing_runs_the_forward_kernel_again_in_the_backward(name, reentrant, triton_only):
    ours, _, _, _, kwargs, kernel = OPS[name]
    x, w, b = _leaves(name)
    want = _reference(name, x, w, b, then=torch.tanh)
    with triton_only() as proof:
        y = checkpoint(lambda inp: torch.tanh(ours(inp, w, b, **kwargs)), x, use_reentrant=reentrant)
    assert proof.launches == {kernel: 1}
    with triton_only() as proof:
        probe = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        (y * probe).sum().backward()
    # The forward again, then one kernel per gradient: each of the three once.
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
    _assert_close([x.grad, w.grad, b.grad], want)


@pytest.mark.parametrize("name", OPS)
def test_a_second_backward_needs_retain_graph_as_torchs_does(name):
    ours, _, _, _, kwargs, _ = OPS[name]
    x, w, b = _leaves(name)
    loss = (ours(x, w, b, **kwargs) ** 2).sum()
    loss.backward(retain_graph=True)
    once = [t.grad.clone() for t in (x, w, b)]
    loss.backward()
    _assert_close([x.grad, w.grad, b.grad], [2 * g for g in once])
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()
