"""Tuning on the CPU: the timing loop (with a CPU timer or a fake one), the persistent cache (round
trip, atomic writes, corrupt and stale files, two processes at once, no re-tuning of a cached key),
ahead-of-time tuning of a model, layer-set rows and the table writer."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv import (
    autotune_runs,
    autotune_tables,
    choices,
    model_calls,
    model_tuning,
    output_files,
    tuning,
    tuning_cache,
)
from triton_conv.configs import KernelConfig, default_pass_config
from triton_conv.problem import PASSES, ConvProblem
from triton_conv.pruning import pruned_space
from triton_conv.search_space import config_space
from triton_conv.tuning_keys import tuning_key

from .reference import rel_error

# Tuning times the kernels on CPU tensors (device "cpu"): the interpreter's job, not a GPU run's.
pytestmark = pytest.mark.interpreter

PROBLEM = ConvProblem.from_shapes((2, 5, 9, 11), (7, 5, 3, 3), padding=1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own cache folder and a process with nothing remembered."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(folder))
    choices.forget_choices()
    yield folder
    choices.forget_choices()


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
    found = model_tuning.conv_problems(Net(), (3, 10, 12))
    assert [(call.name, call.passes, call.transposed) for call in found] == [
        ("stem", {"fprop": True, "wgrad": True}, False),  # its input is the image: no dgrad
        ("body.1", {"fprop": True, "dgrad": True, "wgrad": True}, False),
        ("frozen", {"fprop": True, "dgrad": True}, False),  # frozen weight: no wgrad
    ]
    stem, body, frozen = (call.problem for call in found)
    assert stem == ConvProblem.from_shapes((1, 3, 10, 12), (8, 3, 3, 3), padding=1)
    assert body == ConvProblem.from_shapes((1, 8, 10, 12), (8, 4, 3, 3), stride=2, padding=1, groups=2)
    assert frozen.input_shape == (1, 8, 5, 6) and frozen.is_pointwise
    # In NCHW every flag is off: the key says 'nchw' where the model runs contiguous.
    flags = [call.passes for call in model_tuning.conv_problems(Net(), (3, 10, 12), channels_last=False)]
    assert [set(f) for f in flags] == [set(call.passes) for call in found]
    assert not any(v for f in flags for v in f.values())


def test_conv_problems_on_converted_models_and_padding_modes():
    import triton_conv

    model = triton_conv.convert_model(Net())
    assert model_tuning.conv_problems(model, (3, 10, 12)) == model_tuning.conv_problems(Net(), (3, 10, 12))
    net = Net()
    model_tuning.conv_problems(net, (3, 10, 12))
    # the model is left as it was: torch's classes, no hooks
    assert type(net.stem) is torch.nn.Conv2d and type(model.stem) is triton_conv.Conv2d
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in [*net.modules(), *model.modules()])
    reflect = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    [call] = model_tuning.conv_problems(reflect, (3, 8, 9))
    assert call.problem == ConvProblem.from_shapes((1, 3, 10, 11), (4, 3, 3, 3), padding=0)
    same = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, padding="same"))  # torch pads 1 top, 2 bottom
    [call] = model_tuning.conv_problems(same, (3, 8, 9))
    assert call.problem == ConvProblem.from_shapes((1, 3, 8, 9), (4, 3, 4, 4), padding="same")
    assert (call.problem.pad_top, call.problem.pad_bottom) == (1, 2)


class Mixed(torch.nn.Module):
    """All three kinds, torch's and triton-conv's modules: a strided Conv2d on the image, a
    ConvTranspose2d back to the image's size (forward's output_size: output_padding 0 and 1, a crop
    in its view), and a dilated Conv1d with a circular padding_mode on the flattened map."""

    def __init__(self):
        import triton_conv

        super().__init__()
        self.down = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1)
        self.seq = triton_conv.Conv1d(4, 5, 3, padding=2, dilation=2, padding_mode="circular")

    def forward(self, x):
        y = self.up(torch.relu(self.down(x)), output_size=x.shape[-2:])
        return self.seq(y.flatten(2))


def test_conv_problems_never_touches_the_model_it_reads():
    """The forward that finds the calls ran on the model itself (its parameters swapped for meta
    tensors by functional_call, its classes swapped, hooks added): a thread running the model
    meanwhile got meta weights, and two finders at once restored each other's meta tensors as the
    originals, leaving the model's weights on the meta device for good. It now runs on a meta copy.
    A hook of the model sees the original as it was throughout, and two finders held in the middle
    of their forwards at once leave it whole."""
    net = Net()
    values = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    seen = []
    meeting = threading.Barrier(2, timeout=60)

    def hook(module, args):  # copied with the model: it runs in each finder's forward
        seen.append((type(net.stem), net.stem.weight.device.type, len(net.stem._forward_hooks)))
        if threading.current_thread() is not threading.main_thread():
            meeting.wait()  # both finders are in the middle of their forwards now

    net.body.register_forward_pre_hook(hook)
    alone = model_tuning.conv_problems(net, (3, 10, 12))
    found = []
    threads = [threading.Thread(target=lambda: found.append(model_tuning.conv_problems(net, (3, 10, 12))))
               for _ in range(2)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert found == [alone, alone]
    assert seen == [(torch.nn.Conv2d, "cpu", 0)] * 3
    state = net.state_dict()
    assert all(state[name].device.type == "cpu" and torch.equal(state[name], values[name]) for name in values)
    assert all(isinstance(p, torch.nn.Parameter) for p in net.parameters())


class _LayerDrop(Net):
    """A forward that draws from the global generators, as LayerDrop's torch.rand([]) does."""

    def forward(self, x):
        keep = torch.rand([]) >= 0.0 and random.random() >= 0.0 and np.random.rand() >= 0.0
        return super().forward(x) if keep else x


