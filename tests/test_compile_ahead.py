"""tune_model's compile step (triton_conv/compile_ahead.py): every config the tunings will time is
compiled for sm_90 into Triton's cache by worker processes before any timing, exactly the binaries
the tuner's own launches ask for; cached keys are not compiled again; bad arguments are refused
before any work."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from triton_conv import choices, compile_ahead, model_tuning, tuning, tuning_cache
from triton_conv.arguments import ConvArgumentError
from triton_conv.tuning_keys import tuning_key

from .tuning_fakes import FakeTimer

REPO = Path(__file__).resolve().parent.parent


class OneConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def fresh_caches(tmp_path, monkeypatch):
    """This test's own tuning cache and Triton cache (the workers inherit the environment)."""
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path / "tuning"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    choices.forget_choices()
    tuning_cache.forget_open_caches()
    yield tmp_path / "triton"
    choices.forget_choices()
    tuning_cache.forget_open_caches()


def test_tune_model_compiles_what_it_will_time_then_nothing_once_cached(
    fresh_caches, fake_runner, monkeypatch
):
    """Three configs per key (the space cut here to keep the compiles few): each key's launches are
    recorded, their distinct binaries compiled for sm_90 into TRITON_CACHE_DIR, none failing; a
    second tune_model finds every key cached and compiles nothing."""
    real, offered = compile_ahead.candidate_configs, []

    def first_three(*args):
        offered.append(real(*args)[:3])
        return offered[-1]

    monkeypatch.setattr(compile_ahead, "candidate_configs", first_three)
    stream = io.StringIO()
    results = model_tuning.tune_model(
        OneConv(), (3, 9, 10), (2,), torch.float16, ("fprop", "wgrad"),
        device="cpu", timer=FakeTimer(), stream=stream, compile_workers=1,
    )  # fmt: skip
    assert len(results) == 2  # fprop and wgrad (the image needs no input gradient)
    line = stream.getvalue().splitlines()[0]
    found = re.fullmatch(
        r"compiled ahead by 1 worker: (\d+) kernel binaries of (\d+) launches to time "
        r"\((\d+) failed to compile\), [\d.]+ s",
        line,
    )
    assert found, line
    binaries, launches, failed = map(int, found.groups())
    assert len(offered) == 2 and launches == sum(map(len, offered)) >= 4
    assert 2 <= binaries <= launches and failed == 0
    cubins = list(fresh_caches.rglob("*.cubin"))
    assert len(cubins) == binaries, (len(cubins), binaries)
    stream = io.StringIO()
    model_tuning.tune_model(
        OneConv(), (3, 9, 10), (2,), torch.float16, ("fprop", "wgrad"),
        device="cpu", timer=FakeTimer(), stream=stream, compile_workers=1,
    )  # fmt: skip
    assert "compiled ahead" not in stream.getvalue() and "(cached" in stream.getvalue()


def test_without_a_gpu_to_time_nothing_is_compiled_ahead(fresh_caches, fake_runner, monkeypatch):
    """The default on a CPU with a timer is no workers; with autotuning off and no timer nothing
    would be timed, so nothing is compiled even when workers are asked for."""
    started = []
    monkeypatch.setattr(compile_ahead, "compile_ahead", lambda *args, **kw: started.append(args))
    stream = io.StringIO()
    model_tuning.tune_model(OneConv(), (3, 9, 10), (2,), device="cpu", timer=FakeTimer(), stream=stream)
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "0")
    model_tuning.tune_model(OneConv(), (3, 9, 10), (4,), device="cpu", stream=stream, compile_workers=2)
    assert started == [] and "compiled ahead" not in stream.getvalue()


@pytest.mark.parametrize("workers", [-1, True, 1.5, "2"])
def test_compile_workers_must_be_a_count(workers, fresh_caches, monkeypatch):
    monkeypatch.setattr(model_tuning, "conv_problems", lambda *a, **k: pytest.fail("work began"))
    with pytest.raises(ConvArgumentError, match="compile_workers must be a whole number >= 0"):
        model_tuning.tune_model(OneConv(), (3, 9, 10), compile_workers=workers)


TF32_JOBS = """
import dataclasses, pickle, sys
import torch
from triton_conv.campaign.precompile import _record_here
from triton_conv.campaign.target import TARGET_H200

jobs = pickle.loads(bytes.fromhex(sys.argv[1]))
torch.backends.cudnn.conv.fp32_precision = "ieee" if jobs[0].tf32 else "tf32"  # the other setting
kept = {v.key for v in _record_here(jobs, TARGET_H200)}
flipped = {v.key for v in _record_here([dataclasses.replace(j, tf32=not j.tf32) for j in jobs], TARGET_H200)}
print(len(kept), len(flipped), kept.isdisjoint(flipped))
"""


@pytest.mark.parametrize("tf32", [True, False])
def test_an_fp32_tuning_compiles_the_kernels_of_its_tf32_setting(tf32, set_tf32):
    """The workers are new processes with torch's default TF32 setting: a tuning under the other
    setting had every fp32 binary compiled for the kernel it would not launch. The jobs carry the
    setting, and a worker whose own setting is the other records the jobs' kernels, not its own."""
    import pickle

    from triton_conv.campaign import precompile
    from triton_conv.problem import ConvProblem

    set_tf32(tf32)
    problem = ConvProblem.from_shapes((2, 8, 9, 10), (16, 8, 3, 3), padding=1)
    captured = {}

    def record_only(jobs, workers, target, timeout_s):
        captured.update(jobs=jobs, timeout_s=timeout_s)
        return [], {"results": [], "failures": []}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precompile, "record_and_compile", record_only)
        compile_ahead.compile_ahead([(problem, "fprop", True)], torch.float32, torch.device("cpu"), 1)
    # a worker whose compiler hangs is stopped: 2 minutes to start, 10 s per launch of its share
    assert captured["timeout_s"] == 120 + 10 * len(captured["jobs"])
    jobs = captured["jobs"][:2]
    assert jobs and all(job.tf32 is tf32 for job in jobs)
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", TF32_JOBS, pickle.dumps(jobs).hex()], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    kept, flipped, disjoint = done.stdout.split()
    assert int(kept) == int(flipped) == len(jobs) and disjoint == "True"


