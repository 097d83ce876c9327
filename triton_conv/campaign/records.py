"""A campaign's timings as pytest-benchmark records, in the same form as bench/'s: `extra_info` holds
the fields bench/harness.py writes (kind, implementation, pass, layer, N, TFLOP/s, fraction of the
measured peak, tiles, waves, the model's prediction), so triton_conv.report reads both alike."""

from __future__ import annotations

import datetime
import platform

from ..layers import get_layer_set
from .model_link import record_fields
from .spec import TF32
from .timing import Measurement, benchmark_stats

TRAINING_TIMER = "synchronised wall clock per training step"


def measured_peak_tflops(run) -> dict:
    ceilings = run.state.get("ceilings") or {}
    value = ceilings.get("matmul_tflops")
    return {ceilings["matmul_dtype"]: value} if value else {}


def timing_fields(run, m: Measurement, flops: float | None) -> dict:
    peak = measured_peak_tflops(run).get(run.spec.dtype) if run.on_gpu else None
    seconds = m.seconds
    tflops = flops / seconds / 1e12 if flops and seconds else None
    return {
        "seconds": seconds, "timer": m.timer, "device_seconds": m.device_seconds,
        "eager_seconds": m.eager_seconds, "host_seconds": m.host_seconds,
        "launch_bound": bool(m.host_seconds and m.device_seconds and m.host_seconds > m.device_seconds),
        "iterations": m.iterations, "input_sets": m.input_sets, "timer_error": m.error, "tflops": tflops,
        "measured_peak_tflops": peak, "fraction_of_peak": tflops / peak if tflops and peak else None,
    }  # fmt: skip


def pass_info(run, item, impl: str, config, error: float, limit: float) -> dict:
    """extra_info of one pass of one layer with one implementation (before its timing fields)."""
    spec, problem = run.spec, item.problem
    info = {
        "kind": "pass", "implementation": impl, "pass": item.pass_name, "layer_set": item.layer_set,
        "layer": item.layer, "N": problem.batch, "dtype": spec.dtype, "layout": "channels_last",
        "tf32": TF32 and spec.dtype == "fp32", "problem": str(problem),
        "flops": problem.flops(item.pass_name),
        "config": str(config) if config is not None else None, "checked": True,
        "relative_error": error, "tolerance": limit, "campaign": spec.name, "step": item.step,
    }  # fmt: skip
    if item.transposed:  # as bench/bench_transposed.py writes them: the pass and its view's kernel
        info.update(transposed=True, kernel_pass=item.kernel_pass)
    info.update(record_fields(problem, item.kernel_pass, spec.dtype, spec.device, config))
    return info


def add_record(run, name: str, group: str, info: dict, m: Measurement) -> dict:
    info = {**info, **timing_fields(run, m, info.get("flops"))}
    record = {
        "group": group,
        "name": f"campaign[{name}]",
        "fullname": f"triton-conv campaign {run.spec.name}::campaign[{name}]",
        "params": {"case_id": name},
        "param": name,
        "extra_info": info,
        "options": {
            "timer": m.timer,
            "rounds": len(m.rounds),
            "min_round_s": run.spec.min_round_s,
            "warmup": True,
            "disable_gc": False,
        },  # fmt: skip
        "stats": benchmark_stats(m.rounds, m.iterations),
    }
    run.records.append(record)
    return record


def layer_index(layer_set: str, layer: str) -> tuple[int, int]:
    """(position, count) of a layer in its set, for the autotune tables' order and counts."""
    for index, candidate in enumerate(get_layer_set(layer_set)):
        if candidate.name == layer:
            return index, candidate.count
    return 0, 1


def machine_info(run) -> dict:
    prov = run.state.get("provenance") or {}
    gpu = prov.get("gpu") or {}
    clocks = {k: gpu.get(k) for k in ("clocks.sm", "clocks.max.sm", "clocks.mem")}
    return {
        "node": platform.node(), "processor": platform.processor(), "machine": platform.machine(),
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(), "python_compiler": platform.python_compiler(),
        "release": platform.release(), "system": platform.system(), "cpu": {"count": prov.get("cpu_count")},
        "triton_conv": {
            "version": prov.get("triton_conv"), "mode": "campaign", "sweep": f"campaign {run.spec.name}",
            "sweep_env": {}, "gpu": gpu.get("name"), "sm_count": gpu.get("sm_count"),
            "gpu_memory_bytes": gpu.get("memory_bytes"), "clocks": clocks,
            "driver": gpu.get("driver_version"), "torch": prov.get("torch"), "triton": prov.get("triton"),
            "cuda": prov.get("cuda"), "cudnn": prov.get("cudnn"), "tf32": TF32,
            "measured_peak_tflops": measured_peak_tflops(run), "date_utc": prov.get("date"),
            "budget_s": run.budget_s, "elapsed_s": round(run.elapsed(), 1), "timer": "CUDA graph replay",
        },
    }  # fmt: skip


def timings_file(run) -> dict:
    """The whole pytest-benchmark JSON of the campaign so far."""
    prov = run.state.get("provenance") or {}
    commit = str(prov.get("commit", ""))
    return {
        "machine_info": machine_info(run),
        "commit_info": {
            "id": commit.split(" ")[0] or None,
            "dirty": "uncommitted" in commit,
            "branch": prov.get("branch"),
            "project": "triton-conv",
        },  # fmt: skip
        "benchmarks": run.records,
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": "triton-conv campaign",
    }
