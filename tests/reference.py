"""What the tests compare against: torch's conv2d in float64 on the same (rounded) inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from triton_conv.problem import ConvProblem

# Relative error bounds ||out - ref|| / ||ref||: the output's own rounding plus fp32 accumulation.
# fp32 is allowed TF32's error because cuDNN's setting (on by default) decides it on a GPU.
REL_TOL = {
    torch.float64: 1e-12,
    torch.float32: 2e-3,
    torch.float16: 3e-3,
    torch.bfloat16: 1.5e-2,
}
# Without TF32 (the interpreter computes fp32 dots exactly) fp32 must be far tighter.
REL_TOL_FP32_IEEE = 1e-5


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.isfinite(out).all(), "non-finite values in the output"
    denom = ref.double().norm().item()
    err = (out.double() - ref.double()).norm().item()
    return err / denom if denom else err


def reference_conv2d(x, w, b, problem: ConvProblem) -> torch.Tensor:
    """float64 conv2d of the given tensors with the problem's (possibly asymmetric) padding."""
    x64 = x.double()
    pads = (problem.pad_left, problem.pad_right, problem.pad_top, problem.pad_bottom)
    if x64.dim() == 3:
        x64 = x64.unsqueeze(0)
    x64 = F.pad(x64, pads)
    y = F.conv2d(
        x64, w.double(), None if b is None else b.double(), problem.stride, 0,
        problem.dilation, problem.groups,
    )  # fmt: skip
    return y if x.dim() == 4 else y.squeeze(0)


def make_tensor(shape, dtype, layout: str = "nchw") -> torch.Tensor:
    """Random values in `dtype` and the given layout: nchw, nhwc (channels_last) or strided (a view)."""
    if layout == "strided":
        # A sliced view: every dimension has a stride the kernel must honour.
        big = torch.randn(*[d * 2 + 1 for d in shape], dtype=torch.float32).to(dtype)
        return big[tuple(slice(1, 1 + 2 * d, 2) for d in shape)]
    tensor = torch.randn(*shape, dtype=torch.float32).to(dtype)
    if layout == "nhwc" and len(shape) == 4:
        tensor = tensor.to(memory_format=torch.channels_last)
    return tensor


def tolerance(dtype) -> float:
    return REL_TOL[dtype]


def bound(dtype) -> float:
    """Relative error allowed against a float64 reference. Under the interpreter an fp32 dot is
    exact fp32 even when TF32 is requested, so fp32 is held to IEEE's bound; compiled for a GPU, fp32
    runs in TF32 where torch's cuDNN would (on by default: 6e-4 to 9e-4 on the H200, 2026-12-04)."""
    if dtype != torch.float32:
        return tolerance(dtype)
    from triton_conv.runtime import fp32_uses_tf32, interpreter_active

    return tolerance(dtype) if not interpreter_active() and fp32_uses_tf32() else REL_TOL_FP32_IEEE


def conv_case(x_shape, w_shape, kwargs, dtype, layout: str):
    """Fresh x, w, b and dy in `layout`, the problem, and the float64 reference of y and of the
    three gradients for that dy: (problem, x, w, b, dy, {y, dx, dw, db})."""
    x = make_tensor(x_shape, dtype, layout)
    w = make_tensor(w_shape, dtype, layout)
    b = make_tensor((w_shape[0],), dtype)
    problem = ConvProblem.from_shapes(x.shape, w.shape, **kwargs)
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    y64 = reference_conv2d(x64, w64, b64, problem)
    dy = make_tensor(y64.shape, dtype, layout)
    dx64, dw64, db64 = torch.autograd.grad(y64, (x64, w64, b64), dy.double())
    ref = dict(y=y64.detach(), dx=dx64, dw=dw64, db=db64)
    return problem, x, w, b, dy, ref
