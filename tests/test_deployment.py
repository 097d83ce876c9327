"""Programs made with this package's ops and run elsewhere: a torch.jit trace or a torch.export
program calls the ops themselves, past the functions' fallback to torch's convolution. On a device
the kernels cannot run on, each op says so before anything launches (Triton failed at the launch
with '0 active drivers')."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import triton_conv
from triton_conv import runtime
from triton_conv.autograd.ops import conv2d_op, conv_transpose2d_op, input_grad_op, weight_grad_op
from triton_conv.launchers.common import launch_counts

from .contract import EXACT, EXACT_TOL
from .reference import rel_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFUSAL = "where this package's Triton kernels do not run"


def _op_calls():
    """Each op, called as a traced program calls it (four pads), on fresh float64 CPU tensors."""
    # On the CPU whatever the suite's device: the refusal is of CPU tensors without the interpreter.
    x, w, b = (torch.randn(shape, dtype=EXACT, device="cpu") for shape in ((2, 3, 6, 5), (4, 3, 3, 3), (4,)))
    dy = torch.randn(2, 4, 5, 4, dtype=EXACT, device="cpu")  # pads (top, left, bottom, right) (1, 1, 0, 0)
    geometry = ([1, 1], [1, 1, 0, 0], [1, 1], 1)
    return {
        "conv2d": lambda: conv2d_op(x, w, b, *geometry),
        "conv2d_input_grad": lambda: input_grad_op(dy, x, w, *geometry),
        "conv2d_weight_grad": lambda: weight_grad_op(dy, x, w, *geometry, True),
        "conv_transpose2d": lambda: conv_transpose2d_op(dy, w, b[:3], [1, 1], [1, 1], [0, 0], 1, [1, 1]),
    }


@pytest.mark.parametrize("op", list(_op_calls()))
def test_each_op_refuses_a_device_its_kernels_cannot_run_on(op, monkeypatch):
    monkeypatch.setattr(runtime, "_INTERPRETED", False)  # as a CPU process without TRITON_INTERPRET
    before = dict(launch_counts)
    with pytest.raises(RuntimeError, match=f"triton_conv::{op}: input is on the cpu, {REFUSAL}"):
        _op_calls()[op]()
    assert dict(launch_counts) == before


def test_the_functions_still_fall_back_to_torch_where_the_ops_refuse(monkeypatch):
    """The refusal is the ops' alone: the functions, which know the caller's arguments, still call
    torch's convolution there (with the one-time warning)."""
    monkeypatch.setattr(runtime, "_INTERPRETED", False)
    monkeypatch.setattr(runtime, "_warned_fallback", False)
    x, w = (torch.randn(shape, dtype=EXACT, device="cpu") for shape in ((2, 3, 6, 5), (4, 3, 3, 3)))
    before = dict(launch_counts)
    with pytest.warns(RuntimeWarning, match="fall back to torch's own convolutions"):
        got = triton_conv.conv2d(x, w, None, 2, 1)
    assert dict(launch_counts) == before and rel_error(got, F.conv2d(x, w, None, 2, 1)) < EXACT_TOL


@pytest.mark.interpreter  # traced on CPU tensors, which run the kernels' ops only when interpreted
def test_a_saved_trace_loaded_where_the_kernels_cannot_run_says_why(tmp_path):
    """Traced under the interpreter, loaded in a CPU process without it: the op's error, which says
    what to do, not Triton's."""
    torch.manual_seed(0)
    model = triton_conv.convert_model(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()))
    x = torch.randn(2, 3, 6, 5)
    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(model, x), str(path))
    script = textwrap.dedent(f"""
        import torch, triton_conv
        program = torch.jit.load({str(path)!r})
        try:
            program(torch.randn(2, 3, 6, 5))
        except RuntimeError as error:
            print("refused:", error)
    """)
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused:" in run.stdout and REFUSAL in run.stdout and "conv2d" in run.stdout, run.stdout
