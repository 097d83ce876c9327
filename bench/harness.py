"""How every benchmark runs: warm-up and checks outside the timed rounds, then pytest-benchmark's
pedantic mode with the synchronising timer (bench/conftest.py marks each item with it).

On the GPU: one call (autotuning, cuDNN's algorithm search, Inductor's compilation) whose result is
checked against torch in fp64, two more warm-up calls, a calibration that sets iterations per round so
a round lasts at least MIN_ROUND_S, one call for the peak memory, one burst for the host time, then
ROUNDS timed rounds; extra_info gets the timing-derived fields. On the CPU check (smoke mode): one call
through benchmark.pedantic (a single run when benchmarks are disabled), checked the same way.
"""

from __future__ import annotations

import functools
import math
import time

import pytest
import torch

from triton_conv.benchmarking import (
    DTYPES,
    host_seconds,
    measure_matmul_peak,
    median_seconds,
    peak_memory_bytes,
    relative_error,
    synchronized_timer,
    tolerance,
)
from triton_conv.devices import DeviceSpec, get_device, live_device
from triton_conv.launchers.common import launch_counts
from triton_conv.model import batching_knee, predict
from triton_conv.problem import ConvProblem

from .settings import MODE, env_float

ROUNDS = int(env_float("TRITON_CONV_BENCH_ROUNDS", 20))
MIN_ROUND_S = 2e-3
MAX_ITERATIONS = 1000
# Finished benchmarks, for the summary printed at the end of the session (bench/conftest.py).
RECORDS: list[dict] = []
_PEAKS: dict[str, float] = {}  # measured matmul peak per dtype, FLOP/s


def device() -> torch.device:
    return torch.device("cuda" if MODE == "gpu" else "cpu")


def record_peak(dtype: str, flops_per_s: float) -> None:
    _PEAKS[dtype] = flops_per_s


def measured_peak(dtype: str) -> float | None:
    """The matmul peak measured this session for `dtype` (fp32: with this session's TF32 setting),
    measured now if bench_peak.py has not run yet; None on the CPU."""
    if MODE == "gpu" and dtype not in _PEAKS and dtype in DTYPES:
        _PEAKS[dtype] = measure_matmul_peak(DTYPES[dtype])
    return _PEAKS.get(dtype)


@functools.cache
def model_device() -> DeviceSpec:
    """The GPU the model predicts for: the live one, or (the CPU check) the H200 of the table."""
    return (live_device() if MODE == "gpu" else None) or get_device("H200")


def measured_peaks_tflops() -> dict[str, float]:
    return {dtype: value / 1e12 for dtype, value in sorted(_PEAKS.items())}


def fits_in_memory(nbytes: int, fraction: float = 0.8) -> bool:
    """Whether `nbytes` more fit in the GPU's free memory (always True on the CPU)."""
    if MODE != "gpu":
        return True
    free, _ = torch.cuda.mem_get_info()
    return nbytes <= fraction * free


def skip_unless_fits(nbytes: int, what: str) -> None:
    if not fits_in_memory(nbytes):
        pytest.skip(f"{what} needs about {nbytes / 1e9:.1f} GB, more than the GPU has free")


def _kernels_run(info: dict) -> set[str]:
    """The kernels a triton-conv benchmark must launch: its (kernel) pass's, or all three for a
    forward and backward or a training step."""
    pass_name = info.get("kernel_pass") or info.get("pass")
    if pass_name in ("fprop", "dgrad", "wgrad"):
        return {f"{pass_name}_kernel"}
    return {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}


def _checked(check, info: dict):
    """`check` plus, for triton-conv, proof that the Triton kernels of its pass ran (not a fallback
    to torch, for any part of it)."""
    wanted = _kernels_run(info) if info.get("implementation") == "triton-conv" else set()

    def run_check(result, launched: dict):
        missing = wanted - {kernel for kernel, count in launched.items() if count}
        assert not missing, f"triton-conv launched no {sorted(missing)}: something fell back to torch"
        if check is not None:
            check(result)

    return run_check


def _launched_since(before: dict) -> dict:
    return {kernel: count - before.get(kernel, 0) for kernel, count in launch_counts.items()}


def accuracy_check(want: torch.Tensor, dtype_name: str, tf32: bool, what: str, view=None):
    """run_benchmark's `check`: the result (or view(result)) within the dtype's tolerance of the
    float64 reference `want`; a failure names `what`."""

    def check(result):
        error = relative_error(result if view is None else view(result), want)
        limit = tolerance(dtype_name, tf32)
        assert error <= limit, f"{what}: relative error {error:.2e} > {limit:.0e}"

    return check


