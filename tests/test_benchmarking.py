"""The benchmark helpers (triton_conv.benchmarking) and the sweep's definition (bench/cases.py), on the
CPU: the GPU-only parts are checked for what they can be without a GPU (settings, options, the sweep)."""

import contextlib
import math
import subprocess
import sys

import pytest
import torch

from bench import cases, settings
from triton_conv import benchmarking
from triton_conv.layers import get_layer_set, resnet50, resnet50_convs
from triton_conv.problem import ConvProblem
from triton_conv.resnet50 import ResNet50, conv_shapes

from .conftest import TritonProof

# The CPU checks of the benchmark functions (a GPU run is `pytest bench --benchmark-only`).
pytestmark = pytest.mark.interpreter

STRIDED = ConvProblem.from_shapes((2, 4, 7, 6), (6, 4, 3, 3), stride=2, padding=1)


def test_synchronized_timer_and_medians_on_the_cpu():
    first = benchmarking.synchronized_timer()
    assert benchmarking.synchronized_timer() >= first
    assert 0 < benchmarking.median_seconds(lambda: sum(range(1000)), repeats=3, calls=2) < 1
    assert 0 < benchmarking.host_seconds(lambda: None, calls=3) < 1
    assert benchmarking.peak_memory_bytes(lambda: None, "cpu") is None


def test_a_ceiling_is_timed_after_a_sustained_warm_up(monkeypatch):
    """The matmul peak was the run's first GPU work with two calls of warm-up (an idle GPU's
    clocks still ramping: a low peak, every fraction of it too high); now WARMUP_S of calls."""
    import time

    from triton_conv import timers

    calls = []
    before = time.perf_counter()
    timers.warm_up(lambda: calls.append(None), seconds=0.05)
    # Its own span, not its calls' stamps: a pause of the test machine after the last call (before
    # the loop sees the time is up) would leave the stamps' span short.
    assert len(calls) >= 2 and time.perf_counter() - before >= 0.05
    warmed = []
    monkeypatch.setattr(timers, "warm_up", lambda fn, seconds=timers.WARMUP_S: warmed.append(seconds))
    assert timers.measure_matmul_peak(torch.float32, 32, "cpu") > 0 and warmed == [timers.WARMUP_S]
    assert timers.measure_copy_bandwidth(1 << 16, "cpu") > 0 and len(warmed) == 2


def test_peer_options_make_inductor_use_only_its_triton_templates():
    options = benchmarking.peer_options()
    assert options["max_autotune"] is True and options["triton.cudagraphs"] is False
    assert options["max_autotune_gemm_backends"] == options["max_autotune_conv_backends"] == "TRITON"
    torch.compile(lambda x: x, options=options)  # torch rejects unknown or mistyped options here
    backward = {"max_autotune_conv_bwd_input_backends", "max_autotune_conv_bwd_weight_backends"}
    assert benchmarking.peer_has_backward_templates() == (backward <= set(options))


@pytest.mark.parametrize("tf32", [True, False])
def test_comparable_settings_leave_every_tf32_flag_readable_and_agreeing(tf32):
    # In a child process: the settings are global and deliberately never restored.
    code = f"""
import torch
from triton_conv.benchmarking import use_comparable_settings
from triton_conv.runtime import fp32_uses_tf32
use_comparable_settings({tf32})
b = torch.backends
assert b.cudnn.benchmark
assert b.cudnn.allow_tf32 == b.cuda.matmul.allow_tf32 == fp32_uses_tf32() == {tf32}
if hasattr(b.cudnn, "fp32_precision"):
    assert (b.cudnn.fp32_precision == "tf32") == {tf32}  # what Inductor's conv template reads
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("impl", ["triton-conv", "cudnn", "inductor"])
@pytest.mark.parametrize("pass_name", benchmarking.BENCH_PASSES)
def test_every_implementation_computes_every_pass(impl, pass_name):
    """triton-conv's calls run its kernels (those of the pass, all three for fwd+bwd) with torch's
    convolution barred; the others are torch's own."""
    tensors = benchmarking.make_inputs(STRIDED, torch.float32, True, "cpu")
    run = benchmarking.pass_function(impl, pass_name, STRIDED, tensors, on_gpu=False)
    want = benchmarking.reference_result(pass_name, STRIDED, tensors)
    with TritonProof() if impl == "triton-conv" else contextlib.nullcontext() as proof:
        got = run()
    if impl == "triton-conv":
        passes = ("fprop", "dgrad", "wgrad") if pass_name == "fwd+bwd" else (pass_name,)
        assert proof.launches.keys() == {f"{p}_kernel" for p in passes}, proof.launches
    assert benchmarking.relative_error(got, want) < benchmarking.tolerance("fp32", tf32=False)


