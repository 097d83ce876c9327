"""The campaign's compile step, proved as far as a CPU can: the variants it records are those the
target GPU launches (TMA), Triton's compilation listener takes Triton's call, the compile workers are
fresh interpreters that cannot see the GPU and are as many as the cores this process may use, and
the training step and every timed op run the kernels the campaign compiled and pinned."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from triton.tools.tensor_descriptor import TensorDescriptor

from triton_conv.campaign import precompile, spec, target
from triton_conv.campaign.precompile import TARGET_H200, LaunchJob, record, record_and_compile
from triton_conv.compile_check import example_spec
from triton_conv.problem import ConvProblem

REPO = Path(__file__).resolve().parent.parent


# --- what the compile step records is what the GPU launches -----------------------------------------
def _descriptors(variant) -> int:
    signature = json.loads(variant.specialization)["signature"]
    return sum("tensordesc" in str(kind) for kind in signature.values())


def test_the_compile_step_records_the_tma_variants_an_h200_launches():
    """wgrad passes TMA descriptors on sm_90 and newer (launchers.tma.tma_available of a CUDA
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
    from triton_conv.launchers import tma, wgrad

    meta = torch.device("meta")
    for arch in (80, 89, 90, 100, 120):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_, a=arch: divmod(a, 10))
        on_cuda = tma.tma_available(torch.device("cuda"))
        with target.meta_as_target(("cuda", arch, 32)):
            assert wgrad.tma_available(meta) == on_cuda == (arch >= 90), arch
            assert wgrad.tma_available(torch.device("cpu")) == tma.tma_available(torch.device("cpu"))
        assert wgrad.tma_available is tma.tma_available  # restored
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

    def recorded_choice(problem, pass_name, dtype, channels_last, device):
        config = choose(problem, pass_name, dtype, channels_last, device)
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

    def choose(problem, pass_name, dtype, channels_last, device):
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

    # Where the suite's ops run: CPU tensors without the interpreter are refused before the choice.
    device = torch.get_default_device()
    missed, checked = [], 0
    try:
        for step in spec.CHECKED_STEPS:
            for item in items[step]:
                tensors = make_inputs(item.problem, plan.torch_dtype, device, item.transposed)
                pin(item, tensors, item.candidates[-1])
                op = pass_function("triton-conv", item.pass_name, item.problem, tensors, on_gpu=True,
                                   transposed=item.transposed)  # fmt: skip
                checked += 1
                if ask(op) != [item.candidates[-1]]:
                    missed.append(item.id)
        singles = {i.layer: i.candidates[-1] for i in items["batching"] if i.problem.batch == 1}
        for item in [i for i in items["batching"] if i.one_at_a_time]:
            tensors = make_inputs(item.problem, plan.torch_dtype, device)
            if ask(images_one_at_a_time("triton-conv", item.problem, tensors)) != [singles[item.layer]]:
                missed.append(f"{item.id} one at a time")
    finally:
        choices.forget_choices()
    assert checked > 300 and missed == []
