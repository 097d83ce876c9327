"""The campaign's budget at its edges: an item that would start inside the reserve kept for the last
flush is skipped, not started with a negative limit; a huge budget (the CLI accepts any finite one)
is unlimited, not an OverflowError from setitimer; a budget too small for the ceilings or for
starting a compile worker skips them instead of running past it; every compile worker shares the
compile's one limit; and an --out holding a folder named like one of the files is refused first."""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import time
from types import SimpleNamespace

import pytest

from triton_conv import cli
from triton_conv.campaign import precompile, run, setup_steps, spec, timing_steps
from triton_conv.campaign.costs import CostModel, DryRun
from triton_conv.campaign.limits import reload_interrupted_loads, time_limit
from triton_conv.campaign.output import FILES, FIRST_FIELDS, Output, check_out_folder


def _campaign(tmp_path, budget_s: float, **options) -> run.Campaign:
    return run.Campaign(spec.tiny(), str(tmp_path / "out"), budget_s=budget_s, echo=None, **options)


def _one_item_step(campaign: run.Campaign, monkeypatch, estimate_s: float = 0.01) -> tuple[list, list]:
    """Step 'fprop' alone in the plan, one item of `estimate_s`: (the limits it got, the items started)."""
    limits, started = [], []

    @contextlib.contextmanager
    def recorded(seconds):
        limits.append(seconds)
        yield

    monkeypatch.setattr(run, "time_limit", recorded)
    campaign.state["plan"] = [{"step": "fprop", "estimate_s": 1.0}]
    item = SimpleNamespace(id="fprop:an item")
    campaign._run_items("fprop", [item], lambda c, i: started.append(i.id), lambda i: estimate_s)
    campaign.out.close()
    return limits, started


@pytest.mark.parametrize("left_s", [run.RESERVE_S - 1.0, run.RESERVE_S - 0.01, 0.0, -5.0])
def test_an_item_that_would_start_in_the_reserve_is_skipped_for_the_budget(tmp_path, monkeypatch, left_s):
    """It was started with a limit of budget - reserve - now < 0, stopped 10 ms later and listed as
    an error ("ItemTimeout: stopped after -1 s"), in a real `campaign --spec tiny --budget-s 5`."""
    campaign = _campaign(tmp_path, 100.0)
    campaign.started = time.monotonic() - (100.0 - left_s)
    limits, started = _one_item_step(campaign, monkeypatch)
    assert limits == [] and started == [] and campaign.state["errors"] == []
    assert [s["why"].split(":")[0] for s in campaign.state["skipped"]] == ["budget"]
    assert campaign.state["steps"][-1]["deadline_s"] <= 100.0 - run.RESERVE_S


@pytest.mark.parametrize("left_s", [run.RESERVE_S + 0.5, 30.0])
def test_an_item_that_starts_gets_a_limit_that_ends_before_the_reserve(tmp_path, monkeypatch, left_s):
    campaign = _campaign(tmp_path, 100.0)
    campaign.started = time.monotonic() - (100.0 - left_s)
    limits, started = _one_item_step(campaign, monkeypatch)
    assert started == ["fprop:an item"] and len(limits) == 1
    assert 0 < limits[0] <= left_s - run.RESERVE_S


@pytest.mark.parametrize("budget_s", [1e10, 1e300])
def test_a_huge_budget_is_unlimited_not_a_setitimer_overflow(tmp_path, budget_s):
    """The step's last item may run until its step's deadline, ~budget_s away: setitimer raised
    OverflowError ("timestamp out of range for platform time_t") and the item failed unstarted."""
    with time_limit(budget_s):  # the alarm is set (and cleared) without an error
        pass
    campaign = _campaign(tmp_path, budget_s)
    campaign.state["plan"] = [{"step": "training", "estimate_s": 1.0}]
    item = SimpleNamespace(id="training:resnet50:N2")
    campaign._run_items("training", [item], lambda c, i: True, lambda i: 0.01)
    campaign.out.close()
    assert campaign.state["errors"] == [] and campaign.state["steps"][-1]["done"] == 1


