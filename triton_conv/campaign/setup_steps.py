"""The campaign's first steps: provenance and the machine's ceilings, the compile of every variant
and the plan made from it, and the check of every candidate against torch in float64 before
anything is timed. Each takes the run (run.Campaign): its state, budget, output and bookkeeping."""

from __future__ import annotations

import math
import os

import torch

from .. import provenance
from ..benchmarking import tolerance, use_comparable_settings
from ..timers import measure_copy_bandwidth, measure_matmul_peak
from .check_process import CheckProcess
from .costs import make_plan, render_plan
from .limits import ItemTimeout, held_back
from .precompile import record_and_compile, usable_cores
from .spec import TF32, check_order
from .variants import LaunchJob, variants_json


def record_provenance(run) -> None:
    """The software, the commit and the GPU (clocks before any load): first, so that every run's
    campaign.json has them, a run whose budget or failure skips the ceilings included."""
    run.state["provenance"] = {
        **provenance.software(),
        "branch": provenance.git_branch(),
        "gpu": provenance.gpu(),
    }
    run.out.log(f"provenance: {run.state['provenance']}")


def ceilings(run) -> None:
    """The measured ceilings: a bf16 matmul's FLOP/s (cuBLAS, 8192^3) and a device-to-device copy's
    bytes/s (2 GiB), with the clocks after that load."""
    spec, log = run.spec, run.out.log
    if run.on_gpu:
        matmul = measure_matmul_peak(spec.torch_dtype, 8192, run.device)
        copy = measure_copy_bandwidth(2 << 30, run.device)
        size, nbytes = 8192, 2 << 30
    else:  # the interpreter's machine: small, and only to exercise the step
        size, nbytes = 256, 16 << 20
        matmul = measure_matmul_peak(torch.float32, size, "cpu")
        copy = measure_copy_bandwidth(nbytes, "cpu")
    run.state["ceilings"] = {
        "matmul_dtype": spec.dtype if run.on_gpu else "fp32", "matmul_size": size,
        "matmul_tflops": matmul / 1e12, "copy_bytes": nbytes, "copy_gb_per_s": copy / 1e9,
        "clocks_after": provenance.nvidia_smi() if run.on_gpu else None,
    }  # fmt: skip
    log(f"ceilings: matmul {matmul / 1e12:.1f} TFLOP/s, copy {copy / 1e9:.0f} GB/s")


def _triton_cache_dir() -> str:
    from triton import knobs

    return str(knobs.cache.dir)


MAX_LISTED_FAILURES = 20  # compile failures listed one by one in campaign.json; compile.json has all


def compile_all(run, variants, report, launches: int, target, seconds: float) -> None:
    """Record what precompile.record_and_compile did: compile.json, the step's time, the failures."""
    log = run.out.log
    results = report["results"]
    failed = [v for v in results if v["error"]]
    by_kernel: dict[str, list[float]] = {}
    for v in results:
        if not v["cache_hit"]:
            by_kernel.setdefault(v["kernel"], []).append(v["seconds"])
    mean = {k: sum(s) / len(s) for k, s in by_kernel.items()}
    cached = sum(1 for v in results if v["cache_hit"])
    launchers = [v["launcher_s"] for v in results if v.get("launcher_s") is not None]
    launcher_errors = sorted({v["launcher_error"] for v in results if v.get("launcher_error")})
    run.out.set("compile", {
        "target": list(target), "launches": launches, "variants": len(variants), "already_cached": cached,
        "workers": report["workers"], "wall_s": report["wall_s"], "worker_s": report["worker_s"],
        "record_s": report["record_s"], "mean_compile_s": mean, "failed": len(failed),
        "triton_cache_dir": _triton_cache_dir(), "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "launchers": {"built": len(launchers), "seconds": sum(launchers), "errors": launcher_errors[:3]},
        "cuda_utilities": report.get("cuda_utilities"),
        "variant_list": variants_json(variants), "results": results,
    })  # fmt: skip
    run.state["triton_cache"]["dir"] = _triton_cache_dir()
    plan = next((p for p in run.state["plan"] if p["step"] == "compile"), {})
    run.state["steps"].append({
        "step": "compile", "estimate_s": plan.get("estimate_s"), "actual_s": round(seconds, 2),
        "items": len(variants), "done": len(variants) - len(failed),
    })  # fmt: skip
    log(f"compiled {len(variants)} variants of {launches} launches in {seconds:.1f} s ({cached} already "
        f"cached, {len(failed)} failed); mean seconds per variant: "
        f"{', '.join(f'{k} {s:.2f}' for k, s in mean.items()) or '-'}")  # fmt: skip
    for v in failed[:5]:
        log(f"compile failed: {v['kernel']}: {v['error']}")
    # Listed as errors too: a run whose kernels failed to compile is not 'complete' (each such kernel
    # compiles again on its first launch, inside a timed step, or fails there as well).
    for v in failed[:MAX_LISTED_FAILURES]:
        run.state["errors"].append({"step": "compile", "item": v["kernel"], "error": str(v["error"])[:600]})
    if len(failed) > MAX_LISTED_FAILURES:
        more = f"{len(failed) - MAX_LISTED_FAILURES} more variants"
        run.state["errors"].append({"step": "compile", "item": more, "error": "listed in compile.json"})
    run.flush()