def test_input_sets_overflow_the_l2_and_the_calls_take_turns(monkeypatch):
    """Enough fresh sets that together they are EVICTING_MULTIPLE times the L2 (none on a CPU); the
    calls run on each in turn, the caller's set first (its result is the one checked)."""
    from triton_conv import timers

    assert timers.input_sets_needed(10, 0) == 1 and timers.input_sets_needed(0, 50) == 1
    assert timers.input_sets_needed(100 << 20, 50 << 20) == 1  # one set already overflows the L2
    assert timers.input_sets_needed(30 << 20, 50 << 20) == 4  # 4 x 30 MB >= 2 x 50 MB > 3 x 30 MB
    assert timers.input_sets_needed(1, 50 << 20) == timers.MAX_INPUT_SETS
    tensors = benchmarking.make_inputs(STRIDED, torch.float32, True, "cpu")
    fresh = lambda: benchmarking.make_inputs(STRIDED, torch.float32, True, "cpu")
    assert benchmarking.input_sets(tensors, fresh, "cpu") == [tensors]
    set_bytes = sum(t.nbytes for t in tensors.values())
    monkeypatch.setattr(timers, "l2_cache_bytes", lambda device: set_bytes)  # two sets: 2 x the L2
    sets = benchmarking.input_sets(tensors, fresh, "cpu")
    assert len(sets) == 2 and sets[0] is tensors and sets[1]["x"].data_ptr() != tensors["x"].data_ptr()
    assert sets[1]["x"].stride() == tensors["x"].stride()  # the same memory format
    run = benchmarking.in_turn(benchmarking.pass_binder("triton-conv", "fprop", STRIDED, on_gpu=False), sets)
    assert run.sets == 2
    for turn in range(4):  # each call's result is that of its set, in turn
        want = benchmarking.reference_result("fprop", STRIDED, sets[turn % 2])
        assert benchmarking.relative_error(run(), want) < benchmarking.tolerance("fp32", tf32=False)
    single = benchmarking.in_turn(lambda inputs: lambda: inputs, [tensors])
    assert not hasattr(single, "sets") and single() is tensors


def test_input_sets_count_what_the_pass_reads(monkeypatch):
    """fprop reads x and w, dgrad dy and w, wgrad x and dy (timers.PASS_READS); the output is written
    into a reused block. Sets are sized by those bytes, and l2_multiple says how many L2s a turn read."""
    from triton_conv import timers

    tensors = {"x": torch.empty(250), "w": torch.empty(25), "dy": torch.empty(2500)}  # 1000, 100, 10000 B
    assert [timers.read_bytes(tensors, p) for p in ("fprop", "dgrad", "wgrad")] == [1100, 10100, 11000]
    assert timers.read_bytes(tensors, "fwd+bwd") == 11100  # another name: every tensor
    assert timers.l2_multiple([tensors], "fprop", "cpu") is None  # no GPU cache
    monkeypatch.setattr(timers, "l2_cache_bytes", lambda device: 2200)  # 4400 B: 4 sets of fprop's
    sets = timers.input_sets(tensors, dict, "cpu", "fprop")
    assert len(sets) == 4 and len(timers.input_sets(tensors, dict, "cpu")) == 1  # dy alone fills it
    assert timers.l2_multiple(sets, "fprop", "cpu") == 2.0


