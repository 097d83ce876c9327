"""`triton-conv campaign` on the CPU: the whole campaign on tiny shapes under the interpreter (every
step, every file), a budget cut that leaves valid files, the compile step's variants found in
Triton's cache by the JIT's own launch path, the H200 plan's estimate against 480 s, and the parts."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from triton_conv import benchmarking, choices
from triton_conv.campaign import budget, costs, h200, records, runners, spec, timing
from triton_conv.campaign.output import FILES, write_json
from triton_conv.campaign.run import Campaign, launch_jobs
from triton_conv.campaign.runners import launch_with_config, op_channels_last
from triton_conv.configs import KernelConfig
from triton_conv.launchers import dgrad, fprop, wgrad
from triton_conv.layers import resnet50, unet_decoder
from triton_conv.problem import TRANSPOSED_PASSES, ConvProblem
from triton_conv.pruning import pruned_space
from triton_conv.report.sweep_json import load_run
from triton_conv.tuning import untimed_default
from triton_conv.tuning_keys import tuning_key

from .reference import bound

REPO = Path(__file__).resolve().parent.parent
JSON_FILES = [name for name in FILES.values() if name.endswith(".json")]


@pytest.fixture(scope="module")
def triton_cache(tmp_path_factory):
    """One Triton cache for the module: the budget-cut run and the cache test reuse the compiles."""
    return str(tmp_path_factory.mktemp("triton-cache"))


def _campaign(out: Path, budget_s: float, cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_CACHE_DIR": cache, "TRITON_CONV_CACHE_DIR": str(out.parent / "tuning")}
    command = [sys.executable, "-m", "triton_conv", "campaign", "--spec", "tiny", "--out", str(out),
               "--budget-s", str(budget_s), "--workers", "2"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def _files(folder: Path) -> dict:
    return {name: json.loads((folder / name).read_text()) for name in JSON_FILES if (folder / name).exists()}


def test_a_campaign_whose_reader_left_runs_to_its_end(tmp_path, triton_cache):
    """`triton-conv campaign ... | head -1`: the first print after the reader left raised
    BrokenPipeError out of the run, which ended in its first step with campaign.json still saying
    'running'. The echo stops; the run and its log go on."""
    out = tmp_path / "out"
    env = {**os.environ, "TRITON_CACHE_DIR": triton_cache, "TRITON_CONV_CACHE_DIR": str(tmp_path / "tuning")}
    command = [sys.executable, "-m", "triton_conv", "campaign", "--spec", "tiny", "--out", str(out),
               "--budget-s", "3", "--workers", "1"]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    ) as process:
        process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read()
        process.wait(timeout=600)
    state = json.loads((out / FILES["campaign"]).read_text())
    assert not state["status"].startswith(("running", "failed")), state["status"]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr[-2000:]
    log = (out / FILES["log"]).read_text()
    assert "the echo stopped (Broken pipe)" in log and f"campaign {state['status']}" in log


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, triton_cache):
    out = tmp_path_factory.mktemp("campaign") / "tiny"
    started = time.monotonic()
    done = _campaign(out, 300, triton_cache)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, _files(out), time.monotonic() - started


def test_tiny_campaign_runs_every_step_within_a_minute(tiny_run):
    out, files, wall_s = tiny_run
    state = files["campaign.json"]
    assert state["status"] == "complete" and not state["errors"] and not state["skipped"]
    # Under a minute on an idle machine; on one shared with other work, that much longer (CPU time).
    # On a GPU the items are timed for real: within half as long again as the plan's estimate.
    busy = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    limit = 1.5 * sum(step["estimate_s"] for step in state["plan"]) if state["on_gpu"] else 60 * busy
    assert state["elapsed_s"] < limit, f"the campaign took {state['elapsed_s']} s (process: {wall_s:.0f} s)"
    assert sorted(os.listdir(out)) == sorted(FILES.values()) and len(FILES) <= 8
    assert state["check_processes"] == 1  # the check ran in its own process, which never died
    ran = {step["step"]: step for step in state["steps"]}
    for name in ("ceilings", "compile", "check", "fprop", "peer", "dgrad", "wgrad", "batching", "megapixel",
                 "decoder", "training"):  # fmt: skip
        assert ran[name].get("done", 0) >= 1, f"step {name} did nothing: {ran.get(name)}"
        assert ran[name]["estimate_s"] is not None and ran[name]["actual_s"] >= 0
    assert state["provenance"]["commit"] and state["provenance"]["torch"] == torch.__version__
    assert state["ceilings"]["matmul_tflops"] > 0 and state["ceilings"]["copy_gb_per_s"] > 0


def test_every_timing_is_checked_and_reads_as_a_pytest_benchmark_json(tiny_run):
    out, files, _ = tiny_run
    benchmarks = files["timings.json"]["benchmarks"]
    found = {(b["extra_info"]["kind"], b["extra_info"]["implementation"]) for b in benchmarks}
    both = ("triton-conv", "cudnn")
    for kind, impls in (("pass", (*both, "inductor")), ("batching", both), ("training_step", both)):
        assert {(kind, impl) for impl in impls} <= found
    from pytest_benchmark.stats import Stats

    for bench in benchmarks:
        assert set(bench["stats"]) == {*Stats.fields, "iterations"} and bench["stats"]["median"] > 0
        info = bench["extra_info"]
        if info["kind"] in ("pass", "batching"):
            assert info["relative_error"] <= info["tolerance"] == benchmarking.tolerance("fp16", False)
    records_read, meta = load_run(out / "timings.json")
    assert len(records_read) == len(benchmarks) and meta["machine_info"]["triton_conv"]["mode"] == "campaign"
    checks = files["checks.json"]["checks"]
    assert checks and all(c["passed"] for c in checks)
    items = spec.plan_items(spec.tiny())
    timed = [i for s in spec.CHECKED_STEPS for i in items[s]]
    assert len(checks) == sum(len(i.candidates) for i in timed)  # every candidate of every timed problem
    rows = files["autotune.json"]["rows"]
    assert len(rows) == len(timed)
    for row in rows:  # the winner is the fastest candidate, and it is what triton-conv's op ran
        assert row["winner_ms"] == min(ms for _, ms in row["timings"])
        same = {"kind": "pass", "implementation": "triton-conv", "step": row["step"], "layer": row["layer"],
                "N": row["batch"], "pass": row["pass"]}  # fmt: skip
        op = next(b for b in benchmarks if all(b["extra_info"].get(k) == v for k, v in same.items()))
        assert op["extra_info"]["config"] == row["winner"]
    # the decoder's transposed convolutions: each pass against cuDNN's, with its view's kernel named
    decoder = [b["extra_info"] for b in benchmarks if b["extra_info"].get("step") == "decoder"]
    assert {(info["pass"], info["kernel_pass"], info["implementation"]) for info in decoder} == {
        (p, k, impl) for p, k in (("fprop", "dgrad"), ("dgrad", "fprop"), ("wgrad", "wgrad")) for impl in both
    }
    assert all(info["transposed"] and info["layer_set"] == "unet_decoder" for info in decoder)
    training = files["training.json"]
    assert training["initial_weights_identical"]
    assert training["comparison"]["max_relative_loss_deviation"] < 5e-2


def test_compile_step_compiled_each_variant_once(tiny_run):
    _, files, _ = tiny_run
    compiled = files["compile.json"]
    assert compiled["variants"] == len(compiled["results"]) == len(compiled["variant_list"]) > 0
    assert not any(r["error"] for r in compiled["results"])
    assert len({r["key"] for r in compiled["results"]}) == compiled["variants"]
    assert compiled["target"] == ["cuda", 90, 32] and compiled["launches"] >= compiled["variants"]


REPLAY = """
import sys, torch
from triton import knobs
from triton_conv.benchmarking import DTYPES
from triton_conv.campaign import spec
from triton_conv.campaign.target import TARGET_H200, meta_as_target, use_compile_only_driver
from triton_conv.campaign.run import launch_jobs
from triton_conv.campaign.runners import launch_with_config, make_inputs
import triton_conv.launchers.dgrad, triton_conv.launchers.fprop, triton_conv.launchers.wgrad

