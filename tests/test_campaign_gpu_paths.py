"""The campaign's GPU-only paths, proved as far as a CPU can: the variants the compile step records are
those the target GPU launches (TMA), Triton's compilation listener takes Triton's call, the compile
workers are fresh interpreters that cannot see the GPU, a failure in any step (its own work or one
of its items) is listed and the campaign goes on to the next step with valid files, an item's time
limit is neither swallowed nor allowed to cut a CUDA-graph capture, the measurement's GPU branch
(warm-up on a side stream, capture, replays timed by events, the eager fallback) on a fake
torch.cuda, and nvidia-smi's answers when the driver knows fewer fields."""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from triton.tools.tensor_descriptor import TensorDescriptor

from triton_conv import provenance
from triton_conv.campaign import precompile, run, setup_steps, spec, target, timing, timing_steps
from triton_conv.campaign.output import FILES
from triton_conv.campaign.precompile import TARGET_H200, LaunchJob, record, record_and_compile
from triton_conv.compile_check import example_spec
from triton_conv.problem import ConvProblem

REPO = Path(__file__).resolve().parent.parent
# issue 13's order, with the decoder's transposed convolutions before the training step
STEP_ORDER = ("ceilings", "compile", "check", "fprop", "peer", "dgrad", "wgrad", "batching", "megapixel",
              "decoder", "training")  # fmt: skip


# --- what the compile step records is what the GPU launches -----------------------------------------
def _descriptors(variant) -> int:
    signature = json.loads(variant.specialization)["signature"]
    return sum("tensordesc" in str(kind) for kind in signature.values())


def test_the_compile_step_records_the_tma_variants_an_h200_launches():
    """wgrad passes TMA descriptors on sm_90 and newer (launchers.common.tma_available of a CUDA
    device); the recording runs on meta tensors, which must stand for the target's. An H200 whose
    variants were recorded without them compiled every wgrad kernel again in the campaign's process."""
    problem = ConvProblem.from_shapes((2, 64, 9, 9), (64, 64, 3, 3), padding=1)
    config = spec.candidates(problem, "wgrad", spec.h200())[0]
    launch = example_spec("wgrad", torch.bfloat16, config, problem, capability=90)
    wanted = sum(isinstance(arg, TensorDescriptor) for arg in launch.args)
    assert wanted >= 1
    job = LaunchJob("wgrad", problem, config, "bf16")
    (hopper,) = record([job], TARGET_H200)
    (ampere,) = record([job], ("cuda", 80, 32))
    assert _descriptors(hopper) == wanted and _descriptors(ampere) == 0


def test_meta_as_target_answers_as_the_launchers_rule_does_for_a_cuda_device(monkeypatch):
    from triton_conv.launchers import common, wgrad

    meta = torch.device("meta")
    for arch in (80, 89, 90, 100, 120):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_, a=arch: divmod(a, 10))
        on_cuda = common.tma_available(torch.device("cuda"))
        with target.meta_as_target(("cuda", arch, 32)):
            assert wgrad.tma_available(meta) == on_cuda == (arch >= 90), arch
            assert wgrad.tma_available(torch.device("cpu")) == common.tma_available(torch.device("cpu"))
        assert wgrad.tma_available is common.tma_available  # restored
    monkeypatch.undo()
    assert not wgrad.tma_available(meta)


LISTENER = """
import sys
from collections import Counter
from functools import partial
from types import SimpleNamespace

import torch
import triton
import triton.language as tl
from triton import knobs

from triton_conv.campaign import spec
from triton_conv.campaign.precompile import _record_here
from triton_conv.campaign.target import TARGET_H200, use_compile_only_driver
from triton_conv.campaign.run import Campaign, launch_jobs

tiny = spec.tiny()
job = next(j for j in launch_jobs(tiny, spec.plan_items(tiny)) if j.pass_name == "fprop")
(variant,) = _record_here([job], TARGET_H200)
use_compile_only_driver(TARGET_H200)
run = SimpleNamespace(compiles=Counter(), unplanned=[], step_name="check")
run.count_compile = partial(Campaign.count_compile, run)
knobs.compilation.listener = partial(Campaign._on_compile, run)


@triton.jit
def not_ours(x_ptr):
    tl.store(x_ptr, 1.0)


kernel = getattr(__import__(variant.module, fromlist=["_"]), variant.kernel)
kernel.preload(variant.specialization)  # compiled: a miss
kernel.preload(variant.specialization)  # from the disk cache: a hit
not_ours.warmup(torch.empty(4, device="meta"), grid=(1,))
print(dict(run.compiles), len(run.unplanned), run.unplanned[0].startswith("check: fprop_kernel"))
"""


