"""Tuning on the CPU: the timing loop (with a CPU timer or a fake one), the persistent cache (round
trip, atomic writes, corrupt and stale files, two processes at once, no re-tuning of a cached key),
layer-set rows and the table writer, the GPU path with a pretend H200, and pins. Tuning a whole model
ahead of time is tests/test_tune_model.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv import (
    autotune_runs,
    autotune_tables,
    choices,
    output_files,
    tuning,
    tuning_cache,
)
from triton_conv.configs import KernelConfig, default_pass_config
from triton_conv.problem import ConvProblem
from triton_conv.pruning import pruned_space
from triton_conv.search_space import config_space
from triton_conv.tuning_keys import tuning_key

from .reference import rel_error
from .tuning_fakes import FakeTimer, score

# Tuning times the kernels on CPU tensors (device "cpu"): the interpreter's job, not a GPU run's.
pytestmark = [pytest.mark.interpreter, pytest.mark.usefixtures("cache_dir")]

PROBLEM = ConvProblem.from_shapes((2, 5, 9, 11), (7, 5, 3, 3), padding=1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path) -> str:
    with open(path) as handle:
        return handle.read()


def read_json(path) -> dict:
    return json.loads(read(path))


# --- timing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "wgrad"])
def test_cpu_timer_tuning_runs_each_pass(pass_name, triton_only):
    """The real loop: random inputs, the pass's launcher, the interpreter, the CPU timer; every
    timed call launched the pass's kernel (the timer runs each once)."""
    with triton_only() as proof:
        result = tuning.tune_problem(
            PROBLEM,
            pass_name,
            torch.float32,
            True,
            "cpu",
            timer=lambda f: tuning.cpu_timer(f, 1),
            max_configs=2,
        )
    assert proof.launches.get(f"{pass_name}_kernel", 0) >= 2
    assert len(result.timings) == 2 and result.timed_on == "cpu"
    assert result.best_ms == min(ms for _, ms in result.timings) > 0
    assert result.runner_up_ms >= result.best_ms and result.runner_up != result.best
    assert result.key == tuning_key(PROBLEM, pass_name, torch.float32, True)


def test_random_inputs_are_random():
    tensors = tuning.random_inputs(PROBLEM, "wgrad", torch.float16, True, "cpu")
    assert set(tensors) == {"weight", "dy", "x"}
    for t in tensors.values():
        assert t.std() > 0.5 and t.is_contiguous(memory_format=torch.channels_last)
    again = tuning.random_inputs(PROBLEM, "wgrad", torch.float16, True, "cpu")
    assert not torch.equal(tensors["x"], again["x"])
    # no bias: the key has none, and the campaign times the same bias-free binaries
    assert set(tuning.random_inputs(PROBLEM, "fprop", torch.float16, True, "cpu")) == {"weight", "x"}


def test_a_tuning_leaves_torchs_random_state_alone(triton_only):
    """A seeded training must draw the same dropout masks whether its first step tuned (a cold
    cache) or not: the tuning's inputs come from a generator of its own, never torch's default."""
    before = torch.get_rng_state()
    with triton_only() as proof:
        timer = lambda f: tuning.cpu_timer(f, 1)
        tuning.tune_problem(PROBLEM, "wgrad", torch.float32, True, "cpu", timer=timer, max_configs=2)
    assert proof.launches.get("wgrad_kernel", 0) >= 2
    assert torch.equal(torch.get_rng_state(), before)
    assert tuning.tuning_generator("cpu") is tuning.tuning_generator(torch.device("cpu"))


