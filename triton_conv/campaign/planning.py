"""What a campaign will do, before it runs: every (pass, problem, config) it launches, once each; the
compile target (the live GPU's, or the model device's); and the plan from them on any machine
(`triton-conv campaign --dry-run`). run.py runs what is planned here.
"""

from __future__ import annotations

import torch

from ..runtime import interpreter_active
from .costs import CostModel, DryRun, Estimator, make_plan, plan_fits, render_plan
from .precompile import record
from .spec import CampaignSpec, plan_items
from .variants import LaunchJob


def launch_jobs(spec: CampaignSpec, items: dict) -> list[LaunchJob]:
    """Every (pass, problem, config) the campaign launches, once each."""
    jobs: dict[tuple, LaunchJob] = {}
    for step_items in items.values():
        for item in step_items:
            for config in getattr(item, "candidates", ()):
                key = (item.pass_name, item.transposed, item.problem, config)
                job = LaunchJob(item.pass_name, item.problem, config, spec.dtype, item.transposed)
                jobs.setdefault(key, job)
    return list(jobs.values())


def compile_target(spec: CampaignSpec, on_gpu: bool) -> tuple[str, int, int]:
    """Triton's target (backend, arch, warp size): the live GPU's, or without one the model device's
    (sm_90 for an H200)."""
    major, minor = torch.cuda.get_device_capability() if on_gpu else spec.device.compute_capability
    return ("cuda", 10 * major + minor, 32)


def dry_run(spec: CampaignSpec, budget_s: float, *, on_gpu: bool | None = None, costs=None) -> DryRun:
    """The plan (steps, compiles, estimated seconds) on any machine: the launches are recorded in a
    child process (no GPU needed); the costs are those of the GPU machine unless `on_gpu` is False."""
    on_gpu = True if on_gpu is None else on_gpu
    costs = costs or (CostModel() if on_gpu else CostModel.cpu())
    items = plan_items(spec)
    jobs = launch_jobs(spec, items)
    here = torch.cuda.is_available() and not interpreter_active()
    variants = record(jobs, compile_target(spec, on_gpu=here))
    plan = make_plan(spec, items, variants, len(jobs), Estimator(spec, costs, on_gpu))
    where = f"an {spec.device.name}" if on_gpu else "the CPU (Triton's interpreter)"
    return DryRun(
        render_plan(spec, plan, costs, budget_s, where), plan_fits(plan, budget_s, costs.worker_start_s)
    )