@pytest.mark.parametrize("live", [False, True])
def test_finding_the_calls_undoes_the_forwards_random_draws(live):
    """A seeded run draws the same numbers after tune_model as without it: the meta forward's
    draws from torch's, Python's and numpy's generators are undone, on the copy and read live
    (a model holding a lock, which copy.deepcopy refuses)."""
    net = _LayerDrop()
    if live:
        net.lock = threading.Lock()
    states = lambda: (torch.get_rng_state(), random.getstate(), np.random.get_state())
    before = states()
    finder = model_calls.CallFinder(net)
    assert (finder.meta_model is None) is live
    found = finder.calls((3, 10, 12))
    after = states()
    assert found == model_tuning.conv_problems(Net(), (3, 10, 12))
    assert torch.equal(after[0], before[0]) and after[1] == before[1]
    (name, key, *position), (name_before, key_before, *position_before) = after[2], before[2]
    assert name == name_before and (key == key_before).all() and position == position_before


def test_another_threads_draws_from_torch_stand_while_the_calls_are_found():
    """torch's generator is restored only where the finder's own forward drew (a seeded op under
    its dispatch mode): a draw another thread makes meanwhile is not rewound and drawn again."""
    started, drawn = threading.Event(), threading.Event()

    class WaitsForADraw(Net):
        def forward(self, x):
            started.set()
            assert drawn.wait(timeout=60)
            return super().forward(x)

    first = []

    def draw():  # in the middle of the finder's forward
        started.wait(timeout=60)
        first.append(torch.rand(4))
        drawn.set()

    thread = threading.Thread(target=draw)
    thread.start()
    model_tuning.conv_problems(WaitsForADraw(), (3, 10, 12))
    thread.join(timeout=60)
    assert not torch.equal(torch.rand(4), first[0])  # rewound, it would draw the same four again


class _NotLive:
    """model_calls._LIVE for a test that must find the calls on the copy."""

    def __enter__(self):
        raise AssertionError("the model was read live, not on its copy")

    def __exit__(self, *exc):
        return False


class _CopiesItsData(Net):
    def __deepcopy__(self, memo):  # ignores the memo: a copy with real weights
        copied = Net()
        copied.load_state_dict(self.state_dict())
        return copied


def _uncopyable_net():
    net = Net()
    net.lock = threading.Lock()  # copy.deepcopy refuses it (as DistributedDataParallel's process group)
    return net


def _net_read_through_a_closure():
    net = Net()
    net.head.register_forward_hook(lambda module, args, out: out + net.head.bias)  # the original's bias
    return net


def _legacy_weight_norm_net():
    net = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates it for parametrizations
        torch.nn.utils.weight_norm(net.stem)  # `weight`, recomputed by a hook: a non-leaf attribute
    return net


