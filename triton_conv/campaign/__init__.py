"""One GPU lease, one command: `triton-conv campaign --budget-s SECONDS --out DIR`.

The headline measurements in one run that fits a short lease: provenance and the machine's ceilings;
every kernel variant compiled ahead on all cores; every candidate checked against torch; then, in
order, fprop against cuDNN and Inductor's template on ResNet-50's layers, dgrad and wgrad, the
batching curve, a 1920x1080 layer, a U-Net-style decoder's transposed convolutions against cuDNN's
(the view's kernels: runners.py) and a converted ResNet-50 training step, each step flushed to DIR.

    spec.py         what is measured (the H200 campaign and the CPU-sized one)
    costs.py        the cost model and the plan (`--dry-run` prints it)
    precompile.py   recording the launches and compiling them on every core (compile_child.py:
                    the child processes' work; variants.py: the launches and kernel variants)
    target.py       the target GPU stood in for where there is none (its driver, its tensors)
    runners.py      the timed callables beside benchmarking's
    timing.py       device time (CUDA-graph replay) and eager time, pytest-benchmark stats
    limits.py       an item's time limit, held back while a CUDA graph is captured
    setup_steps.py  ceilings, compile, check
    timing_steps.py the timed steps
    records.py      the timings in pytest-benchmark's form
    output.py       the folder and its files
    model_link.py   the only place that asks the batching model
    planning.py     the launches, the compile target, the dry run's plan
    budget.py       the budget's rules: a step's deadline, played out on the plan by the dry run
    run.py          the run: budget, order, flushing
"""

from .planning import dry_run
from .run import Campaign, run_campaign
from .spec import SPECS, CampaignSpec, h200, tiny

__all__ = ["SPECS", "Campaign", "CampaignSpec", "dry_run", "h200", "run_campaign", "tiny"]