@pytest.mark.parametrize("channels_last", [False, True])
def test_tuned_inputs_have_a_models_strides(channels_last):
    """The tuner times the binary a model runs: Triton specialises on strides equal to 1, and a 1x1
    weight moved to channels_last by Module.to has (C, 1, C, C) where .contiguous(memory_format=)
    would give (C, 1, 1, 1)."""
    problem = ConvProblem.from_shapes((2, 32, 5, 5), (48, 32, 1, 1))
    layer = torch.nn.Conv2d(32, 48, 1).to(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    for pass_name in ("fprop", "dgrad", "wgrad"):
        tensors = tuning.random_inputs(problem, pass_name, torch.float32, channels_last, "cpu")
        assert tensors["weight"].stride() == layer.weight.stride()


def test_winner_is_the_fastest_and_a_failing_config_loses(fake_runner):
    configs = list(config_space("fprop")[:3])  # any three: PROBLEM's pruned space may hold only two
    broken = configs[0]

    def timer(fn):
        if fn.config == broken:
            raise RuntimeError("out of resources")
        return {c: 1.0 + i for i, c in enumerate(reversed(configs))}[fn.config]

    result = tuning.tune_problem(PROBLEM, "fprop", torch.float16, True, "cpu", timer=timer, configs=configs)
    assert result.best == configs[-1] and result.best_ms == 1.0
    assert result.runner_up == configs[-2] and result.runner_up_ms == 2.0
    assert dict(result.timings)[broken] == float("inf")
    assert result.errors == {str(broken): "RuntimeError: out of resources"}
    assert result.entry()["errors"] == result.errors and result.entry()["timings"][0] == [str(broken), None]


def test_cpu_without_timer_is_the_default_and_touches_no_disk(cache_dir):
    config = choices.select_config(PROBLEM, "wgrad", torch.float32, True, "cpu")
    assert config == default_pass_config(PROBLEM, "wgrad", torch.float32, sm_count=1)
    assert not cache_dir.exists()


def test_select_config_tunes_once_then_remembers(fake_runner, cache_dir):
    timer = FakeTimer()
    first = choices.select_config(PROBLEM, "fprop", torch.float16, True, "cpu", timer=timer)
    calls = timer.calls
    assert calls == len(pruned_space(PROBLEM, "fprop", torch.float16, "H200")) > 1
    assert first == min(pruned_space(PROBLEM, "fprop", torch.float16, "H200"), key=score)
    assert choices.select_config(PROBLEM, "fprop", torch.float16, True, "cpu", timer=timer) == first
    choices.forget_choices()  # a fresh process: the file answers
    assert choices.select_config(PROBLEM, "fprop", torch.float16, True, "cpu", timer=timer) == first
    assert timer.calls == calls
    # the same key from another image size in the bucket: no new search
    other = ConvProblem.from_shapes((2, 5, 8, 12), (7, 5, 3, 3), padding=1)
    assert tuning_key(other, "fprop", torch.float16, True) == tuning_key(
        PROBLEM, "fprop", torch.float16, True
    )
    assert choices.select_config(other, "fprop", torch.float16, True, "cpu", timer=timer) == first
    assert timer.calls == calls


# --- the cache file -------------------------------------------------------------------------------------
def test_cache_round_trip(cache_dir, fake_runner):
    result = tuning.autotune(PROBLEM, "wgrad", torch.float16, True, "cpu", timer=FakeTimer())
    path = tuning_cache.cache_path("cpu")
    assert os.path.dirname(path) == str(cache_dir)
    assert "triton-conv-" in os.path.basename(path) and "--triton-" in os.path.basename(path)
    data = read_json(path)
    assert data["device"] == "cpu" and data["triton_conv"] == tuning_cache.package_version()
    entry = data["entries"][result.key]
    assert KernelConfig.from_dict(entry["config"]) == result.best
    assert KernelConfig.from_dict(entry["runner_up"]) == result.runner_up
    assert len(entry["timings"]) == len(result.timings) and entry["problem"] == str(PROBLEM)
    choices.forget_choices()
    again = tuning.autotune(PROBLEM, "wgrad", torch.float16, True, "cpu", timer=FakeTimer())
    assert again.cached and again.best == result.best and again.best_ms == result.best_ms


def test_a_tuning_is_written_to_the_cache_it_read(cache_dir, fake_runner, monkeypatch, tmp_path):
    """The folder is read from TRITON_CONV_CACHE_DIR at each get_cache: one changed while a tuning
    runs (another thread, a test) must not receive a result whose miss it never saw."""
    moved = tmp_path / "moved"

    class MovingTimer(FakeTimer):
        def __call__(self, fn):
            monkeypatch.setenv(tuning_cache.ENV_DIR, str(moved))
            tuning_cache.forget_open_caches()
            return super().__call__(fn)

    tuning.autotune(PROBLEM, "wgrad", torch.float16, True, "cpu", timer=MovingTimer())
    assert os.listdir(cache_dir) and not moved.exists()


def test_write_is_atomic(cache_dir, monkeypatch):
    cache = tuning_cache.TuningCache("cpu")
    cache.put("a", {"config": KernelConfig().as_dict()})
    before = read(cache.path)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(tuning_cache.os, "replace", crash)
    with pytest.warns(RuntimeWarning, match="cannot write tuning cache.*disk full"):
        assert cache.put("b", {"config": KernelConfig().as_dict()}) == {"config": KernelConfig().as_dict()}
    assert cache.get("b") is not None  # kept in memory
    assert read(cache.path) == before  # the old file is whole
    assert sorted(os.listdir(cache_dir)) == sorted(
        [os.path.basename(cache.path), os.path.basename(cache.path) + ".lock"]
    )


def test_corrupt_file_is_ignored_with_a_warning_and_rebuilt(cache_dir):
    path = tuning_cache.cache_path("cpu")
    os.makedirs(cache_dir)
    with open(path, "w") as handle:
        handle.write('{"schema": 1, "entries": {"half a file')
    with pytest.warns(RuntimeWarning, match="corrupt tuning cache"):
        cache = tuning_cache.TuningCache("cpu")
    assert cache.get("x") is None
    cache.put("x", {"config": KernelConfig().as_dict()})
    data = read_json(path)  # valid again, with the new entry
    assert list(data["entries"]) == ["x"]


def test_stale_file_is_ignored_with_a_warning_and_rebuilt(cache_dir):
    fresh = tuning_cache.TuningCache("cpu")
    fresh.put("old", {"config": KernelConfig().as_dict()})
    data = read_json(fresh.path)
    data["triton_conv"] = "0.0.0-older"
    with open(fresh.path, "w") as handle:
        json.dump(data, handle)
    with pytest.warns(RuntimeWarning, match="stale tuning cache"):
        cache = tuning_cache.TuningCache("cpu")
    assert cache.get("old") is None
    cache.put("new", {"config": KernelConfig().as_dict()})
    data = read_json(fresh.path)
    assert list(data["entries"]) == ["new"] and data["triton_conv"] == tuning_cache.package_version()


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv(tuning_cache.ENV_DIR)
    assert tuning_cache.cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "triton-conv")
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path / "x"))
    assert tuning_cache.cache_path("NVIDIA H200").startswith(str(tmp_path / "x") + os.sep + "nvidia-h200--")


