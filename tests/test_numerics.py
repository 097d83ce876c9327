"""Identical numerics on every supported Triton, torch and numpy: on integer-valued data whose every
product and partial sum is exact in the kernel's accumulator, each pass must return torch's float64
result bit for bit. Any Triton that accumulated in a narrower type (fp64 data in fp32, say), dropped
a split-K partial, or rounded the bias differently would show here as an inequality, not a
tolerance; CI runs this file on both ends of the supported range (README, CI)."""

from __future__ import annotations

import pytest
import torch

from triton_conv import KernelConfig
from triton_conv.launchers.dgrad import conv2d_dgrad
from triton_conv.launchers.wgrad import conv2d_wgrad
from triton_conv.problem import ConvProblem
from triton_conv.with_config import conv2d_with_config

from .reference import reference_conv2d

# Strided, padded, grouped and dilated, with sizes off every block: a 2x2 stride makes four dgrad
# phases; split_k 2 exercises the deterministic reduction.
PROBLEM = ConvProblem.from_shapes(
    (2, 6, 9, 7), (10, 3, 3, 2), stride=2, padding=(1, 2), dilation=(1, 2), groups=2
)
CONFIGS = (KernelConfig(16, 16, 16), KernelConfig(32, 16, 16, split_k=2))

# Integer values in [-limit, limit]: products and sums stay far below where the accumulator rounds
# (fp32: 2**24), and the outputs are exact in the output dtype too. fp64 uses large values on purpose,
# whose sums an fp32 accumulator could not hold exactly.
LIMITS = {torch.float16: 3, torch.bfloat16: 3, torch.float32: 3, torch.float64: 2**14}


def _integers(shape, dtype, channels_last=False) -> torch.Tensor:
    limit = LIMITS[dtype]
    values = torch.randint(-limit, limit + 1, shape, dtype=torch.int64).to(dtype)
    return values.contiguous(memory_format=torch.channels_last) if channels_last else values