@pytest.mark.parametrize("pass_name", benchmarking.BENCH_PASSES)
def test_the_peer_compiles_once_for_every_input_set(pass_name, monkeypatch):
    compiled = []
    real = benchmarking.compile_peer
    monkeypatch.setattr(benchmarking, "compile_peer", lambda fn, **kw: compiled.append(fn) or real(fn, **kw))
    bind = benchmarking.pass_binder("inductor", pass_name, STRIDED, on_gpu=False)
    sets = [benchmarking.make_inputs(STRIDED, torch.float32, True, "cpu") for _ in range(2)]
    run = benchmarking.in_turn(bind, sets)
    for tensors in sets:
        want = benchmarking.reference_result(pass_name, STRIDED, tensors)
        assert benchmarking.relative_error(run(), want) < benchmarking.tolerance("fp32", tf32=False)
    assert len(compiled) == 1


def test_relative_error_and_tolerances():
    a = torch.ones(4)
    assert benchmarking.relative_error(a, a) == 0
    assert benchmarking.relative_error((a, a), (a, 2 * a)) == pytest.approx(0.5)
    assert benchmarking.relative_error(torch.ones(0), torch.ones(0)) == 0


def test_relative_error_sees_one_wrong_tile_and_any_nan():
    """The campaign's GPU check: one tile of 3,136 (a 56x56 layer's N=128 output in 128x128 tiles)
    computed wrong is about 2% off norm-wise, under bf16's limit; the element-wise error sees it.
    A NaN in any of a pass's results fails the check wherever it is."""
    want = torch.randn(784 * 16, 4 * 16, dtype=torch.float64)  # 3,136 tiles of 16x16
    got = want.to(torch.bfloat16).double()  # a correct bf16 result: its rounding only
    correct = benchmarking.relative_error(got, want)
    assert correct <= 2.0**-8 < benchmarking.tolerance("bf16", tf32=False)
    got[:16, :16] = torch.randn(16, 16, dtype=torch.float64)
    assert (got - want).norm() / want.norm() < benchmarking.tolerance("bf16", tf32=False)
    assert benchmarking.relative_error(got, want) > 5 * benchmarking.tolerance("bf16", tf32=False)
    for position in (0, 1):
        results = [want.clone(), want.clone()]
        results[position][0, 0] = math.nan
        assert math.isnan(benchmarking.relative_error(results, [want, want]))
    assert benchmarking.tolerance("fp32", tf32=True) > benchmarking.tolerance("fp32", tf32=False)
    even = ConvProblem.from_shapes((1, 2, 5, 5), (2, 2, 2, 2), padding="same")  # pads 0 top, 1 bottom
    with pytest.raises(ValueError, match="symmetric"):
        benchmarking.torch_pass("fprop", even, {"x": None, "w": None, "dy": None})
    with pytest.raises(ValueError, match="impl"):
        benchmarking.pass_function("cublas", "fprop", STRIDED, {})


def test_sweep_command_runs_bench_without_the_interpreter(monkeypatch, tmp_path):
    command = benchmarking.sweep_command("out.json", ["-x"])
    assert command[1:3] == ["-m", "pytest"] and command[3].endswith("bench")
    assert "--benchmark-only" in command and "--benchmark-json=out.json" in command and command[-1] == "-x"
    calls = []
    monkeypatch.setattr(
        benchmarking.subprocess, "call", lambda command, env, cwd: calls.append((command, env)) or 0
    )
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert benchmarking.run_sweep(str(tmp_path / "s.json"), env={"TRITON_CONV_BENCH_PART": "fprop"}) == 0
    ((command, env),) = calls
    assert env["TRITON_INTERPRET"] == "0" and env["TRITON_CONV_BENCH_PART"] == "fprop"
    assert f"--benchmark-json={tmp_path / 's.json'}" in command
    monkeypatch.setattr(benchmarking, "bench_dir", lambda: tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="checkout"):
        benchmarking.run_sweep(str(tmp_path / "sweep.json"))


