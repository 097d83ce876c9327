"""The campaign's cost model: what each step should take, before anything runs, and the plan it makes.

Every constant is an assumption with its source; the first GPU run checks them all (campaign.json
holds each step's estimate beside its actual seconds, compile.json each variant's compile time), and
`triton-conv report DIR` prints the comparison. Kernel times come from the batching model
(model_link.predicted_seconds), slowed by KERNEL_SLOWDOWN: the model is a roofline at 100% of the
datasheet peak and real kernels land well below it (issue 14 found 10-26% on published stacks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from .budget import RESERVE_S, StepOutlook, complete, play_out, smallest_budget
from .check_process import FAULTS_BEFORE_SKIP
from .model_link import predicted_seconds
from .spec import CampaignSpec, CurveItem, PassItem, TrainingItem, check_order
from .variants import WEIGHT, Variant, shares


@dataclass(frozen=True)
class CostModel:
    """Seconds, on the machine that runs the campaign. GPU defaults: an H200 machine with 16 cores."""

    startup_s: float = 10.0  # CUDA context, cuBLAS and cuDNN handles, first allocations
    ceilings_s: float = 4.0  # nvidia-smi; an 8192^3 bf16 matmul and a 2 GiB copy: 0.3 s warm, 50 calls each
    worker_start_s: float = 6.0  # a compile worker's imports of torch, Triton, the package (3-5 s here)
    record_per_launch_s: float = 0.004  # recording one launch on meta tensors (measured 2-5 ms here)
    # One kernel variant on one core. Measured with Triton 3.6 for sm_90 on one AMD EPYC core of the
    # machine that wrote this: fprop and dgrad 0.35-0.7 s, wgrad 0.8-1.0 s, and 2-3x that with two
    # compiles per core. Assumed: twice the single-core figure.
    compile_s: dict = field(default_factory=lambda: {"fprop": 1.0, "dgrad": 1.0, "wgrad": 2.0})
    workers: int = 16  # the H200 machine's cores
    load_s: float = 0.03  # first launch of a cached variant: read from disk, load onto the GPU
    reference_s: float = 0.03  # fresh inputs and the float64 reference of one (problem, pass)
    reference_flops: float = 5e12  # float64 convolution rate of the reference (cuDNN, fp64)
    check_s: float = 0.003  # one checked launch: poison, launch, error norm
    check_process_s: float = 8.0  # the check's child: imports, CUDA context (check_child.py)
    measure_s: float = 0.01  # fixed cost of one measurement: synchronisations, capture, bookkeeping
    host_call_s: float = 40e-6  # host time of one eager call of a triton-conv op (bench/host_overhead)
    # cuDNN's algorithm search (cudnn.benchmark) on the first call of each shape and pass: it runs
    # every applicable algorithm once, some with workspaces. Assumed; the first run's steps show it.
    cudnn_search_s: float = 0.05
    kernel_slowdown: float = 4.0  # measured kernel time / the model's prediction, assumed
    min_kernel_s: float = 5e-6
    peer_first_s: float = 30.0  # Inductor's first compile: its worker pool, Dynamo, AOTAutograd
    peer_shape_s: float = 12.0  # each further shape: max-autotune compiles and times its templates
    training_build_s: float = 15.0  # two ResNet-50s, fixed data, cuDNN's algorithm search per shape
    training_overhead_s: float = 0.03  # per step: optimizer, BatchNorm, the launches, the sync
    flush_s: float = 2.0  # writing the files at the end
    interpreter_call_s: float = 0.0  # CPU: one interpreted launch (0 on a GPU)

    @classmethod
    def cpu(cls, workers: int = 2) -> CostModel:
        """The interpreter on a small CPU (the tiny campaign): every launch is slow, nothing is fast."""
        return cls(startup_s=0.5, ceilings_s=1.0, worker_start_s=5.0, check_process_s=4.0,
                   compile_s={"fprop": 1.5, "dgrad": 1.5, "wgrad": 2.5}, workers=workers, load_s=0.0,
                   reference_s=0.01, reference_flops=1e9, measure_s=0.0, host_call_s=0.0, cudnn_search_s=0.0,
                   peer_first_s=4.0, peer_shape_s=1.0, training_build_s=1.0, training_overhead_s=0.5,
                   flush_s=0.2, interpreter_call_s=0.15)  # fmt: skip

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepPlan:
    name: str
    items: int
    compiles: int
    estimate_s: float
    what: str
    item_seconds: tuple = ()  # each item's estimate, as the run estimates it before starting it
    item_ids: tuple = ()  # each item's id (a timed item whose check was skipped is skipped too)
    start_s: float = 0.0  # paid by the first item that runs (a child process, a first compile)


class Estimator:
    """Seconds of each item of a spec, under a cost model."""

    def __init__(self, spec: CampaignSpec, costs: CostModel, on_gpu: bool):
        self.spec, self.costs, self.on_gpu = spec, costs, on_gpu

    def kernel(self, problem, pass_name, config) -> float:
        if not self.on_gpu:
            return self.costs.interpreter_call_s
        model = predicted_seconds(problem, pass_name, config, self.spec.dtype, self.spec.device)
        return max(self.costs.min_kernel_s, self.costs.kernel_slowdown * model)

    def measurement(self, seconds: float, eager: bool) -> float:
        """One timing.measure call of a callable taking `seconds` per call."""
        if not self.on_gpu:
            return seconds
        per_round = max(self.spec.min_round_s, seconds)
        device = (self.spec.rounds + 3) * per_round
        host = (self.spec.rounds + 4) * per_round + 20 * self.costs.host_call_s if eager else 0.0
        return self.costs.measure_s + device + host

    def reference(self, problem) -> float:
        return self.costs.reference_s + problem.flops() / self.costs.reference_flops

    def pass_item(self, item: PassItem | CurveItem) -> float:
        times = [self.kernel(item.problem, item.kernel_pass, c) for c in item.candidates]
        best = min(times, default=self.kernel(item.problem, item.kernel_pass, None))
        cudnn = self.kernel(item.problem, item.kernel_pass, None)
        seconds = self.reference(item.problem) + sum(self.measurement(t, eager=False) + t for t in times)
        seconds += self.measurement(best, eager=True) + self.measurement(cudnn, eager=True) + best + cudnn
        seconds += self.costs.cudnn_search_s
        if isinstance(item, CurveItem) and item.one_at_a_time:
            one = item.problem.with_batch(1)
            single = item.problem.batch * max(self.kernel(one, "fprop", None), self.costs.host_call_s)
            seconds += 2 * (self.measurement(single, eager=True) + single) + self.costs.cudnn_search_s
        return seconds

    def peer_item(self, item: PassItem, first: bool = False) -> float:
        cudnn = self.kernel(item.problem, item.pass_name, None)
        compile_s = self.costs.peer_first_s if first else self.costs.peer_shape_s
        return compile_s + self.reference(item.problem) + self.measurement(cudnn, eager=True)

    def check_item(self, item: PassItem | CurveItem, first: bool = False) -> float:
        """One item's check; the first that runs also starts the check's child process (its imports
        and CUDA context), and its time limit must allow for that."""
        launches = sum(self.kernel(item.problem, item.kernel_pass, c) for c in item.candidates)
        start = self.costs.check_process_s if first else 0.0
        return start + self.reference(item.problem) + len(item.candidates) * self.costs.check_s + launches

    def training(self, item: TrainingItem) -> float:
        from ..layers import resnet50

        t = item.training
        if self.on_gpu:
            layers = resnet50(t.image, t.image)
            convs = sum(
                layer.count * self.kernel(layer.problem.with_batch(t.batch), p, None)
                for layer in layers
                for p in ("fprop", "dgrad", "wgrad")
            )
        else:
            convs = 3 * sum(t.blocks) * 3 * self.costs.interpreter_call_s
        step = convs + self.costs.training_overhead_s
        return self.costs.training_build_s + 2 * (t.warmup + t.steps) * step

    def compile(self, variants: list[Variant], launches: int) -> float:
        """Every worker starts, records all the launches, then compiles its share (precompile.py)."""
        workers = shares(variants, self.costs.workers)
        busiest = max((sum(self.costs.compile_s[v.pass_name] for v in share) for share in workers), default=0)
        return self.costs.worker_start_s + launches * self.costs.record_per_launch_s + busiest


def make_plan(spec, items: dict, variants: list[Variant], launches: int, est: Estimator) -> list[StepPlan]:
    """The steps in order with their item counts, compiles and estimated seconds."""
    costs = est.costs
    checked = check_order(items)
    counts = {k: sum(1 for v in variants if v.pass_name == k) for k in WEIGHT}
    peers = [i for i in items["fprop"] if i.peer]
    check_seconds = tuple(est.check_item(item) for item in checked)
    ids = lambda chosen: tuple(item.id for item in chosen)
    plan = [
        StepPlan("ceilings", 1, 0, costs.startup_s + costs.ceilings_s,
                 "provenance (GPU, clocks, driver, versions, commit); bf16 matmul peak; copy bandwidth"),
        StepPlan("compile", len(variants), len(variants), est.compile(variants, launches),
                 f"{len(variants)} kernel variants ({', '.join(f'{k} {n}' for k, n in counts.items())}) "
                 f"of {launches} launches, on {min(costs.workers, len(variants) or 1)} workers"),
        StepPlan("check", len(checked), 0,
                 sum(check_seconds) + costs.check_process_s * bool(checked) + len(variants) * costs.load_s,
                 "every candidate of every timed problem against torch in float64, in a child process",
                 check_seconds, tuple(item.id for item in checked), costs.check_process_s),
    ]  # fmt: skip
    # The check's child loaded every variant; the campaign's process loads each again when it first
    # times it: a share per checked item of the timing steps.
    load_per_item = len(variants) * costs.load_s / max(1, len(checked))
    what = {
        "fprop": "ResNet-50 layers: candidates, triton-conv's op, cuDNN",
        "peer": "Inductor's Triton conv template (max-autotune), fprop",
        "dgrad": "ResNet-50 layers: candidates, triton-conv's op, cuDNN",
        "wgrad": "ResNet-50 layers: candidates, triton-conv's op, cuDNN",
        "batching": "the batching curve; N launches of one image against one batch",
        "megapixel": "a 1920x1080 layer, three passes",
        "decoder": "U-Net decoder's ConvTranspose2d layers: forward (view's dgrad), dx, dw; against cuDNN",
        "training": "a converted ResNet-50 training step against torch's",
    }
    for step in ("fprop", "peer", "dgrad", "wgrad", "batching", "megapixel", "decoder", "training"):
        if step == "peer":
            first_s = costs.peer_first_s - costs.peer_shape_s  # Inductor's first compile, beyond a shape's
            each = tuple(est.peer_item(item) for item in peers)
            seconds = sum(each) + first_s * bool(peers)
            plan.append(StepPlan(step, len(peers), 0, seconds, what[step], each, ids(peers), first_s))
            continue
        chosen = items[step]
        if step == "training":
            each = tuple(est.training(item) for item in chosen)
            plan.append(StepPlan(step, len(chosen), 0, sum(each), what[step], each, ids(chosen)))
        else:
            each = tuple(est.pass_item(item) for item in chosen)
            seconds = sum(each) + load_per_item * len(chosen)
            plan.append(StepPlan(step, len(chosen), 0, seconds, what[step], each, ids(chosen)))
    plan.append(StepPlan("finish", 1, 0, costs.flush_s, "write the files"))
    return plan


class DryRun(NamedTuple):
    """A dry run's plan as printed, and whether it fits the budget (the command's exit status)."""

    text: str
    fits: bool


def cut_steps(outlook: list[StepOutlook]) -> str:
    """The dry run's words for what a budget skips: 'the compile; fprop 3 of 16 items; ...'."""
    whole = {"ceilings": "the ceilings", "compile": "the compile (each kernel compiles when first run)"}
    parts = []
    for step in outlook:
        if step.name in whole and not step.runs:
            parts.append(whole[step.name])
        elif step.cut:
            parts.append("the end of the compile (what it had not compiled compiles when first run)")
        elif step.name not in whole and step.runs < step.items:
            parts.append(f"{step.name} {step.items - step.runs} of {step.items} items")
    return "; ".join(parts) or "nothing (only the reserve for the last flush is short)"


