"""Launches in any program order (tests/program_order.py, on for the whole suite under the
interpreter): the hook really reorders, and split-K's sums, which the last split to arrive makes,
are right and the same bits whichever split that is."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from triton_conv import KernelConfig, conv2d_with_config
from triton_conv.launchers.dgrad import conv2d_dgrad
from triton_conv.launchers.dgrad_masked import conv2d_dgrad_masked
from triton_conv.launchers.wgrad import conv2d_wgrad
from triton_conv.problem import ConvProblem

from . import program_order
from .conftest import SHUFFLE_PROGRAMS
from .reference import REL_TOL_FP32_IEEE, rel_error

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.skipif(not SHUFFLE_PROGRAMS, reason="grid order asked (TRITON_CONV_PROGRAM_ORDER=grid)"),
]

GRID = (4, 3, 5)


@triton.jit
def _arrival_kernel(counter_ptr, rank_ptr):
    row = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    program = row * tl.num_programs(2) + tl.program_id(2)
    tl.store(rank_ptr + program, tl.atomic_add(counter_ptr, 1))


def _arrival_ranks(grid=GRID) -> torch.Tensor:
    """Each program's place in the order the launch ran them, by program index."""
    counter = torch.zeros(1, dtype=torch.int32)
    ranks = torch.full((math.prod(grid),), -1, dtype=torch.int32)
    _arrival_kernel[grid](counter, ranks)
    return ranks


def test_each_launch_runs_every_program_once_in_a_fresh_order():
    first, second = _arrival_ranks(), _arrival_ranks()
    everyone = torch.arange(math.prod(GRID), dtype=torch.int32)
    for ranks in first, second:
        assert torch.equal(ranks.sort().values, everyone), "a program ran twice or never"
    # 60! orders: the grid's own, or the same one twice, is a broken hook, not chance.
    assert not torch.equal(first, everyone) and not torch.equal(first, second)


def test_a_seed_replays_its_orders():
    program_order.reseed(2026)
    first = _arrival_ranks()
    program_order.reseed(2026)
    assert torch.equal(first, _arrival_ranks())


# Two groups, several row and column tiles per group, three splits of the reduction (one group of
# splits) and ten (three groups, the last short: split_groups; test_bounds runs nine, three of
# three): a workspace slot or counter shared by two tiles or two groups, or a sum made by the
# highest split instead of the last to arrive, gives wrong values or bits that change from one
# order to the next.
X_SHAPE, W_SHAPE, KWARGS = (2, 8, 9, 7), (40, 4, 3, 3), dict(padding=1, groups=2)
SPLITS = (3, 10)
ORDERS = 3


def _float64_gradients(x, w, b, dy):
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    y64 = F.conv2d(x64, w64, b64, **KWARGS)
    return (y64.detach(), *torch.autograd.grad(y64, (x64, w64, b64), dy.double()))


def _run(pass_name, x, w, b, dy, problem, split):
    if pass_name == "fprop":
        return (conv2d_with_config(x, w, b, **KWARGS, config=split),)
    if pass_name == "dgrad":
        return (conv2d_dgrad(dy, w, problem, split, channels_last=False),)
    if pass_name == "dgrad_masked":
        return (conv2d_dgrad_masked(dy, w, problem, split, channels_last=False),)
    return conv2d_wgrad(
        dy, x, problem, split, weight_dtype=torch.float32, channels_last=False, need_bias=True
    )


@pytest.mark.parametrize("split_k", SPLITS)
@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "dgrad_masked", "wgrad"])
def test_split_k_in_any_order_is_right_and_the_same_bits(pass_name, split_k, triton_only):
    x, w, b = torch.randn(X_SHAPE), torch.randn(W_SHAPE), torch.randn(W_SHAPE[0])
    problem = ConvProblem.from_shapes(X_SHAPE, W_SHAPE, **KWARGS)
    dy = torch.randn(problem.output_shape)
    y64, dx64, dw64, db64 = _float64_gradients(x, w, b, dy)
    expected = {"fprop": (y64,), "dgrad": (dx64,), "dgrad_masked": (dx64,), "wgrad": (dw64, db64)}[pass_name]
    with triton_only() as proof:
        split = KernelConfig(16, 16, 16, split_k=split_k)
        results = [_run(pass_name, x, w, b, dy, problem, split) for _ in range(ORDERS)]  # an order each
    assert proof.launches == {f"{pass_name}_kernel": ORDERS}, proof.launches
    for outputs in results:
        for output, reference in zip(outputs, expected, strict=True):
            error = rel_error(output, reference)
            assert error < REL_TOL_FP32_IEEE, f"relative error {error:.2e} over {REL_TOL_FP32_IEEE:.0e}"
    for outputs in results[1:]:
        same = all(torch.equal(a, b) for a, b in zip(outputs, results[0], strict=True))
        assert same, "the bits changed with the order"
