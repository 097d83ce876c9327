"""The masked-gather dgrad baseline (benchmarked against stride phases) against a float64 reference,
and the multiply-adds each of the two issues."""

from __future__ import annotations

import pytest
import torch

from triton_conv import KernelConfig
from triton_conv.launchers.dgrad_masked import conv2d_dgrad_masked, masked_macs, masked_tiles, phased_macs
from triton_conv.problem import ConvProblem

from .reference import bound, make_tensor, reference_conv2d, rel_error

CASES = {
    "stride2": ((2, 5, 9, 11), (7, 5, 3, 3), dict(stride=2, padding=1)),
    "stride32": ((2, 4, 11, 10), (6, 4, 3, 3), dict(stride=(3, 2), padding=(1, 0))),
    "dilated_strided": ((1, 3, 11, 10), (6, 3, 5, 4), dict(stride=(3, 2), dilation=(2, 2), padding=(2, 1))),
    "groups": ((2, 8, 9, 7), (6, 4, 3, 3), dict(groups=2, stride=2, padding=1)),
    "1x1_stride2": ((2, 9, 7, 9), (10, 9, 1, 1), dict(stride=2)),
    "3x3": ((1, 5, 7, 6), (20, 5, 3, 3), dict(padding=1)),
}
CONFIGS = [KernelConfig(32, 16, 16), KernelConfig(16, 16, 16, group_m=1, split_k=3)]


def reference_dgrad(dy, w, problem: ConvProblem) -> torch.Tensor:
    x = torch.zeros(problem.input_shape, dtype=torch.float64, requires_grad=True)
    y = reference_conv2d(x, w, None, problem)
    return torch.autograd.grad(y, x, dy.double())[0]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype,layout", [(torch.float32, "nchw"), (torch.float16, "nhwc")], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case, dtype, layout, config, triton_only):
    x_shape, w_shape, kwargs = CASES[case]
    problem = ConvProblem.from_shapes(x_shape, w_shape, **kwargs)
    dy = make_tensor(problem.output_shape, dtype, layout)
    w = make_tensor(w_shape, dtype, layout)
    channels_last = layout == "nhwc"
    with triton_only() as proof:
        dx = conv2d_dgrad_masked(dy, w, problem, config, channels_last=channels_last)
    assert proof.launches == {"dgrad_masked_kernel": 1}
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert dx.dtype == dtype and dx.is_contiguous(memory_format=memory_format)
    limit = bound(dtype)  # fp32: IEEE's under the interpreter, TF32's where the GPU uses it
    err = rel_error(dx, reference_dgrad(dy, w, problem))
    assert err < limit, f"relative error {err:.2e} over {limit:.0e}"


@pytest.mark.parametrize(
    "layer",
    [
        ((1, 128, 56, 56), (128, 128, 3, 3), dict(stride=2, padding=1)),  # layer2.0.conv2
        ((1, 256, 28, 28), (256, 256, 3, 3), dict(stride=2, padding=1)),  # layer3.0.conv2
        ((1, 512, 14, 14), (512, 512, 3, 3), dict(stride=2, padding=1)),  # layer4.0.conv2
        ((1, 256, 56, 56), (512, 256, 1, 1), dict(stride=2)),  # layer2.0.downsample.0
    ],
)
def test_masked_work_is_stride_squared_times_phased(layer):
    """Exact multiply-add counts: the masked kernel visits every (pixel, tap), the phases only the real
    ones (a phase's tiles include the few border pairs whose output pixel is out of range), so on
    ResNet-50's stride-2 layers the masked work is stride_h * stride_w = 4x (exactly, since H and W are
    even), and the phased work equals problem.flops / 2 there."""
    problem = ConvProblem.from_shapes(*layer[:2], **layer[2])
    n, c, h, w = problem.input_shape
    masked, phased = masked_macs(problem), phased_macs(problem)
    assert masked == n * h * w * c * problem.out_per_group * problem.kernel_h * problem.kernel_w
    assert phased * 2 == problem.flops("dgrad")
    assert masked == problem.stride[0] * problem.stride[1] * phased
    assert masked_tiles(problem, KernelConfig(128, 128, 32)) == -(-n * h * w // 128) * -(-c // 128)


def test_masked_work_odd_sizes():
    """With odd H, W (and the padded borders' missing taps) the ratio is not exact, but near
    stride_h * stride_w; never below what the masked kernel visits per real pair."""
    problem = ConvProblem.from_shapes((2, 8, 15, 13), (8, 8, 3, 3), stride=2, padding=1)
    ratio = masked_macs(problem) / phased_macs(problem)
    assert 3.5 < ratio < 4.5
