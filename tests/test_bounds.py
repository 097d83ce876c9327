"""Every pass reads and writes only its tensors' elements, lane by lane (tests/bounds.py), on shapes
whose last tiles run past every GEMM dimension at once: odd channel counts and groups, 1x1 filters
that are not pointwise, strides larger than the filter, a one-pixel image, asymmetric strides and
dilations; and the results against the float64 reference. First, that the check itself sees each
kind of access outside a tensor, and that tests/conftest.py's whole-suite mode fails a test for it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from triton_conv import KernelConfig
from triton_conv.launchers.dgrad import conv2d_dgrad
from triton_conv.launchers.fprop import conv2d_fprop
from triton_conv.launchers.wgrad import conv2d_wgrad

from .bounds import addresses_checked, element_spans, merged, uncovered
from .reference import bound, conv_case, rel_error

pytestmark = pytest.mark.interpreter
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _element_bytes(view: torch.Tensor) -> set[int]:
    """Every byte of every element of `view`, one by one: what the spans must cover exactly."""
    offsets = np.zeros((), dtype=np.int64)
    for size, stride in zip(view.shape, view.stride()):
        offsets = np.add.outer(offsets, np.arange(size, dtype=np.int64) * stride)
    starts = view.data_ptr() + offsets.ravel() * view.element_size()
    return {int(start) + byte for start in starts for byte in range(view.element_size())}


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s[:60].view(3, 4, 5),
        lambda s: s[:60].view(3, 4, 5).permute(2, 0, 1),
        lambda s: s[:120].view(2, 3, 4, 5).to(memory_format=torch.channels_last).contiguous(),
        lambda s: s[:120].view(6, 20)[1:5, 3:17],
        lambda s: s[:120].view(4, 5, 6)[:, 1:4, ::2],
        lambda s: s[:7].view(7, 1).expand(7, 9),
        lambda s: s[:60].as_strided((5, 6), (3, 1)),  # rows that overlap
        lambda s: s[5:6].view(()),
        lambda s: s[:60].view(3, 4, 5)[:, :0],
    ],
)
def test_spans_cover_exactly_the_elements_bytes(make):
    view = make(torch.empty(200, dtype=torch.float16))
    spans = element_spans(view.data_ptr(), view.shape, view.stride(), view.element_size())
    starts, ends = merged([spans])
    lo = view.untyped_storage().data_ptr() - 8
    every_byte = np.arange(lo, lo + 2 * 200 + 16, dtype=np.uint64)
    covered = ~uncovered(every_byte, every_byte + np.uint64(1), starts, ends)
    assert set(every_byte[covered].tolist()) == _element_bytes(view)


@triton.jit
def _poke(src_ptr, dst_ptr, counter_ptr, n, shift, WHAT: tl.constexpr, BLOCK: tl.constexpr):
    """One access that `shift` moves past the first n elements of src or dst, by WHAT."""
    offs = tl.arange(0, BLOCK)
    inside = offs < n
    if WHAT == "load":
        tl.store(dst_ptr + offs, tl.load(src_ptr + offs + shift), mask=inside)
    if WHAT == "masked load":
        tl.store(dst_ptr + offs, tl.load(src_ptr + offs + shift, mask=offs + shift < n), mask=inside)
    if WHAT == "store":
        tl.store(dst_ptr + offs + shift, tl.load(src_ptr + offs, mask=inside))
    if WHAT == "atomic":
        tl.atomic_add(counter_ptr + shift, 1)
    if WHAT == "cas":
        tl.atomic_cas(counter_ptr + shift, 0, 1)


@triton.jit
def _tile(src_desc, dst_ptr, row0, BLOCK: tl.constexpr):
    """A BLOCK x BLOCK tile through a TMA descriptor at (row0, 0), stored to dst."""
    offs = tl.arange(0, BLOCK)
    tl.store(dst_ptr + offs[:, None] * BLOCK + offs[None, :], src_desc.load([row0, 0]))


@pytest.mark.parametrize(
    "what, shift, outside",
    [
        ("load", 0, []),
        ("load", 1, [("_poke", "load", 1, (0, 0, 0))]),
        ("load", -3, [("_poke", "load", 3, (0, 0, 0))]),
        ("masked load", 5, []),
        ("store", 2, [("_poke", "store", 2, (0, 0, 0))]),
        ("atomic", 0, []),
        ("atomic", 1, [("_poke", "atomic", 1, (0, 0, 0))]),
        ("cas", 0, []),
        ("cas", -1, [("_poke", "atomic", 1, (0, 0, 0))]),
    ],
)
def test_the_check_sees_each_access_outside(what, shift, outside):
    """src, dst and the counter are views into the middle of larger storages, so the lanes past
    them land on real memory that is not the launch's: only the check can tell."""
    block = 16
    storage = torch.zeros(3 * block)
    src, dst = storage[block : 2 * block], torch.zeros(3 * block)[block : 2 * block]
    counter = torch.zeros(3, dtype=torch.int32)[1:2]
    with addresses_checked() as seen:
        _poke[(1,)](src, dst, counter, block, shift, WHAT=what, BLOCK=block)
    assert seen.accesses == outside