def _python(code: str, cache_dir, **env) -> subprocess.Popen:
    environment = {**os.environ, tuning_cache.ENV_DIR: str(cache_dir), "TRITON_INTERPRET": "1", **env}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


_WRITER = """
    import time
    from triton_conv.configs import KernelConfig
    from triton_conv.tuning_cache import TuningCache
    time.sleep(max(0.0, {start} - time.time()))  # all writers start together, after their imports
    for i in range(60):
        cache = TuningCache("cpu")  # a fresh view each time: every put merges with the file
        cache.put(f"{tag}-{{i}}", {{"config": KernelConfig(split_k=i + 1).as_dict()}})
"""


def test_two_processes_writing_at_once_lose_nothing(cache_dir):
    start = time.time() + 6
    procs = [_python(_WRITER.format(tag=tag, start=start), cache_dir) for tag in ("a", "b", "c")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    cache = tuning_cache.TuningCache("cpu")
    assert set(cache.entries) == {f"{t}-{i}" for t in "abc" for i in range(60)}
    assert cache.get("b-7")["config"]["split_k"] == 8


_TUNER = """
    import json, random, torch
    from triton_conv import tuning
    from triton_conv.problem import PASSES, ConvProblem
    problem = ConvProblem.from_shapes((2, 5, 9, 11), (7, 5, 3, 3), padding=1)
    tuning.pass_runner = lambda *a: (lambda: None)  # the kernels are not run: only the bookkeeping
    timer = lambda fn: random.random()  # each process prefers another config
    result = tuning.autotune(problem, "{pass_name}", torch.float16, True, "cpu", timer=timer)
    print(json.dumps({{"config": result.best.as_dict(), "timings": tuning.timing_calls,
                      "cached": result.cached}}))
"""


def test_a_second_process_never_retunes_a_cached_shape(cache_dir):
    first = _python(_TUNER.format(pass_name="dgrad"), cache_dir)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    tuned = json.loads(out)
    assert tuned["timings"] > 1 and not tuned["cached"]
    second = _python(_TUNER.format(pass_name="dgrad"), cache_dir)
    out, err = second.communicate(timeout=120)
    again = json.loads(out)
    assert again == {"config": tuned["config"], "timings": 0, "cached": True}


def test_two_processes_tuning_one_key_at_once_agree(cache_dir):
    procs = [_python(_TUNER.format(pass_name="wgrad"), cache_dir) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["config"] == results[1]["config"]
    data = read_json(tuning_cache.cache_path("cpu"))
    assert len(data["entries"]) == 1


# --- layer sets and tables ----------------------------------------------------------------------------
LAYERS = [
    ("tiny 3x3", ConvProblem.from_shapes((1, 64, 6, 7), (64, 64, 3, 3), padding=1), 2),
    ("tiny stem", ConvProblem.from_shapes((1, 3, 9, 9), (8, 3, 3, 3), stride=2, padding=1), 1),
]


def test_tune_layer_set_rows(fake_runner):
    stream = io.StringIO()
    rows = autotune_tables.tune_layer_set(
        LAYERS, (1, 2), dtypes=(torch.float16,), device="cpu", timer=FakeTimer(), stream=stream
    )
    assert len(rows) == 2 * 3 + 2 * 2  # no dgrad for the stem (3 input channels)
    row = rows[0]
    assert (row["layer"], row["batch"], row["pass"], row["dtype"]) == ("tiny 3x3", 1, "fprop", "fp16")
    assert row["gemm"] == "42×64×576" and row["timed_on"] == "cpu" and row["cudnn_ms"] is None
    assert row["winner_tflops"] == pytest.approx(LAYERS[0][1].flops() / row["winner_ms"] / 1e9)
    assert row["tiles"] >= 1 and row["waves"] == 1 and 0 < row["predicted_efficiency"] < 1
    assert row["runner_up"] and row["runner_up_ms"] >= row["winner_ms"]
    assert len(stream.getvalue().splitlines()) == len(rows)
    untimed = autotune_tables.tune_layer_set(LAYERS, (1,), ("wgrad",), device="cpu", progress=False)
    assert all(r["winner_ms"] is None and r["timed_on"] is None for r in untimed)


@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "wgrad"])
def test_cudnn_runner_computes_the_same_pass(pass_name):
    """The baseline's arguments are right: on the CPU it is torch's convolution, checked here."""
    problem = ConvProblem(2, 4, 7, 6, 6, 3, 2, (2, 1), 1, 0, 0, 1, (1, 1), 2)  # asymmetric padding
    tensors = tuning.random_inputs(problem, pass_name, torch.float64, False, "cpu")
    x = tensors.get("x", torch.randn(problem.input_shape, dtype=torch.float64)).requires_grad_()
    w = tensors["weight"].requires_grad_()
    padded = F.pad(x, (problem.pad_left, problem.pad_right, problem.pad_top, problem.pad_bottom))
    y = F.conv2d(padded, w, None, problem.stride, 0, problem.dilation, problem.groups)
    if pass_name == "fprop":
        got = autotune_tables.cudnn_runner(problem, pass_name, {**tensors, "x": x.detach()})()
        assert rel_error(got, y) < 1e-12
        return
    dx, dw = torch.autograd.grad(y, (x, w), tensors["dy"])
    tensors = {**tensors, "weight": w.detach()} | ({"x": x.detach()} if "x" in tensors else {})
    got = autotune_tables.cudnn_runner(problem, pass_name, tensors)()
    if pass_name == "dgrad":
        assert rel_error(got[0], dx) < 1e-12
    else:
        assert rel_error(got[1], dw) < 1e-12


