"""The int64 variants on views whose elements lie 2**31 or more apart: every product of a coordinate
(or a tile size) and a stride must be 64-bit, or it wraps and the kernel reads or writes gigabytes
away from the tensor (a crash, or a wrong value without one).

Each case is a view over a virtual storage: `torch.empty` of 2**31 elements or more stays address
space (untouched pages cost nothing), and only the view's few dozen elements are ever written, so
the int64 variant runs under the interpreter in seconds. One dimension's stride is stretched until
its coordinate x stride product passes 2**31 (odd, so no TMA descriptor hides the pointer path; at
most 8 GB of address space), and the pass is compared with float64 torch on the same values. A
subprocess each: a wrapped offset is usually a segfault.

Run before the int64 offsets were widened (as_offset and wide_strides made no-ops), every case but
the q-term one fails; the two LINEAR_ROWS cases failed (a segfault) before wgrad's x_lin and q_extra
were made 64-bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from .bounds import checked_script
from .conftest import CHECK_ADDRESSES, interpreter_problem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 2**31
DIMS = "nchw"  # a 4-D tensor's dims in torch's order (k, c, r, s for a weight; n, k, p, q for dy)


def far_view(shape, layout: str, far: str, outermost: bool, pitch: int | None = None, *, dtype):
    """A `shape` view over a virtual storage: dims nested as `layout` ("cf" NCHW, "cl" NHWC) lays them
    out, but dim `far`'s stride is stretched to `pitch` and the dims outside it nest around it;
    `outermost` moves `far` outside all. The default pitch is the odd one that makes the largest
    coordinate x stride product pass 2**31 by a quarter (a sum of products that each fit is not
    what wraps: pointers add them one by one), and the view's last quarter lies past 2**31."""
    order = [3, 2, 1, 0] if layout == "cf" else [1, 3, 2, 0]  # innermost first
    d = DIMS.index(far)
    if outermost:
        order = [o for o in order if o != d] + [d]
    strides, fixed, per_pitch, inner = [None] * 4, 1, 0, 1  # each stride as fixed + per_pitch * pitch
    for dim in order:
        if dim == d:
            inner, fixed, per_pitch = fixed, 0, 1
        strides[dim] = (fixed, per_pitch)
        fixed, per_pitch = fixed * shape[dim], per_pitch * shape[dim]
    if pitch is None:
        largest = max((size - 1) * b for size, (_, b) in zip(shape, strides))
        pitch = max(-(-LIMIT * 5 // 4 // largest), inner) | 1
    strides = [a + b * pitch for a, b in strides]
    reach = sum((size - 1) * stride for size, stride in zip(shape, strides))
    assert reach >= LIMIT and all(s < LIMIT for size, s in zip(shape, strides) if size > 1)
    return torch.empty(reach + 1, dtype=dtype).as_strided(shape, strides)


def _tensor(shape, dtype, layout, name, far):
    """(the tensor the pass gets, its float64 values): `far` = (name, dim, outermost[, pitch])
    stretches it."""
    values = torch.randn(shape).to(dtype)
    if far[0] == name:
        tensor = far_view(shape, layout, *far[1:], dtype=dtype)
        tensor.copy_(values)
    else:
        memory_format = torch.channels_last if layout == "cl" else torch.contiguous_format
        tensor = values.contiguous(memory_format=memory_format)
    return tensor, values.double()


def run_case(case: str) -> None:
    """One case in this process (a subprocess of the test): the pass's launch spec on the views, so
    that outputs (y, dx, dw) can be far views too; raises when the result is wrong."""
    from triton_conv.configs import KernelConfig
    from triton_conv.launchers.common import launch
    from triton_conv.launchers.dgrad import dgrad_spec
    from triton_conv.launchers.dgrad_masked import dgrad_masked_spec
    from triton_conv.launchers.fprop import fprop_spec
    from triton_conv.launchers.wgrad import wgrad_spec
    from triton_conv.problem import ConvProblem

    spec = json.loads(case)
    pass_name, layout, far, dtype = spec["pass"], spec["layout"], spec["far"], torch.float16
    x_shape, w_shape, geometry = spec["x"], spec["w"], spec["geometry"]
    problem = ConvProblem.from_shapes(x_shape, w_shape, **geometry).canonical()
    config = KernelConfig(*spec["config"])
    if pass_name == "fprop":
        x, x64 = _tensor(x_shape, dtype, layout, "x", far)
        w, w64 = _tensor(w_shape, dtype, layout, "w", far)
        bias = torch.randn(w_shape[0]).to(dtype)
        out, _ = _tensor(problem.output_shape, dtype, layout, "y", far)
        launch_spec = fprop_spec(x, w, bias, out, problem, config)
        expected = F.conv2d(x64, w64, bias.double(), **geometry)
    elif pass_name in ("dgrad", "dgrad_masked"):
        dy, dy64 = _tensor(problem.output_shape, dtype, layout, "dy", far)
        w, w64 = _tensor(w_shape, dtype, layout, "w", far)
        out, _ = _tensor(x_shape, dtype, layout, "dx", far)
        make_spec = dgrad_spec if pass_name == "dgrad" else dgrad_masked_spec
        launch_spec = make_spec(dy, w, out, problem, config)
        expected = torch.nn.grad.conv2d_input(x_shape, w64, dy64, **geometry)
    else:
        dy, dy64 = _tensor(problem.output_shape, dtype, layout, "dy", far)
        x, x64 = _tensor(x_shape, dtype, layout, "x", far)
        out, _ = _tensor(w_shape, dtype, layout, "dw", far)
        db = torch.empty(w_shape[0], dtype=dtype)
        launch_spec = wgrad_spec(dy, x, out, db, problem, config)
        expected = torch.nn.grad.conv2d_weight(x64, w_shape, dy64, **geometry)
    for key, value in {"USE_INT64": True, **spec["expect"]}.items():
        assert launch_spec.constexprs[key] == value, key
    launch(launch_spec)
    error = ((out.double() - expected).norm() / expected.norm()).item()
    assert error < 3e-3, f"relative error {error:.3g}"
    if pass_name == "wgrad":
        db_expected = dy64.sum((0, 2, 3))
        assert ((db.double() - db_expected).norm() / db_expected.norm()).item() < 3e-3, "db"


def _in_subprocess(code: str) -> None:
    if reason := interpreter_problem():
        pytest.skip(reason)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": ROOT}
    code = checked_script(code, CHECK_ADDRESSES)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    crash = "a crash (-11: an access outside the tensor)" if run.returncode < 0 else "a wrong result"
    started = run.stdout.strip().splitlines()[-1:]  # run_cases prints each case's name as it starts
    assert run.returncode == 0, f"{crash} in {started}, exit {run.returncode}\n{run.stderr[-2000:]}"


GENERIC = dict(x=[3, 16, 8, 10], w=[16, 16, 3, 3], geometry=dict(padding=1, stride=2, dilation=2))


def _case(pass_name, tensor, dim, outermost, layout, split_k=1, problem=GENERIC, pitch=None, expect=None):
    """`tensor` of `pass_name` stretched along `dim` (outside all other dims when `outermost`);
    `expect`: constexprs the launch must have, so that the case runs the path it names."""
    far = [tensor, dim, outermost] + ([] if pitch is None else [pitch])
    config, expect = [16, 16, 16, 8, split_k], expect or {}
    return {"pass": pass_name, "far": far, "layout": layout, "config": config, "expect": expect, **problem}


CASES = {
    "fprop_x_pixel_pitch_split_k": _case("fprop", "x", "w", False, "cl", split_k=2),
    "fprop_x_channels_nchw": _case("fprop", "x", "c", True, "cf", expect={"X_C_UNIT": False}),
    "fprop_w_rows": _case("fprop", "w", "h", True, "cl"),
    "fprop_y_pixel_pitch": _case("fprop", "y", "w", False, "cl"),
    "dgrad_dy_pixel_pitch_split_k": _case("dgrad", "dy", "w", False, "cl", split_k=2),
    "dgrad_w_out_channels": _case("dgrad", "w", "n", True, "cf"),
    "dgrad_dx_rows": _case("dgrad", "dx", "h", False, "cf"),
    "dgrad_masked_dy_images": _case("dgrad_masked", "dy", "n", True, "cl"),
    "dgrad_masked_dx_channels": _case("dgrad_masked", "dx", "c", True, "cf"),
    "wgrad_dy_pixel_pitch_split_k": _case("wgrad", "dy", "w", False, "cl", 3, expect={"DY_TMA": False}),
    "wgrad_x_images": _case("wgrad", "x", "n", True, "cl"),
    "wgrad_x_channels_nchw": _case("wgrad", "x", "c", True, "cf"),
    "wgrad_dw_taps": _case("wgrad", "dw", "w", True, "cf"),
    # LINEAR_ROWS with a q term (stride_w > 1 and stride_h > 1): pixel (0, 0, 2q) lies at
    # u·x_lin + q·q_extra with q_extra = -14 pitches, so q·q_extra passes 2**31 (6 GB of address space).
    "wgrad_x_linear_rows_q_term": _case(
        "wgrad",
        "x",
        "w",
        False,
        "cl",
        pitch=11070111,
        problem=dict(x=[1, 16, 8, 34], w=[16, 16, 1, 1], geometry=dict(stride=(8, 2))),
        expect={"LINEAR_ROWS": True, "Q_EXTRA": True},
    ),
}


def run_cases(cases: str) -> None:
    """Every case of the JSON object `cases` in this one process, each name printed as it starts
    (one interpreter start for all: a crash still names its case)."""
    for name, case in json.loads(cases).items():
        print(name, flush=True)
        run_case(json.dumps(case))


def test_far_views_in_every_role():
    """Each pass with one tensor stretched past 2**31 elements along one dimension: inputs, weight
    and outputs (through the launchers, which take any strides for all of them)."""
    cases = json.dumps(json.dumps(CASES))
    _in_subprocess(f"from tests.test_int64_views import run_cases; run_cases({cases})")


def test_wgrad_linear_rows_step_is_64_bit():
    """wgrad's LINEAR_ROWS path (a 1x1 kernel on an NHWC-like x) moves each reduction row by
    x_lin·BLOCK_K a step: with pixels 2**26 + 1 elements apart that product passes 2**31, and in
    int32 it wrapped negative (a read 8 GiB before x)."""
    _in_subprocess(
        """
import torch
from triton_conv import passes
from triton_conv.problem import ConvProblem
from tests.test_int64_views import far_view
x = far_view((1, 16, 1, 40), "cl", "w", False, 2**26 + 1, dtype=torch.float32)
values = torch.randn(x.shape)
x.copy_(values)
dy = torch.randn(1, 16, 1, 40)
problem = ConvProblem.from_shapes(x.shape, (16, 16, 1, 1)).canonical()
dw, _ = passes.weight_grad(dy, x, problem, torch.float32, channels_last=True, need_bias=False)
expected = torch.einsum("nkhw,nchw->kc", dy.double(), values.double())
error = ((dw.double().flatten(1) - expected).norm() / expected.norm()).item()
assert error < 1e-5, error
"""
    )
