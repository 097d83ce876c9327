"""The config choice under threads and re-entry (DataParallel runs replicas in threads; autograd runs
backward passes on its own threads; a hook can run a convolution while a config is timed): one
tuning per problem, a pin made meanwhile kept, no tuning started from inside itself, nothing cached
from a tuning whose TF32 setting changed under it, and a plan built under the TF32 setting its key
holds."""

from __future__ import annotations

import threading
import time
import warnings

import pytest
import torch

from triton_conv import choices, tuning
from triton_conv.configs import KernelConfig, default_pass_config
from triton_conv.launchers import common, fprop
from triton_conv.pruning import pruned_space

from .test_tuning_cache_robustness import PROBLEM

# select_config's GPU path on the CPU (a device named 'Pretend', no launches, a fresh cache folder)
pytestmark = pytest.mark.usefixtures("pretend_gpu")


class SlowTimer:
    """The pretend GPU's timer, slow enough for other threads to arrive while it times; `during` runs
    inside the first timing (another thread's or a hook's work)."""

    def __init__(self, during=None):
        self.calls, self.during, self.lock = 0, during, threading.Lock()

    def __call__(self, fn):
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first and self.during is not None:
            self.during()
        time.sleep(0.01)
        return fn.config.block_m * fn.config.block_n / 1e3


def _space():
    return pruned_space(PROBLEM, "fprop", torch.float16, "H200", channels_last=False)


def _select():
    return choices.select_config(PROBLEM, "fprop", torch.float16, False, "cuda")


