"""A failure in any campaign step (its own work or one of its items) is listed and the campaign goes
on to the next step with valid files; an item's time limit is neither swallowed nor allowed to cut a
CUDA-graph capture; a step whose items keep overrunning is given up; the steps' deadlines and costs
are charged as the plan says."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from triton_conv import provenance
from triton_conv.campaign import run, setup_steps, spec, timing_steps
from triton_conv.campaign.output import FILES
from triton_conv.campaign.precompile import TARGET_H200

# issue 13's order, with the decoder's transposed convolutions before the training step
STEP_ORDER = ("ceilings", "compile", "check", "fprop", "peer", "dgrad", "wgrad", "batching", "megapixel",
              "decoder", "training")  # fmt: skip


# --- a failure costs what failed, not the campaign -------------------------------------------------
class Stubs:
    """Every step's work replaced by a record of the call; `fail` names what raises (once)."""

    def __init__(self, monkeypatch, fail: str | None = None, error=None):
        self.calls: list[tuple[str, str]] = []
        self.fail, self.error = fail, error or RuntimeError("injected")
        self.failed_item = None
        self.compile_target = None
        real_plan, real_compile_all = setup_steps.make_plan, setup_steps.compile_all

        def step_work(name, value=None):
            def work(*args, **kwargs):
                self.calls.append((name, ""))
                self._maybe_fail(name)
                return value

            return work

        def item_work(name=None, value=None):
            def work(campaign, item):
                step = name or item.step
                self.calls.append((step, item.id))
                if self.failed_item is None and self.fail == step:
                    self.failed_item = item.id
                    raise self.error
                return value

            return work

        def compile_variants(jobs, workers, target, timeout_s=None):
            self.compile_target = target
            step_work("record_and_compile")()
            return [], {"results": [], "workers": workers, "wall_s": 0.0, "worker_s": [], "failures": [],
                        "cuda_utilities": None, "record_s": []}  # fmt: skip

        def plan(*args):
            self._maybe_fail("plan")
            return real_plan(*args)

        def compile_all(*args):
            self._maybe_fail("compile_all")
            return real_compile_all(*args)

        monkeypatch.setattr(setup_steps, "use_comparable_settings", step_work("settings"))
        monkeypatch.setattr(setup_steps, "ceilings", step_work("ceilings"))
        stub_facts = {"date": provenance.utc_now(), "torch": "stub", "triton": "stub",
                      "gpu": {"name": "STUB GPU (a test's, not measured)"}}  # fmt: skip
        monkeypatch.setattr(setup_steps, "record_provenance", lambda c: c.state.update(provenance=stub_facts))
        monkeypatch.setattr(setup_steps, "record_and_compile", compile_variants)
        monkeypatch.setattr(setup_steps, "make_plan", plan)
        monkeypatch.setattr(setup_steps, "compile_all", compile_all)
        monkeypatch.setattr(setup_steps, "check_item", item_work("check"))
        monkeypatch.setattr(timing_steps, "pass_item", item_work(value=True))
        monkeypatch.setattr(timing_steps, "peer_item", item_work("peer"))

        def training_work(campaign, item):  # the real item writes training.json once its step ran
            item_work()(campaign, item)
            campaign.out.set("training", {"comparison": {}})

        monkeypatch.setattr(timing_steps, "training_item", training_work)

    def _maybe_fail(self, name):
        if self.fail == name:
            raise self.error


def _run(tmp_path, **options) -> tuple[dict, dict, Path]:
    out = tmp_path / "out"
    state = run.Campaign(spec.tiny(), str(out), budget_s=1e4, echo=None, **options).run()
    files = {name: json.loads((out / name).read_text()) for name in FILES.values() if name.endswith(".json")
             if (out / name).exists()}  # fmt: skip
    return state, files, out


def _items(step: str) -> list[str]:
    items = spec.plan_items(spec.tiny())
    if step == "check":
        return [i.id for i in spec.check_order(items)]
    if step == "peer":
        return [i.id for i in items["fprop"] if i.peer]
    return [i.id for i in items[step]]


OWN_WORK = {  # what raises -> the step it belongs to
    "settings": "ceilings", "ceilings": "ceilings", "record_and_compile": "compile", "plan": "compile",
    "compile_all": "compile",
}  # fmt: skip