def run_benchmark(benchmark, run, *, info: dict, flops: float | None = None, check=None, dtype: str = "fp16"):
    """Time `run` (a zero-argument callable) and fill benchmark.extra_info with `info` and the timing.

    `check(result)` raises if the result is wrong; it runs on the first call, outside the timed rounds,
    as does the proof that a triton-conv benchmark launched Triton kernels. Returns that call's result.
    """
    benchmark.extra_info.update(info)
    verify = _checked(check, info)
    before = dict(launch_counts)
    if MODE != "gpu":
        result = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        verify(result, _launched_since(before))
        benchmark.extra_info["checked"] = check is not None
        return result
    started = time.perf_counter()
    try:
        result = run()
        synchronized_timer()
        verify(result, _launched_since(before))
        run(), run()
        per_call = median_seconds(run, repeats=3)
        iterations = max(1, min(MAX_ITERATIONS, math.ceil(MIN_ROUND_S / max(per_call, 1e-9))))
        memory = peak_memory_bytes(run, device())
        host = host_seconds(run, calls=min(iterations, 20))
        setup_s = time.perf_counter() - started
        benchmark.pedantic(run, rounds=ROUNDS, iterations=iterations, warmup_rounds=1)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        pytest.skip(f"out of GPU memory: {info.get('layer', '')} N={info.get('N')} {info.get('dtype', '')}")
    seconds = benchmark.stats.stats.median
    peak = measured_peak(dtype)
    timing = {
        "checked": check is not None,
        "seconds": seconds,
        "iterations": iterations,
        "input_sets": getattr(run, "sets", 1),  # calls in turn over sets that overflow the L2
        "host_seconds": host,
        "launch_bound": host > seconds,
        "setup_seconds": setup_s,
        "peak_memory_bytes": memory,
        "tflops": flops / seconds / 1e12 if flops else None,
        "measured_peak_tflops": peak / 1e12 if peak else None,
        "fraction_of_peak": flops / seconds / peak if flops and peak else None,
    }
    benchmark.extra_info.update(timing)
    RECORDS.append({**benchmark.extra_info, "name": benchmark.name})
    return result


# --- the model's numbers for a benchmark ----------------------------------------------------------------
def model_info(
    problem: ConvProblem,
    pass_name: str,
    dtype_name: str,
    device: DeviceSpec,
    config=None,
    channels_last: bool = True,
) -> dict:
    """tiles, waves, slots, predicted time and TFLOP/s and the batching knee of one benchmark (fwd+bwd:
    the three passes' times summed; tiles and waves are fprop's). `config` None: the config the model
    would pick; the knee is the given config's, or the 128x128 reference tile's. In NCHW fprop pads
    every tap's channels to BK (no walk of tap rows: model/tiles.py)."""
    kind = "fp32" if dtype_name == "fp64" else dtype_name
    names = ("fprop", "dgrad", "wgrad") if pass_name == "fwd+bwd" else (pass_name,)
    predictions = [
        predict(problem, name, config if len(names) == 1 else None, device, kind, row_spans=channels_last)
        for name in names
    ]
    first = predictions[0]
    seconds = sum(p.time_s for p in predictions)
    knee_config = config if len(names) == 1 else None
    return {
        "device": device.name,
        "config": str(first.stats.block_m) + "x" + str(first.stats.block_n) + f" split {first.stats.split_k}",
        "tiles": first.tiles,
        "slots": first.slots,
        "waves": first.waves,
        "wave_efficiency": first.wave_efficiency,
        "tile_efficiency": first.tile_efficiency,
        "bound": first.bound,
        "seconds": seconds,
        "tflops": len(names) * problem.flops("fprop") / seconds / 1e12,
        "knee": batching_knee(problem, names[0], knee_config, device, kind, max_batch=4096),
    }


def config_in_use(problem: ConvProblem, pass_name: str, dtype: torch.dtype, channels_last: bool, device):
    """The tile config triton-conv launches for this pass (passes.choose_config: the same memo, so no
    second tuning), or None for a row of no single pass (fwd+bwd)."""
    from triton_conv import passes

    if pass_name == "fwd+bwd":
        return None
    return passes.choose_config(problem, pass_name, dtype, channels_last, torch.device(device))