def test_the_compilation_listener_takes_tritons_call(tmp_path):
    """Only a GPU run compiles in the campaign's process, so only there does Triton call the
    listener: here a real compile (sm_90, no GPU) calls it, a miss then a hit, and a kernel that is
    not triton-conv's is not counted."""
    script = tmp_path / "listener.py"  # a file: Triton reads a kernel's source
    script.write_text(LISTENER)
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO)}  # fmt: skip
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "{'compiled here': 1, 'loaded': 1} 1 True"


ON_REAL_TENSORS = """
from tests.jit_hook import launched_keys
from triton_conv.benchmarking import DTYPES
from triton_conv.campaign import spec
from triton_conv.campaign.planning import launch_jobs
from triton_conv.campaign.precompile import _record_here
from triton_conv.campaign.runners import launch_with_config, make_inputs
from triton_conv.campaign.target import TARGET_H200

tiny = spec.tiny()
jobs = launch_jobs(tiny, spec.plan_items(tiny))
recorded = {(v.module, v.kernel, v.key) for v in _record_here(jobs, TARGET_H200)}

def launch_all():  # fresh allocations, as on the GPU: 16-byte aligned, views offset as there
    for job in jobs:
        tensors = make_inputs(job.problem, DTYPES[job.dtype], "cpu", job.transposed)
        launch_with_config(job.pass_name, job.problem, tensors, job.config, transposed=job.transposed)()

launched = launched_keys(launch_all, TARGET_H200)
print(len(recorded), recorded == launched)
"""