@pytest.mark.parametrize(
    "make, on_the_copy",
    [(_legacy_weight_norm_net, True), (_uncopyable_net, False), (_net_read_through_a_closure, False),
     (_CopiesItsData, False)],
)  # fmt: skip
def test_a_model_the_copy_cannot_serve_is_read_live_and_left_as_it_was(make, on_the_copy, monkeypatch):
    """The meta copy failed a model with legacy weight_norm (deepcopy refuses its computed weight),
    and read real tensors of one whose hook reads the original or whose __deepcopy__ copies data
    (an error naming neither). Such a model is now read live, as before the copy, one at a time;
    weight_norm's is served by the copy (its computed weight has a meta twin too)."""
    from triton_conv import model_calls

    net = make()
    values = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    if on_the_copy:
        monkeypatch.setattr(model_calls, "_LIVE", _NotLive())
    found = model_tuning.conv_problems(net, (3, 10, 12))
    assert found == model_tuning.conv_problems(Net(), (3, 10, 12))
    state = net.state_dict()
    assert all(state[name].device.type == "cpu" and torch.equal(state[name], values[name]) for name in values)
    assert type(net.stem) is torch.nn.Conv2d
    hooks = lambda model: [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    assert hooks(net) == hooks(make())  # none added, none left
    keys = lambda model: [r.key for r in model_tuning.tune_model(model, (3, 10, 12), device="cpu",
                                                                  stream=io.StringIO())]  # fmt: skip
    assert keys(net) == keys(Net())


def test_conv_problems_of_conv1d_and_conv_transpose2d():
    down, up, seq = model_tuning.conv_problems(Mixed(), (3, 9, 10))
    assert down.problem == ConvProblem.from_shapes((1, 3, 9, 10), (6, 3, 3, 3), stride=2, padding=1)
    # the transposed convolution is its conv2d view; output_size 9x10 from 5x5 is output_padding (0, 1)
    assert up.transposed and up.problem == ConvProblem.from_transposed(
        (1, 6, 5, 5), (6, 4, 3, 3), stride=2, padding=1, output_padding=(0, 1)
    )
    assert list(up.passes) == ["dgrad", "fprop", "wgrad"] and up.kernel_pass("fprop") == "dgrad"
    # conv1d: circular padding applied first (2 each side), then the height-one conv2d, unpadded
    assert seq.problem == ConvProblem.from_shapes((1, 4, 1, 94), (5, 4, 1, 3), dilation=(1, 2))
    model = Mixed()
    model.up.weight.requires_grad_(False)
    calls = model_tuning.conv_problems(model, (3, 9, 10), channels_last=False)
    assert [set(call.passes) for call in calls] == [{"fprop", "wgrad"}, {"dgrad", "fprop"}, set(PASSES)]
    sequence = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 5, stride=3), torch.nn.Conv1d(8, 8, 1))
    first, second = model_tuning.conv_problems(sequence, (4, 50))  # a 1-D model's (C, L)
    assert first.problem == ConvProblem.from_shapes((1, 4, 1, 50), (8, 4, 1, 5), stride=(1, 3))
    assert set(first.passes) == {"fprop", "wgrad"} and second.problem.input_shape == (1, 8, 1, 16)


@pytest.mark.parametrize("channels_last", [True, False])
def test_tune_model_tunes_exactly_the_keys_a_training_step_looks_up(
    channels_last, fake_runner, monkeypatch, triton_only
):
    """After tune_model, a real forward and backward of a converted model (the kernels, under the
    interpreter) looks up only keys that tune_model tuned, and every one of them: nothing is tuned
    again, nothing was tuned in vain."""
    import triton_conv
    from triton_conv import passes

    timer = FakeTimer()
    model = Mixed()
    tuned = model_tuning.tune_model(
        model, (3, 9, 10), (2,), torch.float32, channels_last=channels_last, device="cpu", timer=timer,
        progress=False,
    )  # fmt: skip
    assert timer.calls > 0 and not any(r.cached for r in tuned)
    looked_up = []

    def select_config(problem, pass_name, dtype, channels_last, device=None):
        looked_up.append(tuning_key(problem, pass_name, dtype, channels_last))
        return choices.select_config(problem, pass_name, dtype, channels_last, device, timer=timer)

    monkeypatch.setattr(passes, "select_config", select_config)
    calls = timer.calls
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = triton_conv.convert_model(model).to(memory_format=layout)
    x = torch.randn(2, 3, 9, 10).contiguous(memory_format=layout)
    with triton_only() as proof:
        model(x).square().sum().backward()
    assert timer.calls == calls, "the step tuned a key that tune_model did not"
    assert sorted(looked_up) == sorted(r.key for r in tuned)
    # fprop: down, seq and up's input gradient; dgrad: up's forward and seq's; wgrad: all three
    assert proof.launches == {"fprop_kernel": 3, "dgrad_kernel": 2, "wgrad_kernel": 3}
    assert all(p.grad is not None for p in model.parameters())