def _rows(fake_timer=True):
    timer = FakeTimer() if fake_timer else None
    return autotune_tables.tune_layer_set(
        LAYERS, (1,), ("fprop", "wgrad"), device="cpu", timer=timer, progress=False
    )


def test_table_writer(tmp_path, fake_runner):
    path = autotune_tables.write_autotune_tables(_rows(), str(tmp_path), gpu="Test GPU 9000")
    assert path == str(tmp_path / "test-gpu-9000.md")
    text = read(path)
    for needed in ("GPU Test GPU 9000", f"torch {torch.__version__}", "Triton ", "CUDA ", "commit ", "UTC"):
        assert needed in text
    assert "## custom: fprop, fp16, nhwc" in text and "## custom: wgrad, fp16, nhwc" in text
    header = next(line for line in text.splitlines() if line.startswith("| layer"))
    for column in (
        "N",
        "GEMM M×N×K",
        "winner",
        "TFLOP/s",
        "of peak",
        "runner-up",
        "cuDNN ms",
        "tiles",
        "waves",
        "model η",
    ):
        assert f" {column} " in header
    assert "| tiny 3x3 " in text and "| tiny stem " in text
    data = read_json(tmp_path / "test-gpu-9000.json")
    assert len(data["rows"]) == 4
    # a second run merges: new rows are added, the same (layer, N, pass, dtype) replaced
    more = autotune_tables.tune_layer_set(
        LAYERS[:1], (8,), ("fprop",), device="cpu", timer=FakeTimer(), progress=False
    )
    autotune_tables.write_autotune_tables(more + _rows(), str(tmp_path), gpu="Test GPU 9000")
    assert len(read_json(tmp_path / "test-gpu-9000.json")["rows"]) == 5