def test_threads_that_miss_one_problem_at_once_share_one_tuning(monkeypatch):
    """Each of four threads timed every config beside the others (4x the timings, each under the
    others' load, and the first written kept)."""
    timer = SlowTimer()
    monkeypatch.setattr(tuning, "gpu_timer", timer)
    chosen = []
    threads = [threading.Thread(target=lambda: chosen.append(_select())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert timer.calls == len(_space())
    assert len(chosen) == 4 and len(set(chosen)) == 1


def test_a_pin_made_while_its_problem_is_tuned_is_kept(monkeypatch):
    pinned = KernelConfig(128, 128, 64)

    def pin():
        choices.pin_config(PROBLEM, "fprop", torch.float16, False, "cuda", pinned)

    monkeypatch.setattr(tuning, "gpu_timer", SlowTimer(during=pin))
    assert _select() == pinned  # the tuning found the pin when it finished, and kept it
    assert choices.remembered_config(PROBLEM, "fprop", torch.float16, False, "cuda") == pinned


def test_the_same_problem_from_inside_its_own_tuning_gets_the_default(monkeypatch):
    """A hook that ran the same convolution while a config was timed started the tuning again, and
    again from inside that one, without end."""
    inner = []
    timer = SlowTimer(during=lambda: inner.append(_select()))
    monkeypatch.setattr(tuning, "gpu_timer", timer)
    outer = _select()
    from triton_conv.devices import get_device

    h200 = get_device("H200")
    default = default_pass_config(PROBLEM, "fprop", torch.float16, h200.sm_count, h200.compute_capability,
                                  channels_last=False)  # fmt: skip
    assert inner == [default] and timer.calls == len(_space())
    assert outer == min(_space(), key=lambda c: c.block_m * c.block_n)


def test_a_tuning_whose_tf32_setting_changed_is_neither_cached_nor_memoised(monkeypatch):
    """Another thread switched TF32 during an fp32 tuning: its times mixed two kernels, and the
    winner went to disk under the key of the setting it started with."""
    setting = {"tf32": False}
    monkeypatch.setattr(tuning, "fp32_uses_tf32", lambda: setting["tf32"])
    monkeypatch.setattr(choices, "fp32_uses_tf32", lambda: setting["tf32"])
    from triton_conv import tuning_keys

    monkeypatch.setattr(tuning_keys, "fp32_uses_tf32", lambda: setting["tf32"], raising=False)
    monkeypatch.setattr(tuning, "gpu_timer", SlowTimer(during=lambda: setting.update(tf32=True)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        choices.select_config(PROBLEM, "fprop", torch.float32, False, "cuda")
    assert any("TF32 setting changed" in str(w.message) for w in caught)
    setting["tf32"] = False
    assert choices.remembered_config(PROBLEM, "fprop", torch.float32, False, "cuda") is None
    from triton_conv.tuning_cache import get_cache

    assert get_cache("Pretend").get(tuning.tuning_key(PROBLEM, "fprop", torch.float32, False)) is None


@pytest.mark.parametrize("first", [True, False])
def test_a_plan_is_built_under_the_tf32_setting_its_key_holds(first, monkeypatch):
    """The key read the setting, the plan read it again: a switch between the two reads cached a
    plan whose kernel used the other precision, for every later call under the key's setting."""
    reads = iter([first] + [not first] * 10)
    monkeypatch.setattr(common, "fp32_uses_tf32", lambda: next(reads))
    launched = []
    monkeypatch.setattr(fprop, "launch", launched.append)
    fprop.plans.clear()
    x, w = torch.randn(PROBLEM.input_shape), torch.randn(PROBLEM.weight_shape)
    fprop.conv2d_fprop(x, w, None, PROBLEM, KernelConfig(32, 32, 16))
    (key,) = fprop.plans.values
    assert key[-1].tf32 is first
    assert launched[0].constexprs["INPUT_PRECISION"] == ("tf32" if first else "ieee")
    fprop.plans.clear()


def test_threads_running_convolutions_under_the_interpreter_get_torchs_values(triton_only):
    """Triton's interpreter holds the running program's id in module globals: three threads
    interpreting at once raised ('x >= grid_dim[0]') or wrote another program's tile."""
    import sys

    import triton_conv

    from .reference import rel_error

    cases = [
        ((2, 4, 9, 7), (6, 4, 3, 3), 1),
        ((1, 6, 8, 8), (6, 3, 3, 3), 2),
        ((3, 2, 5, 6), (4, 2, 1, 1), 1),
    ]
    failures = []

    def run(x_shape, w_shape, groups):
        for _ in range(3):
            x = torch.randn(x_shape, dtype=torch.float64)
            w = torch.randn(w_shape, dtype=torch.float64)
            try:
                got = triton_conv.conv2d(x, w, padding=1, groups=groups)
            except Exception as error:  # the interpreter's own errors
                failures.append(repr(error)[:200])
                continue
            error = rel_error(got, torch.nn.functional.conv2d(x, w, padding=1, groups=groups))
            if not error < 1e-12:
                failures.append(f"{x_shape}: relative error {error:.2e}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, inside programs
    try:
        with triton_only() as proof:
            threads = [threading.Thread(target=run, args=case) for case in cases]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == [] and proof.launches["fprop_kernel"] == 9


def test_a_gpu_launch_takes_no_lock(monkeypatch):
    """Only the interpreter's launches are serialised; a GPU's run concurrently."""
    from triton_conv.launchers.common import LaunchSpec, launch

    class Refuses:
        def __enter__(self):
            raise AssertionError("a GPU launch took the interpreter's lock")

        def __exit__(self, *exc):
            return False

    ran = []

    class Kernel:
        __name__ = "fake_kernel"

        def __getitem__(self, grid):
            return lambda *args, **kwargs: ran.append(grid)

    monkeypatch.setattr(common, "interpreter_active", lambda: False)
    monkeypatch.setattr(common, "_INTERPRETER", Refuses())
    launch(LaunchSpec(Kernel(), (1, 1, 1), (), {}, 4, 3))
    assert ran == [(1, 1, 1)]
    common.launch_counts.pop("fake_kernel")


def test_after_a_tuning_that_raised_the_next_call_tunes_again(monkeypatch):
    """The problem leaves the thread's in-progress set however its tuning ends: a later call is a new
    tuning, not the re-entry default."""
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("out of memory, say")
        return real(*args, **kwargs)

    real = tuning.autotune
    monkeypatch.setattr(tuning, "autotune", failing_once)
    with pytest.raises(RuntimeError, match="out of memory"):
        _select()
    assert _select() == min(_space(), key=lambda c: c.block_m * c.block_n) and len(calls) == 2
