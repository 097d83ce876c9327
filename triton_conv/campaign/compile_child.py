"""The precompile step's child processes (precompile.py starts them): record every job's launch on
meta tensors through Triton's JIT, stopped before it compiles, and compile a worker's share of the
variants found into Triton's on-disk cache. They run with TRITON_INTERPRET=0 and never touch the GPU.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import time

from .target import meta_as_target, use_compile_only_driver
from .variants import LaunchJob, Variant, shares


def _launch(job: LaunchJob, dtype, device):
    """The job's launch on fresh tensors on `device`: a campaign item's (launch_with_config) or a
    tuning's (pass_runner, in the job's layout), exactly as each will launch on the GPU."""
    if job.layout is None:
        from .runners import launch_with_config, make_inputs

        tensors = make_inputs(job.problem, dtype, device, job.transposed)
        return launch_with_config(job.pass_name, job.problem, tensors, job.config, transposed=job.transposed)
    from ..tuning import pass_runner, random_inputs

    tensors = random_inputs(job.problem, job.pass_name, dtype, job.layout, device)
    return pass_runner(job.problem, job.pass_name, tensors, job.config, job.layout)


@contextlib.contextmanager
def _tf32_as(tf32: bool | None):
    """cuDNN's conv precision (the first setting runtime.fp32_uses_tf32 reads) as a job recorded it:
    a tuning's parent process may have switched TF32, which the workers would not see."""
    import torch

    if tf32 is None:
        yield
        return
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    conv.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = before


def _record_here(jobs: list[LaunchJob], target, device: str = "meta") -> list[Variant]:
    """The distinct binaries `jobs` launch, each job launched through Triton's JIT on fresh tensors
    on `device` (meta: no data; "cpu": allocations, as a GPU's are, for the tests that compare the
    two) and stopped before it compiles."""
    import torch
    from triton import knobs

    from ..benchmarking import DTYPES

    use_compile_only_driver(target)
    found: dict[tuple, list] = {}

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        entry = found.setdefault((fn.module, fn.name, str(key)), [compile["specialization_data"], 0])
        entry[1] += 1
        return True  # recorded: neither compile nor launch

    knobs.runtime.jit_cache_hook = hook
    try:
        with meta_as_target(target), torch.no_grad():
            for job in jobs:
                with _tf32_as(job.tf32):
                    _launch(job, DTYPES[job.dtype], device)()
    finally:
        knobs.runtime.jit_cache_hook = None
    return [Variant(m, n, k, data, count) for (m, n, k), (data, count) in found.items()]


def _host_code(compiled) -> tuple[float | None, str | None]:
    """Build the host-side C code a first launch would build, into Triton's cache: (seconds, error).

    Triton 3.6 compiles a C launcher per kernel signature (and, once, its CUDA utilities) with the
    system's C compiler on a process's first launch: a second or more each, in the campaign's own
    process, one after the other, if nobody built them ahead. Later Tritons launch through one
    generic launcher and build nothing per signature (None). Loading what was built needs the CUDA
    driver library: where it is missing (a CPU-only machine) the error is returned and nothing lost."""
    from triton.backends.nvidia import driver

    if not hasattr(driver, "make_launcher"):  # one generic launcher: nothing per signature
        return None, None
    started = time.perf_counter()
    try:
        driver.CudaLauncher(compiled.src, compiled.metadata)
    except Exception as failure:
        return None, f"{type(failure).__name__}: {failure}"[:300]
    return time.perf_counter() - started, None


def _compile_here(variants: list[Variant], target) -> list[dict]:
    from triton import knobs

    use_compile_only_driver(target)
    hits: list[bool] = []
    knobs.compilation.listener = lambda **kw: hits.append(bool(kw.get("cache_hit")))
    results = []
    for variant in variants:
        kernel = getattr(importlib.import_module(variant.module), variant.kernel)
        start = time.perf_counter()
        hits.clear()
        launcher_s = launcher_error = None
        try:
            compiled = kernel.preload(variant.specialization)
            error = None
            seconds = time.perf_counter() - start
            launcher_s, launcher_error = _host_code(compiled)
        except Exception as failure:  # the check step will see the config fail and drop it
            error = f"{type(failure).__name__}: {failure}"[:500]
            seconds = time.perf_counter() - start
        results.append({
            "kernel": variant.kernel, "key": variant.short_key, "seconds": seconds,
            "cache_hit": bool(hits and hits[-1]), "error": error, "pid": os.getpid(),
            "launcher_s": launcher_s, "launcher_error": launcher_error,
        })  # fmt: skip
    return results


def _work_here(request: dict) -> dict:
    """A compile worker: record every job, compile this worker's share of the variants."""
    started = time.perf_counter()
    variants = _record_here(request["jobs"], request["target"])
    recorded = time.perf_counter() - started
    split = shares(variants, request["workers"])
    mine = split[request["index"]] if request["index"] < len(split) else []
    utilities = None
    if request["index"] == 0:  # Triton's CUDA utilities, built once per machine on first use
        started_utils = time.perf_counter()
        try:
            from triton.backends.nvidia.driver import CudaUtils

            CudaUtils()
            utilities = f"built in {time.perf_counter() - started_utils:.1f} s"
        except Exception as failure:
            utilities = f"not built: {type(failure).__name__}: {failure}"[:300]
    return {
        "utilities": utilities,
        "variants": variants if request["index"] == 0 else mine,
        "complete": request["index"] == 0,
        "results": _compile_here(mine, request["target"]),
        "record_s": recorded,
    }


def _child_main(argv: list[str]) -> int:
    mode, in_path, out_path = argv
    with open(in_path, "rb") as handle:
        request = pickle.load(handle)
    started = time.perf_counter()
    work = {
        "record": lambda: _record_here(request["jobs"], request["target"]),
        "work": lambda: _work_here(request),
    }
    result = work[mode]()
    with open(out_path, "wb") as handle:
        pickle.dump({"result": result, "seconds": time.perf_counter() - started}, handle)
    return 0