def test_tune_model_progress_and_coverage(fake_runner):
    stream = io.StringIO()
    results = model_tuning.tune_model(
        Net(), [(3, 10, 12), (3, 64, 64)], batch_sizes=(1, 4), dtype=torch.float16,
        device="cpu", timer=FakeTimer(), stream=stream,
    )  # fmt: skip
    expected = set()
    for shape in [(3, 10, 12), (3, 64, 64)]:
        for call in model_tuning.conv_problems(Net(), shape):
            for batch in (1, 4):
                for pass_name, channels_last in call.passes.items():
                    expected.add(
                        tuning_key(call.problem.with_batch(batch), pass_name, torch.float16, channels_last)
                    )
    assert {r.key for r in results} == expected and len(results) == len(expected)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(expected)
    assert lines[0].startswith(f"[1/{len(expected)}] stem fprop fp16 nhwc") and "tuned" in lines[0]
    assert lines[-1].startswith(f"[{len(expected)}/{len(expected)}]")
    stream = io.StringIO()
    model_tuning.tune_model(
        Net(), (3, 10, 12), (1,), torch.float16, device="cpu", timer=FakeTimer(), stream=stream
    )
    assert all("(cached" in line for line in stream.getvalue().splitlines())
    stream = io.StringIO()  # forward only: a transposed convolution's forward is its view's dgrad
    results = model_tuning.tune_model(
        Mixed(), (3, 9, 10), (1,), torch.float16, ("fprop",), device="cpu", timer=FakeTimer(), stream=stream
    )
    assert [r.key.split()[0] for r in results] == ["fprop", "dgrad", "fprop"]
    assert "up (transposed fprop) dgrad fp16 nhwc" in stream.getvalue()


def test_tune_model_takes_a_1d_models_shape(fake_runner):
    model = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 5, stride=3), torch.nn.ReLU(), torch.nn.Conv1d(8, 8, 1))
    results = model_tuning.tune_model(
        model, [(4, 50), (4, 200)], (1, 8), torch.float16, device="cpu", timer=FakeTimer(), progress=False
    )
    keys = {r.key for r in results}
    assert all("nchw" in key and "RxS=1x" in key for key in keys)  # a 3-D tensor has no channels_last
    calls = [call for shape in ((4, 50), (4, 200)) for call in model_tuning.conv_problems(model, shape)]
    assert keys == {
        tuning_key(call.problem.with_batch(n), p, torch.float16, False)
        for call in calls
        for n in (1, 8)
        for p in call.passes
    }


def test_tune_model_without_gpu_or_timer_lists_defaults():
    stream = io.StringIO()
    results = model_tuning.tune_model(Net(), (3, 10, 12), (2,), torch.float32, device="cpu", stream=stream)
    assert all(r.best_ms is None and not r.cached for r in results)
    assert all("default, not timed" in line for line in stream.getvalue().splitlines())


@pytest.mark.parametrize(
    ("passes", "batch_sizes", "words"),
    [(["forward"], (1,), "passes must name"), (("fprop", "wgard"), (1,), "'wgard'"),
     (PASSES, (0,), "batch_sizes"), (PASSES, (-1, 2), "batch_sizes"), (PASSES, (True,), "batch_sizes"),
     (PASSES, (), "batch_sizes"), (PASSES, (1.5,), "batch_sizes")],
)  # fmt: skip
def test_tune_model_refuses_passes_and_batches_it_cannot_tune(passes, batch_sizes, words):
    """A misspelt pass tuned nothing without a word (a ConvTranspose2d raised a bare KeyError), and
    a batch of 0 or less was tuned as a GEMM of no rows."""
    for model in (Net(), torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 4, 2, stride=2))):
        with pytest.raises(RuntimeError, match=words):
            model_tuning.tune_model(model, (3, 10, 12), batch_sizes, torch.float32, passes, device="cpu",
                                    stream=io.StringIO())  # fmt: skip