def test_the_recorded_variants_are_what_real_tensors_launch():
    """The compile step records on meta tensors (data_ptr 0 plus a view's offset); the GPU launches
    on allocations. Through Triton's own binder for the sm_90 target, the CPU's allocated tensors
    (TMA included: tma_available answers for the CPU as for a Hopper GPU) ask for exactly the
    specialisations recorded, so the campaign's process finds every one compiled."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", ON_REAL_TENSORS], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    count, same = done.stdout.split()
    assert int(count) > 0 and same == "True"


# --- the compile workers and CUDA ------------------------------------------------------------------
def test_compile_workers_are_fresh_interpreters_that_cannot_see_the_gpu(monkeypatch):
    """The campaign initialises CUDA (the ceilings) before it starts the compile workers. A fork of a
    process with CUDA initialised cannot use CUDA; the workers are new interpreters (subprocess:
    fork and exec at once), with no GPU visible, and the package forks nowhere else."""
    started = []

    class Refused:
        def __init__(self, args, **options):
            started.append((args, options["env"]))
            self.returncode = 1

        def wait(self, timeout=None):
            return 1

    monkeypatch.setattr(precompile.subprocess, "Popen", Refused)
    monkeypatch.setenv("PYTHONPATH", ".")  # the device command's, relative to where it was started
    variants, report = record_and_compile([], workers=3, timeout_s=5)
    assert len(started) == 3 and variants == [] and len(report["failures"]) == 3
    for args, env in started:
        assert args[:2] == [sys.executable, "-c"]  # child_processes' guard, then the module as -m runs it
        assert "runpy.run_module('triton_conv.campaign.precompile', run_name='__main__'" in args[2]
        assert env["CUDA_VISIBLE_DEVICES"] == "" and env["TRITON_INTERPRET"] == "0"
        # this package first, whatever the workers' cwd and the relative entry would find
        first, *rest = env["PYTHONPATH"].split(os.pathsep)
        assert Path(first).resolve() == REPO and rest == ["."]
    for path in (REPO / "triton_conv").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            assert "multiprocessing" not in names and not (
                isinstance(node, ast.Attribute) and node.attr in ("fork", "forkpty")
            ), f"{path.name} forks"
    import torch._inductor.config as inductor  # the peer step's compile workers: subprocesses too

    assert inductor.worker_start_method == os.environ.get("TORCHINDUCTOR_WORKER_START", "subprocess")


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


def test_the_ceilings_on_a_gpu(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(setup_steps, "measure_matmul_peak", lambda *a: asked.append(("matmul", a)) or 7e14)
    monkeypatch.setattr(setup_steps, "measure_copy_bandwidth", lambda *a: asked.append(("copy", a)) or 4e12)
    monkeypatch.setattr(provenance, "gpu", lambda: {"name": "NVIDIA H200", "clocks.sm": "1980 MHz"})
    monkeypatch.setattr(provenance, "nvidia_smi", lambda: {"clocks.sm": "1755 MHz"})
    campaign = run.Campaign(spec.h200(), str(tmp_path / "out"), budget_s=480, echo=None)
    campaign.on_gpu, campaign.device = True, torch.device("cuda")
    setup_steps.record_provenance(campaign)
    setup_steps.ceilings(campaign)
    campaign.out.close()
    assert asked == [("matmul", (torch.bfloat16, 8192, torch.device("cuda"))),
                     ("copy", (2 << 30, torch.device("cuda")))]  # fmt: skip
    ceilings = campaign.state["ceilings"]
    assert ceilings["matmul_dtype"] == "bf16" and ceilings["matmul_tflops"] == 700.0
    assert ceilings["copy_gb_per_s"] == 4000.0 and ceilings["clocks_after"] == {"clocks.sm": "1755 MHz"}
    assert campaign.state["provenance"]["gpu"]["name"] == "NVIDIA H200"


# --- the measurement's GPU branch on a fake torch.cuda --------------------------------------------
class FakeCuda:
    """What timing.py asks of torch.cuda. Every call of the timed callable is logged with the stream
    it ran on ('capture' inside a graph capture); each replay lasts `replay_ms` by the events."""

    def __init__(self, monkeypatch, replay_ms: float = 2.0):
        self.log: list[str] = []
        self.stream_name, self.replay_ms, self.captured = "default", replay_ms, 0
        for name in ("Stream", "current_stream", "stream", "CUDAGraph", "graph", "synchronize", "Event"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def Stream(self):
        fake = self

        class Stream:
            name = "side"

            def wait_stream(self, other):
                fake.log.append(f"{self.name} waits for {other.name}")

        return Stream()

    def current_stream(self):
        stream = self.Stream()
        stream.name = self.stream_name
        return stream

    @contextlib.contextmanager
    def stream(self, stream):
        previous, self.stream_name = self.stream_name, stream.name
        try:
            yield
        finally:
            self.stream_name = previous

    def CUDAGraph(self):
        fake = self

        class Graph:
            def replay(self):
                fake.log.append("replay")

        return Graph()

    @contextlib.contextmanager
    def graph(self, graph):
        self.log.append("capture begins")
        previous, self.stream_name = self.stream_name, "capture"
        try:
            yield
        finally:
            self.stream_name = previous
            self.log.append("capture ends")

    def synchronize(self):
        self.log.append("synchronize")

    def Event(self, enable_timing=False):
        fake = self

        class Event:
            def record(self):
                pass

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return fake.replay_ms

        assert enable_timing
        return Event()

    def call(self):
        self.log.append(f"call on {self.stream_name}")
        self.captured += self.stream_name == "capture"


def test_the_device_time_is_graph_replays_timed_by_events(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    # A round of a second: any host call under 10 ms (a loaded CI machine's too) fills the graph.
    m = timing.measure(cuda.call, rounds=4, min_round_s=1.0, on_gpu=True)
    calls = m.iterations
    assert calls == timing.MAX_GRAPH_CALLS
    assert m.timer == "CUDA graph replay, CUDA events" and m.error is None
    assert m.rounds == pytest.approx([2e-3 / calls] * 4) and m.device_seconds == pytest.approx(2e-3 / calls)
    assert m.eager_seconds is not None and m.host_seconds is not None
    log = cuda.log
    warm = log.index("side waits for default")
    assert log[warm + 1] == "call on side" and log[warm + 2] == "default waits for side"
    begins, ends = log.index("capture begins"), log.index("capture ends")
    assert warm < begins and log[begins + 1 : ends] == ["call on capture"] * calls
    assert log[ends + 1 :].count("replay") == 1 + 4  # one untimed replay, then one per round


def test_a_graph_holds_whole_turns_over_the_input_sets(monkeypatch):
    """Calls that take turns over input sets (timers.Rotation) are captured in whole turns, so that
    each replay reads every set once and none twice in a row."""
    from triton_conv.timers import Rotation

    cuda = FakeCuda(monkeypatch)
    ran: list[int] = []
    rotation = Rotation([lambda i=i: (ran.append(i), cuda.call()) for i in range(3)])
    m = timing.measure(rotation, rounds=2, min_round_s=1e-3, on_gpu=True)
    assert m.input_sets == 3 and m.iterations % 3 == 0 and 3 <= m.iterations <= timing.MAX_GRAPH_CALLS
    begins = cuda.log.index("capture begins")
    captured = ran[len(ran) - m.iterations :]
    assert cuda.log[begins + 1 : cuda.log.index("capture ends")] == ["call on capture"] * m.iterations
    assert sorted(captured) == sorted(list(range(3)) * (m.iterations // 3))
    assert all(a != b for a, b in zip(captured, captured[1:], strict=False))
    assert timing._calls_per_round(1.0, 1e-3, 7) == 7  # a slow call: one turn
    assert timing._calls_per_round(1e-9, 1e-3, 7) == 98  # a quick one: whole turns up to the graph's 100


def test_a_failed_capture_falls_back_to_the_eager_rounds(monkeypatch):
    cuda = FakeCuda(monkeypatch)

    def synchronising():
        cuda.call()
        if cuda.stream_name == "capture":
            raise RuntimeError("operation not permitted when stream is capturing")

    m = timing.measure(synchronising, rounds=3, min_round_s=1e-3, on_gpu=True)
    assert m.timer == "synchronised wall clock (capture failed)" and m.device_seconds is None
    assert m.error.startswith("RuntimeError: operation not permitted") and len(m.rounds) == 3
    assert statistics.median(m.rounds) == m.eager_seconds and "replay" not in cuda.log
    assert cuda.log[cuda.log.index("capture ends") + 1] == "synchronize"


def test_an_items_time_limit_waits_for_the_capture_to_end(monkeypatch):
    """A limit that strikes mid-capture would leave the stream capturing (every later CUDA call of
    the campaign failing): it is held back, and strikes as the capture ends, with every call in."""
    cuda = FakeCuda(monkeypatch)

    def slow_to_capture():
        cuda.call()
        if cuda.stream_name == "capture" and cuda.captured == 1:
            time.sleep(0.4)

    with pytest.raises(run.ItemTimeout), run.time_limit(0.15):
        timing.measure(slow_to_capture, rounds=2, min_round_s=1.0, on_gpu=True)  # a full graph
    assert cuda.log[-1] == "capture ends" and cuda.captured == timing.MAX_GRAPH_CALLS


# --- provenance ---------------------------------------------------------------------------------------
FAKE_SMI = """#!{python}
import sys
fields = next(a for a in sys.argv if a.startswith("--query-gpu=")).split("=", 1)[1].split(",")
unknown = [f for f in fields if f.startswith("power.draw")]
if unknown:
    print(f'Field "{{unknown[0]}}" is not a valid field to query.')
    sys.exit(2)