def test_an_inner_check_takes_the_accesses_inside_it():
    """So a test that reads outside on purpose passes under the whole-suite check."""
    src, dst = torch.zeros(48)[16:32], torch.zeros(16)
    with addresses_checked() as outer:
        with addresses_checked() as inner:
            _poke[(1,)](src, dst, dst, 16, 1, WHAT="load", BLOCK=16)
        assert (inner.accesses, outer.accesses) == ([("_poke", "load", 1, (0, 0, 0))], [])
        _poke[(1,)](src, dst, dst, 16, 2, WHAT="load", BLOCK=16)
    assert (inner.accesses[1:], outer.accesses) == ([], [("_poke", "load", 2, (0, 0, 0))])


def test_the_check_sees_a_gap_in_a_view():
    block = 16
    rows = torch.randn(4, 2 * block)[:, :block]  # each row's second half is not the view's
    dst = torch.zeros(block)
    with addresses_checked() as seen:
        _poke[(1,)](rows, dst, dst, block, block, WHAT="load", BLOCK=block)
    assert seen.accesses == [("_poke", "load", block, (0, 0, 0))]


@pytest.mark.parametrize(
    "rows, row0, outside", [(16, 0, []), (16, 8, []), (24, 0, [("_tile", "descriptor", 8 * 16, None)])]
)
def test_a_descriptor_must_lie_inside_its_tensor(rows, row0, outside):
    """A descriptor's lanes past its shape are zero-filled, never read: a tile past the tensor is
    fine (row0 8); a descriptor whose shape reaches past the tensor is not, loaded or not."""
    block = 16
    src = torch.randn(3 * block, block)[block : 2 * block]
    dst = torch.zeros(block, block)
    descriptor = TensorDescriptor(src, [rows, block], [block, 1], [block, block])
    with addresses_checked() as seen:
        _tile[(1,)](descriptor, dst, row0, BLOCK=block)
    assert seen.accesses == outside
    if not outside:
        expected = torch.zeros(block, block)
        expected[: block - row0] = src[row0:]
        assert torch.equal(dst, expected)


@pytest.mark.skipif(
    os.environ.get("TRITON_CONV_ADDRESS_CANARY") != "1",
    reason="run by test_the_suite_mode_fails_a_test_that_reads_outside only",
)
def test_canary_reads_past_its_tensor():
    """Right results from a kernel that reads one lane past src: the lane lands in dst's last
    element, which the expected values do not look at."""
    src, dst = torch.randn(48)[16:32], torch.zeros(16)
    _poke[(1,)](src, dst, dst, 16, 1, WHAT="load", BLOCK=16)
    assert torch.equal(dst[:15], src[1:])


def test_the_suite_mode_fails_a_test_that_reads_outside():
    """TRITON_CONV_CHECK_ADDRESSES=1 (tests/conftest.py) fails the canary, which passes on its
    results, and names the test, the kernel, the access, its lanes and its program."""
    env = dict(os.environ, TRITON_CONV_CHECK_ADDRESSES="1", TRITON_CONV_ADDRESS_CANARY="1")
    canary = "tests/test_bounds.py::test_canary_reads_past_its_tensor"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", canary]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{canary} (call): lanes outside the launch's tensors" in run.stdout, run.stdout
    assert "_poke: load, 1 lane(s) outside, program (0, 0, 0)" in run.stdout, run.stdout


CONFIGS = (
    KernelConfig(16, 16, 16),
    KernelConfig(32, 16, 16, split_k=3),
    KernelConfig(16, 32, 16, group_m=4, split_k=2),
    KernelConfig(16, 16, 16, group_m=2, split_k=9),  # the two-level split sum: 3 groups of 3
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
    problem, x, w, b, dy, expected = conv_case(x_shape, w_shape, kwargs, dtype, layout)
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
    for name, ref in expected.items():
        err = rel_error(got[name], ref)
        assert err < bound(dtype), f"{where} {name}: relative error {err:.2e}"