@pytest.mark.parametrize(
    ("input_shapes", "words"),
    [([], "input_shapes must be"), ((np.int64(3), 10, 12), None),
     (torch.tensor([3, 10, 12]), "not a tensor"), ((3, 0, 12), "input_shapes must be"),
     ((3,), "input_shapes must be"), ((10, 12), "input_shapes \\(10, 12\\)"),
     ([(3, 10, 12), "3x10x12"], "input_shapes must be")],
)  # fmt: skip
def test_tune_model_names_input_shapes_it_cannot_take(input_shapes, words):
    """An empty list raised IndexError, a NumPy integer TypeError ('not iterable'), a shape the model
    refuses its forward's message with no word of which argument gave it."""
    call = lambda: model_tuning.tune_model(Net(), input_shapes, (2,), device="cpu", stream=io.StringIO())
    if words is None:
        assert [r.key for r in call()] == [r.key for r in model_tuning.tune_model(
            Net(), (3, 10, 12), (2,), device="cpu", stream=io.StringIO())]  # fmt: skip
        return
    with pytest.raises(RuntimeError, match=words):
        call()


def test_tune_model_tunes_the_models_dtype_unless_told():
    """The default was fp16 whatever the model: an fp32 model's step found none of its keys tuned."""
    keys = lambda model, **kw: {r.key.split()[1] for r in model_tuning.tune_model(
        model, (3, 10, 12), (2,), device="cpu", stream=io.StringIO(), **kw)}  # fmt: skip
    assert keys(Net()) == keys(Net(), dtype=torch.float32) and keys(Net()) & {"fp32", "tf32"}
    assert keys(Net().double()) == {"fp64"} and keys(Net(), dtype=torch.bfloat16) == {"bf16"}
    for dtype, error in ((torch.int32, "dtype must be one of"), ("fp16", "dtype must be one of")):
        with pytest.raises(triton_conv.ConvTypeError, match=error):
            keys(Net(), dtype=dtype)
    if not torch.cuda.is_available():
        with pytest.raises(triton_conv.ConvArgumentError, match="sees no CUDA device"):
            model_tuning.tune_model(Net(), (3, 10, 12), device="cuda", stream=io.StringIO())


def test_tune_model_takes_one_pass_name_and_one_batch_size():
    """A bare string was iterated as its letters ('f', 'p', ...), none of them a pass: nothing tuned."""

    def keys(batch_sizes, passes):
        results = model_tuning.tune_model(
            Net(), (3, 10, 12), batch_sizes, torch.float32, passes, device="cpu", stream=io.StringIO()
        )
        return [r.key for r in results]

    assert keys(2, "fprop") == keys([2], ["fprop"]) and len(keys(2, "fprop")) > 0


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
    for module in (tuning, autotune_runs):  # no CUDA device to make current
        monkeypatch.setattr(module, "device_guard", lambda device: contextlib.nullcontext())
    return timer


def test_gpu_path_times_on_a_miss_and_caches_per_device(pretend_gpu, cache_dir):
    config = choices.select_config(PROBLEM, "dgrad", torch.float16, True, "cuda")
    assert pretend_gpu.calls == len(pruned_space(PROBLEM, "dgrad", torch.float16, "H200")) > 1
    assert config == min(pruned_space(PROBLEM, "dgrad", torch.float16, "H200"), key=score)
    assert os.path.basename(tuning_cache.cache_path("Pretend H200")).startswith("pretend-h200--triton-")
    entry = read_json(tuning_cache.cache_path("Pretend H200"))["entries"][
        tuning_key(PROBLEM, "dgrad", torch.float16, True)
    ]
    assert entry["timed_on"] == "cuda"
    choices.forget_choices()
    assert choices.select_config(PROBLEM, "dgrad", torch.float16, True, "cuda") == config
    assert pretend_gpu.calls == len(pruned_space(PROBLEM, "dgrad", torch.float16, "H200"))


def test_autotune_env_off_uses_cache_hits_and_defaults_on_misses(pretend_gpu, monkeypatch):
    tuned = choices.select_config(PROBLEM, "wgrad", torch.float16, True, "cuda")
    calls = pretend_gpu.calls
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "0")
    choices.forget_choices()
    assert choices.select_config(PROBLEM, "wgrad", torch.float16, True, "cuda") == tuned  # a hit
    other = PROBLEM.with_batch(64)
    assert choices.select_config(other, "wgrad", torch.float16, True, "cuda") == default_pass_config(
        other, "wgrad", torch.float16, sm_count=132
    )
    assert pretend_gpu.calls == calls


def test_gpu_layer_set_rows_and_table(pretend_gpu, tmp_path):
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
    assert not choices._CHOSEN


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
