"""One batch of N images against N launches of one image each (fprop): is a batch really faster per
image, or, as one reader measured with cuDNN on a 5-SM GTX 1050, exactly N times slower than one?"""

import pytest
import torch

from triton_conv.benchmarking import (
    DTYPES,
    images_one_at_a_time,
    in_turn,
    input_sets,
    make_inputs,
    pass_function,
    reference_result,
)
from triton_conv.model import batching_speedup
from triton_conv.runtime import fp32_uses_tf32
from triton_conv.timers import l2_multiple

from .cases import BATCHING_CASES, CASES, ids
from .harness import accuracy_check, device, model_device, model_info, run_benchmark
from .settings import MODE


@pytest.mark.parametrize("case_id", ids("batching", BATCHING_CASES))
def test_one_batch_against_single_images(case_id, benchmark):
    case = CASES[case_id]
    problem, n = case.problem, case.problem.batch
    tensors = make_inputs(problem, DTYPES[case.dtype], True, device())
    make = lambda: make_inputs(problem, DTYPES[case.dtype], True, device())
    sets = input_sets(tensors, make, device(), "fprop")
    if case.how == "batch":
        run = in_turn(lambda inputs: pass_function(case.impl, "fprop", problem, inputs), sets)
    else:
        run = in_turn(lambda inputs: images_one_at_a_time(case.impl, problem, inputs), sets)
    want = reference_result("fprop", problem, tensors)
    tf32 = MODE == "gpu" and fp32_uses_tf32()
    check = accuracy_check(  # one launch per image returns a list of outputs
        want,
        case.dtype,
        tf32,
        f"{case.impl} {case.how}",
        view=lambda r: r if isinstance(r, torch.Tensor) else torch.cat(r),
    )

    one = problem.with_batch(1)
    info = {
        "kind": "batching",
        "implementation": case.impl,
        "how": case.how,
        "pass": "fprop",
        "layer_set": case.layer_set,
        "layer": case.layer,
        "N": n,
        "dtype": case.dtype,
        "layout": "channels_last",
        "launches": 1 if case.how == "batch" else n,
        "flops": problem.flops("fprop"),
        "model_speedup": batching_speedup(one, "fprop", n, None, model_device(), case.dtype),
    }
    model = model_info(problem, "fprop", case.dtype, model_device())
    info.update(tiles=model["tiles"], waves=model["waves"], model=model)
    info["l2_multiple"] = l2_multiple(sets, "fprop", device())
    run_benchmark(benchmark, run, info=info, flops=info["flops"], check=check, dtype=case.dtype)
