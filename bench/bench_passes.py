"""Each pass of each layer against cuDNN and Inductor's Triton conv template: fprop, dgrad, wgrad and a
layer's full forward + backward, over the batch sizes, dtypes and layouts of bench/cases.py."""

import math

import pytest
import torch

from triton_conv.benchmarking import (
    DTYPES,
    in_turn,
    input_sets,
    make_inputs,
    pass_binder,
    peer_has_backward_templates,
    reference_result,
)
from triton_conv.runtime import fp32_uses_tf32
from triton_conv.timers import l2_multiple

from . import harness
from .cases import CASES, PASS_CASES, ids
from .harness import config_in_use, device, model_device, model_info, run_benchmark, skip_unless_fits
from .settings import MODE


def _bytes_needed(problem, dtype: torch.dtype, pass_name: str) -> int:
    """Inputs and outputs (x3 for fwd+bwd), plus the fp64 reference of the check."""
    elements = sum(math.prod(s) for s in (problem.input_shape, problem.weight_shape, problem.output_shape))
    size = torch.empty((), dtype=dtype).element_size()
    return elements * (size * (3 if pass_name == "fwd+bwd" else 2) + 8 * 3)


@pytest.mark.parametrize("case_id", ids("pass", PASS_CASES))
def test_conv_pass(case_id, benchmark):
    case = CASES[case_id]
    problem, dtype, on_gpu = case.problem, DTYPES[case.dtype], MODE == "gpu"
    if on_gpu and case.impl == "inductor" and case.pass_name != "fprop" and not peer_has_backward_templates():
        pytest.skip(f"torch {torch.__version__}: Inductor has no Triton conv backward templates (its dgrad "
                    "and wgrad would be ATen's, i.e. cuDNN)")  # fmt: skip
    skip_unless_fits(_bytes_needed(problem, dtype, case.pass_name), case.id)
    channels_last = case.layout == "channels_last"
    tensors = make_inputs(problem, dtype, channels_last, device())
    tf32 = on_gpu and fp32_uses_tf32()
    config = (
        config_in_use(problem, case.pass_name, dtype, channels_last, device())
        if case.impl == "triton-conv"
        else None
    )
    model = model_info(problem, case.pass_name, case.dtype, model_device(), config, channels_last)
    passes = 3 if case.pass_name == "fwd+bwd" else 1
    info = {
        "kind": "pass",
        "implementation": case.impl,
        "pass": case.pass_name,
        "layer_set": case.layer_set,
        "layer": case.layer,
        "N": problem.batch,
        "dtype": case.dtype,
        "layout": case.layout,
        "tf32": tf32,
        "problem": str(problem),
        "flops": passes * problem.flops("fprop"),
        "config": str(config) if config is not None else None,
        "tiles": model["tiles"],
        "waves": model["waves"],
        "model": model,
    }
    want = reference_result(case.pass_name, problem, tensors)
    check = harness.accuracy_check(want, case.dtype, tf32, f"{case.impl} {case.pass_name}")

    make = lambda: make_inputs(problem, dtype, channels_last, device())
    sets = input_sets(tensors, make, device(), case.pass_name)
    info["l2_multiple"] = l2_multiple(sets, case.pass_name, device())
    run = in_turn(pass_binder(case.impl, case.pass_name, problem, on_gpu=on_gpu), sets)
    try:
        run_benchmark(benchmark, run, info=info, flops=info["flops"], check=check, dtype=case.dtype)
    except (AssertionError, pytest.skip.Exception):
        raise
    except Exception as error:  # the peer's compilation can fail on a shape; the others must not
        if case.impl != "inductor" or not on_gpu:
            raise
        pytest.skip(f"Inductor could not compile this case: {type(error).__name__}: {error}"[:400])
