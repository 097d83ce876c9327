"""Tuning on the CPU: the timing loop (with a CPU timer or a fake one), the persistent cache (round
trip, atomic writes, corrupt and stale files, two processes at once, no re-tuning of a cached key),
ahead-of-time tuning of a model, layer-set rows and the table writer."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F

from triton_conv import autotune_tables, tuning, tuning_cache
from triton_conv.configs import KernelConfig, config_space, default_pass_config, tuning_key
from triton_conv.problem import ConvProblem
from triton_conv.pruning import search_space

from .reference import rel_error

PROBLEM = ConvProblem.from_shapes((2, 5, 9, 11), (7, 5, 3, 3), padding=1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own cache folder and a process with nothing remembered."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(folder))
    tuning.forget_choices()
    yield folder
    tuning.forget_choices()


def score(c: KernelConfig) -> float:
    """FakeTimer's milliseconds: small tiles, then few warps and small splits, win."""
    return 1.0 + c.block_m * c.block_n / 1e4 + c.block_k / 1e6 + c.num_warps / 1e8 + c.split_k / 1e10


def read(path) -> str:
    with open(path) as handle:
        return handle.read()


def read_json(path) -> dict:
    return json.loads(read(path))


class FakeTimer:
    """Does not run the pass: `score(config)` milliseconds, and a count of the configs timed."""

    def __init__(self):
        self.calls = 0

    def __call__(self, fn):
        if not hasattr(fn, "config"):  # the cuDNN baseline (torch's convolution here): run it
            fn()
            return 1.0
        self.calls += 1
        return score(fn.config)


@pytest.fixture
def fake_runner(monkeypatch):
    """pass_runner that records its config instead of launching (for FakeTimer)."""

    def runner(problem, pass_name, tensors, config, channels_last):
        def fn():
            return None

        fn.config = config
        return fn

    monkeypatch.setattr(tuning, "pass_runner", runner)


# --- timing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "wgrad"])
def test_cpu_timer_tuning_runs_each_pass(pass_name):
    """The real loop: random inputs, the pass's launcher, the interpreter, the CPU timer."""
    result = tuning.tune_problem(
        PROBLEM, pass_name, torch.float32, True, "cpu", timer=lambda f: tuning.cpu_timer(f, 1), max_configs=2
    )
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
    config = tuning.select_config(PROBLEM, "wgrad", torch.float32, True, "cpu")
    assert config == default_pass_config(PROBLEM, "wgrad", torch.float32, sm_count=1)
    assert not cache_dir.exists()


def test_select_config_tunes_once_then_remembers(fake_runner, cache_dir):
    timer = FakeTimer()
    first = tuning.select_config(PROBLEM, "fprop", torch.float16, True, "cpu", timer=timer)
    calls = timer.calls
    assert calls == len(search_space(PROBLEM, "fprop", torch.float16, "H200")) > 1
    assert first == min(search_space(PROBLEM, "fprop", torch.float16, "H200"), key=score)
    assert tuning.select_config(PROBLEM, "fprop", torch.float16, True, "cpu", timer=timer) == first
    tuning.forget_choices()  # a fresh process: the file answers
    assert tuning.select_config(PROBLEM, "fprop", torch.float16, True, "cpu", timer=timer) == first
    assert timer.calls == calls
    # the same key from another image size in the bucket: no new search
    other = ConvProblem.from_shapes((2, 5, 8, 12), (7, 5, 3, 3), padding=1)
    assert tuning_key(other, "fprop", torch.float16, True) == tuning_key(
        PROBLEM, "fprop", torch.float16, True
    )
    assert tuning.select_config(other, "fprop", torch.float16, True, "cpu", timer=timer) == first
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
    tuning.forget_choices()
    again = tuning.autotune(PROBLEM, "wgrad", torch.float16, True, "cpu", timer=FakeTimer())
    assert again.cached and again.best == result.best and again.best_ms == result.best_ms


def test_write_is_atomic(cache_dir, monkeypatch):
    cache = tuning_cache.TuningCache("cpu")
    cache.put("a", {"config": KernelConfig().as_dict()})
    before = read(cache.path)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(tuning_cache.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put("b", {"config": KernelConfig().as_dict()})
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
    from triton_conv.problem import ConvProblem
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


# --- ahead of time: a model --------------------------------------------------------------------------------
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.body = torch.nn.Sequential(
            torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), torch.nn.BatchNorm2d(8)
        )
        self.frozen = torch.nn.Conv2d(8, 4, 1, bias=False)
        self.frozen.weight.requires_grad_(False)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = self.frozen(self.body(self.stem(x)))
        return self.head(x.mean((2, 3)))


