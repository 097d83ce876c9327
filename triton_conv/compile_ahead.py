"""A model's tuning compiled ahead, on every CPU core, before anything is timed.

Tuning a pass times each config the pruning keeps (up to pruning.MAX_SURVIVORS), and Triton compiles
each one on its first launch, one after the other, in the tuning's process. ResNet-50's training step
at one batch size has 68 tuning keys, 1,195 such launches and 316 distinct kernel binaries (bf16,
channels_last, N=32, pruned for an H200; 334 at N=1). Compiled for sm_90 on the 2-core CPU machine
they took 333 s of compile, 0.35 to 2.43 s each (median 1.0), 184 s of wall time on two workers
with Triton 3.9, and 197 s (median 0.58), 115 s of wall time, with the GPU machine's Triton 3.6
(2026-12-01/02; notes/kernels.md, session 19). So a model's first tuning spends minutes in
the compiler with one core busy. `compile_ahead` hands those compiles to the campaign's compile
workers (campaign/precompile.py: each launch recorded on meta tensors through Triton's JIT,
identical specializations compiled once, shared out over `workers` processes, written to Triton's
on-disk cache); the tuning then finds each binary there.

Nothing here changes a result: a binary not compiled ahead (a worker that failed or ran out of time,
a specialization the recording could not foresee) compiles on its first launch, as it would have.
"""

from __future__ import annotations

import numbers
import time

import torch

from .arguments import ConvArgumentError
from .benchmarking import DTYPES
from .devices import get_device
from .runtime import fp32_uses_tf32
from .tuning import candidate_configs, device_identity, launchable, tuning_target
from .tuning_cache import TuneResult, get_cache
from .tuning_keys import tuning_key

_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def compile_target(device: torch.device) -> tuple[str, int, int]:
    """Triton's GPUTarget (backend, arch, warp size) for `device`: its own on a CUDA device, an
    H200's elsewhere (the CPU machine compiles for the GPU a campaign runs on)."""
    from .campaign.target import TARGET_H200

    if device.type != "cuda":
        return TARGET_H200
    major, minor = torch.cuda.get_device_capability(device)
    return ("cuda", major * 10 + minor, 32)


def untuned(tunings, dtype, device: torch.device) -> list[tuple]:
    """The (problem, kernel pass, layout) of `tunings` that a tuning will time: those whose tuning key
    the device's tuning cache does not hold, or holds with a config the live GPU cannot launch
    (tuning.autotune re-tunes those)."""
    name, live = device_identity(device)
    cache = get_cache(name)

    def cached(problem, kernel_pass, layout) -> bool:
        key = tuning_key(problem, kernel_pass, dtype, layout)
        entry = cache.get(key)
        best = None if entry is None else TuneResult.from_entry(key, entry).best
        return best is not None and launchable(best, problem, kernel_pass, dtype, live)

    return [tuning for tuning in tunings if not cached(*tuning)]


def compile_ahead(
    tunings, dtype, device: torch.device, workers: int, timeout_s: float | None = None, *,
    target=None, max_configs=None,
) -> dict:  # fmt: skip
    """Compile every config that the tunings of `tunings` ((problem, kernel pass, layout) each) will
    time on `device` (with tuning.autotune's `target` and `max_configs`), on `workers` processes.
    Returns {'launches', 'variants', 'compiled', 'failed', 'compile_s', 'wall_s', 'failures'}: how
    many launches were recorded, the distinct binaries among them, how many of those compiled (or
    were in Triton's cache already) and failed, each one's compile seconds (sorted), the wall time,
    and the workers that did not finish (their binaries compile on first launch). A worker still
    running after `timeout_s` (default: 2 minutes to start plus 10 s per launch of its share, ten
    times the median compile measured here) is stopped: a compiler that hangs must not hang the
    tuning."""
    from .campaign.precompile import record_and_compile
    from .campaign.variants import LaunchJob

    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"compile_ahead: dtype {dtype} is not one of {', '.join(map(str, _DTYPE_NAMES))}")
    started = time.perf_counter()
    target = get_device(target) if target is not None else tuning_target(device_identity(device)[1])
    tf32 = fp32_uses_tf32() if dtype == torch.float32 else None  # the kernels the tuning will launch
    jobs = [
        LaunchJob(kernel_pass, problem, config, _DTYPE_NAMES[dtype], layout=bool(layout), tf32=tf32)
        for problem, kernel_pass, layout in tunings
        for config in candidate_configs(problem, kernel_pass, dtype, layout, target, max_configs)
    ]
    if not jobs:
        return {"launches": 0, "variants": 0, "compiled": 0, "failed": 0, "compile_s": [], "wall_s": 0.0,
                "failures": []}  # fmt: skip
    if timeout_s is None:
        timeout_s = 120.0 + 10.0 * len(jobs) / workers
    variants, report = record_and_compile(jobs, workers, compile_target(device), timeout_s)
    failed = sum(1 for result in report["results"] if result["error"])
    return {
        "launches": len(jobs),
        "variants": len(variants),
        "compiled": len(report["results"]) - failed,
        "failed": failed,
        "compile_s": sorted(result["seconds"] for result in report["results"]),
        "wall_s": time.perf_counter() - started,
        "failures": report["failures"],
    }


def checked_workers(workers) -> int | None:
    """`compile_workers` as tune_model and tune_layer_set take it: None (the default) or a count."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
        raise ConvArgumentError(f"compile_workers must be a whole number >= 0 or None, got {workers!r}")
    return int(workers)


def default_workers(device: torch.device) -> int:
    """Every usable core where the tunings launch on a GPU (none with one core, where a worker would
    only add its start); none elsewhere (the interpreter compiles nothing)."""
    from .child_processes import usable_cores

    cores = usable_cores()
    return cores if device.type == "cuda" and cores > 1 else 0


def compile_before_tuning(
    tunings, dtype, device, workers: int, stream, *, target=None, max_configs=None
) -> None:
    """What tune_model and tune_layer_set do before their first timing: compile ahead, on `workers`
    processes (none: nothing), what the tunings of `tunings` will time that the cache does not
    answer, and say so in one line on `stream` (None: silently). A compile step that fails (workers
    that cannot start: no space, no processes) is said, never raised: each config then compiles
    when first timed, as it would have."""
    if not workers:
        return
    try:
        pending = untuned(list(dict.fromkeys(tunings)), dtype, device)
        if not pending:
            return
        done = compile_ahead(pending, dtype, device, workers, target=target, max_configs=max_configs)
    except Exception as failure:
        if stream is not None:
            print(f"not compiled ahead ({type(failure).__name__}: {failure}): each config compiles when "
                  "it is first timed", file=stream, flush=True)  # fmt: skip
        return
    if stream is not None:
        failures = f"; not finished: {'; '.join(done['failures'])}" if done["failures"] else ""
        by = f"{workers} worker{'s' if workers > 1 else ''}"
        print(f"compiled ahead by {by}: {done['variants']} kernel binaries of {done['launches']} "
              f"launches to time ({done['failed']} failed to compile), {done['wall_s']:.1f} s{failures}",
              file=stream, flush=True)  # fmt: skip
