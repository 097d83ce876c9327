"""Every pass reads and writes only its tensors' elements, lane by lane (tests/bounds.py), on shapes
whose last tiles run past every GEMM dimension at once: odd channel counts and groups, 1x1 filters
that are not pointwise, strides larger than the filter, a one-pixel image, asymmetric strides and
dilations; and the results against the float64 reference."""

from __future__ import annotations

import pytest
import torch

from triton_conv import KernelConfig
from triton_conv.launchers.dgrad import conv2d_dgrad
from triton_conv.launchers.fprop import conv2d_fprop
from triton_conv.launchers.wgrad import conv2d_wgrad
from triton_conv.problem import ConvProblem

from .bounds import addresses_checked
from .reference import bound, make_tensor, reference_conv2d, rel_error

pytestmark = pytest.mark.interpreter

CONFIGS = (
    KernelConfig(16, 16, 16),
    KernelConfig(32, 16, 16, split_k=3),
    KernelConfig(16, 32, 16, group_m=4, split_k=2),
)

# (x shape, w shape, conv2d kwargs)
CASES = {
    "1x1 stride 2, 20 channels": ((2, 20, 6, 7), (8, 20, 1, 1), dict(stride=2)),
    "1x1, 3 channels": ((2, 3, 6, 7), (8, 3, 1, 1), {}),
    "1x1, 2 groups of 10": ((2, 20, 6, 7), (8, 10, 1, 1), dict(groups=2)),
    "stem-like": ((1, 3, 9, 8), (5, 3, 3, 3), dict(padding=1, stride=2)),
    "asymmetric": (
        (2, 6, 7, 9), (9, 2, 3, 2), dict(padding=(1, 2), stride=(2, 3), dilation=(2, 1), groups=3)
    ),
    "stride > kernel": ((1, 4, 5, 5), (6, 4, 2, 2), dict(stride=3)),
    "one pixel": ((1, 5, 1, 1), (7, 5, 3, 3), dict(padding=1)),
    "dilated 3x1": ((2, 17, 5, 6), (19, 17, 3, 1), dict(padding=(1, 0), dilation=(2, 1))),
}  # fmt: skip


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_access_lies_inside_its_tensor(case, layout, triton_only):
    x_shape, w_shape, kwargs = CASES[case]
    dtype = torch.float32
    x, w = make_tensor(x_shape, dtype, layout), make_tensor(w_shape, dtype, layout)
    b = make_tensor((w_shape[0],), dtype)
    problem = ConvProblem.from_shapes(x.shape, w.shape, **kwargs)
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    y64 = reference_conv2d(x64, w64, b64, problem)
    dy = make_tensor(y64.shape, dtype, layout)
    dx64, dw64, db64 = torch.autograd.grad(y64, (x64, w64, b64), dy.double())
    channels_last = layout == "nhwc"
    config = CONFIGS[sum(map(ord, case + layout)) % len(CONFIGS)]  # each case a config, fixed
    with triton_only() as proof, addresses_checked() as outside:
        got = dict(
            y=conv2d_fprop(x, w, b, problem, config),
            dx=conv2d_dgrad(dy, w, problem, config, channels_last=channels_last),
        )
        got["dw"], got["db"] = conv2d_wgrad(
            dy, x, problem, config, weight_dtype=dtype, channels_last=channels_last, need_bias=True
        )
    assert proof.launches == {"fprop_kernel": 1, "dgrad_kernel": 1, "wgrad_kernel": 1}
    where = f"{case} {layout} {config}"
    assert not outside.accesses, f"{where}: accesses outside the tensors {outside.accesses[:3]}"
    for name, ref in (("y", y64), ("dx", dx64), ("dw", dw64), ("db", db64)):
        err = rel_error(got[name], ref.detach())
        assert err < bound(dtype), f"{where} {name}: relative error {err:.2e}"