print(", ".join(f"{{f}} value" for f in fields))
"""


@pytest.mark.parametrize("binary", ["answers", "rejects a field", "missing", "hangs"])
def test_nvidia_smi_answers_what_it_can(tmp_path, monkeypatch, binary):
    script = tmp_path / "nvidia-smi"
    if binary == "hangs":
        script.write_text("#!/bin/sh\nexit 3\n")
    else:
        text = FAKE_SMI.format(python=sys.executable)
        script.write_text(text if binary == "rejects a field" else text.replace('"power.draw"', '"nothing"'))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) if binary != "missing" else str(tmp_path / "none"))
    if binary == "hangs":  # a hung nvidia-smi is given up once, not asked field by field
        asked = []

        def hung(*args, **kwargs):
            asked.append(args)
            raise subprocess.TimeoutExpired(args[0], 20)

        monkeypatch.setattr(provenance.subprocess, "run", hung)
    answer = provenance.nvidia_smi(0)
    if binary == "answers":
        assert answer == {field: f"{field} value" for field in provenance.SMI_FIELDS}
    elif binary == "rejects a field":
        assert answer["power.draw"] is None and answer["clocks.max.sm"] == "clocks.max.sm value"
        assert "not a valid field" in answer["error"] and set(answer) == {*provenance.SMI_FIELDS, "error"}
    else:
        assert set(answer) == {"error"} and "nvidia-smi" in answer["error"]
    if binary == "hangs":
        assert len(asked) == 1


@pytest.mark.parametrize("pci", [(0, 0x3B, 0x1F), None])
def test_nvidia_smi_is_asked_for_torchs_device_by_its_pci_bus_id(monkeypatch, pci):
    # Under CUDA_VISIBLE_DEVICES=3, torch's device 0 is nvidia-smi's 3: the index alone names the
    # wrong GPU, its bus id the right one.
    asked = []

    def smi(query, **kwargs):
        asked.append(query[1])
        return subprocess.CompletedProcess(query, 0, stdout=", ".join(provenance.SMI_FIELDS) + "\n")

    ids = {} if pci is None else dict(zip(("pci_domain_id", "pci_bus_id", "pci_device_id"), pci, strict=True))
    monkeypatch.setattr(provenance.subprocess, "run", smi)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(**ids))
    assert provenance.nvidia_smi(2)["pstate"] == "pstate"
    assert asked == (["--id=00000000:3B:1F.0"] if pci else ["--id=2"])


# --- the APIs the GPU paths call, in this torch and Triton -------------------------------------------
def test_the_gpu_paths_call_apis_this_torch_and_triton_have():
    from triton import knobs
    from triton.runtime.jit import JITFunction
    from triton.testing import do_bench

    graph = inspect.signature(torch.cuda.graph.__init__).parameters
    assert list(graph)[1] == "cuda_graph" and "capture_error_mode" in graph
    for name in ("CUDAGraph", "Stream", "Event", "stream", "current_stream", "synchronize", "empty_cache",
                 "get_device_capability", "get_device_properties", "is_current_stream_capturing",
                 "reset_peak_memory_stats", "max_memory_allocated", "memory_allocated", "mem_get_info",
                 "OutOfMemoryError", "is_initialized"):  # fmt: skip
        assert hasattr(torch.cuda, name), name
    assert issubclass(torch.cuda.OutOfMemoryError, Exception)
    bench = inspect.signature(do_bench).parameters  # tuning.gpu_timer's call
    assert {"warmup", "rep", "return_mode"} <= set(bench) and '"median"' in inspect.getsource(do_bench)
    assert inspect.signature(JITFunction.preload).parameters.keys() == {"self", "specialization_data"}
    # (the recording above calls knobs.runtime.jit_cache_hook's hook, and the listener test Triton's
    # compilation listener, each for real)
    assert hasattr(knobs.compilation, "listener") and hasattr(knobs.runtime, "jit_cache_hook")


@pytest.mark.parametrize("one_image_pinned", [True, False])
def test_a_pass_item_on_the_gpu_branch_times_by_graph_replay(tmp_path, monkeypatch, one_image_pinned):
    """pass_item with the campaign's GPU branch (the kernels in the interpreter, torch.cuda faked):
    each candidate timed by replays, the winner pinned and run by the op, cuDNN beside it, the batch
    against one image at a time, each record with its device, eager and host times and its fraction
    of the measured peak. triton-conv's images one at a time run the config the N=1 item checked and
    pinned; with none pinned they are skipped, not run on a default config no check ran."""
    from triton_conv import choices, timers, tuning
    from triton_conv.campaign.runners import make_inputs, op_channels_last

    cuda = FakeCuda(monkeypatch, replay_ms=0.5)
    item = next(i for i in spec.plan_items(spec.tiny())["batching"] if i.one_at_a_time)
    shapes = (item.problem.input_shape, item.problem.weight_shape)
    set_bytes = sum(math.prod(shape) * 2 for shape in shapes)  # what fprop reads: x and w in fp16
    monkeypatch.setattr(timers, "l2_cache_bytes", lambda device: set_bytes)  # two sets: twice this "L2"
    campaign = run.Campaign(spec.tiny(), str(tmp_path / "out"), budget_s=100, echo=None)
    campaign.on_gpu = True
    campaign.state["ceilings"] = {"matmul_dtype": "fp16", "matmul_tflops": 10.0}
    campaign.checked[item.id] = item.candidates
    if one_image_pinned:  # as the N=1 item's tune_item pins it, from its own N=1 tensors
        one = item.problem.with_batch(1)
        tensors = make_inputs(one, spec.tiny().torch_dtype, campaign.device)
        channels_last = op_channels_last("fprop", tensors)
        w = tensors["w"]
        choices.pin_config(one, "fprop", w.dtype, channels_last, w.device, item.candidates[-1])
    # every launch of the op runs a pinned config: none falls through to tuning (or its default)
    monkeypatch.setattr(tuning, "autotune", lambda *args, **kwargs: pytest.fail("an unpinned shape ran"))
    try:
        assert timing_steps.pass_item(campaign, item) is True
    finally:
        choices.forget_choices()
        campaign.out.close()
    infos = [r["extra_info"] for r in campaign.records]
    if not one_image_pinned:
        assert ("triton-conv", "one-at-a-time") not in {(i["implementation"], i.get("how")) for i in infos}
        assert ("cudnn", "one-at-a-time") in {(i["implementation"], i.get("how")) for i in infos}
        assert campaign.state["skipped"] == [
            {"step": "start", "item": f"{item.id} one-at-a-time",
             "why": "triton-conv's N=1 config was never checked and pinned"}
        ]  # fmt: skip
        return
    (row,) = campaign.autotune_rows
    # the tiny spec asks for rounds of one call: one turn over the two sets, 0.5 ms a replay
    assert row["winner_ms"] == pytest.approx(0.5 / 2) and len(row["timings"]) == len(item.candidates)
    assert {(i["implementation"], i.get("how")) for i in infos} == {
        ("triton-conv", None), ("cudnn", None), ("triton-conv", "batch"), ("cudnn", "batch"),
        ("triton-conv", "one-at-a-time"), ("cudnn", "one-at-a-time"),
    }  # fmt: skip
    for info in infos:
        assert info["input_sets"] == info["iterations"] == 2
        assert info["timer"] == "CUDA graph replay, CUDA events" and info["timer_error"] is None
        assert info["device_seconds"] == pytest.approx(5e-4 / 2) and info["eager_seconds"] > 0
        assert info["measured_peak_tflops"] == 10.0
        assert info["fraction_of_peak"] == pytest.approx(info["tflops"] / 10.0)
        assert info["l2_multiple"] == pytest.approx(2.0)  # two sets, each of the "L2"'s size
    # Each record names what it timed: the batch ran the pinned winner, and carries its own check.
    by_how = {(i["implementation"], i.get("how")): i for i in infos}
    assert by_how["triton-conv", "batch"]["config"] == by_how["triton-conv", None]["config"] == row["winner"]
    assert by_how["cudnn", "batch"]["config"] is None
    for impl in ("triton-conv", "cudnn"):
        assert by_how[impl, "batch"]["relative_error"] == by_how[impl, None]["relative_error"]
    assert cuda.log.count("capture begins") == len(item.candidates) + 4  # candidates, op, cuDNN, N x 1


def test_compile_workers_are_as_many_as_the_cores_this_process_may_use(tmp_path, monkeypatch):
    """A container on a big host: os.cpu_count() is the host's; the affinity or the CPU quota is
    what the compile step may use (one worker per host core would each import torch and thrash)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 192)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    (v2).mkdir()
    (v2 / "cpu.max").write_text("1600000 100000\n")
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("800000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (none).mkdir()
    (none / "cpu.max").write_text("max 100000\n")
    assert precompile.usable_cores(str(v2)) == 16
    assert precompile.usable_cores(str(v1)) == 8
    assert precompile.usable_cores(str(none)) == 64  # no quota: the affinity
    assert precompile.usable_cores(str(tmp_path / "missing")) == 64


# --- the training step runs the kernels the pass steps compiled and timed ---------------------------
def _specialisation(launch) -> tuple:
    """What Triton compiles a launch for (conservatively more): the kernel, its constexprs, warps and
    stages, each tensor's dtype and 16-byte alignment, each int's equality to 1, divisibility by 16
    and width, each TMA descriptor's dtype, box and strides."""
    args = []
    for arg in launch.args:
        if isinstance(arg, TensorDescriptor):
            args.append(("descriptor", arg.base.dtype, tuple(arg.block_shape), tuple(arg.strides)))
        elif isinstance(arg, torch.Tensor):
            args.append(("pointer", arg.dtype, arg.data_ptr() % 16 == 0))
        elif isinstance(arg, bool):
            args.append(("bool", arg))
        else:
            args.append(("int", arg == 1, arg % 16 == 0, -(2**31) <= arg < 2**31))
    constexprs = tuple(sorted((k, str(v)) for k, v in launch.constexprs.items()))
    return launch.kernel.__name__, constexprs, launch.num_warps, launch.num_stages, tuple(args)


def test_a_converted_models_training_launches_the_kernels_the_pass_steps_compile(monkeypatch):
    """The training step's convolutions (a converted channels_last ResNet-50 under bf16 autocast,
    forward and backward) run the very kernels the pass steps compile ahead and time for the same
    problems and configs: nothing compiled inside the training item. A 1x1 weight laid out by
    Module.to(memory_format=channels_last) has strides (C, 1, C, C), not .contiguous()'s (C, 1, 1, 1),
    a different specialisation, which the pass steps' inputs once had (memory_format.random_in_layout)."""
    import copy

    import torch.nn.functional as F

    from triton_conv import choices, convert_model, passes
    from triton_conv.campaign.runners import launch_with_config, make_inputs, op_channels_last
    from triton_conv.launchers import dgrad, fprop, wgrad
    from triton_conv.resnet50 import ResNet50

    launched, chosen = [], []
    for module in (fprop, dgrad, wgrad):  # recorded, not run: the shapes flow, the numbers do not matter
        monkeypatch.setattr(module, "launch", lambda launch: launched.append(_specialisation(launch)))
    choose = passes.choose_config

    def recorded_choice(problem, pass_name, dtype, device, channels_last):
        config = choose(problem, pass_name, dtype, device, channels_last)
        chosen.append((problem, pass_name, dtype, channels_last, config))
        return config

    monkeypatch.setattr(passes, "choose_config", recorded_choice)
    torch.manual_seed(0)
    net = ResNet50(8, (3, 4, 6, 3), 10).to(memory_format=torch.channels_last)
    model = convert_model(copy.deepcopy(net))
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), torch.randint(0, 10, (2,)))
        loss.backward()
        training, launched[:] = set(launched), []
        for problem, pass_name, dtype, channels_last, config in set(chosen):
            tensors = make_inputs(problem, dtype, "cpu")
            assert op_channels_last(pass_name, tensors) == channels_last
            launch_with_config(pass_name, problem, tensors, config)()
    finally:
        choices.forget_choices()
    assert {name for name, *_ in training} == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}
    assert len(training) > 30 and training <= set(launched)


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
    est = run.Estimator(spec.tiny(), costs, False)
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
    free = run.Estimator(two_peers, dataclasses.replace(costs, peer_first_s=0.0, peer_shape_s=0.0), False)
    rest = [free.peer_item(item) for item in peers]
    assert charged[0][1] == pytest.approx(costs.peer_first_s + rest[0])  # the first: the whole first compile
    assert charged[1][1] == pytest.approx(costs.peer_shape_s + rest[1])  # the second: its shape alone
    step = next(p for p in state["plan"] if p["step"] == "peer")
    once = costs.peer_first_s + costs.peer_shape_s + sum(rest)
    assert step["estimate_s"] == pytest.approx(once, abs=0.01)


