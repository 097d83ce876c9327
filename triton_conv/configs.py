"""Tile configurations: what a kernel launch is parameterised by, the default choice for a problem,
and how each pass walks its operands (tap channels, wgrad's columns, fprop's row spans). The search
space the tuner times is in search_space.py, the tuning key in tuning_keys.py.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

import torch

from .arguments import ConvArgumentError, ConvTypeError
from .problem import ConvProblem, GemmShape


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


# The largest value of each field a launch may carry: a GPU launches at most 1,024 threads (32
# warps) per block, a tile of 512 rows already needs more registers or shared memory than any GPU
# has, and a split-K of more than 256 partial sums only multiplies the workspace (split_k x BM x BN
# fp32) and the grid. The tuning cache's entries are held to the same bounds.
CONFIG_BOUNDS = {
    "block_m": 512, "block_n": 512, "block_k": 512, "group_m": 64, "split_k": 256,
    "num_warps": 32, "num_stages": 8,
}  # fmt: skip


@dataclass(frozen=True)
class KernelConfig:
    """One tile shape and schedule. Blocks are powers of two and at least 16 (a GPU dot's minimum),
    num_warps a power of two, every field a whole number of at least 1 and at most CONFIG_BOUNDS'.
    A field out of range raises ConvArgumentError, one of another kind ConvTypeError (NumPy
    integers are taken as ints)."""

    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    group_m: int = 8
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        for name, bound in CONFIG_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # split_k=True ran as 1
                raise ConvTypeError(f"config.{name} must be an int, got {value!r}")
            object.__setattr__(self, name, int(value))
            if not 1 <= value <= bound:
                raise ConvArgumentError(f"config.{name} must be between 1 and {bound}, got {value}")
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if not _is_power_of_two(value) or value < 16:
                raise ConvArgumentError(f"config.{name} must be a power of two >= 16, got {value!r}")
        if not _is_power_of_two(self.num_warps):
            raise ConvArgumentError(f"config.num_warps must be a power of two, got {self.num_warps}")

    def shared_bytes(self, element_size: int, capability: tuple[int, int] | None = None) -> int:
        """The operand pipeline's shared memory: buffers x (BM x BK + BK x BN) x element_size. Triton's
        pipeliner keeps one buffer per stage on Hopper (CC 9.x, and the rule when no capability is
        given) and num_stages - 1 on CC 8.x, where the stage being computed reads the buffer the next
        cp.async refills: what Triton 3.6 and 3.9 allocate (tests/test_static_report.py)."""
        cp_async_ring = capability is not None and capability[0] == 8
        buffers = max(1, self.num_stages - 1) if cp_async_ring else self.num_stages
        return buffers * (self.block_m + self.block_n) * self.block_k * element_size

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> KernelConfig:
        names = {f.name for f in fields(cls)}
        if set(values) != names:
            raise ConvArgumentError(
                f"a config needs exactly the fields {sorted(names)}, got {sorted(values)}"
            )
        return cls(**values)

    def __str__(self) -> str:
        return (
            f"{self.block_m}x{self.block_n}x{self.block_k} g{self.group_m} s{self.split_k} "
            f"w{self.num_warps} st{self.num_stages}"
        )


def _fit(size: int, lo: int, hi: int) -> int:
    """The smallest power of two >= size, clamped to [lo, hi]."""
    block = lo
    while block < size and block < hi:
        block *= 2
    return block


def wgmma_eligible(dtype: torch.dtype, block_m: int, num_warps: int) -> bool:
    """Hopper takes the wgmma path for a 16-bit or TF32 dot only with whole warpgroups (num_warps a
    multiple of 4) and BM a multiple of 64; otherwise Triton silently falls back to mma.sync."""
    return dtype in (torch.float16, torch.bfloat16, torch.float32) and (
        num_warps % 4 == 0 and block_m % 64 == 0
    )


def one_warpgroup(capability: tuple[int, int] | None, element_size: int) -> bool:
    """On Hopper a 16-bit dot is a wgmma that reads both operands from shared memory, so one
    warpgroup (4 warps) can hold a 128x128 tile's fp32 accumulator (128 registers per thread). Its
    main loop issues a third fewer instructions per step than two warpgroups' (the sm_90 main-loop
    report), so the defaults use it there. Elsewhere (mma.sync) the operands pass through registers
    too and a 4-warp 128x128 tile would spill."""
    return capability is not None and capability[0] == 9 and element_size == 2


def default_config(shape: GemmShape, element_size: int, capability: tuple[int, int] | None = None):
    """A reasonable config without tuning: big tiles for big GEMMs, no wider than the problem; on
    Hopper (16-bit) one warpgroup per tile (one_warpgroup)."""
    block_m = 128 if shape.m >= 4096 else 64
    block_n = _fit(shape.n, 16, 128)
    block_k = _fit(shape.k, 16, 64 if element_size <= 2 else 32)
    big = block_m * block_n >= 128 * 128 and not one_warpgroup(capability, element_size)
    return KernelConfig(block_m, block_n, block_k, 8, 1, 8 if big else 4, 3)


def default_wgrad_tile(problem: ConvProblem, element_size: int, capability) -> KernelConfig:
    """wgrad's untuned tile. Its rows are output channels (K/g, a few hundred), its columns filter
    taps x channels, and every column tile re-gathers its x rows, whose per-row bookkeeping costs
    the same whatever the tile's width: so on Hopper (one_warpgroup) the tile is as tall as the
    output channels allow (up to 256) and BLOCK_N divides C/g where it can (one tap per column
    tile: kernels/wgrad.py's ONE_TAP_TILES), at most 128x128 in area."""
    m, n, k = problem.gemm("wgrad")
    if not one_warpgroup(capability, element_size):
        return default_config(GemmShape(m, n, k), element_size, capability)
    block_m = _fit(m, 64, 256)
    block_n = _fit(n, 16, 128 * 128 // block_m)
    while block_n > 16 and problem.in_per_group % block_n:
        block_n //= 2
    if problem.in_per_group % block_n:  # no tile lies in one tap: per-element taps, at most 64 wide
        block_n = _fit(n, 16, 64)
    return KernelConfig(block_m, block_n, _fit(k, 16, 64), 8, 1, 4, 3)


# A split should keep at least this many BLOCK_K steps: with fewer, the loads of a num_stages-deep
# pipeline never overlap the dots, and the split's workspace round trip (two BM x BN fp32 tiles)
# costs about as much as its own loads.
MIN_STEPS_PER_SPLIT = 4


def default_wgrad_split(
    problem: ConvProblem, config: KernelConfig, sm_count: int, element_size: int = 2
) -> int:
    """split_k for a wgrad launch with `config`'s tiles on a GPU with `sm_count` SMs.

    The rule, in words: wgrad's output tiles (K/BM x columns/BN per group, the columns the launch
    tiles: wgrad_columns) do not grow with the batch, so when they are fewer than the SMs, split the
    N·P·Q reduction until tiles x split is about one wave, floor(sm_count / tiles), never past one
    wave (a partial second wave costs a whole wave's time), and no further than leaves each split
    MIN_STEPS_PER_SPLIT BLOCK_K steps of reduction.

    Not counted: with a bias, K/BM more programs per group and split sum dy's rows for its gradient
    (lighter than a tile's: dy's loads, no x and no MMA). ResNet's convolutions have no bias; with
    one, the stem's default launches 165 CTAs, not 132. Counting them needs the bias in the tuning
    key; folding the sums into the first column tile's programs, which load those dy blocks anyway,
    would remove them (not done: a kernel change to time on a GPU).
    """
    tiles_m, tiles_n = tile_grid(problem, "wgrad", config, element_size)
    tiles = problem.groups * tiles_m * tiles_n
    steps = cdiv(problem.gemm("wgrad").k, config.block_k)
    if tiles == 0 or steps == 0:
        return 1
    fill = min(sm_count // tiles, CONFIG_BOUNDS["split_k"])
    return max(1, min(fill, steps // MIN_STEPS_PER_SPLIT))


def default_pass_config(
    problem: ConvProblem,
    pass_name: str,
    dtype: torch.dtype,
    sm_count: int = 132,
    capability: tuple[int, int] | None = None,
    *,
    channels_last: bool = True,
):
    """The untuned config of one pass on a GPU with `sm_count` SMs of compute `capability` (None:
    a tile that suits any GPU): default_config on the pass's GEMM, with BLOCK_K fitted to what the
    reduction walks in BLOCK_K steps (fprop and dgrad: the channels of one tap, so a 3-channel stem
    does not load 64-channel blocks); wgrad's tile is default_wgrad_tile's, with the split that
    default_wgrad_split chooses (wgrad's tiles do not grow with the batch)."""
    element_size = dtype.itemsize
    m, n, k = problem.gemm(pass_name)
    if pass_name == "wgrad":
        config = default_wgrad_tile(problem, element_size, capability)
        split = default_wgrad_split(problem, config, sm_count, element_size)
        return KernelConfig(**{**config.as_dict(), "split_k": split})
    walked = problem.in_per_group if pass_name == "fprop" else problem.out_per_group
    if pass_name == "fprop" and row_spans(problem, channels_last):
        walked = problem.kernel_w * problem.in_per_group
    config = default_config(GemmShape(m, n, walked), element_size, capability)
    if (walked * element_size) % 16:
        # The activations cannot move in 16-byte vectors: element-wise loads through registers,
        # whose addresses and masks 8 warps share out (4 spilled on the 3-channel stem).
        config = KernelConfig(**{**config.as_dict(), "num_warps": 8})
    return config


def tap_channels(problem: ConvProblem, element_size: int) -> int:
    """The channels per group of the zero-padded copy of x that the kernel reads (TAP_CHANNELS), or 0
    for x itself.

    When C/g is a few channels whose pixels are not 16-byte multiples (a 3-channel stem), a column
    tile straddles taps (r, s, c): each element has its own padding test and x loads element by
    element through registers. A copy of x with CHANNEL_VECTOR channels per group makes each tap's
    channels one vector and a tile BLOCK_N / CHANNEL_VECTOR whole taps. Its cost per call: the copy
    (ResNet-50's stem at N=32 in bf16: 12.8 MB zeroed, 9.6 MB read and written into it) and
    CHANNEL_VECTOR / (C/g) the multiply-adds (4/3); the zeros add nothing to dw, and only the real
    channels are stored.

    Depthwise layers (C/g = 1) keep the copy although a tap is one element either way. Read from x
    itself at the untuned 64x16 tile, their loops issue a third of the copy's instructions per useful
    multiply-add (one column tile per group, not 3), but the pruned space tunes 64x64 tiles only, and
    there x itself issues 1.4x the copy's and spills (sm_90, bf16, Triton 3.6 and 3.9; notes/kernels.md,
    "Found on the way"). A GPU, tuning by default, would pay that; the copy's bytes are for it to time.

    The kernel forms the copy's strides itself, in 32-bit ints (wgrad_kernel's x_sn = H·W·g·vector):
    an image whose copy reaches 2**31 elements reads x itself."""
    c = problem.in_per_group
    few = c < CHANNEL_VECTOR and (c * element_size) % 16 and problem.kernel_h * problem.kernel_w > 1
    fits = problem.height * problem.width * problem.groups * CHANNEL_VECTOR < 2**31
    return CHANNEL_VECTOR if few and fits else 0


def wgrad_columns(problem: ConvProblem, element_size: int = 2) -> int:
    """wgrad's GEMM columns per group as its launch tiles them: C/g·R·S, or CHANNEL_VECTOR·R·S when
    the launcher pads x (tap_channels). The padded columns are computed and dropped: they cost tiles
    (the split rule and the model count them) but add nothing to dw. The default element size is
    the 16-bit one; 2 and 4 bytes give the same columns (tap_channels pads the same C/g for both)."""
    channels = tap_channels(problem, element_size) or problem.in_per_group
    return channels * problem.kernel_h * problem.kernel_w


def tile_grid(
    problem: ConvProblem, pass_name: str, config: KernelConfig, element_size: int = 2
) -> tuple[int, int]:
    """(row tiles, column tiles) of one group's GEMM in one launch, as the pass's launcher tiles it:
    dgrad's for each stride phase (every phase gets phase 0's row tiles, the most), wgrad's columns
    as its launch pads them (wgrad_columns), and "dgrad_masked" all N·H·W rows at once. The grid
    is these tiles times groups, stride phases (dgrad) and split_k."""
    if pass_name == "fprop":
        rows, columns = problem.gemm("fprop").m, problem.out_per_group
    elif pass_name == "dgrad":
        rows, columns = problem.dgrad_launch_rows(), problem.in_per_group
    elif pass_name == "dgrad_masked":
        rows, columns = problem.batch * problem.height * problem.width, problem.in_per_group
    elif pass_name == "wgrad":
        rows, columns = problem.out_per_group, wgrad_columns(problem, element_size)
    else:
        raise ValueError(f"pass_name must be fprop, dgrad, dgrad_masked or wgrad, got {pass_name!r}")
    return cdiv(rows, config.block_m), cdiv(columns, config.block_n)


def output_tiles(problem: ConvProblem, pass_name: str, config: KernelConfig, element_size: int = 2) -> int:
    """Output tiles of one launch, before any split: tile_grid's over every group and (dgrad) every
    stride phase."""
    phases = problem.phase_count if pass_name == "dgrad" else 1
    tiles_m, tiles_n = tile_grid(problem, pass_name, config, element_size)
    return tiles_m * tiles_n * problem.groups * phases


# 4 channels: 8-byte vectors of bf16. Against 8 (16-byte vectors, but 8/3 the multiply-adds of a
# 3-channel stem) they issued fewer instructions per useful multiply-add (notes/kernels.md).
CHANNEL_VECTOR = 4


def row_spans(problem: ConvProblem, channels_last: bool = True) -> bool:
    """fprop walks each tap row's (s, c) pairs as one contiguous run when there are few channels
    (C/g < 16), one group and no column dilation, in channels_last (launchers/fprop.py requires NHWC
    x and KRSC w; `channels_last` is the tuning key's flag, which says so for both in the usual case
    of one layout for the model's activations and weights)."""
    return (
        channels_last
        and problem.in_per_group < 16
        and problem.groups == 1
        and problem.dilation[1] == 1
        and problem.kernel_w > 1
    )
