"""A U-Net-style decoder's ConvTranspose2d layers against cuDNN's (torch's conv_transpose2d and its
backward, transposed=True): the forward (triton-conv: the input-gradient kernel of the layer's conv2d
view, stride phases and the bias in its epilogue), the input gradient (the forward kernel), the
weight gradient (the weight-gradient kernel with x and dy exchanged) and forward + backward.

A case's problem is the layer's conv2d view (ConvProblem.from_transposed), its pass the transposed
convolution's; TFLOP/s count the layer's multiply-adds once (no zero-stuffing), as for conv2d. The
passes themselves are triton_conv.benchmarking_transposed's (the campaign times the same ones).
"""

import math

import pytest

from triton_conv.benchmarking import DTYPES, in_turn, input_sets
from triton_conv.benchmarking_transposed import make_inputs, reference_result, torch_pass, triton_pass
from triton_conv.problem import TRANSPOSED_PASSES
from triton_conv.runtime import fp32_uses_tf32
from triton_conv.timers import l2_multiple

from . import harness
from .cases import CASES, TRANSPOSED_CASES, ids
from .harness import config_in_use, device, model_device, model_info, run_benchmark, skip_unless_fits
from .settings import MODE


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
    want = reference_result(case.pass_name, view, tensors)
    check = harness.accuracy_check(want, case.dtype, tf32, f"{case.impl} {case.pass_name}")

    make = lambda: make_inputs(view, dtype, channels_last, device())
    sets = input_sets(tensors, make, device(), case.pass_name)
    info["l2_multiple"] = l2_multiple(sets, case.pass_name, device())
    implementation = triton_pass if case.impl == "triton-conv" else torch_pass
    run = in_turn(lambda inputs: implementation(case.pass_name, view, inputs), sets)
    run_benchmark(benchmark, run, info=info, flops=info["flops"], check=check, dtype=case.dtype)