TUNING_ON_REAL_TENSORS = """
import torch
from triton_conv.campaign.precompile import _record_here
from triton_conv.campaign.target import TARGET_H200
from triton_conv.campaign.variants import LaunchJob
from triton_conv.devices import get_device
from triton_conv.problem import ConvProblem
from triton_conv.tuning import candidate_configs, tune_problem
from tests.jit_hook import launched_keys

problems = [ConvProblem.from_shapes((2, 8, 9, 10), (16, 8, 3, 3), padding=1),
            ConvProblem.from_shapes((2, 16, 7, 7), (16, 16, 1, 1), stride=2)]
jobs = [LaunchJob(kernel, problem, config, "bf16", layout=layout)
        for problem in problems for kernel in ("fprop", "dgrad", "wgrad") for layout in (True, False)
        for config in candidate_configs(problem, kernel, torch.bfloat16, layout, get_device("H200"))[:4]]
recorded = {(v.module, v.kernel, v.key) for v in _record_here(jobs, TARGET_H200)}

def tune_all():  # the tuner itself, on fresh allocations, its timer running each candidate once
    for problem in problems:
        for kernel in ("fprop", "dgrad", "wgrad"):
            for layout in (True, False):
                mine = (problem, kernel, layout)
                configs = [job.config for job in jobs if (job.problem, job.pass_name, job.layout) == mine]
                tune_problem(problem, kernel, torch.bfloat16, layout, "cpu", timer=lambda fn: (fn(), 1.0)[1],
                             target="H200", configs=configs)

launched = launched_keys(tune_all, TARGET_H200)
print(len(jobs), len(recorded), recorded == launched)
"""


def test_the_binaries_compiled_ahead_are_what_the_tuner_launches():
    """The workers record a tuning's launches on meta tensors; the tuner launches on allocations, in
    both layouts. Through Triton's own binder for the sm_90 target, the two ask for the same
    specialisations, so the tuning finds every binary compiled."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", TUNING_ON_REAL_TENSORS], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs, count, same = done.stdout.split()
    assert int(jobs) >= int(count) > 4 and same == "True"


def test_a_compile_step_that_fails_leaves_the_tuning_as_it_was(fresh_caches, fake_runner, monkeypatch):
    """Workers that could not start (no space for their folders, no processes left) raised out of
    tune_model; the tuning now goes on, each config compiling when first timed."""

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compile_ahead, "compile_ahead", no_space)
    stream = io.StringIO()
    results = model_tuning.tune_model(
        OneConv(), (3, 9, 10), (2,), device="cpu", timer=FakeTimer(), stream=stream, compile_workers=2
    )
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("not compiled ahead (OSError: [Errno 28] No space left on device)")
    assert len(results) == 2 and all("tuned" in line for line in lines[1:])


def test_a_worker_that_cannot_start_stops_the_ones_started(monkeypatch, tmp_path):
    """The first worker kept running, orphaned, with its folder, when the second could not start."""
    from triton_conv.campaign import precompile

    monkeypatch.setattr(precompile.tempfile, "tempdir", str(tmp_path))
    started = []

    class Process:
        def __init__(self, args, **options):
            if started:
                raise OSError(11, "Resource temporarily unavailable")
            started.append(self)
            self.killed = False

        def poll(self):
            return 0 if self.killed else None

        def kill(self):
            self.killed = True

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(precompile.subprocess, "Popen", Process)
    with pytest.raises(OSError, match="temporarily unavailable"):
        precompile.record_and_compile([], workers=3, timeout_s=5)
    assert started[0].killed and list(tmp_path.iterdir()) == []


def test_a_layer_sets_tuning_compiles_ahead_what_its_rows_will_time(fresh_caches, fake_runner, monkeypatch):
    """`triton-conv tune` (tune_layer_set) times each row's candidates as tune_model does: the same
    compile step comes first, for every (problem, pass) a row will tune, with the rows' target and
    max_configs, once per dtype."""
    from triton_conv import autotune_runs

    from .test_tuning import LAYERS

    asked = []

    def record(*args, **kwargs):
        asked.append((args, kwargs))
        return {"launches": 0, "variants": 0, "failed": 0, "wall_s": 0.0, "failures": []}

    monkeypatch.setattr(compile_ahead, "compile_ahead", record)
    stream = io.StringIO()
    rows = autotune_runs.tune_layer_set(
        LAYERS, (1, 2), ("fprop", "dgrad", "wgrad"), (torch.float16, torch.float32), device="cpu",
        timer=FakeTimer(), target="T4", max_configs=3, stream=stream, compile_workers=2,
    )  # fmt: skip
    assert [args[1] for args, _ in asked] == [torch.float16, torch.float32]
    for (tunings, dtype, _, workers), options in asked:
        assert workers == 2 and options == {"target": "T4", "max_configs": 3}
        keys = {tuning_key(problem, kernel, dtype, layout) for problem, kernel, layout in tunings}
        name = {torch.float16: "fp16", torch.float32: "fp32"}[dtype]
        assert keys == {row["key"] for row in rows if row["dtype"] == name} and len(keys) == len(tunings)
    assert stream.getvalue().startswith("compiled ahead by 2 workers: 0 kernel binaries of 0 launches")