def test_table_writer_refuses_unmeasured_rows_in_notes(fake_runner):
    notes = os.path.join(REPO, "notes", "autotune")
    before = set(os.listdir(notes)) if os.path.isdir(notes) else set()
    for rows in (_rows(fake_timer=True), _rows(fake_timer=False)):
        with pytest.raises(ValueError, match="not timed on a GPU"):
            autotune_tables.write_autotune_tables(rows, notes, gpu="Test GPU 9000")
    assert (set(os.listdir(notes)) if os.path.isdir(notes) else set()) == before


def test_tune_and_write_without_gpu_writes_nothing(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert autotune_tables.tune_and_write("quantization_probes", (1,), out_dir=str(tmp_path)) is None
    assert "no CUDA device" in capsys.readouterr().err and not os.listdir(tmp_path)


def test_device_slug():
    assert output_files.slug("NVIDIA H200", "device") == "nvidia-h200"
    assert output_files.slug("NVIDIA H100 80GB HBM3", "device") == "nvidia-h100-80gb-hbm3"
    assert output_files.slug(" ", "device") == "device"
    # a MIG slice's name keeps the file names it had (dots dropped, as the tables' names did)
    mig = output_files.slug("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "device")
    assert mig == "nvidia-a100-sxm4-40gb-mig-1g-5gb"


# --- the GPU path, with a pretend GPU (no CUDA here): everything but do_bench and the kernels -----------
@pytest.fixture
def pretend_h200(monkeypatch, fake_runner):
    """device='cuda' resolves to an H200 named 'Pretend H200'; tensors stay on the CPU; the GPU
    timer is a FakeTimer (returned, to count its calls)."""
    from triton_conv.devices import get_device

    timer = FakeTimer()
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "1")  # on a GPU the suite's default is 0 (conftest)
    monkeypatch.setattr(tuning, "device_identity", lambda device: ("Pretend H200", get_device("H200")))
    real_inputs = tuning.random_inputs
    monkeypatch.setattr(tuning, "random_inputs", lambda p, n, d, c, device: real_inputs(p, n, d, c, "cpu"))
    monkeypatch.setattr(tuning, "gpu_timer", timer)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    for module in (tuning, autotune_runs):  # no CUDA device to make current
        monkeypatch.setattr(module, "device_guard", lambda device: contextlib.nullcontext())
    return timer


def test_gpu_path_times_on_a_miss_and_caches_per_device(pretend_h200, cache_dir):
    config = choices.select_config(PROBLEM, "dgrad", torch.float16, True, "cuda")
    assert pretend_h200.calls == len(pruned_space(PROBLEM, "dgrad", torch.float16, "H200")) > 1
    assert config == min(pruned_space(PROBLEM, "dgrad", torch.float16, "H200"), key=score)
    assert os.path.basename(tuning_cache.cache_path("Pretend H200")).startswith("pretend-h200--triton-")
    entry = read_json(tuning_cache.cache_path("Pretend H200"))["entries"][
        tuning_key(PROBLEM, "dgrad", torch.float16, True)
    ]
    assert entry["timed_on"] == "cuda"
    choices.forget_choices()
    assert choices.select_config(PROBLEM, "dgrad", torch.float16, True, "cuda") == config
    assert pretend_h200.calls == len(pruned_space(PROBLEM, "dgrad", torch.float16, "H200"))


def test_autotune_env_off_uses_cache_hits_and_defaults_on_misses(pretend_h200, monkeypatch):
    tuned = choices.select_config(PROBLEM, "wgrad", torch.float16, True, "cuda")
    calls = pretend_h200.calls
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "0")
    choices.forget_choices()
    assert choices.select_config(PROBLEM, "wgrad", torch.float16, True, "cuda") == tuned  # a hit
    other = PROBLEM.with_batch(64)
    assert choices.select_config(other, "wgrad", torch.float16, True, "cuda") == default_pass_config(
        other, "wgrad", torch.float16, sm_count=132
    )
    assert pretend_h200.calls == calls