use_compile_only_driver(TARGET_H200)
hits = []
knobs.compilation.listener = lambda **kw: hits.append(kw["cache_hit"])

def warm_only(launch):  # the JIT's own run() path, up to the launch, which has no GPU to go to
    launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.constexprs, num_warps=launch.num_warps,
                         num_stages=launch.num_stages)

for name in ("fprop", "dgrad", "wgrad"):
    getattr(triton_conv.launchers, name).launch = warm_only
tiny = spec.tiny()
with meta_as_target(TARGET_H200):  # the meta tensors stand for an H200's (its TMA, say)
    for job in launch_jobs(tiny, spec.plan_items(tiny)):
        tensors = make_inputs(job.problem, DTYPES[job.dtype], "meta", job.transposed)
        launch_with_config(job.pass_name, job.problem, tensors, job.config, transposed=job.transposed)()
print(len(hits), sum(hits))
"""


def test_a_later_process_finds_every_precompiled_variant_in_the_cache(tiny_run, triton_cache):
    """What makes the timed calls of a GPU run hit the cache: a fresh process that launches the
    campaign's jobs through Triton's JIT (stopped at the launch) compiles nothing."""
    _, files, _ = tiny_run
    env = {**os.environ, "TRITON_CACHE_DIR": triton_cache, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", REPLAY], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    seen, hits = map(int, done.stdout.split()[-2:])
    assert seen == files["compile.json"]["variants"] and hits == seen


def test_a_budget_cut_stops_in_time_and_leaves_valid_files(tmp_path, triton_cache, tiny_run):
    """A budget well below the tiny plan's 54 s estimate. At 25 s the timed steps' share (each step
    gets its estimate's share of what is left) was below one item's estimate unless the compile and
    check steps were done within 10 s, which two loaded cores did not always manage: nothing was
    timed and the command exited 1. At 35 s they have until about 20 s."""
    out = tmp_path / "cut"
    budget = 35.0
    done = _campaign(out, budget, triton_cache)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = _files(out)
    assert set(files) == set(JSON_FILES) - {"training.json"} or set(files) == set(JSON_FILES)
    state = files["campaign.json"]
    assert state["status"] == "cut by the budget"
    why = [s["why"] for s in state["skipped"]]
    assert why and all(w.startswith("budget") or w.startswith("never checked") for w in why)
    assert state["elapsed_s"] < budget + 10, "an item may overrun its estimate, not the whole run"
    records_read, _ = load_run(out / "timings.json")
    assert len(records_read) == len(files["timings.json"]["benchmarks"])
    assert "cut by the budget" in (out / "campaign.log").read_text()


def test_dry_run_of_the_h200_campaign_fits_480_seconds():
    plan = __import__("triton_conv.campaign", fromlist=["dry_run"]).dry_run(h200(), 480.0)
    text = plan.text
    assert plan.fits
    total = float(re.search(r"^total\s+([\d.]+)", text, re.M).group(1))
    compiles = int(re.search(r"^compile\s+\d+\s+(\d+)", text, re.M).group(1))
    assert total <= 480 and "fits the budget of 480 s" in text
    assert 100 < compiles < 1000
    for step in ("ceilings", "compile", "check", "fprop", "peer", "dgrad", "wgrad", "batching", "megapixel",
                 "decoder", "training"):  # fmt: skip
        assert re.search(rf"^{step}\s", text, re.M), step
    steps = re.findall(r"^(\w+)\s+\d+\s", text, re.M)
    assert steps[-3:] == ["decoder", "training", "finish"]  # the decoder: timed last before training
    decoder = re.search(r"^decoder\s+(\d+)\s", text, re.M).group(1)
    assert int(decoder) == len(unet_decoder()) * 2 * 3  # every layer at N = 1 and 8, three passes
    assert "Cost model" in text and "one variant on one core" in text


# --- the parts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 11, 20])
def test_benchmark_stats_are_pytest_benchmarks(n):
    from pytest_benchmark.stats import Stats

    data = [float(x) for x in torch.rand(n).tolist()]
    theirs = Stats()
    for value in data:
        theirs.update(value)
    ours = timing.benchmark_stats(data, iterations=3)
    for field in Stats.fields:
        want = getattr(theirs, field)
        assert ours[field] == (pytest.approx(want) if isinstance(want, float) else want), field
    assert ours["iterations"] == 3


def test_candidates_are_pruned_ranked_and_of_distinct_tiles():
    problem = ConvProblem.from_shapes((8, 256, 14, 14), (256, 256, 3, 3), padding=1)
    plan = h200()
    for pass_name in ("fprop", "dgrad", "wgrad"):
        chosen = spec.candidates(problem, pass_name, plan)
        space = pruned_space(problem, pass_name, torch.bfloat16, plan.device)
        assert len(chosen) == plan.candidates and set(chosen) <= set(space)
        assert len({(c.block_m, c.block_n, c.split_k) for c in chosen}) == len(chosen)
        predicted = [costs.predicted_seconds(problem, pass_name, c, "bf16", plan.device) for c in space]
        assert costs.predicted_seconds(problem, pass_name, chosen[0], "bf16", plan.device) == min(predicted)


def test_candidates_take_a_split_of_a_tile_as_a_shape_of_its_own(monkeypatch):
    """The model cannot tell warps and stages apart, but a split-K variant of a tile is another
    launch grid and another reduction: it is a shape of its own, picked before a second config of
    any shape. Pruning and the model are stubbed, so the ranking is the test's (fastest first, in
    the space's order) and the assertions hold whatever the model would rank."""
    tile = KernelConfig(64, 64, 64, num_warps=4, num_stages=3)
    more_warps = KernelConfig(64, 64, 64, num_warps=8, num_stages=3)  # the same shape as `tile`
    split = KernelConfig(64, 64, 64, split_k=2, num_warps=4, num_stages=3)
    ranked = [tile, more_warps, split]
    monkeypatch.setattr(spec, "pruned_space", lambda *args, **kwargs: list(ranked))
    monkeypatch.setattr(
        spec, "predicted_seconds", lambda problem, pass_name, config, *args: ranked.index(config)
    )
    problem = ConvProblem.from_shapes((8, 256, 14, 14), (256, 256, 3, 3), padding=1)
    plan = spec.tiny()
    assert plan.candidates == 2
    assert spec.candidates(problem, "fprop", plan) == (tile, split)
    three = spec.CampaignSpec("three", candidates=3)  # every shape once, then the fastest left over
    assert spec.candidates(problem, "fprop", three) == (tile, split, more_warps)


def _relaid(tensors: dict, contiguous: str | None) -> dict:
    """The inputs with one of them (x or w) made NCHW: the ops' layout rule sees both operands."""
    if contiguous is None:
        return tensors
    return {**tensors, contiguous: tensors[contiguous].contiguous()}


MIXED = pytest.mark.parametrize("contiguous", [None, "x", "w"], ids=("nhwc", "x_nchw", "w_nchw"))


@MIXED
@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "wgrad"])
@pytest.mark.parametrize("kernel", [1, 3])
def test_a_candidates_launch_is_the_ops_launch(pass_name, kernel, contiguous, triton_only):
    """The compile step compiles candidates; the op must then run the same binary: the same launch
    plan (config, geometry, flags), with the winner pinned by choices.pin_config."""
    problem = ConvProblem.from_shapes((3, 24, 7, 5), (40, 24, kernel, kernel), padding=kernel // 2)
    device = torch.get_default_device()  # the CPU under the interpreter, the GPU where the tests run there
    tensors = _relaid(benchmarking.make_inputs(problem, torch.float32, True, device), contiguous)
    config = spec.candidates(problem, pass_name, spec.tiny())[0]
    plans = {"fprop": fprop.plans, "dgrad": dgrad.plans, "wgrad": wgrad.plans}[pass_name]
    flag = op_channels_last(pass_name, tensors)
    choices.pin_config(problem, pass_name, torch.float32, flag, device, config)
    try:
        with triton_only():
            launch_with_config(pass_name, problem, tensors, config)()
            misses, hits = plans.misses, plans.hits
            benchmarking.triton_pass(pass_name, problem, tensors)()
        assert (plans.misses, plans.hits) == (misses, hits + 1), "the op made another launch"
    finally:
        choices.forget_choices()


@MIXED
@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "wgrad"])
def test_a_transposed_candidates_launch_is_the_ops_launch(pass_name, contiguous, triton_only):
    """The same for a transposed convolution's passes (the forward: its view's dgrad with the bias),
    on a view with a crop (output_padding > padding), checked against torch in float64 too."""
    view = ConvProblem.from_transposed(
        (3, 12, 4, 5), (12, 20, 3, 3), stride=2, padding=1, output_padding=(1, 0)
    )
    device = torch.get_default_device()  # the CPU under the interpreter, the GPU where the tests run there
    tensors = _relaid(runners.make_inputs(view, torch.float32, device, transposed=True), contiguous)
    kernel = TRANSPOSED_PASSES[pass_name]
    config = spec.candidates(view, kernel, spec.tiny())[0]
    plans = {"fprop": fprop.plans, "dgrad": dgrad.plans, "wgrad": wgrad.plans}[kernel]
    flag = runners.op_channels_last(pass_name, tensors, transposed=True)
    choices.pin_config(view, kernel, torch.float32, flag, device, config)
    try:
        with triton_only() as proof:
            got = launch_with_config(pass_name, view, tensors, config, transposed=True)()
            misses, hits = plans.misses, plans.hits
            runners.pass_function("triton-conv", pass_name, view, tensors, on_gpu=False, transposed=True)()
        assert (plans.misses, plans.hits) == (misses, hits + 1), "the op made another launch"
        assert proof.launches == {f"{kernel}_kernel": 2}
    finally:
        choices.forget_choices()
    want = runners.reference_result(pass_name, view, tensors, transposed=True)
    # fp32 in TF32 on a GPU (cuDNN's setting, as the launch outside a call reads it): TF32's bound there
    assert benchmarking.relative_error(got, want) < max(1e-4, bound(torch.float32))
    key = runners.op_tuning_key(view, pass_name, tensors, transposed=True)
    assert key == tuning_key(view, kernel, torch.float32, True)


