"""The search space the tuner times, per pass, generated rather than listed: `SubSpace`s are
itertools.products over short axis lists, filtered by the problem-independent SHAPE_RULES below.
What cannot win on a given problem and GPU is pruned before any timing by triton_conv.pruning.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

from .configs import KernelConfig
from .problem import PASSES


@dataclass(frozen=True)
class SubSpace:
    """One itertools.product over the listed values of every axis."""

    name: str
    block_m: tuple[int, ...]
    block_n: tuple[int, ...]
    block_k: tuple[int, ...]
    num_warps: tuple[int, ...]
    num_stages: tuple[int, ...]
    group_m: tuple[int, ...]
    split_k: tuple[int, ...]
    tiles: tuple[tuple[int, int], ...] | None = None  # (BM, BN) pairs to keep; None: all

    def product(self):
        axes = ("block_m", "block_n", "block_k", "num_warps", "num_stages", "group_m", "split_k")
        for values in itertools.product(*(getattr(self, axis) for axis in axes)):
            if self.tiles is None or values[:2] in self.tiles:
                yield KernelConfig(**dict(zip(axes, values, strict=True)))


def tile_area(c: KernelConfig) -> bool:
    """64x64 <= BM x BN <= 128x128: a smaller tile re-reads its operands too often to feed the tensor
    cores; a larger one needs more than 8 warps to hold its fp32 accumulator (next rule)."""
    return 64 * 64 <= c.block_m * c.block_n <= 128 * 128


def accumulator_per_thread(c: KernelConfig) -> bool:
    """32 <= BM x BN / (32 x num_warps) <= 128 fp32 accumulator registers per thread: fewer leaves
    warps too little work per load; more leaves too few of a thread's 255 registers for addresses.
    128 suits only Hopper's wgmma, whose operands stay in shared memory: pruning's register_budget
    removes such configs elsewhere and in fp32."""
    return 32 <= c.block_m * c.block_n // (32 * c.num_warps) <= 128


def pipeline_depth(c: KernelConfig) -> bool:
    """128 <= num_stages x BK <= 192: enough reduction in flight to hide global-memory latency,
    not so much that the stages crowd out a second CTA's shared memory (so BK 32 runs 4 stages,
    BK 64 runs 3)."""
    return 128 <= c.num_stages * c.block_k <= 192


SHAPE_RULES = (tile_area, accumulator_per_thread, pipeline_depth)

# fprop and dgrad: GEMM rows are pixels (N·P·Q or N·H·W), so batching fills the GPU; the weight
# operand is small enough to stay in L2, so the tile order (GROUP_M) is not searched. Split-K is a
# separate sub-space of the tiles that make the most CTAs, for problems too small to fill the GPU.
_PIXEL_ROWS = (
    SubSpace(
        "dense", block_m=(64, 128), block_n=(64, 128, 256), block_k=(32, 64),
        num_warps=(4, 8), num_stages=(3, 4), group_m=(8,), split_k=(1,),
    ),
    SubSpace(
        "split", block_m=(64,), block_n=(64, 128), block_k=(64,),
        num_warps=(4,), num_stages=(3,), group_m=(8,), split_k=(2, 4, 8, 16),
    ),
)  # fmt: skip
# wgrad: the output (K x C·R·S) does not grow with the batch, only the reduction does, so split-K
# is what fills the GPU (up to 64 splits); both operands stream through L2, so GROUP_M is searched.
# Tiles up to 256 output channels tall: each column tile gathers its x rows once for all its rows.
_WGRAD = (
    SubSpace(
        "dense", block_m=(64, 128, 256), block_n=(64, 128), block_k=(64,),
        num_warps=(4, 8), num_stages=(3,), group_m=(1, 8), split_k=(1,),
    ),
    SubSpace(
        "dense-bk32", block_m=(64, 128, 256), block_n=(64, 128), block_k=(32,),
        num_warps=(4, 8), num_stages=(4,), group_m=(8,), split_k=(1,),
    ),
    # Split tiles of 64x64 (a few output channels, or columns that straddle taps), of 8192
    # elements, and the tall 256x64: splits are for tiles too few to fill the GPU, where 128x128
    # adds little.
    SubSpace(
        "split", block_m=(64, 128, 256), block_n=(64, 128), block_k=(64,),
        num_warps=(4,), num_stages=(3,), group_m=(8,), split_k=(2, 4, 8, 16, 32, 64),
        tiles=((64, 64), (64, 128), (128, 64), (256, 64)),
    ),
)  # fmt: skip
SPACES: dict[str, tuple[SubSpace, ...]] = {"fprop": _PIXEL_ROWS, "dgrad": _PIXEL_ROWS, "wgrad": _WGRAD}


def _generate(subspaces) -> tuple[KernelConfig, ...]:
    seen: dict[KernelConfig, None] = {}
    for sub in subspaces:
        for config in sub.product():
            if all(rule(config) for rule in SHAPE_RULES):
                seen.setdefault(config, None)
    return tuple(seen)


@functools.cache
def config_space(pass_name: str) -> tuple[KernelConfig, ...]:
    """Every config the tuner may time for `pass_name`, in a fixed order."""
    if pass_name not in PASSES:
        raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")
    return _generate(SPACES[pass_name])