def test_every_h200_items_op_runs_the_winner_the_campaign_pinned(monkeypatch):
    """tune_item pins its winner with choices.pin_config(item.problem, ...) and then times triton-conv's
    op, which builds its own ConvProblem from the tensors and asks passes.choose_config. Where the two
    differ (a field of the problem, the layout flag, the device) the op runs the untuned default
    under the winner's name, compiled in the campaign's process. Checked on the H200 campaign's own
    problems (every layer, N, pass, the decoder's transposed passes, the 1920x1080 layer), and for
    N launches of one image, which run the N=1 item's winner; the op is stopped at its choice."""
    from triton_conv import benchmarking, benchmarking_transposed, choices, passes
    from triton_conv.benchmarking import images_one_at_a_time
    from triton_conv.campaign.runners import make_inputs, op_channels_last, pass_function

    def empty(shape, dtype, device, channels_last):  # the shapes and strides, not the values
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty(shape, dtype=dtype, device=device, memory_format=layout)

    class Chosen(Exception):
        pass

    asked = []

    def choose(problem, pass_name, dtype, device, channels_last):
        asked.append(choices.remembered_config(problem, pass_name, dtype, channels_last, device))
        raise Chosen

    monkeypatch.setattr(benchmarking, "random_in_layout", empty)
    monkeypatch.setattr(benchmarking_transposed, "random_in_layout", empty)
    monkeypatch.setattr(passes, "choose_config", choose)
    plan = spec.h200()
    items = spec.plan_items(plan)

    def ask(fn) -> list:
        asked.clear()
        with contextlib.suppress(Chosen):
            fn()
        return list(asked)

    def pin(item, tensors, config) -> None:  # as timing_steps.tune_item pins
        w, flag = tensors["w"], op_channels_last(item.pass_name, tensors, item.transposed)
        choices.pin_config(item.problem, item.kernel_pass, w.dtype, flag, w.device, config)

    missed, checked = [], 0
    try:
        for step in spec.CHECKED_STEPS:
            for item in items[step]:
                tensors = make_inputs(item.problem, plan.torch_dtype, "cpu", item.transposed)
                pin(item, tensors, item.candidates[-1])
                op = pass_function("triton-conv", item.pass_name, item.problem, tensors, on_gpu=True,
                                   transposed=item.transposed)  # fmt: skip
                checked += 1
                if ask(op) != [item.candidates[-1]]:
                    missed.append(item.id)
        singles = {i.layer: i.candidates[-1] for i in items["batching"] if i.problem.batch == 1}
        for item in [i for i in items["batching"] if i.one_at_a_time]:
            tensors = make_inputs(item.problem, plan.torch_dtype, "cpu")
            if ask(images_one_at_a_time("triton-conv", item.problem, tensors)) != [singles[item.layer]]:
                missed.append(f"{item.id} one at a time")
    finally:
        choices.forget_choices()
    assert checked > 300 and missed == []