def test_shrunk_decoder_layers_keep_their_geometry():
    for layer in unet_decoder():
        small = spec.shrunk_view(layer.problem)
        assert small.transposed_arguments() == layer.problem.transposed_arguments()
        assert (small.kernel_h, small.kernel_w) == (layer.problem.kernel_h, layer.problem.kernel_w)
        assert max(small.in_channels, small.out_channels) <= 8 and small.out_height <= 5


def test_launch_jobs_are_distinct_and_cover_every_candidate():
    tiny = spec.tiny()
    items = spec.plan_items(tiny)
    jobs = launch_jobs(tiny, items)
    launch = lambda j: (j.pass_name, j.transposed, j.problem, j.config)
    assert len(set(map(launch, jobs))) == len(jobs) and any(j.transposed for j in jobs)
    wanted = {
        (i.pass_name, i.transposed, i.problem, c)
        for s in items.values()
        for i in s
        for c in getattr(i, "candidates", ())
    }
    assert set(map(launch, jobs)) == wanted


def test_the_h200_campaign_compiles_the_training_steps_defaults_ahead():
    """A layer whose pass item a deadline cut runs its untimed default in the training step: that
    binary is compiled ahead with the rest, not in the training step's time limit."""
    full = spec.h200()
    items = spec.plan_items(full)
    launches = {(j.pass_name, j.transposed, j.problem, j.config) for j in launch_jobs(full, items)}
    t = full.training
    needed = set()
    for layer in resnet50(t.image, t.image):
        problem = layer.problem.with_batch(t.batch)
        for pass_name in ("fprop", "dgrad", "wgrad") if problem.in_channels > 4 else ("fprop", "wgrad"):
            config = untimed_default(problem, pass_name, full.torch_dtype, True, full.device)
            needed.add((pass_name, False, problem, config))
    assert len(needed) == 68 and needed <= launches
    candidates = {(i.pass_name, i.transposed, i.problem, c) for s in items.values() for i in s
                  for c in getattr(i, "candidates", ())}  # fmt: skip
    assert launches == candidates | needed