@pytest.mark.parametrize("fail", [*OWN_WORK, *STEP_ORDER[2:]])
def test_a_failure_in_any_step_is_listed_and_the_campaign_goes_on(tmp_path, monkeypatch, fail):
    stubs = Stubs(monkeypatch, fail)
    state, files, out = _run(tmp_path)
    assert state["status"] == "complete, with errors or skips", state.get("traceback")
    step = OWN_WORK.get(fail, fail)
    item = run.STEP if fail in OWN_WORK else stubs.failed_item
    assert item is not None
    assert [(e["step"], e["item"], e["error"]) for e in state["errors"]] == [
        (step, item, "RuntimeError: injected")
    ]
    for later in STEP_ORDER[2:]:  # every item of every timing step was still run
        assert [i for s, i in stubs.calls if s == later] == _items(later), later
    ran = [s["step"] for s in state["steps"]]
    assert ran == list(STEP_ORDER), ran  # one entry per step, in issue 13's order
    order = [s for s, _ in stubs.calls if s in STEP_ORDER[2:]]
    assert sorted(set(order), key=order.index) == list(STEP_ORDER[2:])
    no_compile_report = fail in ("record_and_compile", "compile_all")
    missing = ({"training.json"} if fail == "training" else set()) | (
        {"compile.json"} if no_compile_report else set()
    )
    assert set(files) == {name for name in FILES.values() if name.endswith(".json")} - missing
    assert files["campaign.json"]["status"] == state["status"]
    log = (out / "campaign.log").read_text()
    assert "ERROR" in log and ("Traceback" in log) == (fail in OWN_WORK)
    from triton_conv.report.campaign import report_campaign  # and the report reads what is there

    assert report_campaign(str(out), notes_dir=str(tmp_path / "notes"), plots=False)


def test_an_estimate_that_fails_costs_its_item(tmp_path, monkeypatch):
    stubs = Stubs(monkeypatch)
    broken = _items("dgrad")[1]
    real = run.Estimator.pass_item

    def estimate(self, item):
        if item.id == broken:
            raise ValueError("the model cannot price this")
        return real(self, item)

    monkeypatch.setattr(run.Estimator, "pass_item", estimate)
    # the plan prices every item too: it fails, and the run goes on without one
    state, _, _ = _run(tmp_path)
    errors = [(e["step"], e["item"]) for e in state["errors"]]
    assert errors == [("compile", run.STEP), ("dgrad", broken)]
    assert [i for s, i in stubs.calls if s == "dgrad"] == [i for i in _items("dgrad") if i != broken]
    assert state["plan"] == [] and [s for s, _ in stubs.calls if s == "training"] == ["training"]


def test_an_item_past_its_limit_is_stopped_even_if_it_catches_exceptions(tmp_path, monkeypatch):
    """timing.measure falls back to eager rounds on any Exception, check_item marks a config failed:
    an item's time limit must pass through such handlers, or the item runs on with no alarm."""
    stubs = Stubs(monkeypatch)
    monkeypatch.setattr(run, "ITEM_LIMIT_FACTOR", 0.0)
    monkeypatch.setattr(run, "MIN_ITEM_LIMIT_S", 0.3)
    slow = _items("fprop")[0]
    carried_on = []

    def item(campaign, item):
        stubs.calls.append((item.step, item.id))
        if item.id == slow:
            with contextlib.suppress(Exception):  # what a fallback does
                time.sleep(3)
            carried_on.append(item.id)
        return True

    monkeypatch.setattr(timing_steps, "pass_item", item)
    started = time.monotonic()
    state, _, _ = _run(tmp_path)
    assert not carried_on and time.monotonic() - started < 3
    assert [(e["step"], e["item"]) for e in state["errors"]] == [("fprop", slow)]
    assert state["errors"][0]["error"].startswith("ItemTimeout")
    assert state["status"] == "complete, with errors or skips"


