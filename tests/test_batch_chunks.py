"""Batches whose GEMM rows pass 32 bits (passes.ROWS_LIMIT) run in chunks of images, one launch each,
with torch's result. The kernels count a launch's rows (fprop's output pixels, dgrad's input pixels
of a stride phase, wgrad's reduction) in 32-bit ints, the last tile past the end included: without
the chunks a batch of 2**31 output pixels or more wraps those counts (a wrong result, and stores
outside the output), whatever the int64 offsets. The decision is checked on real sizes (no tensors);
the chunked passes with the limit lowered so that small problems cross it, against float64 torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv import passes
from triton_conv.arguments import ConvArgumentError
from triton_conv.configs import KernelConfig, tap_channels
from triton_conv.launchers.wgrad import wgrad_plan
from triton_conv.problem import ConvProblem

from .reference import REL_TOL, rel_error

PASSES = ("fprop", "dgrad", "wgrad")


def _rows(problem: ConvProblem, pass_name: str) -> int:
    """A launch's GEMM rows as the kernels count them, past the last tile's end."""
    if pass_name == "dgrad":
        stride_h, stride_w = problem.stride
        per_image = -(-problem.height // stride_h) * -(-problem.width // stride_w)
    else:
        per_image = problem.out_height * problem.out_width
    return problem.batch * per_image + 512


@pytest.mark.parametrize(
    ("input_shape", "weight_shape", "geometry", "launches"),
    [
        ((3, 1, 32768, 32768), (1, 1, 1, 1), {}, 3),  # 2**30 pixels an image: one image a launch
        ((2, 1, 32768, 32767), (1, 1, 1, 1), {}, 1),  # 2**31 - 65536 pixels in all: one launch
        ((6, 2, 20000, 20000), (2, 2, 3, 3), dict(padding=1), 2),  # 4e8 pixels an image: 5 a launch
        ((4, 1, 65536, 32768), (1, 1, 3, 3), dict(stride=2, padding=1), 2),  # 2**29 an image
    ],
)
def test_every_launch_counts_its_rows_in_32_bits(input_shape, weight_shape, geometry, launches):
    problem = ConvProblem.from_shapes(input_shape, weight_shape, **geometry).canonical()
    for pass_name in PASSES:
        chunks = passes.batch_chunks(problem, pass_name)
        assert [first for first, _ in chunks] == [sum(n for _, n in chunks[:i]) for i in range(len(chunks))]
        assert sum(n for _, n in chunks) == problem.batch
        assert all(_rows(problem.with_batch(n), pass_name) <= 2**31 for _, n in chunks), pass_name
        assert len(chunks) == launches, pass_name


def test_an_image_past_32_bit_rows_is_a_clear_error():
    problem = ConvProblem.from_shapes((1, 1, 46341, 46341), (1, 1, 1, 1))  # 46341**2 > 2**31
    with pytest.raises(ConvArgumentError, match="input: one image is 2147488281 rows of the fprop GEMM"):
        passes.batch_chunks(problem, "fprop")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_and_both_gradients_in_chunks_of_images(dtype, stride, monkeypatch, triton_only):
    """Limit: two images' rows of each pass (and less than three), so 5 images run as 2 + 2 + 1 in
    every pass; wgrad's partial sums add in float32 before one rounding to bf16."""
    x = torch.randn(5, 3, 7, 6, dtype=dtype).requires_grad_()
    w = torch.randn(4, 3, 3, 2, dtype=dtype).requires_grad_()
    b = torch.randn(4, dtype=dtype).requires_grad_()
    geometry = dict(stride=stride, padding=1, dilation=(1, 2))
    problem = ConvProblem.from_shapes(x.shape, w.shape, **geometry).canonical()
    per_image = min((_rows(problem.with_batch(1), p) - 512) for p in PASSES)
    monkeypatch.setattr(passes, "ROWS_LIMIT", 2 * per_image + per_image // 2)
    assert all(len(passes.batch_chunks(problem, p)) == 3 for p in PASSES)
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, b, **geometry)
        dy = torch.randn_like(y)
        grads = torch.autograd.grad(y, (x, w, b), dy)
    exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(*exact, **geometry)
    ref_grads = torch.autograd.grad(ref, exact, dy.double())
    for name, ours, theirs in zip(("y", "dx", "dw", "db"), (y, *grads), (ref, *ref_grads)):
        assert ours.dtype == dtype and rel_error(ours, theirs) < REL_TOL.get(dtype, 1e-12), name
    assert proof.launches == {"fprop_kernel": 3, "dgrad_kernel": 3, "wgrad_kernel": 3}


def test_chunked_bf16_weight_gradient_rounds_once(monkeypatch, triton_only):
    """The chunks' float32 partial sums are added before the one rounding to bf16, as one launch
    rounds. Small integers times multiples of 2^-6: every float32 sum is exact, so dw and db must be
    the float64 gradient rounded once (a sum in bf16 between chunks rounds twice: about 40% of
    the elements differed)."""
    x = torch.randint(-3, 4, (5, 3, 7, 6)).bfloat16().requires_grad_()
    w = torch.randint(-3, 4, (4, 3, 3, 2)).bfloat16().requires_grad_()
    b = torch.randint(-3, 4, (4,)).bfloat16().requires_grad_()
    geometry = dict(padding=1, dilation=(1, 2))
    problem = ConvProblem.from_shapes(x.shape, w.shape, **geometry).canonical()
    per_image = problem.out_height * problem.out_width
    monkeypatch.setattr(passes, "ROWS_LIMIT", 2 * per_image + per_image // 2)
    assert len(passes.batch_chunks(problem, "wgrad")) == 3
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, b, **geometry)
        dy = (torch.randint(-255, 256, y.shape) * 2.0**-6).bfloat16()
        dw, db = torch.autograd.grad(y, (w, b), dy)
    assert proof.launches["wgrad_kernel"] == 3, proof.launches
    exact = [t.detach().double().requires_grad_() for t in (w, b)]
    want_dw, want_db = torch.autograd.grad(
        F.conv2d(x.detach().double(), *exact, **geometry), exact, dy.double()
    )
    assert torch.equal(dw, want_dw.bfloat16()), f"{(dw != want_dw.bfloat16()).sum()} of {dw.numel()} differ"
    assert torch.equal(db, want_db.bfloat16())


