"""Autotuning: time each surviving config of a pass's space, keep the fastest, remember it on disk.

`autotune` is what choices.select_config (the passes' entry, memoised per process) asks: a
cached config when there is one (the per-device file of tuning_cache.py); on a miss on a CUDA
device, every config that survives pruning.pruned_space is timed with triton.testing.do_bench
(median, after warm-up) on fresh random inputs and the fastest is cached with the runner-up and all
the times (TRITON_CONV_AUTOTUNE=0 turns the timing off: cache hits are still used, misses get the
default config). On the CPU (the interpreter) nothing is timed unless a caller passes a timer
(`cpu_timer`, as the tests do): the default config is returned (configs.default_pass_config), so
that the tests' launches do not depend on what a timing on a loaded CPU would pick.

A whole model is tuned ahead of time by model_tuning.tune_model, a named layer set into table rows
by autotune_runs.tune_layer_set; both build on this module (the dependency goes one way).
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from .configs import KernelConfig, default_pass_config
from .devices import DeviceSpec, get_device, live_device
from .launchers import pass_launch
from .memory_format import random_in_layout
from .problem import ConvProblem
from .pruning import Target, pruned_space, shared_memory
from .runtime import device_guard, fp32_uses_tf32
from .tuning_cache import TuneResult, get_cache
from .tuning_keys import tuning_key

Timer = Callable[[Callable[[], object]], float]  # runs a callable, returns milliseconds
ENV_AUTOTUNE = "TRITON_CONV_AUTOTUNE"  # "0": never time on a cache miss, use the default config
CPU_TARGET = "H200"  # the GPU whose limits prune the space when a test tunes on the CPU


_AUTOTUNE_OFF, _AUTOTUNE_ON = ("0", "false", "off", "no"), ("", "1", "true", "on", "yes")


def autotuning_enabled() -> bool:
    """TRITON_CONV_AUTOTUNE: on unless 0, false, off or no; another value warns (once) and is on."""
    value = os.environ.get(ENV_AUTOTUNE, "1").strip().lower()
    if value not in _AUTOTUNE_OFF + _AUTOTUNE_ON:
        warnings.warn(
            f"{ENV_AUTOTUNE}={os.environ[ENV_AUTOTUNE]!r} is neither on (1, true, on, yes) nor off "
            "(0, false, off, no): autotuning stays on",
            RuntimeWarning,
            stacklevel=3,
        )
    return value not in _AUTOTUNE_OFF


def gpu_timer(fn: Callable[[], object], warmup: int = 25, rep: int = 100) -> float:
    """Median milliseconds of `fn` by triton.testing.do_bench (device events, L2 flushed per run,
    `warmup` ms of warm-up, then about `rep` ms of timed runs)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def cpu_timer(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall-clock milliseconds over `repeats` runs after one warm-up run (the interpreter)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# --- inputs and the callables that launch one pass --------------------------------------------------
def random_inputs(problem: ConvProblem, pass_name: str, dtype, channels_last: bool, device) -> dict:
    """Fresh random tensors (never zeros) for one pass, in the layout asked for, with the strides a
    model's own tensors have (random_in_layout: the binary that is timed is the one that runs).
    No bias: the tuning key has no bias flag, and the convolutions that dominate a network's time
    feed a norm and have none (the campaign times the same binaries); a bias's epilogue (fprop) and
    its gradient's programs (wgrad) run on the config tuned without them."""

    generator = tuning_generator(device)

    def make(shape):
        return random_in_layout(shape, dtype, device, channels_last, generator)

    tensors = {"weight": make(problem.weight_shape)}
    if pass_name == "fprop":
        tensors["x"] = make(problem.input_shape)
    else:
        tensors["dy"] = make(problem.output_shape)
        if pass_name == "wgrad":
            tensors["x"] = make(problem.input_shape)
    return tensors


# A tuning draws its inputs from generators of its own: one drawn from torch's default generator
# would advance it, so a seeded training's dropout masks and initialisations would depend on
# whether its first step tuned (a cold cache) or not (a warm one), and differ from torch's run.
_GENERATORS: dict[torch.device, torch.Generator] = {}


def tuning_generator(device) -> torch.Generator | None:
    """This process's generator for tuning inputs on `device`, seeded once from the OS's entropy;
    None on the meta device (compile_ahead records launches there), where nothing is drawn."""
    device = torch.device(device)
    if device.type == "meta":
        return None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    generator = _GENERATORS.get(device)
    if generator is None:
        generator = torch.Generator(device=device)
        generator.seed()
        generator = _GENERATORS.setdefault(device, generator)  # two threads: one generator wins
    return generator


def pass_runner(problem, pass_name: str, tensors: dict, config: KernelConfig, channels_last: bool):
    """A callable that allocates the pass's output and launches it with `config` (what is timed)."""
    return pass_launch(
        pass_name, problem, config,
        x=tensors.get("x"), weight=tensors["weight"], dy=tensors.get("dy"), channels_last=channels_last,
    )  # fmt: skip


# --- one tuning ---------------------------------------------------------------------------------------
# Counts every timing the tuner runs (tests use it to prove a cached shape is not re-tuned).
timing_calls = 0


def time_configs(
    configs, make_runner: Callable[[KernelConfig], Callable[[], object]], timer: Timer, errors=None
):
    """[(config, ms)] for each config. A config that fails to build or launch (out of resources on
    a smaller GPU, say) gets inf, and its error goes into `errors` (str(config) -> message)."""
    global timing_calls
    timings = []
    for config in configs:
        timing_calls += 1
        try:
            ms = float(timer(make_runner(config)))
        except torch.cuda.OutOfMemoryError:  # the problem, not the config: nothing else will fit
            raise
        except Exception as error:
            ms = math.inf
            if errors is not None:
                errors[str(config)] = f"{type(error).__name__}: {error}"[:500]
        timings.append((config, ms))
    return timings


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return device if isinstance(device, torch.device) else torch.device(device)


_SPECS: dict[int, DeviceSpec] = {}


def device_identity(device: torch.device) -> tuple[str, DeviceSpec | None]:
    """(name of the cache file's device, the live DeviceSpec) for a CUDA device; ('cpu', None)."""
    if device.type != "cuda":
        return "cpu", None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SPECS:
        _SPECS[index] = live_device(index)
    return _SPECS[index].name, _SPECS[index]


def candidate_configs(
    problem, pass_name, dtype, channels_last, target, max_configs=None
) -> list[KernelConfig]:
    """The configs a tuning for `target` (a DeviceSpec) times: the pass's space, pruned; what
    tune_model compiles ahead (compile_ahead.py)."""
    kwargs = {} if max_configs is None else {"max_configs": max_configs}
    return pruned_space(problem, pass_name, dtype, target, channels_last=channels_last, **kwargs)


def tuning_target(live: DeviceSpec | None) -> DeviceSpec:
    """The device whose limits prune a tuning's space: the live GPU, or CPU_TARGET without one."""
    return live or get_device(CPU_TARGET)


def tune_problem(
    problem,
    pass_name,
    dtype,
    channels_last,
    device=None,
    *,
    timer=None,
    target=None,
    max_configs=None,
    configs=None,
) -> TuneResult:
    """Time every surviving config (or `configs`) on `device` and return the fastest, uncached."""
    device = _device(device)
    with device_guard(device):  # the inputs are made on `device`; Triton launches on the current one
        _, live = device_identity(device)
        target = get_device(target) if target is not None else tuning_target(live)
        if configs is None:
            configs = candidate_configs(problem, pass_name, dtype, channels_last, target, max_configs)
        timer = timer or (gpu_timer if device.type == "cuda" else cpu_timer)
        tensors = random_inputs(problem, pass_name, dtype, channels_last, device)
        errors: dict[str, str] = {}
        timings = time_configs(
            configs, lambda c: pass_runner(problem, pass_name, tensors, c, channels_last), timer, errors
        )
        ranked = sorted(timings, key=lambda item: item[1])
        if math.isinf(ranked[0][1]):
            raise RuntimeError(f"no config of {pass_name} ran on {device} for {problem}: {errors}")
        runner = ranked[1] if len(ranked) > 1 and not math.isinf(ranked[1][1]) else (None, None)
        return TuneResult(
            tuning_key(problem, pass_name, dtype, channels_last), ranked[0][0], ranked[0][1], *runner,
            timings, device.type, False, str(problem), errors,
        )  # fmt: skip


def launchable(config: KernelConfig, problem, pass_name, dtype, live: DeviceSpec | None) -> bool:
    """Triton can launch `config` on the live GPU: its pipeline fits the shared memory per block. A
    config this package tuned there always does; a hand-edited or foreign cache entry may not."""
    return live is None or shared_memory(config, Target(problem, pass_name, dtype, live))


def _tf32_setting(dtype) -> bool | None:
    """The TF32 setting an fp32 tuning depends on (its key, its kernels); None for other dtypes."""
    return fp32_uses_tf32() if dtype == torch.float32 else None


def untimed_default(problem, pass_name, dtype, channels_last, live: DeviceSpec | None) -> KernelConfig:
    """The config a pass runs without a tuning: the default for the live GPU (one SM without one)."""
    if live is None:
        return default_pass_config(problem, pass_name, dtype, sm_count=1, channels_last=channels_last)
    return default_pass_config(
        problem, pass_name, dtype, live.sm_count, live.compute_capability, channels_last=channels_last
    )


def cached_result(key, problem, pass_name, dtype, cache, live) -> tuple[TuneResult | None, bool]:
    """`cache`'s result for `key` (get_cache of the GPU model; None on a miss), and whether its
    config can launch on the live GPU (a miss can: nothing stands in the way of a tuning)."""
    entry = cache.get(key)
    cached = None if entry is None else TuneResult.from_entry(key, entry)
    return cached, cached is None or launchable(cached.best, problem, pass_name, dtype, live)


def autotune(
    problem, pass_name, dtype, channels_last, device=None, *, timer=None, target=None, max_configs=None
) -> TuneResult:
    """The cached result for this problem's key, else a tuning on `device` that is then cached.

    Without a CUDA device and without a `timer`, nothing is timed or cached: the default config.
    With TRITON_CONV_AUTOTUNE=0 a CUDA device still reads the cache but times nothing on a miss.
    """
    device = _device(device)
    name, live = device_identity(device)
    settings = _tf32_setting(dtype)  # at the start: a tuning during which it changes is not cached
    key = tuning_key(problem, pass_name, dtype, channels_last)
    if device.type != "cuda" and timer is None:
        return TuneResult(key, untimed_default(problem, pass_name, dtype, channels_last, live), None)
    cache = get_cache(name)  # the one read is the one written, whatever changes while it tunes
    cached, launchable_entry = cached_result(key, problem, pass_name, dtype, cache, live)
    if cached is not None and launchable_entry:
        return cached
    if not launchable_entry:
        warnings.warn(
            f"triton-conv: the tuning cache's config {cached.best} for {key} needs more shared memory "
            f"per block than {live.name} has: ignored (the file keeps it; this process re-tunes)",
            RuntimeWarning,
            stacklevel=2,
        )
    if timer is None and not autotuning_enabled():
        return TuneResult(key, untimed_default(problem, pass_name, dtype, channels_last, live), None)
    result = tune_problem(
        problem, pass_name, dtype, channels_last, device, timer=timer, target=target, max_configs=max_configs
    )
    if _tf32_setting(dtype) != settings:
        warnings.warn(
            f"triton-conv: the TF32 setting changed while {key} was tuned (another thread?): its "
            "timings mix two kernels, so the winner is used but not cached",
            RuntimeWarning,
            stacklevel=2,
        )
        return result
    if not launchable_entry:
        return result
    stored = cache.put(key, result.entry())
    return result if stored["config"] == result.best.as_dict() else TuneResult.from_entry(key, stored)