def _exact(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype != torch.float64 or want.dtype == torch.float64
    difference = (got.double() - want.double()).abs().max().item()
    assert torch.equal(got.double(), want.double()), f"not bit-exact: max |difference| {difference}"


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", list(LIMITS), ids=str)
def test_every_pass_is_exact_on_integers(dtype, channels_last, config, set_tf32):
    set_tf32(False)  # TF32 would round inputs of 11 bits or more; the limits keep fp32 inputs small
    x = _integers(PROBLEM.input_shape, dtype, channels_last)
    w = _integers(PROBLEM.weight_shape, dtype, channels_last)
    b = _integers((PROBLEM.out_channels,), dtype)
    dy = _integers(PROBLEM.output_shape, dtype, channels_last)
    x64, w64, dy64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_(), dy.double()
    y64 = reference_conv2d(x64, w64, b, PROBLEM)
    dx64, dw64 = torch.autograd.grad(y64, (x64, w64), dy64)

    _exact(conv2d_with_config(x, w, b, PROBLEM.stride, (1, 2), PROBLEM.dilation, 2, config=config), y64)
    _exact(conv2d_dgrad(dy, w, PROBLEM, config, channels_last=channels_last), dx64)
    dw, db = conv2d_wgrad(
        dy, x, PROBLEM, config, weight_dtype=dtype, channels_last=channels_last, need_bias=True
    )
    _exact(dw, dw64)
    _exact(db, dy64.sum(dim=(0, 2, 3)))


# Multiples of 2**-6 with numerators large enough that most outputs need rounding to the 16-bit
# dtype, small enough that every product and partial sum stays exact in fp32 (C·R·S = 18 and
# N·P·Q = 50 terms, numerators below 2**16 each) and below fp16's largest value: every output must
# then be the float64 result rounded to nearest even, as torch and compiled code round. Triton's
# interpreter truncates fp32 to bf16; the kernels round by hand there (kernels.common.cast_output),
# and about half of these outputs would be one unit short otherwise.
ROUNDED_LIMITS = {torch.float16: 100, torch.bfloat16: 256}
UNIT = 2**-6


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", list(ROUNDED_LIMITS), ids=str)
def test_every_pass_rounds_to_nearest_even(dtype, config):
    limit = ROUNDED_LIMITS[dtype]

    def values(shape):
        return (torch.randint(-limit, limit + 1, shape, dtype=torch.int64) * UNIT).to(dtype)

    x, w, dy = values(PROBLEM.input_shape), values(PROBLEM.weight_shape), values(PROBLEM.output_shape)
    b = values((PROBLEM.out_channels,))
    x64, w64, dy64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_(), dy.double()
    y64 = reference_conv2d(x64, w64, b, PROBLEM)
    dx64, dw64 = torch.autograd.grad(y64, (x64, w64), dy64)
    wants = (y64.detach(), dx64, dw64, dy64.sum(dim=(0, 2, 3)))
    assert all(want.abs().max() < min(2**24 * UNIT**2, torch.finfo(dtype).max) for want in wants)
    assert (wants[0] != wants[0].to(dtype).double()).float().mean() > 0.3  # most need rounding

    y = conv2d_with_config(x, w, b, PROBLEM.stride, (1, 2), PROBLEM.dilation, 2, config=config)
    dx = conv2d_dgrad(dy, w, PROBLEM, config, channels_last=False)
    dw, db = conv2d_wgrad(dy, x, PROBLEM, config, weight_dtype=dtype, channels_last=False, need_bias=True)
    for name, got, want in zip(("y", "dx", "dw", "db"), (y, dx, dw, db), wants):
        rounded = want.to(dtype)
        short = (got != rounded).sum().item()
        assert torch.equal(got, rounded), f"{name}: {short} of {got.numel()} not rounded to nearest even"


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_bf16_subnormals_are_numbers_not_zeros_or_others(config):
    """bf16 subnormals (m·2^-133) against normal values (j·2^120): every product and sum is exact
    in fp32, so each output is the float64 result rounded, and db, a sum of subnormals, is one
    itself. Triton's interpreter converted bf16 subnormals to other numbers (3·2^-133 to 2^-127) both
    ways; the kernels convert on the bits there (kernels.common.widen, cast_output). torch's CPU
    convolution flushes them to zero on some CPUs (README: where it differs)."""

    def scaled(shape, exponent):
        return (torch.randint(-7, 8, shape, dtype=torch.int64) * 2.0**exponent).to(torch.bfloat16)

    tiny_x, tiny_dy = scaled(PROBLEM.input_shape, -133), scaled(PROBLEM.output_shape, -133)
    big_w, big_x = scaled(PROBLEM.weight_shape, 120), scaled(PROBLEM.input_shape, 120)
    tiny_b = scaled((PROBLEM.out_channels,), -133)
    assert tiny_x.abs().max() < torch.finfo(torch.bfloat16).tiny  # subnormal, and exactly so
    # The bias is added after the sum, as the kernels add it: torch's float64 CPU convolution starts
    # from the bias, so where the products cancel to zero after it, the subnormal bias has already
    # been rounded away (0 where the exact result is the bias; seen with seed 2311268378).
    y64 = reference_conv2d(tiny_x.double(), big_w.double(), None, PROBLEM)
    y64 = y64 + tiny_b.double()[None, :, None, None]
    x_probe = torch.zeros(PROBLEM.input_shape, dtype=torch.float64, requires_grad=True)
    w_probe = torch.zeros(PROBLEM.weight_shape, dtype=torch.float64, requires_grad=True)
    (dx64,) = torch.autograd.grad(
        reference_conv2d(x_probe, big_w.double(), None, PROBLEM), x_probe, tiny_dy.double()
    )
    (dw64,) = torch.autograd.grad(
        reference_conv2d(big_x.double(), w_probe, None, PROBLEM), w_probe, tiny_dy.double()
    )

    y = conv2d_with_config(tiny_x, big_w, tiny_b, PROBLEM.stride, (1, 2), PROBLEM.dilation, 2, config=config)
    dx = conv2d_dgrad(tiny_dy, big_w, PROBLEM, config, channels_last=False)
    dw, db = conv2d_wgrad(
        tiny_dy, big_x, PROBLEM, config, weight_dtype=torch.bfloat16, channels_last=False, need_bias=True
    )
    db64 = tiny_dy.double().sum(dim=(0, 2, 3))
    assert (db64 != 0).any() and db64.abs().max() < torch.finfo(torch.bfloat16).tiny * 8
    for name, got, want in (("y", y, y64), ("dx", dx, dx64), ("dw", dw, dw64), ("db", db, db64)):
        assert torch.equal(got, want.detach().to(torch.bfloat16)), (
            f"{name}: {(got.double() - want).abs().max()}"
        )


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_the_bias_is_added_after_products_that_cancel(config):
    """Each output is the sum of its products, then the bias: where the products cancel, a bias far
    below them survives exactly (README: torch's CPU convolution may start from the bias and lose
    it). Two products of opposite sign sum to an exact 0 in any order, split_k's too; a kernel that
    started its accumulator from the bias would return 0 here."""
    scale = torch.randint(1, 8, (1,)).item() * 2.0**-13
    x = torch.tensor([scale, -scale], dtype=torch.float64).reshape(1, 2, 1, 1).repeat(1, 1, 3, 5)
    weight = torch.ones(3, 2, 1, 1, dtype=torch.float64)
    bias = torch.randint(1, 8, (3,), dtype=torch.int64) * 2.0**-133
    y = conv2d_with_config(x, weight, bias.double(), 1, 0, 1, 1, config=config)
    assert torch.equal(y, bias.double()[None, :, None, None].expand(1, 3, 3, 5))


def test_fp16_weight_gradient_sums_the_images_in_fp32():
    """Two images whose weight gradients are 80,000 and -70,000 (past fp16's 65,504, though every
    product fits): the sum over the batch is kept in fp32, so the answer is the exact 10,000, where
    torch's CPU path, which adds the images' gradients in fp16, gives inf (README, differences)."""
    import triton_conv

    x = torch.full((2, 1, 1, 4), 200.0, dtype=torch.float16, requires_grad=True)
    dy = torch.tensor([[100.0] * 4, [-87.5] * 4], dtype=torch.float16).view(2, 1, 1, 4)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float16, requires_grad=True)
    (dw,) = torch.autograd.grad(triton_conv.conv2d(x, w), w, dy)
    assert dw.item() == 10000.0


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_a_nan_gradient_next_to_padding_reaches_the_padding_taps_weight_gradient(op):
    """The weight gradient multiplies the padding as zeros: a NaN in the incoming gradient (conv2d)
    or the input (conv_transpose2d) whose window reads padding makes that tap's gradient NaN too
    (0·NaN), as torch's float64 path does (README, differences)."""
    import torch.nn.functional as F

    import triton_conv

    x = torch.arange(1.0, 11.0, dtype=torch.float64).view(2, 1, 1, 5)
    w = torch.ones(1, 1, 1, 3, dtype=torch.float64, requires_grad=True)
    grad = torch.ones(2, 1, 1, 5, dtype=torch.float64)
    grad[-1, 0, 0, 4] = float("nan")  # the last column: the third tap reads padding there
    if op == "conv2d":
        ours, theirs = (torch.autograd.grad(conv(x, w, padding=(0, 1)), w, grad)[0]
                        for conv in (triton_conv.conv2d, F.conv2d))  # fmt: skip
    else:  # x and the gradient exchange roles: the NaN is in the input
        ours, theirs = (torch.autograd.grad(conv(grad, w, padding=(0, 1)), w, x)[0]
                        for conv in (triton_conv.conv_transpose2d, F.conv_transpose2d))  # fmt: skip
    assert ours.isnan().flatten().tolist() == [True, True, True]
    assert theirs.isnan().flatten().tolist() == [True, True, True]