def test_the_benchmark_network_is_resnet50():
    found = conv_shapes(ResNet50(), 224)
    expected = resnet50_convs(224, 224)
    assert [name for name, *_ in found] == [name for name, _ in expected]
    for (_, x, w, stride, padding), (_, problem) in zip(found, expected, strict=True):
        assert (x[1:], w) == (problem.input_shape[1:], problem.weight_shape)
        assert (stride, padding) == (problem.stride, (problem.pad_top, problem.pad_left))


@pytest.mark.parametrize(
    ("gpu", "interpreted", "mode"),
    [(True, False, "gpu"), (True, True, "blocked"), (False, True, "smoke"), (False, False, "no-device")],
)
def test_session_modes(monkeypatch, gpu, interpreted, mode):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(settings, "interpreter_active", lambda: interpreted)
    found, reason = settings.session_mode()
    assert found == mode and (mode == "gpu") == (reason == "")
    if mode != "gpu":
        assert ("GPU" in reason) and ("TRITON_INTERPRET" in reason)


def test_the_cpu_check_covers_every_benchmark_function_at_tiny_sizes():
    assert cases.MODE == "smoke"  # this test session has no GPU
    passes = {(c.layer_set, c.pass_name, c.impl) for c in cases.PASS_CASES}
    assert {
        ("quantization_probes", p, i) for p in benchmarking.BENCH_PASSES for i in cases.ALL_IMPLS
    } <= passes
    assert {c.layer_set for c in cases.PASS_CASES} == set(cases.SETS)
    for case in cases.PASS_CASES:
        assert case.problem.batch == 2 and max(case.problem.in_channels, case.problem.height) <= 9
    assert {c.how for c in cases.BATCHING_CASES} == {"batch", "one-at-a-time"}
    assert {c.micro for c in cases.ACCUMULATION_CASES} == {1, 2} and cases.TRAINING_CASES
    assert {(c.layer_set, c.pass_name, c.impl) for c in cases.TRANSPOSED_CASES} == {
        ("unet_decoder", p, i) for p in benchmarking.BENCH_PASSES for i in cases.TWO
    }
    for case in cases.TRANSPOSED_CASES:  # a transposed layer's view: x is its output, the layer's input
        assert case.problem.batch == 2 and max(case.problem.out_channels, case.problem.out_height) <= 8
    every = (cases.PASS_CASES, cases.TRANSPOSED_CASES, cases.BATCHING_CASES, cases.TRAINING_CASES,
             cases.ACCUMULATION_CASES, cases.PEAK_CASES)  # fmt: skip
    assert len(cases.CASES) == sum(map(len, every))


def test_default_gpu_sweep(monkeypatch):
    monkeypatch.setattr(cases, "MODE", "gpu")
    sweep = cases.pass_cases()
    assert len({c.id for c in sweep}) == len(sweep)
    probes = [c for c in sweep if c.layer_set == "quantization_probes" and c.pass_name == "fprop"]
    assert {32, 33, 34, 256} <= {c.problem.batch for c in probes}  # both sides of the wave probe's full wave
    assert {c.impl for c in sweep} == set(cases.ALL_IMPLS)
    assert {c.dtype for c in sweep} == {"fp16", "bf16", "fp32"}
    assert {c.pass_name for c in sweep} == set(benchmarking.BENCH_PASSES)
    assert {c.layer_set for c in sweep} == set(cases.SETS)
    assert min(c.priority for c in sweep if c.layer_set == "quantization_probes") < min(
        c.priority for c in sweep if c.layer_set == "resnet50_megapixel"
    )
    assert {c.micro for c in cases.accumulation_cases()} == {32, 8, 1}
    assert {c.batch for c in cases.training_cases()} >= {1, 32, 128}