def test_only_model_link_asks_the_model():
    folder = REPO / "triton_conv" / "campaign"
    for path in folder.glob("*.py"):
        if path.name == "model_link.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.endswith(("model", "report.model")) and "model." not in node.module, (
                    f"{path.name} imports the model"
                )


def test_step_deadlines_protect_later_steps_then_share_a_shortage(tmp_path):
    run = Campaign(spec.tiny(), str(tmp_path / "out"), budget_s=100.0, echo=None)
    plan = [
        costs.StepPlan(name, 1, 0, seconds, "") for name, seconds in (("a", 20), ("b", 30), ("finish", 10))
    ]
    run.set_plan(plan)
    run.started = time.monotonic()
    assert run.step_deadline("a") == pytest.approx(60.0, abs=0.5)  # 100 - (30 + 10): a may use the slack
    assert run.step_deadline("b") == pytest.approx(90.0, abs=0.5)
    run.started -= 80  # 80 s gone, 20 left for 40 s of estimates: b gets 30/40 of them
    assert run.step_deadline("b") == pytest.approx(80 + 15.0, abs=0.5)
    run.out.close()


def test_the_peer_step_never_takes_the_later_steps_slack(tmp_path):
    """Inductor's compile per shape is the plan's least known cost: with slack for 60 s, the peer step
    gets OVERRUN_CAP x its estimate, and what it leaves flows to the steps after it."""
    run = Campaign(spec.tiny(), str(tmp_path / "out"), budget_s=100.0, echo=None)
    plan = [
        costs.StepPlan(name, 1, 0, seconds, "")
        for name, seconds in (("peer", 20), ("dgrad", 30), ("finish", 10))
    ]
    run.set_plan(plan)
    run.started = time.monotonic()
    assert budget.OVERRUN_CAP["peer"] * 20 < 60
    assert run.step_deadline("peer") == pytest.approx(budget.OVERRUN_CAP["peer"] * 20, abs=0.5)
    assert run.step_deadline("dgrad") == pytest.approx(90.0, abs=0.5)
    run.started -= 85  # late: the shortage is shared, and the cap is no longer what binds
    assert run.step_deadline("peer") == pytest.approx(85 + 15 * 20 / 60, abs=0.5)
    run.out.close()