def test_a_step_whose_items_keep_running_past_their_limits_is_given_up(tmp_path, monkeypatch):
    """Items stopped at their limits one after another (estimates far too low on this machine, an
    Inductor compile per shape slower than its limit) each cost their limit and time nothing: after
    STOPPED_IN_A_ROW of them the rest of the step is skipped and listed, and the later steps run.
    After each, the binaries whose load a limit cut are made to load again (and the log says so)."""
    stubs = Stubs(monkeypatch)
    monkeypatch.setattr(run, "ITEM_LIMIT_FACTOR", 0.0)
    monkeypatch.setattr(run, "MIN_ITEM_LIMIT_S", 0.2)
    reloads = []
    monkeypatch.setattr(run, "reload_interrupted_loads", lambda: reloads.append(1) or 1)

    def item(campaign, item):
        stubs.calls.append((item.step, item.id))
        if item.step == "megapixel":
            time.sleep(3)
        return True

    monkeypatch.setattr(timing_steps, "pass_item", item)
    started = time.monotonic()
    state, files, out = _run(tmp_path)
    slow = _items("megapixel")
    assert len(slow) > run.STOPPED_IN_A_ROW and time.monotonic() - started < 3
    assert [(e["step"], e["item"]) for e in state["errors"]] == [("megapixel", i) for i in slow[:2]]
    skipped = [s for s in state["skipped"] if s["step"] == "megapixel"]
    assert [s["item"] for s in skipped] == slow[2:]
    assert all(s["why"] == "the step's last 2 items were stopped at their time limits" for s in skipped)
    assert [c for c in stubs.calls if c[0] == "megapixel"] == [("megapixel", i) for i in slow[:2]]
    assert len(reloads) == 2 and "its time limit cut a kernel's load" in (out / "campaign.log").read_text()
    assert ("decoder", _items("decoder")[0]) in stubs.calls and state[
        "status"
    ] == "complete, with errors or skips"
    step = next(s for s in files["campaign.json"]["steps"] if s["step"] == "megapixel")
    assert (step["done"], step["failed"], step["skipped"]) == (0, 2, len(slow) - 2)


def test_the_check_step_gives_up_a_kernel_pass_whose_items_keep_stopping_not_the_others(
    tmp_path, monkeypatch
):
    """The check counts its stops per kernel pass: two weight-gradient items stopped in a row (two
    hung configs, each barred after its hang) give up the weight gradient's remaining checks, while the
    forward and data-gradient items, which share none of its configs, are still checked; a timing
    item that was never checked says why."""
    stubs = Stubs(monkeypatch)
    monkeypatch.setattr(run, "ITEM_LIMIT_FACTOR", 0.0)
    monkeypatch.setattr(run, "MIN_ITEM_LIMIT_S", 0.2)
    items = {i.id: i for s in spec.CHECKED_STEPS for i in spec.plan_items(spec.tiny())[s]}

    def check(campaign, item):
        stubs.calls.append(("check", item.id))
        if item.kernel_pass == "wgrad":
            time.sleep(3)

    monkeypatch.setattr(setup_steps, "check_item", check)
    state, _, _ = _run(tmp_path)
    wgrad = [i for i in _items("check") if items[i].kernel_pass == "wgrad"]
    others = [i for i in _items("check") if items[i].kernel_pass != "wgrad"]
    assert len(wgrad) > run.STOPPED_IN_A_ROW and len({items[i].kernel_pass for i in others}) == 2
    assert [(e["step"], e["item"]) for e in state["errors"]] == [("check", i) for i in wgrad[:2]]
    skipped = [s for s in state["skipped"] if s["step"] == "check"]
    why = "the step's last 2 wgrad items were stopped at their time limits"
    assert skipped == [{"step": "check", "item": i, "why": why} for i in wgrad[2:]]
    assert [i for s, i in stubs.calls if s == "check"] == [i for i in _items("check") if i not in wgrad[2:]]
    assert timing_steps._unchecked(SimpleNamespace(state=state), items[wgrad[2]]) == f"never checked: {why}"
    assert timing_steps._unchecked(SimpleNamespace(state={"skipped": []}), items[wgrad[2]]) == (
        "never checked (the check step ended before it)"
    )