def test_the_plan_counts_cudnns_algorithm_search_per_shape(monkeypatch):
    """cudnn.benchmark searches on the first call of each shape and pass: once per timed item, and
    again for the single image of an item timed one image at a time."""
    from triton_conv.campaign.costs import CostModel

    items = spec.plan_items(spec.tiny())
    plain = next(i for i in items["fprop"])
    single = next(i for i in items["batching"] if i.one_at_a_time)
    searching, free = CostModel(), CostModel(cudnn_search_s=0.0)
    for item, searches in ((plain, 1), (single, 2)):
        extra = run.Estimator(spec.tiny(), searching, True).pass_item(item)
        extra -= run.Estimator(spec.tiny(), free, True).pass_item(item)
        assert extra == pytest.approx(searches * searching.cudnn_search_s)


def test_a_candidate_whose_capture_failed_never_wins_on_a_wall_clock(monkeypatch):
    """tune_item sorted its candidates by seconds whatever their timer: one whose graph capture
    failed held the synchronised wall clock (its launch cost included) against the others' device
    time. Device-timed candidates rank first; the failed one ranks after them, by its own time."""
    from triton_conv import choices
    from triton_conv.campaign.timing import DEVICE_TIMER, Measurement
    from triton_conv.configs import KernelConfig

    problem = ConvProblem.from_shapes((1, 8, 6, 6), (8, 8, 3, 3), padding=1)
    configs = [KernelConfig(16, 16, 16), KernelConfig(32, 16, 16), KernelConfig(16, 32, 16)]
    wall = "synchronised wall clock (capture failed)"
    measured = iter([(DEVICE_TIMER, 3e-5), (wall, 1e-5), (DEVICE_TIMER, 2e-5)])

    def fake_measure(run, fn, eager=True):
        timer, seconds = next(measured)
        return Measurement([seconds], timer=timer)

    monkeypatch.setattr(timing_steps, "_measure", fake_measure)
    item = SimpleNamespace(id="item", pass_name="fprop", kernel_pass="fprop", problem=problem,
                           transposed=False)  # fmt: skip
    tensors = {"x": torch.randn(1, 8, 6, 6), "w": torch.randn(8, 8, 3, 3), "dy": torch.randn(1, 8, 6, 6)}
    run = SimpleNamespace(checked={"item": configs})
    try:
        winner, timings = timing_steps.tune_item(run, item, [tensors])
    finally:
        choices.forget_choices()
    assert winner == configs[2] and [c for c, _ in timings] == [configs[2], configs[0], configs[1]]
