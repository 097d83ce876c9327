"""The budget's rules, shared by the run (run.py) and the dry run (costs.py), which plays them out on
the plan's estimates to say which steps and items a budget would skip before anything runs.

The rules themselves are in run.py's docstring; the functions here are the part of them that depends
on the plan alone: a step's deadline, and whether an item still fits before it."""

from __future__ import annotations

import math
from typing import NamedTuple

from .spec import CHECKED_STEPS

RESERVE_S = 2.0  # kept at the end for the last flush
OVERRUN_CAP = {"peer": 1.5}  # such a step's deadline: at most its start + this x its estimate


def step_deadline(plan: list[tuple[str, float]], name: str, elapsed_s: float, budget_s: float) -> float:
    """Seconds into the run by which step `name` must be done, given the plan's (step, estimate)
    pairs in order: the budget less the later steps' estimates while they fit, else the same fraction
    of its estimate as every remaining step gets; a step in OVERRUN_CAP never more than that many
    times its estimate. A step not in the plan may run to the budget's end."""
    names = [step for step, _ in plan]
    if name not in names:
        return budget_s
    estimates = [seconds for _, seconds in plan]
    mine, later = estimates[names.index(name)], sum(estimates[names.index(name) + 1 :])
    left = budget_s - elapsed_s
    if mine + later <= left:
        deadline = budget_s - later
    else:
        deadline = elapsed_s + mine * max(0.0, left) / (mine + later)
    if name in OVERRUN_CAP:
        deadline = min(deadline, elapsed_s + OVERRUN_CAP[name] * mine)
    return deadline


def item_deadline(plan, name: str, elapsed_s: float, budget_s: float) -> float:
    """The step's deadline for its items: never inside the last flush's reserve, where an item that
    started could only be stopped at once."""
    return min(step_deadline(plan, name, elapsed_s, budget_s), budget_s - RESERVE_S)


class StepOutlook(NamedTuple):
    """What a budget leaves of one step, played out at the plan's estimates."""

    name: str
    items: int
    runs: int  # items that would start (for the ceilings and the compile: 1 or 0)
    cut: bool = False  # the compile: stopped at its time limit (half of what is left) before its end


WHOLE_STEPS = ("ceilings", "compile", "finish")  # steps without items of their own


def play_out(steps: list, worker_start_s: float, budget_s: float) -> list[StepOutlook]:
    """The run's budget rules applied to the plan (`steps`: costs.StepPlan, each with its items'
    estimates), as if every estimate were exact: the ceilings run when their estimate fits, the
    compile when half of what is left would start a worker (stopped at that half), and each later
    step runs its items in order while each still ends before the step's deadline (a later, shorter
    item may still fit after a longer one is skipped, as in the run). A step's start cost (the check's
    child process, Inductor's first compile) falls on the first of its items that runs. An item of a
    CHECKED_STEPS step whose check was skipped is skipped at no cost (no candidate of it passed a
    check; Inductor's peer step has no check and does not wait for one). A real run differs by how
    far its steps over- or under-run their estimates."""
    plan = [(step.name, step.estimate_s) for step in steps]
    elapsed, outlook = 0.0, []
    planned_checks, checked = set(), set()
    for step in steps:
        cut = False
        if step.name == "ceilings":
            runs = int(step.estimate_s <= budget_s - RESERVE_S - elapsed)
            elapsed += step.estimate_s * runs
        elif step.name == "compile":
            half = (budget_s - elapsed) / 2
            runs, cut = int(half >= worker_start_s), step.estimate_s > half
            elapsed += min(step.estimate_s, half) * runs
        elif step.name == "finish":
            runs = 1
        else:
            deadline, runs = item_deadline(plan, step.name, elapsed, budget_s), 0
            ids = step.item_ids or (None,) * len(step.item_seconds)
            for seconds, item_id in zip(step.item_seconds, ids):
                if step.name in CHECKED_STEPS and item_id in planned_checks and item_id not in checked:
                    continue
                seconds += step.start_s if runs == 0 else 0.0
                if elapsed + seconds <= deadline:
                    elapsed, runs = elapsed + seconds, runs + 1
                    checked.update([item_id] if step.name == "check" else [])
            if step.name == "check":
                planned_checks.update(ids)
        outlook.append(StepOutlook(step.name, step.items, runs, cut and bool(runs)))
    return outlook


def complete(outlook: list[StepOutlook]) -> bool:
    """Every step and item runs whole."""
    return all(
        not step.cut and step.runs == (1 if step.name in WHOLE_STEPS else step.items) for step in outlook
    )


def smallest_budget(steps: list, worker_start_s: float) -> int:
    """The fewest whole seconds in which the play-out runs everything: the estimates' total, and
    more where the last flush's reserve exceeds the flush's estimate or the compile's half-of-what-is-
    left limit binds."""
    total = math.ceil(sum(step.estimate_s for step in steps))
    limit = 2 * total + 100  # the compile's limit binds below ceilings + 2 x compile <= 2 x total
    for budget in range(total, limit):
        if complete(play_out(steps, worker_start_s, budget)):
            return budget
    raise ValueError(f"no budget up to {limit} s runs the whole plan")  # a bug: say so