def test_conv_problems_finds_every_convolution():
    found = tuning.conv_problems(Net(), (3, 10, 12))
    assert [(name, needs_dgrad, needs_wgrad) for name, _, needs_dgrad, needs_wgrad in found] == [
        ("stem", False, True),  # its input is the image: no dgrad
        ("body.1", True, True),
        ("frozen", True, False),  # frozen weight: no wgrad
    ]
    stem, body, frozen = (p for _, p, _, _ in found)
    assert stem == ConvProblem.from_shapes((1, 3, 10, 12), (8, 3, 3, 3), padding=1)
    assert body == ConvProblem.from_shapes((1, 8, 10, 12), (8, 4, 3, 3), stride=2, padding=1, groups=2)
    assert frozen.input_shape == (1, 8, 5, 6) and frozen.is_pointwise


def test_conv_problems_on_converted_models_and_padding_modes():
    import triton_conv

    model = triton_conv.convert_model(Net())
    assert [p for _, p, _, _ in tuning.conv_problems(model, (3, 10, 12))] == [
        p for _, p, _, _ in tuning.conv_problems(Net(), (3, 10, 12))
    ]
    assert "forward" not in vars(model.stem)  # the recording forward is gone again
    reflect = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    [(_, problem, _, _)] = tuning.conv_problems(reflect, (3, 8, 9))
    assert problem == ConvProblem.from_shapes((1, 3, 10, 11), (4, 3, 3, 3), padding=0)


def test_tune_model_progress_and_coverage(fake_runner):
    stream = io.StringIO()
    results = tuning.tune_model(
        Net(), [(3, 10, 12), (3, 64, 64)], batch_sizes=(1, 4), dtype=torch.float16,
        device="cpu", timer=FakeTimer(), stream=stream,
    )  # fmt: skip
    expected = set()
    for shape in [(3, 10, 12), (3, 64, 64)]:
        for _, problem, needs_dgrad, needs_wgrad in tuning.conv_problems(Net(), shape):
            for batch in (1, 4):
                for pass_name, wanted in (("fprop", True), ("dgrad", needs_dgrad), ("wgrad", needs_wgrad)):
                    if wanted:
                        expected.add(tuning_key(problem.with_batch(batch), pass_name, torch.float16, True))
    assert {r.key for r in results} == expected and len(results) == len(expected)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(expected)
    assert lines[0].startswith(f"[1/{len(expected)}] stem fprop fp16 nhwc") and "tuned" in lines[0]
    assert lines[-1].startswith(f"[{len(expected)}/{len(expected)}]")
    stream = io.StringIO()
    tuning.tune_model(Net(), (3, 10, 12), (1,), torch.float16, device="cpu", timer=FakeTimer(), stream=stream)
    assert all("(cached" in line for line in stream.getvalue().splitlines())


def test_tune_model_without_gpu_or_timer_lists_defaults():
    stream = io.StringIO()
    results = tuning.tune_model(Net(), (3, 10, 12), (2,), torch.float32, device="cpu", stream=stream)
    assert all(r.best_ms is None and not r.cached for r in results)
    assert all("default, not timed" in line for line in stream.getvalue().splitlines())


# --- layer sets and tables ----------------------------------------------------------------------------
LAYERS = [
    ("tiny 3x3", ConvProblem.from_shapes((1, 64, 6, 7), (64, 64, 3, 3), padding=1), 2),
    ("tiny stem", ConvProblem.from_shapes((1, 3, 9, 9), (8, 3, 3, 3), stride=2, padding=1), 1),
]


