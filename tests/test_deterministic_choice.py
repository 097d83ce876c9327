"""torch.use_deterministic_algorithms(True): the config a pass launches never depends on a timing or
on the tuning cache (either would make the rounding of every sum depend on timing noise or on what
an earlier process wrote), only on the shape and the GPU's model; a pin still wins. Run on the CPU
through the GPU's choice path (`pretend_gpu`: a device named 'Pretend' with an H200's limits, a
timer that scores configs without launching them, so a tuning would pick the smallest tile)."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch

import triton_conv
from triton_conv import choices, passes, tuning, tuning_cache
from triton_conv.configs import KernelConfig
from triton_conv.devices import get_device
from triton_conv.problem import PASSES, ConvProblem
from triton_conv.tuning_keys import tuning_key

from .reference import bound, conv_case, rel_error

PROBLEM = ConvProblem.from_shapes((2, 5, 9, 11), (7, 5, 3, 3), padding=1)
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def not_capturing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # no CUDA here


MODES = ("algorithms", "warn_only", "cudnn")  # the three ways a user asks torch for it


@contextlib.contextmanager
def deterministic(mode: str = "algorithms"):
    """torch.use_deterministic_algorithms(True) (warn-only or not), or cuDNN's deterministic flag."""
    enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_before = torch.backends.cudnn.deterministic
    if mode == "cudnn":
        torch.backends.cudnn.deterministic = True  # torch's reproducibility recipe for cuDNN
    else:
        torch.use_deterministic_algorithms(True, warn_only=mode == "warn_only")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=was_warn_only)
        torch.backends.cudnn.deterministic = cudnn_before


def default_for(pass_name: str) -> KernelConfig:
    return tuning.untimed_default(PROBLEM, pass_name, torch.float16, False, get_device("H200"))


def other_than(config: KernelConfig) -> KernelConfig:
    """A valid config that is not `config` (what a timed tuning might have cached)."""
    for block_m in (32, 64, 128):
        candidate = KernelConfig(block_m, 32, 32)
        if candidate != config:
            return candidate
    raise AssertionError("unreachable")


def write_cache(device_name: str, configs: dict[str, KernelConfig]) -> None:
    """The tuning cache of `device_name` holding `configs` (pass -> config) for PROBLEM in fp16 NCHW."""
    entries = {
        tuning_key(PROBLEM, pass_name, torch.float16, False): {"config": config.as_dict()}
        for pass_name, config in configs.items()
    }
    header = {
        "schema": tuning_cache.SCHEMA, "device": device_name, "triton": tuning_cache.triton_version(),
        "triton_conv": tuning_cache.package_version(),
    }  # fmt: skip
    path = tuning_cache.cache_path(device_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump({**header, "entries": entries}, handle)
    tuning_cache.forget_open_caches()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "wgrad"])
def test_deterministic_mode_neither_times_nor_reads_the_cache(pass_name, mode, pretend_gpu):
    default = default_for(pass_name)
    write_cache("Pretend", {pass_name: other_than(default)})
    timed_before = tuning.timing_calls
    with deterministic(mode):
        got = passes.choose_config(PROBLEM, pass_name, torch.float16, False, CUDA)
    assert got == default
    assert tuning.timing_calls == timed_before
    # The same choice outside the mode reads the cache (the entry written above is honoured there).
    assert passes.choose_config(PROBLEM, pass_name, torch.float16, False, CUDA) == other_than(default)


def test_a_miss_in_deterministic_mode_is_not_tuned_or_cached(pretend_gpu):
    timed_before = tuning.timing_calls
    with deterministic():
        got = passes.choose_config(PROBLEM, "fprop", torch.float16, False, CUDA)
    assert got == default_for("fprop")
    assert tuning.timing_calls == timed_before
    assert not os.path.exists(tuning_cache.cache_path("Pretend"))


def test_a_memoised_tuning_is_not_used_in_deterministic_mode(pretend_gpu):
    """A shape tuned earlier in the process (memoised) runs the default while the mode is on, and
    its tuned config again once it is off."""
    tuned = passes.choose_config(PROBLEM, "fprop", torch.float16, False, CUDA)
    assert tuning.timing_calls > 0 and tuned != default_for("fprop")  # the smallest tile won
    with deterministic():
        assert passes.choose_config(PROBLEM, "fprop", torch.float16, False, CUDA) == default_for("fprop")
    assert passes.choose_config(PROBLEM, "fprop", torch.float16, False, CUDA) == tuned


def test_a_pin_wins_in_deterministic_mode(pretend_gpu):
    pinned = other_than(default_for("wgrad"))
    choices.pin_config(PROBLEM, "wgrad", torch.float16, False, CUDA, pinned)
    with deterministic():
        assert passes.choose_config(PROBLEM, "wgrad", torch.float16, False, CUDA) == pinned
    choices.forget_choices()  # unpins
    with deterministic():
        assert passes.choose_config(PROBLEM, "wgrad", torch.float16, False, CUDA) == default_for("wgrad")


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_mode_gives_the_same_bits_whatever_the_cache_holds(
    mode, tmp_path, monkeypatch, triton_only
):
    """End to end, on the suite's device: a convolution's forward and both gradients, run again in a
    fresh process memo after the cache was filled with other configs, give the same bits. Its teeth
    are on a GPU (`pytest tests` there), where the first run would otherwise tune and the second run
    the cached configs; on the CPU both runs take the untimed default either way."""
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path / "cache"))
    choices.forget_choices()
    problem, x, weight, bias, dy, ref = conv_case(
        (2, 5, 9, 11), (7, 5, 3, 3), dict(padding=1), torch.float16, "nchw"
    )
    assert problem == PROBLEM  # the cache entries below are written for PROBLEM's keys

    def step():
        x_, weight_, bias_ = (t.clone().requires_grad_() for t in (x, weight, bias))
        y = triton_conv.conv2d(x_, weight_, bias_, padding=1)
        y.backward(dy)
        return y, x_.grad, weight_.grad, bias_.grad

    name, live = tuning.device_identity(x.device)
    with deterministic(mode), triton_only() as proof:
        first = step()
        write_cache(name, {p: other_than(tuning.untimed_default(PROBLEM, p, torch.float16, False, live))
                           for p in PASSES})  # fmt: skip
        choices.forget_choices()
        second = step()
    choices.forget_choices()
    # Three passes, twice, all Triton (the bias gradient comes with the weight gradient's launch).
    assert sum(proof.launches.values()) >= 6, proof.launches
    for name, a, b in zip(("y", "dx", "dw", "db"), first, second):
        assert rel_error(a, ref[name]) < bound(torch.float16), f"{name} is wrong"
        assert torch.equal(a, b), f"{name} differs between two deterministic runs"
