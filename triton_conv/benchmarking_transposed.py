"""A transposed convolution's passes for the benchmarks (bench/bench_transposed.py) and the campaign:
cuDNN's (torch's conv_transpose2d and its backward, transposed=True) and triton-conv's ops, on one
layer's tensors.

A layer is named by its conv2d view (ConvProblem.from_transposed): the layer's input x has the view's
output shape, its output and the incoming gradient dy the view's input shape. Its passes are the
transposed convolution's (fprop: the forward, with its bias; dgrad: the input gradient; wgrad: the
weight gradient), which run the view's kernels (problem.TRANSPOSED_PASSES).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .autograd import conv2d_op, conv_transpose2d_op, transposed_geometry, weight_grad_op
from .benchmarking import without_algorithm_search
from .functional import conv_transpose2d
from .memory_format import random_in_layout
from .problem import ConvProblem


def make_inputs(view: ConvProblem, dtype: torch.dtype, channels_last: bool, device) -> dict:
    """Random x, w, dy (the view's output, weight and input shapes) and bias b, in the memory format
    asked for (a model's strides)."""
    make = lambda shape: random_in_layout(shape, dtype, device, channels_last)
    return {"x": make(view.output_shape), "w": make(view.weight_shape), "dy": make(view.input_shape),
            "b": torch.randn(view.in_channels, dtype=dtype, device=device)}  # fmt: skip


def arguments(view: ConvProblem) -> tuple:
    """conv_transpose2d's (stride, padding, output_padding, groups, dilation), as lists."""
    a = view.transposed_arguments()
    return list(a["stride"]), list(a["padding"]), list(a["output_padding"]), a["groups"], list(a["dilation"])


def _forward_backward(forward, tensors: dict):
    x, w, b = (tensors[name].detach().requires_grad_() for name in ("x", "w", "b"))
    return lambda: torch.autograd.grad(forward(x, w, b), (x, w, b), tensors["dy"])


def torch_pass(pass_name: str, view: ConvProblem, tensors: dict) -> Callable[[], object]:
    """cuDNN's ConvTranspose2d pass (on a GPU): F.conv_transpose2d, or its backward as autograd runs it."""
    stride, padding, output_padding, groups, dilation = arguments(view)
    x, w, b, dy = tensors["x"], tensors["w"], tensors["b"], tensors["dy"]
    backward = lambda mask: torch.ops.aten.convolution_backward(
        dy, x, w, None, stride, padding, dilation, True, output_padding, groups, mask
    )
    forward = lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
    if pass_name == "fprop":
        return lambda: forward(x, w, b)
    if pass_name == "dgrad":
        return lambda: backward([True, False, False])[0]
    if pass_name == "wgrad":
        return lambda: backward([False, True, False])[1]
    return _forward_backward(forward, tensors)


def triton_pass(pass_name: str, view: ConvProblem, tensors: dict) -> Callable[[], object]:
    """triton-conv's ops as ConvTranspose2dFunction runs them: the forward op, then conv2d's forward op
    for the input gradient and its weight-gradient op (x as dy) for the weight gradient."""
    stride, padding, output_padding, groups, dilation = all_arguments = arguments(view)
    geometry = transposed_geometry(stride, padding, output_padding, dilation, groups)
    x, w, b, dy = tensors["x"], tensors["w"], tensors["b"], tensors["dy"]
    if pass_name == "fprop":
        return lambda: conv_transpose2d_op(x, w, b, *all_arguments)
    if pass_name == "dgrad":
        return lambda: conv2d_op(dy, w, None, *geometry)
    if pass_name == "wgrad":
        return lambda: weight_grad_op(x, dy, w, *geometry, False)[0]
    forward = lambda x, w, b: conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
    return _forward_backward(forward, tensors)


def reference_result(pass_name: str, view: ConvProblem, tensors: dict):
    """torch's result in float64 on the same device, to check any implementation."""
    with without_algorithm_search():
        return torch_pass(pass_name, view, {name: t.double() for name, t in tensors.items()})()