class _Calls:
    def __init__(self, monkeypatch):
        self.steps: list[str] = []
        # cuDNN's settings are process-wide state
        monkeypatch.setattr(setup_steps, "use_comparable_settings", lambda tf32: None)
        monkeypatch.setattr(setup_steps, "ceilings", lambda campaign: self.steps.append("ceilings"))

        def compile_variants(jobs, workers, target, timeout_s=None):
            self.steps.append("compile")
            return [], {"results": [], "workers": workers, "wall_s": 0.0, "worker_s": [], "failures": [],
                        "cuda_utilities": None, "record_s": []}  # fmt: skip

        monkeypatch.setattr(setup_steps, "record_and_compile", compile_variants)
        for step_module, name in ((setup_steps, "check_item"), (timing_steps, "pass_item"),
                                  (timing_steps, "peer_item"), (timing_steps, "training_item")):  # fmt: skip
            monkeypatch.setattr(step_module, name, lambda campaign, item: self.steps.append(item.step))


def test_a_budget_too_small_for_anything_runs_nothing_and_says_so(tmp_path, monkeypatch):
    """--budget-s 0.001 ran the ceilings and gave the compile's workers a second each: 2.4 s."""
    calls = _Calls(monkeypatch)
    state = _campaign(tmp_path, 0.001).run()
    assert calls.steps == [] and state["status"] == "cut by the budget" and state["errors"] == []
    skipped = {(s["step"], s["item"]) for s in state["skipped"] if s["why"].startswith("budget")}
    assert {("ceilings", run.STEP), ("compile", run.STEP)} <= skipped
    assert all(step["done"] == 0 for step in state["steps"])
    # the run's facts are recorded all the same (with the ceilings, they went missing), so the report
    # says what ran where instead of refusing the folder
    assert {"date", "torch", "triton", "gpu"} <= set(state["provenance"])


def test_a_compile_that_could_not_start_a_worker_is_skipped(tmp_path, monkeypatch):
    calls = _Calls(monkeypatch)
    costs = CostModel(**{**CostModel.cpu(workers=1).as_dict(), "worker_start_s": 60.0})
    state = _campaign(tmp_path, 30.0, costs=costs).run()  # half of what is left: < 15 s
    assert calls.steps[0] == "ceilings" and "compile" not in calls.steps
    assert [s["why"].split(":")[0] for s in state["skipped"] if s["step"] == "compile"] == ["budget"]


def test_every_compile_worker_shares_the_compiles_one_limit(monkeypatch):
    """Each worker after the first that ran past the limit was given one more second: with 16
    workers, 16 s past a limit set to keep half of the budget for the rest."""
    waits = []

    class SlowChild:
        def __init__(self, mode, request):
            pass

        def result(self, timeout_s=None):
            waits.append(timeout_s)
            time.sleep(timeout_s)
            raise TimeoutError("precompile child still running: killed")

    monkeypatch.setattr(precompile, "Child", SlowChild)
    started = time.monotonic()
    variants, report = precompile.record_and_compile([], workers=4, timeout_s=0.2)
    assert time.monotonic() - started < 1.0
    assert waits[0] == pytest.approx(0.2, abs=0.05) and waits[1:] == [0.0] * 3
    assert variants == [] and len(report["failures"]) == 4


@pytest.mark.parametrize("name", sorted(FILES.values()))
def test_out_holding_a_folder_named_like_an_output_is_refused_before_the_run(tmp_path, name):
    """Output unlinked it: an IsADirectoryError traceback. Refused as the CLI refuses an --out it
    cannot use, before anything is removed or run."""
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    earlier = [other for other in FILES.values() if other != name]
    for other in earlier:  # an earlier campaign's files: still there after the refusal
        (out / other).write_text("earlier")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["campaign", "--spec", "tiny", "--budget-s", "60", "--out", str(out)])
    message = str(stopped.value)
    assert message == f"triton-conv campaign: --out {out} cannot hold the files: {out / name} is a folder"
    assert (out / name).is_dir() and all((out / other).read_text() == "earlier" for other in earlier)
    with pytest.raises(SystemExit, match="cannot hold the files"):
        Output(str(out), echo=None)