def plan_fits(plan: list[StepPlan], budget_s: float, worker_start_s: float) -> bool:
    """Whether the run's budget rules (budget.py) would run every step and item at these estimates."""
    return complete(play_out(plan, worker_start_s, budget_s))


def render_plan(
    spec: CampaignSpec, plan: list[StepPlan], costs: CostModel, budget_s: float, where: str
) -> str:
    total = sum(step.estimate_s for step in plan)
    lines = [
        f"triton-conv campaign '{spec.name}' for {where}: {spec.dtype}, channels_last, "
        f"{spec.candidates} candidate configs per (layer, N, pass); budget {budget_s:g} s",
        "",
        f"{'step':<10} {'items':>6} {'compiles':>9} {'estimate s':>11}  what",
    ]
    for step in plan:
        compiles = str(step.compiles) if step.compiles else "-"
        lines.append(f"{step.name:<10} {step.items:>6} {compiles:>9} {step.estimate_s:>11.1f}  {step.what}")
    fits = plan_fits(plan, budget_s, costs.worker_start_s)
    verdict = "fits" if fits else "DOES NOT FIT"
    lines.append(f"{'total':<10} {'':>6} {'':>9} {total:>11.1f}  {verdict} the budget of {budget_s:g} s")
    if not fits:
        lines.append(
            f"At {budget_s:g} s, with every estimate exact, the run's budget rules would skip "
            f"{cut_steps(play_out(plan, costs.worker_start_s, budget_s))}; a real run skips by its own "
            f"pace and lists each skip in campaign.json. All of it fits a budget of "
            f"{smallest_budget(plan, costs.worker_start_s)} s (the rules keep {RESERVE_S:g} s for the "
            "last flush and give the compile at most half of what is left)."
        )
    lines += [
        "",
        "Cost model (triton_conv/campaign/costs.py; the first GPU run checks it: `triton-conv report`):",
        f"- compile, one variant on one core: {costs.compile_s} s; {costs.workers} workers, "
        f"{costs.worker_start_s:.0f} s to start one, {costs.record_per_launch_s * 1e3:g} ms to record "
        "a launch",
        f"- a kernel's time: the model's prediction x {costs.kernel_slowdown:g} (at least "
        f"{costs.min_kernel_s * 1e6:.0f} µs); a measurement: {spec.rounds} rounds of at least "
        f"{spec.min_round_s * 1e3:g} ms, device time by CUDA-graph replay and eager time; cuDNN's "
        f"algorithm search {costs.cudnn_search_s * 1e3:g} ms per shape and pass",
        f"- first launch of a compiled variant {costs.load_s * 1e3:.0f} ms (in the check's process, which "
        f"takes {costs.check_process_s:.0f} s to start, and again in the campaign's); float64 reference "
        f"{costs.reference_s * 1e3:.0f} ms + FLOPs at {costs.reference_flops / 1e12:g} TFLOP/s",
        f"- not planned: a new check process ({costs.check_process_s:.0f} s) for each config that faults "
        f"the GPU, at most {FAULTS_BEFORE_SKIP} per config",
        f"- Inductor: {costs.peer_first_s:.0f} s for the first shape, {costs.peer_shape_s:.0f} s each after",
        f"- training: {costs.training_build_s:.0f} s to build, per step the model's convolutions x "
        f"{costs.kernel_slowdown:g} + {costs.training_overhead_s * 1e3:.0f} ms",
    ]
    return "\n".join(lines)
