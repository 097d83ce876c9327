"""Strided dgrad: stride-phase decomposition (the package's kernel) against masked gathers over every
tap (the zero-stuffing-equivalent baseline, kernels/dgrad_masked.py) and against cuDNN, on ResNet-50's
strided layers (the 3x3 stride-2 convs of stages 2-4 and the 1x1 stride-2 downsamples).

Both Triton kernels launch with the same tile config: the one triton-conv tuned for the phased dgrad
(passes.choose_config), so the comparison isolates the algorithm. Records have kind "dgrad_phases"
(they stay out of the pass tables of the summary).

On a GPU this file runs only when asked (it is not in a part of the default sweep):
    TRITON_CONV_BENCH_DGRAD_PHASES=1 pytest bench/bench_dgrad_phases.py --benchmark-only \
        --benchmark-json=notes/sweeps/h200-dgrad-phases.json
TRITON_CONV_BENCH_BATCHES and TRITON_CONV_BENCH_DTYPES narrow it (default N 1, 8, 32, 128; fp16, bf16).
Without a GPU, `pytest --benchmark-disable` runs each implementation once on shrunk layers (CPU check).
"""

import math
import os

import pytest
import torch

from triton_conv.benchmarking import (
    DTYPES,
    make_inputs,
    reference_result,
    relative_error,
    tolerance,
    torch_pass,
)
from triton_conv.configs import KernelConfig, cdiv
from triton_conv.launchers.common import launch_counts
from triton_conv.launchers.dgrad import conv2d_dgrad
from triton_conv.launchers.dgrad_masked import conv2d_dgrad_masked, masked_macs, masked_tiles, phased_macs
from triton_conv.layers import get_layer_set
from triton_conv.model.tiles import launch_tiles

from .cases import _shrunk
from .harness import config_in_use, device, model_device, model_info, run_benchmark, skip_unless_fits
from .settings import MODE, env_list

ENABLED = os.environ.get("TRITON_CONV_BENCH_DGRAD_PHASES", "0") == "1"
LAYERS = ("layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2",
          "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0")  # fmt: skip
IMPLS = ("triton-conv", "triton-conv-masked", "cudnn")
KERNELS = {"triton-conv": "dgrad_kernel", "triton-conv-masked": "dgrad_masked_kernel"}


def _cases() -> list[tuple]:
    """(layer name, problem, dtype, impl) in run order: the three implementations of a shape adjacent."""
    layers = {la.name: la.problem for la in get_layer_set("resnet50") if la.name in LAYERS}
    if MODE != "gpu":
        return [(name, _shrunk(layers[name]), "fp32", impl) for name in LAYERS[::3] for impl in IMPLS]
    if not ENABLED:
        return []
    batches = env_list("TRITON_CONV_BENCH_BATCHES", int) or (1, 8, 32, 128)
    dtypes = env_list("TRITON_CONV_BENCH_DTYPES") or ("fp16", "bf16")
    return [(name, layers[name].with_batch(n), dtype, impl)
            for dtype in dtypes for n in batches for name in LAYERS for impl in IMPLS]  # fmt: skip


CASES = {f"{name}-N{p.batch}-{dtype}-{impl}": (name, p, dtype, impl) for name, p, dtype, impl in _cases()}
SEED = int.from_bytes(os.urandom(4), "little")  # fresh each session, printed so that a run can be replayed
print(f"bench_dgrad_phases: torch.manual_seed({SEED})")
_SHARED: dict = {}  # the last shape's inputs and fp64 reference, shared by its three implementations


def _inputs(problem, dtype_name: str):
    key = (problem, dtype_name)
    if key not in _SHARED:
        _SHARED.clear()
        torch.manual_seed(SEED)  # the same inputs for the shape's three implementations
        tensors = make_inputs(problem, DTYPES[dtype_name], True, device())
        _SHARED[key] = (tensors, reference_result("dgrad", problem, tensors))
    return _SHARED[key]


@pytest.mark.skipif(MODE != "gpu" or ENABLED, reason="its cases are collected here (a CPU's: tiny checks)")
def test_dgrad_phases_disabled():
    pytest.skip("strided dgrad, phases vs masked vs cuDNN: not in the default sweep; "
                "set TRITON_CONV_BENCH_DGRAD_PHASES=1 to run it")  # fmt: skip


@pytest.mark.parametrize("case_id", list(CASES))
def test_dgrad_phases(case_id, benchmark):
    layer, problem, dtype_name, impl = CASES[case_id]
    dtype = DTYPES[dtype_name]
    elements = sum(math.prod(s) for s in (problem.input_shape, problem.weight_shape, problem.output_shape))
    skip_unless_fits(elements * (2 * dtype.itemsize + 24), case_id)
    tensors, want = _inputs(problem, dtype_name)
    dy, w = tensors["dy"], tensors["w"]
    config = config_in_use(problem, "dgrad", dtype, True, device()) or KernelConfig()
    model = model_info(problem, "dgrad", dtype_name, model_device(), config)
    if impl == "triton-conv":
        run = lambda: conv2d_dgrad(dy, w, problem, config, channels_last=True)
        tiles, macs = launch_tiles(problem, "dgrad", config), phased_macs(problem)
    elif impl == "triton-conv-masked":
        run = lambda: conv2d_dgrad_masked(dy, w, problem, config, channels_last=True)
        tiles, macs = masked_tiles(problem, config), masked_macs(problem)
    else:
        run, tiles, macs = torch_pass("dgrad", problem, tensors), None, None
    kernel = KERNELS.get(impl)
    launched_before = launch_counts[kernel] if kernel else 0
    tf32 = False  # fp16/bf16 only on the GPU; the CPU check is fp32 in the interpreter (exact)

    def check(result):
        if kernel:
            assert launch_counts[kernel] > launched_before, f"{impl} launched no {kernel}"
        error = relative_error(result, want)
        limit = tolerance(dtype_name, tf32)
        assert error <= limit, f"{impl} dgrad: relative error {error:.2e} > {limit:.0e}"

    info = {
        "kind": "dgrad_phases",
        "implementation": impl,
        "pass": "dgrad",
        "layer_set": "resnet50",
        "layer": layer,
        "N": problem.batch,
        "dtype": dtype_name,
        "layout": "channels_last",
        "tf32": tf32,
        "problem": str(problem),
        "flops": problem.flops("dgrad"),  # the useful FLOPs: TFLOP/s compare like for like
        "issued_macs": macs,
        "work_over_useful": 2 * macs / problem.flops("dgrad") if macs else None,
        "config": str(config) if kernel else None,
        "tiles": tiles,
        "slots": model["slots"],
        "waves": cdiv(tiles, model["slots"]) if tiles else None,
        "model": model,
    }
    run_benchmark(benchmark, run, info=info, flops=info["flops"], check=check, dtype=dtype_name)
