"""What a campaign will do, before it runs: every (pass, problem, config) it launches, once each; the
compile target (the live GPU's, or the model device's); and the plan from them on any machine
(`triton-conv campaign --dry-run`). run.py runs what is planned here.
"""

from __future__ import annotations

import torch

from ..layers import network_needs, resnet50
from ..runtime import interpreter_active
from ..tuning import untimed_default
from .costs import CostModel, DryRun, Estimator, make_plan, plan_fits, render_plan
from .precompile import record
from .spec import CampaignSpec, TrainingItem, plan_items
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
            for job in training_defaults(spec, item):
                jobs.setdefault((job.pass_name, False, job.problem, job.config), job)
    return list(jobs.values())


def training_defaults(spec: CampaignSpec, item) -> list[LaunchJob]:
    """The training step's launches in their untimed default configs. A layer whose pass item a
    step's deadline cut has no pinned winner, and the training step (the last) would otherwise
    compile its defaults one after another in its own time limit (a second or so each, up to three
    passes of 23 layers). The full ResNet-50 only: a narrowed network's shapes are not the model's."""
    if not isinstance(item, TrainingItem):
        return []
    t = item.training
    if (t.width, t.blocks) != (64, (3, 4, 6, 3)):
        return []
    jobs = []
    for layer in resnet50(t.image, t.image):
        problem = layer.problem.with_batch(t.batch)
        for pass_name in ("fprop", "dgrad", "wgrad"):
            if not network_needs(problem, pass_name):
                continue
            config = untimed_default(problem, pass_name, spec.torch_dtype, True, spec.device)
            jobs.append(LaunchJob(pass_name, problem, config, spec.dtype))
    return jobs


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