def test_gpu_layer_set_rows_and_table(pretend_h200, tmp_path):
    rows = autotune_tables.tune_layer_set(
        LAYERS, (1, 2), ("fprop", "dgrad", "wgrad"), device="cuda", progress=False
    )
    assert all(r["timed_on"] == "cuda" and r["device"] == "Pretend H200" for r in rows)
    assert all(r["cudnn_ms"] == 1.0 and r["cudnn_ratio"] == pytest.approx(1.0 / r["winner_ms"]) for r in rows)
    # N=2 reuses N=1's key for the small layers' wgrad (same bucket): its winner is re-timed there
    path = autotune_tables.write_autotune_tables(rows, str(tmp_path))
    text = read(path)
    assert path.endswith("pretend-h200.md") and "cuDNN / winner" in text
    assert "The Triton winner beat cuDNN in" in text and "Split-K won" in text


def test_observations_line():
    rows = [
        {"batch": 1, "winner_split_k": 4, "cudnn_ratio": 1.2},
        {"batch": 8, "winner_split_k": 1, "cudnn_ratio": 0.8},
        {"batch": 16, "winner_split_k": 16, "cudnn_ratio": None},
    ]
    assert autotune_tables._observations(rows) == (
        "Split-K won 2 of 3 rows (at N = [1, 16]). The Triton winner beat cuDNN in 1 of 2."
    )


@pytest.mark.parametrize(
    ("value", "enabled", "warns"),
    [("0", False, False), (" Off ", False, False), ("yes", True, False), ("", True, False),
     ("2", True, True), ("disabled", True, True)],
)  # fmt: skip
def test_autotune_switch_names_a_value_it_does_not_know(value, enabled, warns, monkeypatch):
    """A malformed TRITON_CONV_AUTOTUNE is said, not silently taken as on."""
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tuning.autotuning_enabled() is enabled
    said = [str(w.message) for w in caught if tuning.ENV_AUTOTUNE in str(w.message)]
    assert bool(said) is warns, said


