"""A U-Net-style decoder's ConvTranspose2d layers against cuDNN's (torch's conv_transpose2d and its
backward, transposed=True): the forward (triton-conv: the input-gradient kernel of the layer's conv2d
view, stride phases and the bias in its epilogue), the input gradient (the forward kernel), the
weight gradient (the weight-gradient kernel with x and dy exchanged) and forward + backward.

A case's problem is the layer's conv2d view (ConvProblem.from_transposed), its pass the transposed
convolution's; TFLOP/s count the layer's multiply-adds once (no zero-stuffing), as for conv2d.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from triton_conv.autograd import conv2d_op, conv_transpose2d_op, transposed_geometry, weight_grad_op
from triton_conv.benchmarking import DTYPES, relative_error, tolerance, without_algorithm_search
from triton_conv.functional import conv_transpose2d
from triton_conv.problem import TRANSPOSED_PASSES, ConvProblem
from triton_conv.runtime import fp32_uses_tf32

from .cases import CASES, TRANSPOSED_CASES, ids
from .harness import config_in_use, device, model_device, model_info, run_benchmark, skip_unless_fits
from .settings import MODE


def make_inputs(view: ConvProblem, dtype: torch.dtype, channels_last: bool, device) -> dict:
    """The layer's x and dy (the view's output and input), w and bias, in the memory format asked."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    make = lambda shape: torch.randn(shape, dtype=dtype, device=device).contiguous(memory_format=layout)
    return {"x": make(view.output_shape), "w": make(view.weight_shape), "dy": make(view.input_shape),
            "b": torch.randn(view.in_channels, dtype=dtype, device=device)}  # fmt: skip


def _arguments(view: ConvProblem) -> tuple:
    """conv_transpose2d's (stride, padding, output_padding, groups, dilation), as lists."""
    a = view.transposed_arguments()
    return list(a["stride"]), list(a["padding"]), list(a["output_padding"]), a["groups"], list(a["dilation"])


def _forward_backward(forward, tensors: dict):
    x, w, b = (tensors[name].detach().requires_grad_() for name in ("x", "w", "b"))
    return lambda: torch.autograd.grad(forward(x, w, b), (x, w, b), tensors["dy"])


def torch_pass(pass_name: str, view: ConvProblem, tensors: dict):
    """cuDNN's ConvTranspose2d pass (on a GPU): F.conv_transpose2d, or its backward as autograd runs it."""
    stride, padding, output_padding, groups, dilation = _arguments(view)
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


def triton_pass(pass_name: str, view: ConvProblem, tensors: dict):
    """triton-conv's ops as ConvTranspose2dFunction runs them: the forward op, then conv2d's forward op
    for the input gradient and its weight-gradient op (x as dy) for the weight gradient."""
    stride, padding, output_padding, groups, dilation = arguments = _arguments(view)
    geometry = transposed_geometry(stride, padding, output_padding, dilation, groups)
    x, w, b, dy = tensors["x"], tensors["w"], tensors["b"], tensors["dy"]
    if pass_name == "fprop":
        return lambda: conv_transpose2d_op(x, w, b, *arguments)
    if pass_name == "dgrad":
        return lambda: conv2d_op(dy, w, None, *geometry)
    if pass_name == "wgrad":
        return lambda: weight_grad_op(x, dy, w, *geometry, False)[0]
    forward = lambda x, w, b: conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
    return _forward_backward(forward, tensors)


@pytest.mark.parametrize("case_id", ids("transposed", TRANSPOSED_CASES))
def test_transposed_pass(case_id, benchmark):
    case = CASES[case_id]
    view, dtype = case.problem, DTYPES[case.dtype]
    elements = sum(math.prod(s) for s in (view.input_shape, view.weight_shape, view.output_shape))
    skip_unless_fits(elements * (dtype.itemsize * 3 + 8 * 3), case.id)
    channels_last = case.layout == "channels_last"
    tensors = make_inputs(view, dtype, channels_last, device())
    kernel_pass = TRANSPOSED_PASSES.get(case.pass_name, case.pass_name)
    config = (
        config_in_use(view, kernel_pass, dtype, channels_last, device())
        if case.impl == "triton-conv"
        else None
    )
    passes = 3 if case.pass_name == "fwd+bwd" else 1
    model = model_info(view, kernel_pass, case.dtype, model_device(), config)
    tf32 = MODE == "gpu" and fp32_uses_tf32()
    info = {
        "kind": "pass",
        "transposed": True,
        "implementation": case.impl,
        "pass": case.pass_name,
        "kernel_pass": kernel_pass,
        "layer_set": case.layer_set,
        "layer": case.layer,
        "N": view.batch,
        "dtype": case.dtype,
        "layout": case.layout,
        "tf32": tf32,
        "problem": str(view),
        "flops": passes * view.flops(),
        "config": str(config) if config is not None else None,
        "tiles": model["tiles"],
        "waves": model["waves"],
        "model": model,
    }
    with without_algorithm_search():
        want = torch_pass(case.pass_name, view, {k: t.double() for k, t in tensors.items()})()

    def check(result):
        error = relative_error(result, want)
        limit = tolerance(case.dtype, tf32)
        assert error <= limit, f"{case.impl} {case.pass_name}: relative error {error:.2e} > {limit:.0e}"

    run = (triton_pass if case.impl == "triton-conv" else torch_pass)(case.pass_name, view, tensors)
    run_benchmark(benchmark, run, info=info, flops=info["flops"], check=check, dtype=case.dtype)