@pytest.mark.parametrize("chunks", ["images", "groups"])
def test_a_chunked_call_lays_its_outputs_out_as_one_launch_does(chunks, monkeypatch, triton_only):
    """Outputs whose size-1 dimensions let contiguous strides pass for channels_last (1x1 images, a
    one-channel weight): in chunks of images or of groups, the output and both gradients have the
    strides of the same call made in one launch."""
    image, taps = (1, 1) if chunks == "images" else (3, 3)  # images: one row an image in every pass
    x = torch.randn(4, 2, image, image, dtype=torch.float64).to(memory_format=torch.channels_last)
    w = torch.randn(2, 1, taps, taps, dtype=torch.float64)

    def call():
        leaves = [t.clone().requires_grad_() for t in (x, w)]
        y = triton_conv.conv2d(*leaves, groups=2)  # 1x1 outputs, one input channel a group
        return (y, *torch.autograd.grad(y, leaves, torch.randn_like(y)))

    with triton_only() as whole:
        one_launch = call()
    if chunks == "images":
        monkeypatch.setattr(passes, "ROWS_LIMIT", 2)  # 2 + 2 images in every pass
        assert all(len(passes.batch_chunks(p, name)) == 2 for p, name in _problems(x, w))
    else:
        monkeypatch.setattr(passes, "GRID_Y_LIMIT", 1)  # one group a launch
    with triton_only() as parts:
        chunked = call()
    assert sum(parts.launches.values()) == 2 * sum(whole.launches.values()) == 6, parts.launches
    assert [t.stride() for t in chunked] == [t.stride() for t in one_launch]


def _problems(x, w):
    problem = ConvProblem.from_shapes(x.shape, w.shape, groups=2).canonical()
    return [(problem, name) for name in PASSES]


def test_a_fixed_config_runs_in_the_same_chunks(monkeypatch, triton_only):
    """conv2d_with_config (tests, debugging) launches its config in the chunks conv2d would: of
    images past the 32-bit rows, of groups past the grid's y axis."""
    x = torch.randn(5, 6, 7, 6, dtype=torch.float64)
    w, b = torch.randn(9, 2, 3, 3, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    problem = ConvProblem.from_shapes(x.shape, w.shape, padding=1, groups=3).canonical()
    monkeypatch.setattr(passes, "ROWS_LIMIT", 2 * 42 + 1)  # 42 output pixels an image: 2 + 2 + 1
    monkeypatch.setattr(passes, "GRID_Y_LIMIT", 2)  # 3 groups: 2 + 1
    assert len(passes.batch_chunks(problem, "fprop")) == 3 and len(passes.group_chunks(problem, 1)) == 2
    for force_int64 in (False, True):
        with triton_only() as proof:
            y = triton_conv.conv2d_with_config(
                x, w, b, padding=1, groups=3, config=KernelConfig(16, 16, 16), force_int64=force_int64
            )
        assert rel_error(y, F.conv2d(x, w, b, padding=1, groups=3)) < 1e-12
        assert proof.launches == {"fprop_kernel": 6}


def test_an_image_past_the_limit_raises_before_any_launch(monkeypatch, triton_only):
    monkeypatch.setattr(passes, "ROWS_LIMIT", 11)  # one 4x4 output image is 16 rows
    x, w = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 1, 1, dtype=torch.float64)
    with triton_only() as proof, pytest.raises(RuntimeError, match="input: one image is 16 rows"):
        triton_conv.conv2d(x, w)
    assert not proof.launches


def test_a_stem_image_whose_padded_copy_passes_32_bits_reads_x_itself():
    """wgrad's few-channel path (TAP_CHANNELS) reads a copy of x with 4 channels a pixel whose strides
    the kernel forms in int32 (x_sn = H·W·g·4): an image of 2**29 pixels wrapped x_sn to -2**31, so
    the second image was read 4 Gi elements before the copy. Such an image keeps x (strides given
    as arguments, 64-bit where they need it); the ResNet-50 stem keeps the copy."""
    config = KernelConfig(64, 64, 32, 8, 1, 4, 3)
    for shape, padded in (((2, 3, 32768, 16384), 0), ((32, 3, 224, 224), 4)):
        problem = ConvProblem.from_shapes(shape, (64, 3, 7, 7), stride=2, padding=3)
        assert tap_channels(problem, 2) == padded
        shapes = (problem.output_shape, problem.input_shape, problem.weight_shape)
        dy, x, dw = (torch.empty(shape, dtype=torch.float16, device="meta") for shape in shapes)
        plan = wgrad_plan(dy, x, dw, None, problem, config).plan
        assert plan.constexprs["TAP_CHANNELS"] == padded
        assert plan.constexprs["USE_INT64"] == (padded == 0)  # x itself: 3·2**30 elements