# --- pins ---------------------------------------------------------------------------------------------
def test_pin_config_refuses_a_pin_no_pass_would_look_up():
    """pin_config kept a pass named 'forward' (never looked up, no word), and a dict as config, which
    failed later inside conv2d as 'unhashable type: dict'."""
    problem = ConvProblem.from_shapes((2, 4, 8, 8), (6, 4, 3, 3))
    good = ("fprop", torch.float32, KernelConfig(16, 16, 16))
    bad = [(("forward", *good[1:]), "pass_name"), ((good[0], torch.int32, good[2]), "dtype"),
           ((*good[:2], {"block_m": 16}), "config must be a KernelConfig")]  # fmt: skip
    for (pass_name, dtype, config), words in bad:
        with pytest.raises(RuntimeError, match=words):
            choices.pin_config(problem, pass_name, dtype, False, "cpu", config)
    with pytest.raises(RuntimeError, match="problem must be a ConvProblem"):
        choices.pin_config((2, 4, 8, 8), *good[:2], False, "cpu", good[2])
    assert not choices._CHOSEN and not choices._PINNED


def test_a_pin_given_with_a_stride_past_the_image_is_the_config_the_op_launches(monkeypatch, triton_only):
    """The op runs the canonical problem (stride cut to the padded span); a pin of the problem as
    written (stride 100) was kept under another key and never launched."""
    from triton_conv import passes

    problem = ConvProblem.from_shapes((2, 4, 8, 8), (6, 4, 3, 3), stride=100, padding=1)
    pinned = KernelConfig(16, 32, 16, group_m=1)
    chosen = []
    real = passes.choose_config
    monkeypatch.setattr(passes, "choose_config", lambda *args: chosen.append(real(*args)) or chosen[-1])
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
    choices.pin_config(problem, "fprop", torch.float32, False, "cpu", pinned)
    try:
        with triton_only():
            y = triton_conv.conv2d(x, w, stride=100, padding=1)
    finally:
        choices.forget_choices()
    assert chosen == [pinned]
    assert rel_error(y, F.conv2d(x.double(), w.double(), stride=100, padding=1)) < 1e-5


@pytest.mark.parametrize("case", ["depthwise NCHW", "cuDNN disabled"])
def test_a_pin_holds_where_the_calls_tf32_differs_from_cudnns(case, monkeypatch, triton_only, set_tf32):
    """A pin was keyed on cuDNN's TF32 setting as read outside any call; inside, the call's own
    decides (IEEE for an NCHW depthwise convolution, cuBLAS's setting with cuDNN disabled), and the
    pin was missed by the call it was made for (a tuning ran instead)."""
    from triton_conv import passes

    set_tf32(True)
    groups, weight = (4, (4, 1, 3, 3)) if case == "depthwise NCHW" else (1, (6, 4, 3, 3))
    problem = ConvProblem.from_shapes((2, 4, 8, 8), weight, padding=1, groups=groups)
    pinned = KernelConfig(16, 32, 16, group_m=1)
    chosen = []
    real = passes.choose_config
    monkeypatch.setattr(passes, "choose_config", lambda *args: chosen.append(real(*args)) or chosen[-1])
    x, w = torch.randn(2, 4, 8, 8), torch.randn(weight)
    choices.pin_config(problem, "fprop", torch.float32, False, "cpu", pinned)
    cudnn = torch.backends.cudnn.flags(enabled=case != "cuDNN disabled")  # monkeypatch cannot undo it
    try:
        with triton_only(), cudnn:
            y = triton_conv.conv2d(x, w, padding=1, groups=groups)
    finally:
        choices.forget_choices()
    assert chosen == [pinned]
    assert rel_error(y, F.conv2d(x.double(), w.double(), padding=1, groups=groups)) < 1e-5
