"""The campaign as one run: its state, the budget, the steps in order, the files after each step.

The budget: the plan estimates every step (costs.py). When a step starts, if its estimate and the
later steps' still fit in what is left, it may run until
    start + budget - (estimates of the later steps, the final flush included),
so a step that runs long eats the slack, never the later steps' time; if they no longer fit (the
run is slower than the plan, or the budget smaller), every remaining step gets the same fraction of
its estimate. The exception is a step in budget.OVERRUN_CAP (the Inductor peer's: its estimate is the cost
model's least known term, and the dgrad, wgrad and training results come after it), which never gets
more than that many times its estimate. No deadline reaches into the last budget.RESERVE_S seconds,
kept for the last flush (budget.py holds these rules; the dry run plays them out on the plan). Before
each item the step asks whether the item, at its estimate scaled by how far this step's items have
over- or under-run so far, still fits; one that does not is skipped and listed with the reason (so
are the ceilings, when their estimate does not fit, and the compile, when half of what is left
would not start a worker). An item still running after ITEM_LIMIT_FACTOR times its estimate (at least
MIN_ITEM_LIMIT_S; a step's last item, until its step's deadline), or at the budget's end, is stopped
(limits.py) and listed as an error: an Inductor compile that hangs costs its limit, not the lease;
once STOPPED_IN_A_ROW items of a step in a row have been stopped so, the step's estimates are wrong on
this machine, and its remaining items are skipped (listed) rather than each spending its limit. The
check step counts its stops per kernel pass: two hung weight-gradient configs (each is then never
launched again, check_process.py) give up the weight gradient's checks, not the forward pass's.

A failure costs only what failed: an item's exception (or its time limit) is listed under its step
and the step goes on to the next item; a step's own work failing (the ceilings, the compile, the plan,
a step's bookkeeping) is listed under the step with item "(step)", its traceback goes to the log, and
the campaign goes on to the next step. Only an interruption (KeyboardInterrupt, SystemExit) ends it.
The check runs in a child process (check_child.py): a config that faults the GPU, which no exception
handler here could undo, costs that config and a new child.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections import Counter

import torch

from .. import provenance, tuning
from ..runtime import interpreter_active
from . import budget, output, setup_steps, timing_steps
from .budget import RESERVE_S
from .check_child import compile_event
from .check_process import CheckProcess
from .costs import CostModel, Estimator
from .limits import ItemTimeout, reload_interrupted_loads, time_limit
from .output import Output
from .planning import compile_target, launch_jobs
from .precompile import usable_cores
from .spec import CampaignSpec, plan_items

FLUSH_EVERY_S = 15.0
ITEM_LIMIT_FACTOR = 3.0  # an item is stopped after this many times its estimate...
MIN_ITEM_LIMIT_S = 20.0  # ...or this many seconds, whichever is more, and never past the budget
STOPPED_IN_A_ROW = 2  # items of a step stopped at their limits one after another: skip the rest


STEP = "(step)"  # the item of an error in a step's own work, not in one of its items


def _whole_step(item) -> None:
    """The group of every item of a step, for counting stops in a row."""
    return None


class Campaign:
    def __init__(
        self, spec: CampaignSpec, out_dir: str, budget_s: float, *, costs=None, workers=None, echo=sys.stdout
    ):
        self.spec, self.budget_s = spec, budget_s
        self.started = time.monotonic()
        self.on_gpu = torch.cuda.is_available() and not interpreter_active()
        self.device = torch.device("cuda" if self.on_gpu else "cpu")
        cores = min(workers, usable_cores()) if workers else usable_cores()  # more would only thrash
        self.costs = costs or (
            CostModel(workers=cores) if self.on_gpu else CostModel.cpu(workers=min(cores, 2))
        )
        self.estimator = Estimator(spec, self.costs, self.on_gpu)
        self.out = Output(out_dir, echo)
        self.items = plan_items(spec)
        self.state = {
            "campaign": spec.name, "status": output.RUNNING, "budget_s": budget_s,
            "on_gpu": self.on_gpu, "device": str(self.device), "cost_model": self.costs.as_dict(),
            "plan": [], "steps": [], "skipped": [], "errors": [], "triton_cache": {},
        }  # fmt: skip
        self.records: list[dict] = []
        self.autotune_rows: list[dict] = []
        self.checks: list[dict] = []
        self.checked: dict[str, tuple] = {}  # item id -> candidates that passed the check
        self.checker: CheckProcess | None = None  # the check step's child process
        self.compiles = Counter()  # in this process, triton-conv kernels: 'loaded' / 'compiled here'
        self.unplanned: list[str] = []
        self.step_name = "start"
        self.last_flush = time.monotonic()
        self._publish()

    # --- bookkeeping ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _publish(self) -> None:
        from .records import timings_file

        self.state["elapsed_s"] = round(self.elapsed(), 1)
        cache = self.state.setdefault("triton_cache", {})
        cache.update(in_campaign_process=dict(self.compiles), unplanned_compiles=self.unplanned[:50])
        self.out.set("campaign", self.state)
        self.out.set("timings", timings_file(self))
        self.out.set("autotune", {"rows": self.autotune_rows})
        self.out.set("checks", {"checks": self.checks})

    def flush(self) -> None:
        self._publish()
        self.out.flush()
        self.last_flush = time.monotonic()

    def skip(self, item_id: str, why: str) -> None:
        self.state["skipped"].append({"step": self.step_name, "item": item_id, "why": why})

    def skip_step(self, why: str) -> None:
        """The step's own work skipped (not one of its items)."""
        self.skip(STEP, why)

    def time_left(self) -> float:
        """Seconds of the budget left before the last flush's reserve."""
        return self.budget_s - RESERVE_S - self.elapsed()

    def error(self, item_id: str, failure: BaseException) -> None:
        text = f"{type(failure).__name__}: {failure}"[:600]
        self.state["errors"].append({"step": self.step_name, "item": item_id, "error": text})
        self.out.log(f"ERROR {item_id}: {text}")
        if self.on_gpu and isinstance(failure, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()

    def _on_compile(self, *, src, metadata, cache_hit, **_) -> None:
        """Triton's compilation listener: counts triton-conv's kernels loaded from the cache (compiled
        ahead) against those compiled here, which the compile step missed. Triton calls it inside
        every compile, Inductor's too: it takes any further keyword a later Triton may pass."""
        event = compile_event(src, metadata, cache_hit)
        if event is not None:  # not Inductor's kernels, for instance
            self.count_compile(*event)

    def count_compile(self, name: str, hash_prefix: str, cache_hit: bool) -> None:
        """One of triton-conv's kernels loaded from Triton's cache or compiled, here or in the check's
        process (which reports its compiles)."""
        self.compiles["loaded" if cache_hit else "compiled here"] += 1
        if not cache_hit:
            self.unplanned.append(f"{self.step_name}: {name} {hash_prefix}")

    # --- the loop ------------------------------------------------------------------------------------
    def step_deadline(self, name: str) -> float:
        """Seconds into the run by which step `name` must be done (budget.step_deadline)."""
        plan = [(p["step"], p["estimate_s"]) for p in self.state["plan"]]
        return budget.step_deadline(plan, name, self.elapsed(), self.budget_s)

    def guarded(self, step: str, work) -> bool:
        """Run a step's own work; a failure is listed (item STEP) and logged with its traceback, and
        the campaign goes on. True when `work` returned."""
        self.step_name = step
        try:
            work()
            return True
        except Exception as failure:
            self.error(STEP, failure)
            self.out.log(traceback.format_exc()[-3000:])
            return False

    def run_step(self, name: str, items: list, run_item, estimate, group=_whole_step) -> None:
        """`group(item)`: the items whose stops in a row give up the rest of them (the whole step's by
        default)."""
        self.guarded(name, lambda: self._run_items(name, items, run_item, estimate, group))
        self.flush()

    def _run_items(self, name: str, items: list, run_item, estimate, group=_whole_step) -> None:
        self.step_name = name
        estimates = [(p["step"], p["estimate_s"]) for p in self.state["plan"]]
        deadline = budget.item_deadline(estimates, name, self.elapsed(), self.budget_s)
        started, planned, spent, done = self.elapsed(), 0.0, 0.0, 0
        stops = Counter()  # per group: its last items stopped at their limits, in a row
        before = Counter(self.compiles)
        for item in items:
            kind = group(item)
            stopped = stops[kind]
            if stopped >= STOPPED_IN_A_ROW:
                whose = "" if kind is None else f" {kind}"
                self.skip(
                    item.id, f"the step's last {stopped}{whose} items were stopped at their time limits"
                )
                continue
            try:
                guess = estimate(item)
            except Exception as failure:  # the dry run computes the same estimates: a bug, say so
                self.error(item.id, failure)
                continue
            pace = min(4.0, max(0.5, spent / planned)) if planned > 1.0 else 1.0
            began = self.elapsed()  # one reading for the test and the limit: the limit is then positive
            if began + guess * pace > deadline:
                self.skip(item.id, f"budget: {guess * pace:.1f} s more would pass the step's deadline "
                                   f"({deadline:.0f} s into the run)")  # fmt: skip
                continue
            limit = max(ITEM_LIMIT_FACTOR * guess, MIN_ITEM_LIMIT_S)
            if item is items[-1]:  # no later item of its step to keep time for (the training step's one)
                limit = max(limit, deadline - began)
            limit = min(limit, self.budget_s - RESERVE_S - began)
            timed = None
            try:
                with time_limit(limit):
                    timed = run_item(self, item)
                done += timed is not False  # False: the item skipped itself and said why
                stops[kind] = 0
            except (Exception, ItemTimeout) as failure:  # one item's failure must not end the campaign
                self.error(item.id, failure)
                stops[kind] = stopped + 1 if isinstance(failure, ItemTimeout) else 0
                if isinstance(failure, ItemTimeout) and reload_interrupted_loads():
                    self.out.log(
                        f"{item.id}: its time limit cut a kernel's load; it loads again when next launched"
                    )
            if timed is not False:  # an item with nothing to time (never checked) says nothing of pace
                spent += self.elapsed() - began
                planned += guess
            if time.monotonic() - self.last_flush > FLUSH_EVERY_S:
                self.flush()
        plan = next((p for p in self.state["plan"] if p["step"] == name), {})
        own = (STEP, "workers")  # errors of the step itself, not of one of its items
        failed = sum(1 for e in self.state["errors"] if e["step"] == name and e["item"] not in own)
        self.state["steps"].append({
            "step": name, "estimate_s": plan.get("estimate_s"),
            "actual_s": round(self.elapsed() - started, 2), "items": len(items), "done": done,
            "skipped": len(items) - done - failed, "failed": failed, "deadline_s": round(deadline, 1),
            "kernels_loaded": self.compiles["loaded"] - before["loaded"],
            "kernels_compiled_here": self.compiles["compiled here"] - before["compiled here"],
        })  # fmt: skip
        self.out.log(f"step {name}: {done} of {len(items)} items in {self.elapsed() - started:.1f} s "
                     f"(estimated {plan.get('estimate_s', 0):.1f} s)")  # fmt: skip

    def set_plan(self, plan) -> None:
        self.state["plan"] = [
            {"step": p.name, "items": p.items, "compiles": p.compiles, "estimate_s": round(p.estimate_s, 2),
             "what": p.what}
            for p in plan
        ]  # fmt: skip
        for entry in self.state["steps"]:  # steps that ran before the plan was known (the ceilings)
            entry.setdefault(
                "estimate_s", next((p.estimate_s for p in plan if p.name == entry["step"]), None)
            )

    def run(self) -> dict:
        from triton import knobs

        log = self.out.log
        log(f"campaign {self.spec.name}: budget {self.budget_s:.0f} s on {self.device}")
        log(f"output: {self.out.folder}")
        self.flush()
        previous_listener = knobs.compilation.listener
        # The ops launch what the campaign pinned; a shape it did not pin gets the default config (a
        # compile the step missed, counted) rather than a whole search timed inside a measurement.
        # Triton's cache folder is named before the compile workers start: Inductor (the peer step)
        # points an unset TRITON_CACHE_DIR at a folder of its own (torch 2.11's CachingAutotuner), and
        # every later compile and launcher build of this process would then miss what they wrote.
        # And its ptxas: Inductor points an unset TRITON_PTXAS_PATH at torch's own (13.0 beside Triton
        # 3.6's 12.8 in torch 2.11+cu130) on its first compile, after which this process would build
        # kernels with another ptxas than the compile step's, under cache keys that still name the first.
        pinned = {tuning.ENV_AUTOTUNE: "0", "TRITON_CACHE_DIR": knobs.cache.dir}
        ptxas_path, ptxas_version = provenance.ptxas()
        if ptxas_path is not None:  # Inductor's peer kernels too: the same ptxas as ours
            pinned["TRITON_PTXAS_PATH"] = ptxas_path
            log(f"ptxas {ptxas_version} ({ptxas_path}) for every kernel built, Inductor's included")
        previous_env = {name: os.environ.get(name) for name in pinned}
        os.environ.update(pinned)
        try:
            target = compile_target(self.spec, self.on_gpu)
            jobs = launch_jobs(self.spec, self.items)
            setup_steps.ceilings_step(self)
            setup_steps.compile_and_plan(self, jobs, target)
            knobs.compilation.listener = self._on_compile
            setup_steps.check_step(self)
            timing_steps.run_all(self)
            cut = any(s["why"].startswith("budget") for s in self.state["skipped"])
            flawed = self.state["errors"] or self.state["skipped"]
            self.state["status"] = output.CUT if cut else output.FLAWED if flawed else output.COMPLETE
        except BaseException as failure:
            why = ": ".join(filter(None, (type(failure).__name__, str(failure))))  # Ctrl-C has no text
            self.state["status"] = f"{output.FAILED_STATUS}{self.step_name}: {why}"[:500]
            self.state["traceback"] = traceback.format_exc()[-4000:]
            log(self.state["status"])
            if not isinstance(failure, Exception):
                raise
        finally:
            knobs.compilation.listener = previous_listener
            for name, value in previous_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self.state["timings"] = len(self.records)
            log(f"campaign {self.state['status']}: {len(self.records)} timings, "
                f"{len(self.state['skipped'])} items skipped, {self.elapsed():.1f} s")  # fmt: skip
            self._publish()
            self.out.close()
        return self.state


def run_campaign(spec: CampaignSpec, out_dir: str, budget_s: float, **options) -> dict:
    """Run the campaign into `out_dir` within `budget_s` seconds; returns campaign.json's content."""
    return Campaign(spec, out_dir, budget_s, **options).run()
