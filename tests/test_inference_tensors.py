"""Inference tensors (made under torch.inference_mode) in a call that autograd records: torch's
convolutions refuse one they would save for backward before computing anything; ours refuse the
same calls, naming the argument, before any kernel launches, and compute the rest as torch does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv.launchers.common import launch_counts

from .reference import bound, rel_error


def _tensor(kind: str, shape: tuple) -> torch.Tensor | None:
    """A fresh tensor: 'inference' (made under torch.inference_mode), 'grad' (requires grad),
    'plain'; None for 'none'."""
    if kind == "none":
        return None
    if kind == "inference":
        with torch.inference_mode():
            return torch.randn(shape)
    return torch.randn(shape, requires_grad=kind == "grad")


X, W, W1, WT = (2, 3, 6, 5), (4, 3, 3, 3), (4, 3, 3), (3, 2, 3, 3)
# name: (op, (input kind, shape), (weight kind, shape), (bias kind, shape), keyword arguments)
CASES = {
    "input_inference_weight_grad": ("conv2d", ("inference", X), ("grad", W), ("none", ()), {}),
    "input_inference_bias_grad": ("conv2d", ("inference", X), ("plain", W), ("grad", (4,)), {}),
    "weight_inference_input_grad": ("conv2d", ("grad", X), ("inference", W), ("none", ()), {}),
    "bias_inference_input_grad": ("conv2d", ("grad", X), ("plain", W), ("inference", (4,)), {}),
    "all_inference_no_gradient": ("conv2d", ("inference", X), ("inference", W), ("inference", (4,)), {}),
    "even_same_padding_copies_the_input": (
        "conv2d", ("inference", X), ("grad", (4, 3, 2, 2)), ("none", ()), {"padding": "same"}
    ),
    "transposed_input_inference": (
        "conv_transpose2d", ("inference", X), ("grad", WT), ("none", ()), {"stride": 2}
    ),
    "transposed_weight_inference": ("conv_transpose2d", ("grad", X), ("inference", WT), ("none", ()), {}),
    "conv1d_unbatched_input_inference": ("conv1d", ("inference", (3, 7)), ("grad", W1), ("none", ()), {}),
    "conv1d_permuted_input_inference": ("conv1d", ("inference", (2, 7, 3)), ("grad", W1), ("none", ()), {}),
}  # fmt: skip


def _inference(*shape) -> torch.Tensor:
    return _tensor("inference", shape)


def _wanting_grad(*shape) -> torch.Tensor:
    return _tensor("grad", shape)


def _outcome(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except RuntimeError as error:
        return error


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_inference_tensor_is_refused_where_torch_refuses_it_and_before_a_launch(case):
    name, input_spec, weight_spec, bias_spec, kwargs = CASES[case]
    torch.manual_seed(0)
    x, w, b = (_tensor(*spec) for spec in (input_spec, weight_spec, bias_spec))
    if case.startswith("conv1d_permuted"):
        x = x.transpose(1, 2)  # (N, L, C) seen as (N, C, L): conv1d convolves a contiguous copy
    expected = _outcome(getattr(F, name), x, w, b, **kwargs)
    before = sum(launch_counts.values())
    got = _outcome(getattr(triton_conv, name), x, w, b, **kwargs)
    if isinstance(expected, RuntimeError):
        assert isinstance(got, RuntimeError), f"torch refused ({expected}), ours returned"
        assert sum(launch_counts.values()) == before, "a kernel launched before the error"
        refused = "input" if x.is_inference() else "weight"
        assert "inference tensor" in str(got) and f"{refused} is" in str(got), str(got)
    else:
        assert not isinstance(got, Exception), f"torch computed it, ours raised {got}"
        assert sum(launch_counts.values()) > before, "the Triton kernel computed it"
        assert rel_error(got, expected) < bound(torch.float32)  # 1e-5 here; TF32's on a GPU
        assert got.requires_grad == expected.requires_grad


@pytest.mark.parametrize("wanted", ["input", "weight"])
def test_an_inference_grad_output_in_a_double_backward_is_refused_before_a_launch(wanted):
    """create_graph=True records the backward's own ops, which save the incoming gradient."""
    torch.manual_seed(0)
    x, w = _wanting_grad(1, 2, 6, 6), _wanting_grad(3, 2, 3, 3)
    grad_output = _inference(1, 3, 4, 4)
    y_torch, y_ours = F.conv2d(x, w), triton_conv.conv2d(x, w)
    target = x if wanted == "input" else w
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved"):
        torch.autograd.grad(y_torch, target, grad_output, create_graph=True)
    before = sum(launch_counts.values())
    with pytest.raises(RuntimeError, match="grad_output is an inference tensor"):
        torch.autograd.grad(y_ours, target, grad_output, create_graph=True)
    assert sum(launch_counts.values()) == before, "a kernel launched before the error"


def test_a_transform_wraps_an_inference_weight_as_torch_does():
    """Under torch.func.grad functorch hands the op wrappers of an inference weight, which autograd
    may save: torch computes the gradient, and so do ours."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 6, 5, dtype=torch.float64), _inference(4, 3, 3, 3).double()
    expected = torch.func.grad(lambda x: F.conv2d(x, w).square().sum())(x)
    got = torch.func.grad(lambda x: triton_conv.conv2d(x, w).square().sum())(x)
    assert rel_error(got, expected) < 1e-12