def test_json_files_are_whole_and_have_no_infinities(tmp_path):
    path = tmp_path / "x.json"
    write_json(str(path), {"a": float("inf"), "b": [float("nan"), 1.0]})
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 1.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind


# The tiny run is the interpreter's only where the tests run on the CPU: on a GPU it is a GPU run (named
# after the GPU, timed by graph replay), which test_tiny_campaign_on_the_gpu checks.
@pytest.mark.interpreter
def test_report_writes_notes_from_the_folder_and_refuses_cpu_runs_in_notes(tiny_run, tmp_path):
    from triton_conv.report import make_report
    from triton_conv.report.campaign import report_campaign

    out, files, _ = tiny_run
    written = report_campaign(str(out), notes_dir=str(tmp_path / "notes"), plots=False)
    note = (tmp_path / "notes" / "campaign.md").read_text()
    assert "Steps: the cost model's estimate against the run" in note and "status: **complete**" in note
    assert (tmp_path / "notes" / "autotune" / "cpu-interpreter.md").exists()
    batching = (tmp_path / "notes" / "batching.md").read_text()
    assert "Speedup of triton-conv over cuDNN" in batching
    # a CPU run is labelled as one, never as an unknown GPU (its files are named cpu-interpreter-*)
    assert "### cpu (interpreter): measured" in batching and "GPU: none (— SMs)" in batching
    notes = tmp_path / "notes"
    assert (
        written
        == [  # every file to commit, the sweep's copy too (it was left unsaid)
            str(notes / "campaigns" / f"cpu-interpreter-{files['campaign.json']['provenance']['date'][:10]}"),
            str(notes / "sweeps" / "cpu-interpreter-campaign.json"),
            str(notes / "batching.md"),
            str(notes / "autotune" / "cpu-interpreter.md"),
            str(notes / "autotune" / "cpu-interpreter.json"),
            str(notes / "training" / "cpu-interpreter-resnet50-campaign.json"),
            str(notes / "campaign.md"),
        ]
    )
    # the decoder's timings in the measured tables: speedups, and throughput per pass
    for label in (
        "fprop (transposed, dgrad kernel)",
        "dgrad (transposed, fprop kernel)",
        "wgrad (transposed)",
    ):
        layer = re.escape("linknet.up (128->64, 64->128, 3x3 op1)")
        row = rf"^\| unet_decoder +\| {layer} +\| {re.escape(label)} +\| fp16 "
        assert re.search(row, batching, re.M), label
        assert f"##### unet_decoder, {label}, fp16, channels_last" in batching
    with pytest.raises(ValueError, match="not measured on a GPU"):
        report_campaign(str(out), notes_dir=str(REPO / "notes"), plots=False)
    # its timings.json given alone, as a sweep, is refused there too (it was written as measured)
    note = REPO / "notes" / "refused-by-a-test.md"
    try:
        with pytest.raises(ValueError, match="not measured on a GPU"):
            make_report(str(out / "timings.json"), str(note), plots=False)
        assert not note.exists()
    finally:
        note.unlink(missing_ok=True)
    # another clone's notes/ (the default --out from its root, with this checkout installed)
    clone = tmp_path / "clone"
    (clone / "triton_conv").mkdir(parents=True)
    (clone / "pyproject.toml").write_text("")
    with pytest.raises(ValueError, match="not measured on a GPU"):
        report_campaign(str(out), notes_dir=str(clone / "notes"), plots=False)
    assert not (clone / "notes").exists()
    report_campaign(str(out), notes_dir=str(tmp_path / "elsewhere" / "notes"), plots=False)  # no checkout


