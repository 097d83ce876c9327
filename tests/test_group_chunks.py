"""Groups past the grid's y limit (passes.GRID_Y_LIMIT, CUDA's 65535) run in chunks of groups, one
launch each, with torch's result: a depthwise convolution of 65536 channels, or of 16384 in dgrad
at stride 2 (its four stride phases run beside the groups). The limit is lowered here so that
small problems cross it; the float64 reference is torch's."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv import passes
from triton_conv.problem import ConvProblem

from .contract import EXACT, EXACT_TOL
from .reference import rel_error

GROUPS = 5


def _close(ours, theirs) -> bool:
    return rel_error(ours, theirs) < 100 * EXACT_TOL


def test_chunks_cover_every_group_once_within_the_limit(monkeypatch):
    monkeypatch.setattr(passes, "GRID_Y_LIMIT", 7)
    problem = ConvProblem.from_shapes((1, 2 * 23, 4, 4), (23, 2, 3, 3), groups=23)
    for per_group in (1, 2, 4, 9):
        chunks = passes.group_chunks(problem, per_group)
        assert [first for first, _ in chunks] == list(
            itertools.accumulate([0] + [groups for _, groups in chunks[:-1]])
        )
        assert sum(groups for _, groups in chunks) == 23
        assert all(groups * per_group <= 7 or groups == 1 for _, groups in chunks)
    assert passes.group_chunks(problem, 1) != [(0, 23)]
    monkeypatch.setattr(passes, "GRID_Y_LIMIT", 65535)
    assert passes.group_chunks(problem, 4) == [(0, 23)]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_and_both_gradients_past_the_limit(stride, channels_last, monkeypatch, triton_only):
    """Limit 4: fprop and wgrad run 5 groups as 4 + 1, dgrad (1 or 4 stride phases per group) as
    4 + 1 or one group per launch; every pass against float64 torch."""
    monkeypatch.setattr(passes, "GRID_Y_LIMIT", 4)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 3 * GROUPS, 7, 6, dtype=EXACT).contiguous(memory_format=layout).requires_grad_()
    w = torch.randn(2 * GROUPS, 3, 3, 2, dtype=EXACT).requires_grad_()
    b = torch.randn(2 * GROUPS, dtype=EXACT).requires_grad_()
    geometry = dict(stride=stride, padding=1, dilation=(1, 2), groups=GROUPS)
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, b, **geometry)
        dy = torch.randn_like(y)
        dx, dw, db = torch.autograd.grad(y, (x, w, b), dy)
    ref = F.conv2d(x, w, b, **geometry)
    ref_dx, ref_dw, ref_db = torch.autograd.grad(ref, (x, w, b), dy)
    for ours, theirs in ((y, ref), (dx, ref_dx), (dw, ref_dw), (db, ref_db)):
        assert _close(ours, theirs)
    # cuDNN keeps float64 in NCHW on a GPU, and so do ours (memory_format.wants_channels_last)
    assert y.is_contiguous(memory_format=torch.contiguous_format if y.is_cuda else layout)
    dgrad_launches = GROUPS if stride == 2 else 2
    assert proof.launches == {"fprop_kernel": 2, "dgrad_kernel": dgrad_launches, "wgrad_kernel": 2}


def test_conv_transpose2d_past_the_limit(monkeypatch, triton_only):
    """The transposed forward is dgrad with a bias per output channel: each chunk takes its slice."""
    monkeypatch.setattr(passes, "GRID_Y_LIMIT", 4)
    x = torch.randn(2, 2 * GROUPS, 4, 5, dtype=EXACT).requires_grad_()
    w = torch.randn(2 * GROUPS, 3, 3, 3, dtype=EXACT).requires_grad_()
    b = torch.randn(3 * GROUPS, dtype=EXACT).requires_grad_()
    geometry = dict(stride=2, padding=1, output_padding=1, groups=GROUPS)
    with triton_only() as proof:
        y = triton_conv.conv_transpose2d(x, w, b, **geometry)
        grads = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
    ref = F.conv_transpose2d(x, w, b, **geometry)
    ref_grads = torch.autograd.grad(ref, (x, w, b), torch.ones_like(ref))
    assert _close(y, ref) and all(_close(o, t) for o, t in zip(grads, ref_grads))
    assert proof.launches["dgrad_kernel"] == GROUPS and proof.launches["fprop_kernel"] == 2


def test_stride_phases_past_the_limit_are_refused_before_a_launch(triton_only):
    """One group's stride phases share the y axis and no chunk of groups splits them: a stride whose
    phases pass CUDA's limit (256 x 256, which torch computes) is a clear error naming `stride`,
    raised before the input gradient's or the transposed forward's kernel launches."""
    x = torch.randn(1, 1, 2, 2, dtype=EXACT)
    w = torch.randn(1, 1, 1, 1, dtype=EXACT)  # the phases are the stride's, whatever the filter
    with triton_only() as proof, pytest.raises(RuntimeError, match="stride"):
        triton_conv.conv_transpose2d(x, w, stride=256)
    x = torch.randn(1, 1, 257, 257, dtype=EXACT, requires_grad=True)
    with triton_only() as proof:
        y = triton_conv.conv2d(x, w, stride=256)  # the forward has no phases: it runs
        with pytest.raises(triton_conv.ConvArgumentError, match=r"stride=\(256, 256\)"):
            y.sum().backward()
    assert proof.launches == {"fprop_kernel": 1}
    assert _close(y, F.conv2d(x, w, stride=256))


def test_phases_at_a_lowered_limit(monkeypatch, triton_only):
    """The same refusal where a test can reach it cheaply: 4 phases (stride 2) against a limit of 3."""
    monkeypatch.setattr(passes, "GRID_Y_LIMIT", 3)
    x = torch.randn(2, 3, 6, 5, dtype=EXACT)
    w = torch.randn(3, 2, 3, 3, dtype=EXACT)
    with triton_only() as proof, pytest.raises(ValueError, match="4 stride phases"):
        triton_conv.conv_transpose2d(x, w, stride=2)
    assert proof.launches == {}
    with triton_only() as proof:
        y = triton_conv.conv_transpose2d(x, w, stride=(1, 3))  # 3 phases: within the limit
    assert proof.launches == {"dgrad_kernel": 1}
    assert _close(y, F.conv_transpose2d(x, w, stride=(1, 3)))