def test_workers_are_capped_at_the_cores(tmp_path, monkeypatch):
    """--workers 100000 started a compile process per worker at once on the GPU machine (only the
    CPU's run was capped), and the dry run planned 473 of them, each as fast as a core."""
    monkeypatch.setattr(run, "usable_cores", lambda: 3)
    monkeypatch.setattr(run.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(run, "interpreter_active", lambda: False)
    campaign = _campaign(tmp_path, 100.0, workers=100000)
    campaign.out.close()
    assert campaign.costs.workers == 3
    import triton_conv.campaign as campaign_package

    planned = []

    def dry_run(spec, budget, **options):
        planned.append(options["costs"])
        return DryRun("", fits=True)

    monkeypatch.setattr(campaign_package, "dry_run", dry_run)
    assert cli.main(["campaign", "--dry-run", "--workers", "100000"]) == 0
    assert [costs.workers for costs in planned] == [16]  # the H200 machine's cores


def test_a_dry_run_that_does_not_fit_says_what_the_run_would_do_and_fails(monkeypatch, capsys):
    """It printed the whole plan, 'DOES NOT FIT', exit 0: a budget could not be sized from it."""
    from triton_conv.campaign import costs

    plan = [
        costs.StepPlan("fprop", 10, 0, 30.0, "passes", (3.0,) * 10),
        costs.StepPlan("finish", 1, 0, 2.0, "files"),
    ]
    text = costs.render_plan(spec.tiny(), plan, CostModel.cpu(), 8.0, "a test")
    # fprop's deadline: 30/32 of the 8 s, then no later than the flush's reserve (6 s): two items
    assert "DOES NOT FIT the budget of 8 s" in text and "would skip fprop 8 of 10 items;" in text
    assert "fits a budget of 32 s" in text
    assert "fits the budget of 0.001 s" not in costs.render_plan(
        spec.tiny(), plan, CostModel.cpu(), 1e-3, "x"
    )
    import triton_conv.campaign as campaign

    def dry_run(spec, budget, **options):
        text = costs.render_plan(spec, plan, options["costs"] or CostModel.cpu(), budget, "x")
        return costs.DryRun(text, costs.plan_fits(plan, budget, 6.0))

    monkeypatch.setattr(campaign, "dry_run", dry_run)
    assert cli.main(["campaign", "--dry-run", "--budget-s", "8"]) == 1
    assert cli.main(["campaign", "--dry-run", "--budget-s", "33"]) == 0
    assert "budget of 0.001 s" in costs.render_plan(spec.tiny(), plan, CostModel.cpu(), 1e-3, "x")
    capsys.readouterr()


@pytest.mark.parametrize(
    "state, status",
    [({"status": "cut by the budget", "timings": 0}, 1), ({"status": "complete", "timings": 0}, 1),
     ({"status": "cut by the budget", "timings": 3}, 0), ({"status": "failed in fprop", "timings": 3}, 1)],
)  # fmt: skip
def test_a_campaign_that_timed_nothing_exits_1(tmp_path, monkeypatch, capsys, state, status):
    """`--budget-s 5` measured nothing, skipped 30 items and exited 0."""
    import triton_conv.campaign as campaign

    monkeypatch.setattr(campaign, "run_campaign", lambda *args, **kwargs: state)
    assert cli.main(["campaign", "--spec", "tiny", "--out", str(tmp_path / "out")]) == status
    assert ("nothing was timed" in capsys.readouterr().out) == (state["timings"] == 0)


def test_inductors_workers_that_will_not_stop_are_killed_not_waited_for(monkeypatch):
    """Inductor's shutdown waits up to 300 s for its pool's process (a compile in flight first),
    outside any item's limit: after the peer step that would be dgrad's and wgrad's time. Past
    STOP_WORKERS_S the pool's process is killed and the step is told; a shutdown that ends in time
    is silent."""
    import subprocess
    import sys

    from torch._inductor import async_compile

    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(async_compile, "_pool_set", [SimpleNamespace(process=stuck)])
    monkeypatch.setattr(async_compile, "shutdown_compile_workers", lambda: time.sleep(60))
    monkeypatch.setattr(timing_steps, "STOP_WORKERS_S", 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="had not stopped after 0.5 s: killed"):
            timing_steps.stop_inductor_workers()
        assert stuck.wait(timeout=10) == -9 and time.monotonic() - started < 5
    finally:
        stuck.kill()
    calls = []
    monkeypatch.setattr(async_compile, "shutdown_compile_workers", lambda: calls.append("stopped"))
    timing_steps.stop_inductor_workers()
    assert calls == ["stopped"]


def test_the_dry_run_plays_the_budget_rules_out_on_the_plan():
    """A dry run at too small a budget said only that each step got a fraction of its estimate; it
    now names what the run's own rules (campaign/budget.py) would skip at the plan's estimates."""
    from triton_conv.campaign import budget, costs

    def plan(*steps):
        return [costs.StepPlan(name, len(each) or 1, 0, sum(each) or seconds, "", each)
                for name, seconds, each in steps]  # fmt: skip

    steps = plan(
        ("ceilings", 14.0, ()), ("compile", 30.0, ()), ("check", 0, (10.0, 1.0, 1.0)),
        ("fprop", 0, (5.0, 20.0, 5.0)), ("finish", 2.0, ()),
    )  # fmt: skip
    total = sum(step.estimate_s for step in steps)
    assert [o.runs for o in budget.play_out(steps, 6.0, total + budget.RESERVE_S)] == [1, 1, 3, 3, 1]
    # 60 s: the ceilings run (14 s), the compile is stopped at half of the 46 s left (23 s); the check's
    # deadline is 37 + 12 x 23/44 ≈ 43.3 s: its 10 s item is skipped, the two 1 s items run; fprop's
    # is 39 + 30 x 21/32 cut to the reserve, 58 s: 5 s and 5 s run, the 20 s item is skipped.
    outlook = budget.play_out(steps, 6.0, 60.0)
    assert [o.runs for o in outlook] == [1, 1, 2, 2, 1]
    assert costs.cut_steps(outlook) == (
        "the end of the compile (what it had not compiled compiles when first run); "
        "check 1 of 3 items; fprop 1 of 3 items"
    )
    # 20 s: the ceilings fit (14 <= 18); half of the 6 s left would not start a worker (6 s).
    outlook = budget.play_out(steps, 6.0, 20.0)
    assert [o.runs for o in outlook][:2] == [1, 0]
    assert costs.cut_steps(outlook).startswith("the compile (each kernel compiles when first run);")
    outlook = budget.play_out(steps, 6.0, 10.0)
    assert costs.cut_steps(outlook).startswith("the ceilings; the compile")
    # a timed item whose check was skipped has nothing to time: skipped at no cost, the rest run
    steps = [
        costs.StepPlan("check", 3, 0, 7.0, "", (5.0, 1.0, 1.0), ("x", "y", "z")),
        costs.StepPlan("fprop", 3, 0, 6.0, "", (2.0, 2.0, 2.0), ("x", "y", "z")),
        costs.StepPlan("peer", 1, 0, 1.0, "", (1.0,), ("x",)),  # Inductor's: no check of its own
        costs.StepPlan("finish", 1, 0, 1.0, ""),
    ]
    # check's deadline 10 x 7/15 = 4.7 s: 'x' (5 s) is skipped; fprop times 'y' and 'z' (6 s in all)
    assert [o.runs for o in budget.play_out(steps, 6.0, 10.0)] == [2, 2, 1, 1]
    # a later, shorter item still runs after a longer one is skipped, as in the run's loop
    steps = plan(("fprop", 0, (5.0, 20.0, 5.0)), ("finish", 2.0, ()))
    assert [o.runs for o in budget.play_out(steps, 6.0, 16.0)] == [2, 1]


def test_the_run_and_the_dry_run_share_one_deadline_rule(tmp_path):
    """Campaign.step_deadline is budget.step_deadline on the run's plan: the dry run's play-out
    cannot drift from what the run does."""
    from triton_conv.campaign import budget

    campaign = _campaign(tmp_path, 100.0)
    campaign.out.close()
    campaign.state["plan"] = [
        {"step": "a", "estimate_s": 50.0},
        {"step": "peer", "estimate_s": 20.0},
        {"step": "b", "estimate_s": 40.0},
    ]
    pairs = [(p["step"], p["estimate_s"]) for p in campaign.state["plan"]]
    for name in ("a", "peer", "b", "absent"):
        expected = budget.step_deadline(pairs, name, campaign.elapsed(), 100.0)
        assert campaign.step_deadline(name) == pytest.approx(expected, abs=0.5)


def test_the_check_takes_the_timed_steps_in_turn():
    """Checked step by step, a check cut by the budget left the last timed steps (the batching curve,
    the megapixel layer, the decoder) nothing checked, so nothing to time; in turn, each keeps its
    first items."""
    items = spec.plan_items(spec.tiny())
    order = spec.check_order(items)
    every = [item for step in spec.CHECKED_STEPS for item in items[step]]
    assert sorted(map(id, order)) == sorted(map(id, every))  # each once
    assert [item.step for item in order[: len(spec.CHECKED_STEPS)]] == list(spec.CHECKED_STEPS)
    for step in spec.CHECKED_STEPS:  # each step's items keep their own order
        assert [item for item in order if item.step == step] == items[step]


def test_items_with_nothing_to_time_leave_the_pace_alone(tmp_path, monkeypatch):
    """An item never checked returns False at once; counted with its full estimate it drove the pace
    to its floor (0.5), and the next items were guessed at half their estimates: started where they
    could not end before the step's deadline."""
    campaign = _campaign(tmp_path, 25.0)
    campaign.state["plan"] = [{"step": "fprop", "estimate_s": 30.0}]  # the deadline: 25 - reserve = 23 s
    clock, seen = [0.0], []

    @contextlib.contextmanager
    def unlimited(seconds):
        yield

    monkeypatch.setattr(run, "time_limit", unlimited)
    monkeypatch.setattr(campaign, "elapsed", lambda: clock[0])

    def run_item(c, item):
        if item.id.startswith("unchecked"):
            return False
        clock[0] += 10.0  # each timed item takes its estimate
        seen.append(item.id)

    items = [SimpleNamespace(id=f"unchecked {n}") for n in range(4)]
    items += [SimpleNamespace(id=f"timed {n}") for n in range(3)]
    campaign._run_items("fprop", items, run_item, lambda item: 10.0)
    campaign.out.close()
    # the third timed item would end at 30 s: skipped at its full 10 s, not guessed at 5 s
    (skip,) = [s["why"] for s in campaign.state["skipped"] if s["item"] == "timed 2"]
    assert seen == ["timed 0", "timed 1"] and skip.startswith("budget: 10.0 s more"), skip


def test_a_steps_start_cost_falls_on_the_first_item_that_runs():
    """The check's child process (and Inductor's first compile) was charged to item 0 alone: when the
    budget skipped item 0, the next item paid the start unestimated. The start goes with the first
    item that runs, in the plan and in the play-out."""
    from triton_conv.campaign import budget, costs

    steps = [
        costs.StepPlan("check", 3, 0, 16.0, "", (10.0, 1.0, 1.0), ("x", "y", "z"), 4.0),
        costs.StepPlan("finish", 1, 0, 2.0, ""),
    ]
    # 12 s: 'x' with the start (14 s) does not fit the check's 10 s; 'y' with it (5 s) does, 'z' (1 s) too
    assert [o.runs for o in budget.play_out(steps, 6.0, 12.0)] == [2, 1]
    assert [o.runs for o in budget.play_out(steps, 6.0, 18.0)] == [3, 1]
    estimator = costs.Estimator(spec.tiny(), CostModel.cpu(), on_gpu=False)
    items = spec.plan_items(spec.tiny())
    plan = costs.make_plan(spec.tiny(), items, [], 0, estimator)
    check = next(step for step in plan if step.name == "check")
    order = spec.check_order(items)
    assert check.item_seconds == tuple(estimator.check_item(item) for item in order)
    assert check.start_s == CostModel.cpu().check_process_s
    assert check.estimate_s == pytest.approx(sum(check.item_seconds) + check.start_s)


def test_fits_means_the_budget_rules_run_everything():
    """'fits' compared the estimates' total with the budget, though the rules keep RESERVE_S for the
    last flush (the CPU's flush is estimated at 0.2 s) and give the compile half of what is left: at
    the total the training step was skipped while the dry run said 'fits'."""
    from triton_conv.campaign import budget, costs

    steps = [costs.StepPlan("training", 1, 0, 10.0, "", (10.0,)), costs.StepPlan("finish", 1, 0, 0.2, "")]
    assert not costs.plan_fits(steps, 10.2, 6.0) and not costs.plan_fits(steps, 11.0, 6.0)
    assert costs.plan_fits(steps, 12.0, 6.0) and budget.smallest_budget(steps, 6.0) == 12
    steps = [costs.StepPlan("compile", 1, 1, 30.0, ""), costs.StepPlan("finish", 1, 0, 2.0, "")]
    outlook = budget.play_out(steps, 6.0, 40.0)  # half of 40 s: the compile is stopped at 20 s
    assert outlook[0].cut and "the end of the compile" in costs.cut_steps(outlook)
    assert budget.smallest_budget(steps, 6.0) == 60
    text = costs.render_plan(spec.tiny(), steps, CostModel.cpu(), 40.0, "x")
    assert "DOES NOT FIT" in text and "fits a budget of 60 s" in text


def test_a_check_after_its_child_died_is_estimated_with_a_new_childs_start(tmp_path, monkeypatch):
    """The item after a child's death starts a new child (imports, CUDA context): its estimate, and so
    its time limit, must hold that start, as the first item's does."""
    from triton_conv.campaign import setup_steps

    campaign = _campaign(tmp_path, 1000.0)
    firsts, alive = [], object()

    def estimate(item, first=False):
        firsts.append(first)
        return 0.1

    def check_item(run, item):
        run.checker.started = max(run.checker.started, 1)
        # the second item's child dies with it; the next item starts another
        run.checker.process = None if len(firsts) == 2 else alive

    monkeypatch.setattr(campaign.estimator, "check_item", estimate)
    monkeypatch.setattr(setup_steps, "check_item", check_item)
    monkeypatch.setattr(setup_steps.CheckProcess, "close", lambda self: None)
    campaign.items = {step: items[:1] for step, items in campaign.items.items()}
    setup_steps.check_step(campaign)
    campaign.out.close()
    assert firsts[:4] == [True, False, True, False]


def test_a_binary_whose_load_a_limit_cut_loads_again():
    """Triton makes a binary's launcher, then loads its module (CompiledKernel._init_handles) and
    loads only while the launcher is unset (the `run` property): a limit striking in between would
    break that binary for the rest of the campaign's process. reload_interrupted_loads unsets those
    launchers, and only those."""
    import inspect

    from triton.compiler.compiler import CompiledKernel

    init = inspect.getsource(CompiledKernel._init_handles)
    assert init.index("self._run = ") < init.index("load_binary(")  # the window this closes
    assert "functools.partial(_raise_error" in init  # a binary out of resources: left as it is
    assert "_init_handles" in inspect.getsource(CompiledKernel.run.fget)

    def binary(launcher, function):
        return SimpleNamespace(_run=launcher, function=function)

    cut, loaded, never = binary(object(), None), binary(object(), 7), binary(None, None)
    too_big = binary(functools.partial(print, "out of resources"), None)  # what raise_ leaves
    binaries = {"a": cut, "b": loaded, "c": never, "d": too_big}
    kernel = SimpleNamespace(device_caches={0: (binaries, {}, None, None, None)})
    kept = loaded._run
    assert reload_interrupted_loads([kernel]) == 1
    assert cut._run is None and loaded._run is kept and never._run is None and too_big._run is not None
    assert reload_interrupted_loads([kernel, SimpleNamespace()]) == 0
    assert reload_interrupted_loads() == 0  # the passes' own kernels: none cut here


def test_a_folder_an_earlier_campaign_wrote_is_taken_again(tmp_path):
    """A campaign.json is read, not trusted by its name: one the run wrote at its first flush has
    the fields check_out_folder asks for, so the next run may replace it."""
    out = tmp_path / "out"
    earlier = run.Campaign(spec.tiny(), str(out), budget_s=60, echo=None)
    earlier.flush()
    earlier.out.close()
    check_out_folder(str(out))  # no SystemExit
    assert set(FIRST_FIELDS) <= set(json.loads((out / FILES["campaign"]).read_text()))


class _ReaderLeft(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_an_echo_whose_reader_left_stops_and_the_log_goes_on(tmp_path):
    """`triton-conv campaign ... | head`: the first print after head left raised BrokenPipeError
    out of the campaign, which ended in its first step with campaign.json still saying 'running'."""
    out = Output(str(tmp_path / "out"), echo=_ReaderLeft())
    out.log("first")
    out.log("second")
    out.close()
    lines = (tmp_path / "out" / FILES["log"]).read_text().splitlines()
    assert [line.split("] ", 1)[-1] for line in lines] == [
        "first", "the echo stopped (Broken pipe): this file alone goes on", "second",
    ]  # fmt: skip
    assert out.echo is None
