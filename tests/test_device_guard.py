"""Every pass runs with its tensors' CUDA device current: Triton launches on the current device, so a
model on cuda:1 while cuda:0 is current must not launch on cuda:0 (torch's kernels guard the same way).

Without two GPUs the guard is checked by what it enters: each pass enters it with its tensors' device,
and the kernels launch inside it. With two, a convolution on the second GPU is compared with torch's."""

import contextlib

import pytest
import torch

import triton_conv
from triton_conv import passes
from triton_conv.launchers.common import launch_counts


def test_guard_is_torchs_device_context_for_cuda_and_nothing_for_cpu():
    guard = passes.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(passes.device_guard(torch.device("cpu")), contextlib.nullcontext)


def test_every_pass_launches_inside_the_guard_of_its_tensors_device(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def recording_guard(where):
        before = sum(launch_counts.values())
        yield
        entered.append((where, sum(launch_counts.values()) - before))

    monkeypatch.setattr(passes, "device_guard", recording_guard)
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    triton_conv.conv2d(x, weight, bias, padding=1).sum().backward()
    # forward, then dgrad and wgrad (in either order), each guarded once with the tensors' device and
    # each launching its kernel inside the guard
    assert len(entered) == 3, entered
    assert all(where == x.device and launched >= 1 for where, launched in entered), entered


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