def test_environment_widens_and_narrows_the_sweep(monkeypatch):
    monkeypatch.setattr(cases, "MODE", "gpu")
    monkeypatch.setenv("TRITON_CONV_BENCH_BATCHES", "3,5")
    monkeypatch.setenv("TRITON_CONV_BENCH_SETS", "resnet50")
    monkeypatch.setenv("TRITON_CONV_BENCH_DTYPES", "bf16")
    sweep = cases.pass_cases()
    assert {c.problem.batch for c in sweep} == {3, 5} and {c.dtype for c in sweep} == {"bf16"}
    assert {c.layer_set for c in sweep} == {"resnet50"} and not cases.batching_cases()
    assert not cases.transposed_cases()
    monkeypatch.setattr(cases, "WIDE", True)
    monkeypatch.delenv("TRITON_CONV_BENCH_BATCHES")
    wide = cases.pass_cases()
    assert {c.layer for c in wide} == {layer.name for layer in resnet50()}  # all 23 distinct shapes
    assert {c.layout for c in wide} == {"channels_last", "nchw"} and {c.problem.batch for c in wide} >= {
        1,
        256,
    }


def test_the_default_sweep_splits_into_parts(monkeypatch):
    monkeypatch.setattr(cases, "MODE", "gpu")
    everything = (cases.pass_cases() + cases.transposed_cases() + cases.batching_cases()
                  + cases.training_cases() + cases.peak_cases())  # fmt: skip
    sizes = {}
    for part in cases.PARTS:
        monkeypatch.setenv("TRITON_CONV_BENCH_PART", part)
        sizes[part] = len(cases.in_part(everything))
        assert sizes[part] > 0, part
    assert sum(sizes.values()) == len(everything)  # every case in exactly one part
    monkeypatch.setenv("TRITON_CONV_BENCH_PART", "most")
    with pytest.raises(ValueError, match="fprop"):
        cases.in_part(everything)


def test_default_gpu_sweep_has_the_decoder_against_cudnn(monkeypatch):
    monkeypatch.setattr(cases, "MODE", "gpu")
    decoder = cases.transposed_cases()
    assert len({c.id for c in decoder}) == len(decoder)
    assert {c.layer for c in decoder} == {layer.name for layer in get_layer_set("unet_decoder")}
    assert {c.pass_name for c in decoder} == set(benchmarking.BENCH_PASSES)
    assert {c.impl for c in decoder} == set(cases.TWO) and {c.problem.batch for c in decoder} == {1, 8, 32}


@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "wgrad"])
def test_the_benchmarks_record_the_config_the_op_launches(pass_name):
    """bench/'s records carry the config triton-conv launches (harness.config_in_use): a pin for the
    problem's layout is found, the other layout's default is not mistaken for it (it once swallowed
    any error, a changed argument order included, and recorded None)."""
    from bench.harness import config_in_use
    from triton_conv import choices, passes
    from triton_conv.configs import KernelConfig

    problem = ConvProblem(2, 8, 9, 7, 16, 3, 3, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)
    pinned = KernelConfig(16, 32, 16, group_m=2, split_k=3, num_warps=2, num_stages=1)
    try:
        choices.pin_config(problem, pass_name, torch.float16, True, "cpu", pinned)
        assert config_in_use(problem, pass_name, torch.float16, True, "cpu") == pinned
        unpinned = config_in_use(problem, pass_name, torch.float16, False, "cpu")
        assert unpinned != pinned
        assert unpinned == passes.choose_config(problem, pass_name, torch.float16, False, torch.device("cpu"))
    finally:
        choices.forget_choices()
    assert config_in_use(problem, "fwd+bwd", torch.float16, True, "cpu") is None