def ceilings_step(run) -> None:
    """Provenance first (every campaign.json has it), cuDNN's settings as bench/ runs them, then the
    ceilings when their estimate still fits the budget."""
    began = run.elapsed()
    run.guarded("ceilings", lambda: record_provenance(run))
    done = run.guarded("ceilings", lambda: use_comparable_settings(tf32=TF32))  # cuDNN's search on
    ceilings_s = run.costs.startup_s + run.costs.ceilings_s  # the plan's estimate (make_plan)
    if ceilings_s > run.time_left():
        run.skip_step(f"budget: {ceilings_s:.1f} s more would pass the budget's end")
        done = False
    else:
        done = run.guarded("ceilings", lambda: ceilings(run)) and done
    entry = {"step": "ceilings", "actual_s": round(run.elapsed() - began, 2), "items": 1}
    run.state["steps"].append({**entry, "done": int(done)})
    run.flush()


def compile_and_plan(run, jobs: list[LaunchJob], target) -> None:
    """The compile step, then the plan from what it found. Without the compile's variants (its
    failure) the plan counts none, and every kernel compiles on its first launch."""
    log, began = run.out.log, run.elapsed()
    compiled = {"variants": [], "report": None}

    def compile_variants():
        # At most half of what is left: a worker stuck in the compiler must not take the lease.
        limit = (run.budget_s - run.elapsed()) / 2
        if limit < run.costs.worker_start_s:  # it would be killed before it compiled anything
            run.skip_step(f"budget: {limit:.1f} s, half of what is left, would not start a "
                          f"compile worker ({run.costs.worker_start_s:.0f} s)")  # fmt: skip
            return
        log(f"recording {len(jobs)} launches and compiling their variants for {target} "
            f"on {run.costs.workers} workers")  # fmt: skip
        compiled["variants"], compiled["report"] = record_and_compile(
            jobs, run.costs.workers, target, timeout_s=limit
        )
        for failure in compiled["report"]["failures"]:
            run.state["errors"].append({"step": "compile", "item": "workers", "error": failure})
            log(f"ERROR compile: {failure}")

    def plan():
        steps = make_plan(run.spec, run.items, compiled["variants"], len(jobs), run.estimator)
        run.set_plan(steps)
        log("plan:\n" + render_plan(run.spec, steps, run.costs, run.budget_s, str(run.device)))

    run.guarded("compile", compile_variants)
    run.guarded("compile", plan)
    variants, report, seconds = compiled["variants"], compiled["report"], run.elapsed() - began
    if report is None or not run.guarded(
        "compile", lambda: compile_all(run, variants, report, len(jobs), target, seconds)
    ):
        entry = {"step": "compile", "actual_s": round(seconds, 2), "items": 0, "done": 0}
        run.state["steps"].append(entry)
    run.flush()


def check_step(run) -> None:
    """Every candidate of every item that is timed, checked in a child process; its stops counted
    per kernel pass (two hung weight-gradient configs give up the weight gradient's checks only)."""
    checked = check_order(run.items)
    run.checker = CheckProcess(str(run.device))
    try:
        begun = []  # the first item that runs starts the child process (one the budget skips does not)

        def begin(run, item):
            begun.append(item.id)
            return check_item(run, item)

        def starts_a_child() -> bool:  # the first item that runs, or the first after a child died
            checker = run.checker
            return not begun or (checker.started > 0 and checker.process is None and not checker.unavailable)

        estimate = lambda item: run.estimator.check_item(item, first=starts_a_child())
        run.run_step("check", checked, begin, estimate, group=lambda item: item.kernel_pass)
    finally:
        run.checker.close()
        run.state["check_processes"] = run.checker.started
        if run.checker.unavailable:
            run.out.log(f"the check ran in the campaign's process: {run.checker.unavailable}")
            run.state["check_process_unavailable"] = run.checker.unavailable


def check_item(run, item) -> None:
    """Each candidate of one (problem, pass) against torch in float64, in the check's own process
    (check_child.py: a config that faults the GPU costs that config, not the campaign). When the
    item's time limit strikes, the config in flight is recorded as hung and the rest as not checked;
    those that passed before it are still timed."""
    spec = run.spec
    limit = tolerance(spec.dtype, tf32=TF32)
    passed, answered = [], []

    def record(config, error: float, failure: str | None, ran: bool = True) -> None:
        ok = math.isfinite(error) and error <= limit
        with held_back():  # a time limit striking here waits: one row per config, and it is listed
            answered.append(config)
            passed.extend([config] if ok else [])
            run.checks.append({
                "item": item.id, "step": item.step, "layer": item.layer, "problem": str(item.problem),
                "pass": item.pass_name, "config": str(config), "relative_error": error, "tolerance": limit,
                "passed": ok, "error": failure,
            })  # fmt: skip
        if not ok:  # a check the time limit kept from starting is no numerics failure: said apart
            result = "no result" if failure else f"relative error {error:.3g} > {limit:g}"
            tag = "CHECK FAILED" if ran else "CHECK NOT RUN"
            run.out.log(f"{tag} {item.id} {config}: {result}" + (f"; {failure}" if failure else ""))

    try:
        for config, error, failure in run.checker.check(item, spec.dtype, on_compile=run.count_compile):
            record(config, error, failure)
    except ItemTimeout:
        hung = run.checker.in_flight
        for config in [c for c in item.candidates if c not in answered]:
            why = "its launch was still running" if config == hung else "not checked"
            record(config, math.nan, f"{why} when the item's time limit struck", ran=config == hung)
        raise
    finally:  # also when the item failed: the timing step then says no candidate passed, not "budget"
        run.checked[item.id] = tuple(passed)
