"""Every kernel launches with its tensors' CUDA device current: Triton launches on the current device,
so a model on cuda:1 while cuda:0 is current must not launch on cuda:0 (torch's kernels guard the same
way). What launches: the passes (every op and gradient), tuning, and the autotune tables.

Without two GPUs the guard is checked by what is open when each kernel launches: every launch must
happen inside a guard of its first tensor's device. With two, a convolution and its tuning on the
second GPU are compared with torch."""

import contextlib

import pytest
import torch

import triton_conv
from triton_conv import autotune_runs, autotune_tables, runtime, tuning
from triton_conv.configs import KernelConfig
from triton_conv.problem import ConvProblem

from .conftest import _launch_functions


def RUN_ONCE(fn) -> float:  # noqa: N802 - a timer that launches once and scores every config alike
    fn()
    return 1.0


def test_guard_is_torchs_device_context_for_cuda_and_nothing_for_cpu():
    guard = runtime.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(runtime.device_guard(torch.device("cpu")), contextlib.nullcontext)


@pytest.fixture
def launches_outside_a_guard(monkeypatch):
    """Each module's device_guard replaced by one that records which devices are open; each
    launcher's launch by one that checks its first tensor's device is. Yields (unguarded, launched):
    the kernel names launched outside a guard of their device, and the launches counted."""
    open_devices, unguarded, launched = [], [], []

    @contextlib.contextmanager
    def recording_guard(device):
        open_devices.append(device)
        try:
            yield
        finally:
            open_devices.pop()

    for module in (runtime, tuning, autotune_runs):
        monkeypatch.setattr(module, "device_guard", recording_guard)
    for module, launch in _launch_functions().items():

        def checking(spec, launch=launch):
            device = next(a.device for a in spec.args if isinstance(a, torch.Tensor))
            launched.append(spec.kernel.__name__)
            if device not in open_devices:
                unguarded.append(spec.kernel.__name__)
            return launch(spec)

        monkeypatch.setattr(module, "launch", checking)
    yield unguarded, launched


def test_every_pass_launches_inside_its_tensors_device_guard(launches_outside_a_guard):
    unguarded, launched = launches_outside_a_guard
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    triton_conv.conv2d(x, weight, bias, padding=1).sum().backward()
    up = torch.randn(2, 4, 3, 3, requires_grad=True)
    triton_conv.conv_transpose2d(up, weight, stride=2).sum().backward()
    assert len(launched) >= 6 and not unguarded, (launched, unguarded)


@pytest.mark.interpreter  # tunes on "cpu": kernels launched on CPU tensors
def test_tuning_launches_inside_its_devices_guard(launches_outside_a_guard):
    unguarded, launched = launches_outside_a_guard
    problem = ConvProblem.from_shapes((1, 4, 5, 5), (4, 4, 3, 3), padding=1)
    configs = [KernelConfig(16, 16, 16), KernelConfig(32, 16, 16)]
    for pass_name in ("fprop", "dgrad", "wgrad"):
        tuning.tune_problem(problem, pass_name, torch.float32, False, "cpu", configs=configs)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    triton_conv.tune_model(model, (3, 6, 6), dtype=torch.float32, progress=False, device="cpu",
                           channels_last=False, timer=RUN_ONCE)  # fmt: skip
    assert len(launched) >= 6 and not unguarded, (launched, unguarded)


@pytest.mark.interpreter  # tunes on "cpu": kernels launched on CPU tensors
def test_the_autotune_tables_launch_inside_their_devices_guard(launches_outside_a_guard):
    unguarded, launched = launches_outside_a_guard
    layers = [("tiny", ConvProblem.from_shapes((1, 4, 5, 5), (4, 4, 3, 3), padding=1), 1)]
    for _ in range(2):  # the second finds the first's result cached and re-times it on the row's problem
        before = len(launched)
        autotune_tables.tune_layer_set(
            layers, (1,), ("fprop",), (torch.float32,), "cpu", channels_last=False, timer=RUN_ONCE,
            max_configs=2, progress=False,
        )  # fmt: skip
        assert len(launched) > before
    assert not unguarded, (launched, unguarded)


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA devices"
)
def test_a_convolution_on_the_second_gpu_while_the_first_is_current():
    torch.cuda.set_device(0)
    x = torch.randn(3, 8, 9, 7, device="cuda:1", dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 8, 3, 3, device="cuda:1", dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 5, 9, 7, device="cuda:1", dtype=torch.float64)
    y = triton_conv.conv2d(x, weight, padding=1)
    dx, dw = torch.autograd.grad(y, (x, weight), dy)
    y_ref = torch.nn.functional.conv2d(x, weight, padding=1)
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x, weight), dy)
    assert y.device == dx.device == dw.device == torch.device("cuda", 1)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    problem = ConvProblem.from_shapes(tuple(x.shape), tuple(weight.shape), padding=1)
    result = tuning.tune_problem(problem, "fprop", torch.float16, False, "cuda:1", max_configs=2)
    assert result.best is not None