def test_tune_layer_set_rows(fake_runner):
    stream = io.StringIO()
    rows = tuning.tune_layer_set(LAYERS, (1, 2), dtypes=(torch.float16,), device="cpu", timer=FakeTimer(),
                                 stream=stream)  # fmt: skip
    assert len(rows) == 2 * 3 + 2 * 2  # no dgrad for the stem (3 input channels)
    row = rows[0]
    assert (row["layer"], row["batch"], row["pass"], row["dtype"]) == ("tiny 3x3", 1, "fprop", "fp16")
    assert row["gemm"] == "42×64×576" and row["timed_on"] == "cpu" and row["cudnn_ms"] is None
    assert row["winner_tflops"] == pytest.approx(LAYERS[0][1].flops() / row["winner_ms"] / 1e9)
    assert row["tiles"] >= 1 and row["waves"] == 1 and 0 < row["predicted_efficiency"] < 1
    assert row["runner_up"] and row["runner_up_ms"] >= row["winner_ms"]
    assert len(stream.getvalue().splitlines()) == len(rows)
    untimed = tuning.tune_layer_set(LAYERS, (1,), ("wgrad",), device="cpu", progress=False)
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
        assert rel_error(got, y + tensors["bias"].view(1, -1, 1, 1)) < 1e-12
        return
    dx, dw = torch.autograd.grad(y, (x, w), tensors["dy"])
    tensors = {**tensors, "weight": w.detach()} | ({"x": x.detach()} if "x" in tensors else {})
    got = autotune_tables.cudnn_runner(problem, pass_name, tensors)()
    if pass_name == "dgrad":
        assert rel_error(got[0], dx) < 1e-12
    else:
        assert rel_error(got[1], dw) < 1e-12
        assert rel_error(got[2], tensors["dy"].sum((0, 2, 3))) < 1e-12


def _rows(fake_timer=True):
    return tuning.tune_layer_set(LAYERS, (1,), ("fprop", "wgrad"), device="cpu",
                                 timer=FakeTimer() if fake_timer else None, progress=False)  # fmt: skip


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
    more = tuning.tune_layer_set(
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
    assert autotune_tables.device_slug("NVIDIA H200") == "nvidia-h200"
    assert autotune_tables.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


# --- the GPU path, with a pretend GPU (no CUDA here): everything but do_bench and the kernels -----------
@pytest.fixture
def pretend_gpu(monkeypatch, fake_runner):
    """device='cuda' resolves to an H200 named 'Pretend H200'; tensors stay on the CPU; the GPU
    timer is a FakeTimer (returned, to count its calls)."""
    from triton_conv.devices import get_device

    timer = FakeTimer()
    monkeypatch.setattr(tuning, "device_identity", lambda device: ("Pretend H200", get_device("H200")))
    real_inputs = tuning.random_inputs
    monkeypatch.setattr(tuning, "random_inputs", lambda p, n, d, c, device: real_inputs(p, n, d, c, "cpu"))
    monkeypatch.setattr(tuning, "gpu_timer", timer)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    return timer


def test_gpu_path_times_on_a_miss_and_caches_per_device(pretend_gpu, cache_dir):
    config = tuning.select_config(PROBLEM, "dgrad", torch.float16, True, "cuda")
    assert pretend_gpu.calls == len(search_space(PROBLEM, "dgrad", torch.float16, "H200")) > 1
    assert config == min(search_space(PROBLEM, "dgrad", torch.float16, "H200"), key=score)
    assert os.path.basename(tuning_cache.cache_path("Pretend H200")).startswith("pretend-h200--triton-")
    entry = read_json(tuning_cache.cache_path("Pretend H200"))["entries"][
        tuning_key(PROBLEM, "dgrad", torch.float16, True)
    ]
    assert entry["timed_on"] == "cuda"
    tuning.forget_choices()
    assert tuning.select_config(PROBLEM, "dgrad", torch.float16, True, "cuda") == config
    assert pretend_gpu.calls == len(search_space(PROBLEM, "dgrad", torch.float16, "H200"))


def test_autotune_env_off_uses_cache_hits_and_defaults_on_misses(pretend_gpu, monkeypatch):
    tuned = tuning.select_config(PROBLEM, "wgrad", torch.float16, True, "cuda")
    calls = pretend_gpu.calls
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "0")
    tuning.forget_choices()
    assert tuning.select_config(PROBLEM, "wgrad", torch.float16, True, "cuda") == tuned  # a hit
    other = PROBLEM.with_batch(64)
    assert tuning.select_config(other, "wgrad", torch.float16, True, "cuda") == default_pass_config(
        other, "wgrad", torch.float16, sm_count=132
    )
    assert pretend_gpu.calls == calls


def test_gpu_layer_set_rows_and_table(pretend_gpu, tmp_path):
    rows = tuning.tune_layer_set(LAYERS, (1, 2), ("fprop", "dgrad", "wgrad"), device="cuda", progress=False)
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