@pytest.mark.interpreter  # the CPU's timer, record by record (on a GPU: graph replay)
def test_timings_say_how_they_were_timed(tiny_run):
    _, files, _ = tiny_run
    assert files["timings.json"]["machine_info"]["triton_conv"]["timer"] == "CUDA graph replay"
    for bench in files["timings.json"]["benchmarks"]:  # the CPU's one call says so, record by record
        assert bench["extra_info"]["timer"] in ("wall clock, one call (CPU)", records.TRAINING_TIMER)


def test_readme_and_notes_give_one_device_command_under_2000_characters():
    commands = []
    for path in (REPO / "README.md", REPO / "notes" / "README.md"):
        block = re.search(r"<!-- device command -->\n```(?:bash)?\n(.*?)\n```", path.read_text(), re.S)
        assert block, f"{path} has no device command block"
        commands.append(block.group(1))
    command = commands[0]
    assert commands[1] == command, "README.md and notes/README.md give different commands"
    assert len(command) < 2000 and "triton_conv campaign" in command and "--budget-s 480" in command
    assert "TRITON_INTERPRET=1" not in command and "$OUT/" in command


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the real kernels at tiny shapes")
def test_tiny_campaign_on_the_gpu(tiny_run):
    """Where the suite runs on a GPU, the module's tiny run is a GPU run (TRITON_INTERPRET is unset
    there): one campaign for every test of the module, not a second one in the same worker."""
    _, files, _ = tiny_run
    state = files["campaign.json"]
    assert state["on_gpu"] and state["status"] == "complete"
    # Every launch the compile step planned (the candidates, the ops' winners) came from Triton's
    # cache. Only what it does not plan compiles in the process: the images one at a time (N=1, which
    # no tiny item has) and the shrunk training network's layers (no pass item has them).
    here = {s["step"]: s["kernels_compiled_here"] for s in state["steps"] if "kernels_compiled_here" in s}
    planned = ("check", "fprop", "peer", "dgrad", "wgrad", "megapixel", "decoder")
    assert all(here[step] == 0 for step in planned), here
    assert state["triton_cache"]["in_campaign_process"]["loaded"] > 0


def test_an_item_past_its_limit_is_stopped():
    from triton_conv.campaign.run import ItemTimeout, time_limit

    started = time.monotonic()
    with pytest.raises(ItemTimeout), time_limit(0.2):
        time.sleep(5)
    assert time.monotonic() - started < 2
    with time_limit(5):  # an item inside its limit is left alone, and the alarm is gone afterwards
        time.sleep(0.05)
    time.sleep(0.2)


def test_a_compile_worker_past_its_time_is_killed_and_reported():
    from triton_conv.campaign.precompile import record_and_compile

    tiny = spec.tiny()
    started = time.monotonic()
    variants, report = record_and_compile(launch_jobs(tiny, spec.plan_items(tiny)), workers=1, timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert variants == [] and report["results"] == [] and "killed" in report["failures"][0]