def test_the_peer_step_cannot_move_tritons_cache_or_ptxas_away_from_the_compile_steps(tmp_path, monkeypatch):
    """Inductor points an unset TRITON_CACHE_DIR at a folder of its own when it builds a kernel
    (torch 2.11: _inductor/runtime/triton_heuristics.py, CachingAutotuner.__init__), and an unset
    TRITON_PTXAS_PATH at torch's own ptxas (runtime/compile_tasks.py, _set_triton_ptxas_path: 13.0
    beside Triton 3.6's 12.8 in torch 2.11+cu130); Triton reads both at every compile. After the
    peer step this process would look for kernels and launchers elsewhere than the compile workers
    wrote them, and build with another ptxas. The campaign names both first."""
    from triton import knobs

    Stubs(monkeypatch)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_PTXAS_PATH", raising=False)
    default, inductors = knobs.cache.dir, str(tmp_path / "torchinductor_user" / "triton" / "0")
    tritons_ptxas, torchs_ptxas = provenance.ptxas()[0], str(tmp_path / "torch" / "bin" / "ptxas")
    stub_compile, workers_env, seen = setup_steps.record_and_compile, [], {}

    def where():
        return knobs.cache.dir, os.environ.get("TRITON_PTXAS_PATH")

    def compile_variants(*args, **kwargs):  # the workers inherit this environment
        workers_env.append((os.environ.get("TRITON_CACHE_DIR"), os.environ.get("TRITON_PTXAS_PATH")))
        return stub_compile(*args, **kwargs)

    def inductor_kernel(campaign, item):  # what CachingAutotuner.__init__ and compile_tasks do
        os.environ.setdefault("TRITON_CACHE_DIR", inductors)
        os.environ.setdefault("TRITON_PTXAS_PATH", torchs_ptxas)

    def timed(campaign, item):
        seen.setdefault(item.step, set()).add(where())
        return True

    monkeypatch.setattr(setup_steps, "record_and_compile", compile_variants)
    monkeypatch.setattr(timing_steps, "peer_item", inductor_kernel)
    monkeypatch.setattr(timing_steps, "pass_item", timed)
    state, _, _ = _run(tmp_path)
    assert state["status"] == "complete", state.get("traceback")
    assert tritons_ptxas is not None and workers_env == [(default, tritons_ptxas)]
    assert set(seen) >= {"fprop", "dgrad", "wgrad", "decoder"}
    assert all(s == {(default, tritons_ptxas)} for s in seen.values()), seen
    assert "TRITON_CACHE_DIR" not in os.environ and "TRITON_PTXAS_PATH" not in os.environ  # restored


def test_on_a_gpu_the_target_is_the_gpus_and_out_of_memory_frees_the_cache(tmp_path, monkeypatch):
    stubs = Stubs(monkeypatch, "wgrad", torch.cuda.OutOfMemoryError("CUDA out of memory (injected)"))
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (9, 0))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(run, "interpreter_active", lambda: False)
    state, _, _ = _run(tmp_path)
    assert state["on_gpu"] and state["device"] == "cuda" and stubs.compile_target == TARGET_H200
    assert [(e["step"], e["item"]) for e in state["errors"]] == [("wgrad", stubs.failed_item)]
    assert emptied and state["status"] == "complete, with errors or skips"


def test_a_steps_last_item_may_run_until_the_steps_deadline(tmp_path, monkeypatch):
    """The training step has one item: past three times its estimate (cuDNN's algorithm search, a
    slow first step) it keeps the time its step was given, which no later item of the step needs."""
    stubs = Stubs(monkeypatch)
    monkeypatch.setattr(run, "ITEM_LIMIT_FACTOR", 0.0)
    monkeypatch.setattr(run, "MIN_ITEM_LIMIT_S", 0.3)

    def training(campaign, item):
        stubs.calls.append(("training", item.id))
        time.sleep(0.8)

    monkeypatch.setattr(timing_steps, "training_item", training)
    state, _, _ = _run(tmp_path)
    assert state["errors"] == [] and state["status"] == "complete"
    assert next(s for s in state["steps"] if s["step"] == "training")["done"] == 1


def test_the_first_checked_items_limit_includes_starting_the_checks_process(tmp_path, monkeypatch):
    """The check's child starts inside the first checked item (its imports and CUDA context: the
    cost model's check_process_s). A limit sized for the item's launches alone would stop a slow
    start, and the check would then run every later item in the campaign's own process, where a
    config that faults the GPU ends the campaign; the plan's step estimate counts the start once."""
    from triton_conv.campaign.costs import CostModel

    stubs = Stubs(monkeypatch)
    limits = []

    @contextlib.contextmanager
    def recorded(seconds):
        limits.append(seconds)
        yield

    monkeypatch.setattr(run, "time_limit", recorded)
    costs = CostModel.cpu(workers=1)
    costs = CostModel(**{**costs.as_dict(), "check_process_s": 40.0})
    state, _, _ = _run(tmp_path, costs=costs)
    assert state["status"] == "complete", state.get("traceback")
    items = [item for _, item in stubs.calls if item]
    checked = _items("check")
    assert items[: len(checked)] == checked and len(limits) == len(items)
    first, *rest = limits[: len(checked)]
    assert first >= run.ITEM_LIMIT_FACTOR * costs.check_process_s
    assert all(limit < costs.check_process_s for limit in rest[:-1])  # the last: the step's deadline
    check = next(p for p in state["plan"] if p["step"] == "check")
    est = run.Estimator(spec.tiny(), costs, state["on_gpu"])  # as the run priced them (True on a GPU)
    items_s = sum(est.check_item(i) for s in spec.CHECKED_STEPS for i in spec.plan_items(spec.tiny())[s])
    assert check["estimate_s"] == pytest.approx(costs.check_process_s + items_s, abs=0.01)


def test_the_peer_step_pays_inductors_first_compile_once(tmp_path, monkeypatch):
    """Inductor's first compile (its worker pool, Dynamo, AOTAutograd: peer_first_s) happens once per
    process, in the first peer item; every later item compiles only its own shape (peer_shape_s). The
    run's estimate of each item (what its budget test and time limit are sized on) and the plan's
    estimate of the step hold the first compile once, on a spec of two peer items."""
    import dataclasses

    from triton_conv.campaign.costs import CostModel

    Stubs(monkeypatch)
    charged = []  # (item, the run's estimate of it) as the peer step asks
    real_run_step = run.Campaign.run_step

    def run_step(campaign, name, items, run_item, estimate, *args, **kwargs):
        if name == "peer":
            asked = estimate

            def estimate(item):
                charged.append((item.id, asked(item)))
                return charged[-1][1]

        return real_run_step(campaign, name, items, run_item, estimate, *args, **kwargs)

    monkeypatch.setattr(run.Campaign, "run_step", run_step)
    monkeypatch.setattr(timing_steps, "stop_inductor_workers", lambda: None)  # no pool was started
    two_peers = dataclasses.replace(spec.tiny(), peer=(("layer1.0.conv2", 2), ("layer1.0.conv2", 3)))
    costs = dataclasses.replace(CostModel.cpu(workers=1), peer_first_s=40.0, peer_shape_s=1.0)
    state = run.Campaign(two_peers, str(tmp_path / "out"), budget_s=1e4, echo=None, costs=costs).run()
    assert state["status"] == "complete", state.get("traceback")
    peers = [item for item in spec.plan_items(two_peers)["fprop"] if item.peer]
    assert [item_id for item_id, _ in charged] == [item.id for item in peers] and len(peers) == 2
    # What each item costs besides Inductor's compiles: the same cost model with them at zero.
    # (on_gpu as the run priced them: True on a GPU, whose estimates time each kernel)
    without = dataclasses.replace(costs, peer_first_s=0.0, peer_shape_s=0.0)
    free = run.Estimator(two_peers, without, state["on_gpu"])
    rest = [free.peer_item(item) for item in peers]
    assert charged[0][1] == pytest.approx(costs.peer_first_s + rest[0])  # the first: the whole first compile
    assert charged[1][1] == pytest.approx(costs.peer_shape_s + rest[1])  # the second: its shape alone
    step = next(p for p in state["plan"] if p["step"] == "peer")
    once = costs.peer_first_s + costs.peer_shape_s + sum(rest)
    assert step["estimate_s"] == pytest.approx(once, abs=0.01)


@pytest.mark.parametrize("failures", [1, setup_steps.MAX_LISTED_FAILURES + 3])
def test_variants_that_failed_to_compile_are_the_runs_errors(tmp_path, failures):
    """Ten variants failed (TRITON_CACHE_DIR a file): logged, but campaign.json listed no error and
    the run called itself complete."""
    campaign = run.Campaign(spec.tiny(), str(tmp_path / "out"), budget_s=60, echo=None)
    results = [{"kernel": f"fprop_kernel_{index}", "error": "OSError: no cache folder", "cache_hit": False,
                "seconds": 0.5} for index in range(failures)]  # fmt: skip
    results.append({"kernel": "wgrad_kernel", "error": None, "cache_hit": False, "seconds": 1.0})
    report = {"results": results, "workers": 1, "wall_s": 2.0, "worker_s": [2.0], "record_s": 0.1}
    setup_steps.compile_all(campaign, [], report, launches=len(results), target=TARGET_H200, seconds=2.0)
    campaign.out.close()
    errors = json.loads((tmp_path / "out" / FILES["campaign"]).read_text())["errors"]
    listed = min(failures, setup_steps.MAX_LISTED_FAILURES)
    assert [e["item"] for e in errors[:listed]] == [f"fprop_kernel_{index}" for index in range(listed)]
    assert all(e["step"] == "compile" and "no cache folder" in e["error"] for e in errors[:listed])
    assert errors[listed:] == ([] if failures == listed else [
        {"step": "compile", "item": "3 more variants", "error": "listed in compile.json"}])  # fmt: skip
