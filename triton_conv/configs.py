"""Tile configurations: what a kernel launch is parameterised by, the default choice, and the search
space the tuner times.

Each pass's space is generated, not listed: `SubSpace`s are itertools.products over short axis lists,
filtered by the problem-independent SHAPE_RULES below. Before any timing, `prune` removes what cannot
win on a given problem and GPU, rule by rule (PROBLEM_RULES), and keeps at most MAX_SURVIVORS.
Every rule is a small function whose docstring is the rule in words; `prune` reports what each one
removed, so a reader can follow why a config was never timed.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass, fields

import torch

from .devices import DeviceSpec, get_device
from .problem import PASSES, ConvProblem, GemmShape
from .runtime import fp32_uses_tf32


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class KernelConfig:
    """One tile shape and schedule. Blocks are powers of two and at least 16 (a GPU dot's minimum)."""

    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    group_m: int = 8
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or not _is_power_of_two(value) or value < 16:
                raise ValueError(f"config.{name} must be a power of two >= 16, got {value!r}")
        for name in ("group_m", "split_k", "num_warps", "num_stages"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"config.{name} must be a positive int, got {value!r}")
        if not _is_power_of_two(self.num_warps):
            raise ValueError(f"config.num_warps must be a power of two, got {self.num_warps}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> KernelConfig:
        names = {f.name for f in fields(cls)}
        if set(values) != names:
            raise ValueError(f"a config needs exactly the fields {sorted(names)}, got {sorted(values)}")
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


def default_config(shape: GemmShape, element_size: int) -> KernelConfig:
    """A reasonable config without tuning: big tiles for big GEMMs, no wider than the problem."""
    block_m = 128 if shape.m >= 4096 else 64
    block_n = _fit(shape.n, 16, 128)
    block_k = _fit(shape.k, 16, 64 if element_size <= 2 else 32)
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return KernelConfig(block_m, block_n, block_k, 8, 1, num_warps, 3)


# A split should keep at least this many BLOCK_K steps: with fewer, the loads of a num_stages-deep
# pipeline never overlap the dots, and the split's workspace round trip (two BM x BN fp32 tiles)
# costs about as much as its own loads.
MIN_STEPS_PER_SPLIT = 4


def default_wgrad_split(problem: ConvProblem, config: KernelConfig, sm_count: int) -> int:
    """split_k for a wgrad launch with `config`'s tiles on a GPU with `sm_count` SMs.

    The rule, in words: wgrad's output tiles (K/BM x C·R·S/BN per group) do not grow with the batch,
    so when they are fewer than the SMs, split the N·P·Q reduction until tiles x split is about one
    wave, floor(sm_count / tiles), never past one wave (a partial second wave costs a whole wave's
    time), and no further than leaves each split MIN_STEPS_PER_SPLIT BLOCK_K steps of reduction.
    """
    gemm = problem.gemm("wgrad")
    tiles = problem.groups * _cdiv(gemm.m, config.block_m) * _cdiv(gemm.n, config.block_n)
    steps = _cdiv(gemm.k, config.block_k)
    if tiles == 0 or steps == 0:
        return 1
    fill = sm_count // tiles
    return max(1, min(fill, steps // MIN_STEPS_PER_SPLIT))


def default_pass_config(problem: ConvProblem, pass_name: str, dtype: torch.dtype, sm_count: int = 132):
    """The untuned config of one pass: default_config on the pass's GEMM; wgrad adds the split that
    default_wgrad_split chooses (wgrad's tiles do not grow with the batch)."""
    element_size = torch.empty((), dtype=dtype).element_size()
    config = default_config(problem.gemm(pass_name), element_size)
    if pass_name == "wgrad":
        split = default_wgrad_split(problem, config, sm_count)
        config = KernelConfig(**{**config.as_dict(), "split_k": split})
    return config


# --- the space: products of axis lists, filtered by shape rules ------------------------------------


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

    def product(self):
        axes = ("block_m", "block_n", "block_k", "num_warps", "num_stages", "group_m", "split_k")
        for values in itertools.product(*(getattr(self, axis) for axis in axes)):
            yield KernelConfig(**dict(zip(axes, values, strict=True)))


def tile_area(c: KernelConfig) -> bool:
    """64x64 <= BM x BN <= 128x128: a smaller tile re-reads its operands too often to feed the tensor
    cores; a larger one needs more than 8 warps to hold its fp32 accumulator (next rule)."""
    return 64 * 64 <= c.block_m * c.block_n <= 128 * 128


def accumulator_per_thread(c: KernelConfig) -> bool:
    """32 <= BM x BN / (32 x num_warps) <= 64 fp32 accumulator registers per thread: fewer leaves
    warps too little work per load; more leaves too few of a thread's 255 registers for the
    operands and addresses (the sm_90 report saw 128 spill in fp32)."""
    return 32 <= c.block_m * c.block_n // (32 * c.num_warps) <= 64


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
_WGRAD = (
    SubSpace(
        "dense", block_m=(64, 128), block_n=(64, 128), block_k=(32, 64),
        num_warps=(4, 8), num_stages=(3, 4), group_m=(1, 8), split_k=(1,),
    ),
    SubSpace(
        "split", block_m=(64, 128), block_n=(64, 128), block_k=(64,),
        num_warps=(4,), num_stages=(3,), group_m=(8,), split_k=(2, 4, 8, 16, 32, 64),
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


# --- the key: the GEMM view of a problem, with the growing dimension bucketed ----------------------


def bucket(size: int) -> int:
    """The power of two at or above `size` (0 stays 0): the tuning key's pixel dimension."""
    return 0 if size <= 0 else 1 << (size - 1).bit_length()


_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES[dtype]


def tuning_key(problem: ConvProblem, pass_name: str, dtype: torch.dtype, channels_last: bool) -> str:
    """What the tuned config depends on: the pass's GEMM per group with its pixel dimension (M for
    fprop and dgrad, the reduction for wgrad) bucketed to a power of two, the filter, stride,
    dilation, groups, dtype (fp32 reads 'tf32' when cuDNN's setting lets the kernels use TF32, a
    different kernel) and layout. Batch and image size enter only through that bucket, so a
    new image size does not always mean a new search. Example:
    'fprop fp16 nhwc M~4096 N=64 K=576 RxS=3x3 stride=1x1 dil=1x1 g=1' (~: bucketed)."""
    m, n, k = problem.gemm(pass_name)
    kind = "tf32" if dtype == torch.float32 and fp32_uses_tf32() else dtype_name(dtype)
    m_text, k_text = (f"M={m}", f"K~{bucket(k)}") if pass_name == "wgrad" else (f"M~{bucket(m)}", f"K={k}")
    return (
        f"{pass_name} {kind} {'nhwc' if channels_last else 'nchw'} {m_text} N={n} {k_text} "
        f"RxS={problem.kernel_h}x{problem.kernel_w} stride={problem.stride[0]}x{problem.stride[1]} "
        f"dil={problem.dilation[0]}x{problem.dilation[1]} g={problem.groups}"
    )


# --- pruning: what cannot win on this problem and this GPU, before any timing ----------------------

MAX_SURVIVORS = 24  # the most configs one tuning times


@dataclass(frozen=True)
class Target:
    """What the problem rules look at: one pass of one problem in one dtype on one GPU, and the
    smallest block sizes among the candidates (the floor a tile can shrink to)."""

    problem: ConvProblem
    pass_name: str
    dtype: torch.dtype
    device: DeviceSpec
    floors: tuple[int, int, int] = (16, 16, 16)

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def dims(self) -> tuple[int, int, int]:
        """(rows, columns, the dimension BLOCK_K walks) of one launch's tiles, as the launchers tile:
        dgrad tiles one stride phase (the largest) at a time; fprop and dgrad walk channels per tap."""
        p = self.problem
        m, n, k = p.gemm(self.pass_name)
        if self.pass_name == "fprop":
            return m, n, p.in_per_group
        if self.pass_name == "dgrad":
            phase = p.dgrad_phases()[0]
            return p.batch * phase.rows.count * phase.cols.count, n, p.out_per_group
        return m, n, k

    def tiles(self, c: KernelConfig) -> int:
        """Output tiles of one launch (all groups and stride phases), before any split."""
        rows, cols, _ = self.dims()
        p = self.problem
        phases = p.stride[0] * p.stride[1] if self.pass_name == "dgrad" else 1
        return _cdiv(rows, c.block_m) * _cdiv(cols, c.block_n) * p.groups * phases

    def reduction_steps(self, c: KernelConfig) -> int:
        """BLOCK_K steps of one tile's whole reduction (all taps)."""
        _, _, walked = self.dims()
        p = self.problem
        if self.pass_name == "fprop":
            taps = p.kernel_h * p.kernel_w
        elif self.pass_name == "dgrad":
            phase = p.dgrad_phases()[0]
            taps = phase.rows.taps * phase.cols.taps
        else:
            taps = 1
        return taps * _cdiv(walked, c.block_k)

    def fill_score(self, c: KernelConfig) -> float:
        """Tile efficiency (useful / computed elements) x the fraction of SM-waves busy, one CTA per
        SM: a deliberately crude ranking of which configs keep the most SMs busy with the least
        masked work (occupancy.py is the model that is reported)."""
        rows, cols, _ = self.dims()
        tiles = self.tiles(c)
        if tiles == 0:
            return 0.0
        sms = self.device.sm_count
        launched = tiles * c.split_k
        tile_eff = rows * cols / (_cdiv(rows, c.block_m) * c.block_m * _cdiv(cols, c.block_n) * c.block_n)
        return tile_eff * launched / (_cdiv(launched, sms) * sms)


def shared_bytes(c: KernelConfig, element_size: int) -> int:
    """The operand pipeline's shared memory: stages x (BM x BK + BK x BN) x bytes per element."""
    return c.num_stages * (c.block_m * c.block_k + c.block_k * c.block_n) * element_size


def shared_memory(c: KernelConfig, t: Target) -> bool:
    """stages x (BM x BK + BK x BN) x bytes fits the GPU's shared memory per block (227 KiB on
    Hopper, 163 KiB on A100, 99 KiB on an RTX 4090): a larger config fails to launch."""
    return shared_bytes(c, t.element_size) <= t.device.smem_per_block


def operand_registers(c: KernelConfig, element_size: int) -> int:
    """Registers per thread for the fp32 accumulator and one BLOCK_K step of A and B fragments:
    BM x BN / threads + (BM + BN) x BK x bytes / (4 x threads)."""
    threads = 32 * c.num_warps
    return (c.block_m * c.block_n + (c.block_m + c.block_n) * c.block_k * element_size // 4) // threads


def register_budget(c: KernelConfig, t: Target) -> bool:
    """Accumulator plus one BK step of operand fragments (operand_registers) take at most 128 of a
    thread's 255 registers; the rest holds addresses, masks and loop state. The sm_90 compile of
    wgrad spilled at 160 (fp32, BK 64, 4 warps on 128x64) and did not at 128 (fp32 128x128x64,
    8 warps): fp32 operands are twice the registers of 16-bit ones."""
    return operand_registers(c, t.element_size) <= 128


def tile_fits_problem(c: KernelConfig, t: Target) -> bool:
    """No block is larger than the smallest power of two covering its dimension (unless it is the
    smallest block available): BM=128 on 40 rows computes 88 masked rows. Rows and columns are
    the tile's GEMM dimensions; BLOCK_K walks channels per tap (fprop, dgrad) or pixels (wgrad)."""
    rows, cols, walked = t.dims()
    return all(
        block <= max(bucket(size), floor)
        for block, size, floor in zip(
            (c.block_m, c.block_n, c.block_k), (rows, cols, walked), t.floors, strict=True
        )
    )


def split_only_when_idle(c: KernelConfig, t: Target) -> bool:
    """Split the reduction only when the output tiles are fewer than the SMs: otherwise the tiles
    already occupy every SM and a split only adds the partial sums' round trip."""
    return c.split_k == 1 or t.tiles(c) < t.device.sm_count


def split_within_two_waves(c: KernelConfig, t: Target) -> bool:
    """tiles x split_k <= 2 x SMs: a larger split makes waves of CTAs that each do less work."""
    return c.split_k == 1 or t.tiles(c) * c.split_k <= 2 * t.device.sm_count


def split_keeps_work(c: KernelConfig, t: Target) -> bool:
    """Each split keeps at least MIN_STEPS_PER_SPLIT BLOCK_K steps, or its pipeline never fills."""
    return c.split_k == 1 or t.reduction_steps(c) >= MIN_STEPS_PER_SPLIT * c.split_k


def wgmma_on_hopper(c: KernelConfig, t: Target) -> bool:
    """On Hopper (sm_90) a 16-bit or TF32 dot becomes wgmma only with whole warpgroups (num_warps a
    multiple of 4) and BM a multiple of 64 (compile_check.wgmma_eligible); otherwise it silently
    falls back to mma.sync at a fraction of the rate, so such configs are not timed there."""
    if t.device.compute_capability[0] != 9 or t.dtype == torch.float64:
        return True
    return c.num_warps % 4 == 0 and c.block_m % 64 == 0


PROBLEM_RULES = (
    shared_memory,
    register_budget,
    tile_fits_problem,
    split_only_when_idle,
    split_within_two_waves,
    split_keeps_work,
    wgmma_on_hopper,
)


@dataclass(frozen=True)
class Pruning:
    survivors: tuple[KernelConfig, ...]
    removed: dict  # rule name -> configs it removed (in rule order; each config counted once)
    relaxed: tuple[str, ...]  # rules that would have removed every remaining config, so removed none


def _same_tile_order(configs, t: Target) -> list[KernelConfig]:
    """With one row or one column of tiles every GROUP_M gives the same launch order: keep one
    (GROUP_M=8, the default, where it is among them)."""
    kept: dict[KernelConfig, KernelConfig] = {}
    for c in configs:
        rows, cols, _ = t.dims()
        if _cdiv(rows, c.block_m) == 1 or _cdiv(cols, c.block_n) == 1:
            canonical = KernelConfig(**{**c.as_dict(), "group_m": 8})
            if canonical not in kept or c.group_m == 8:  # keep the default GROUP_M
                kept[canonical] = c
        else:
            kept[c] = c
    return list(kept.values())


def prune(
    configs,
    problem: ConvProblem,
    pass_name: str,
    dtype: torch.dtype,
    device: DeviceSpec | str,
    max_configs: int = MAX_SURVIVORS,
) -> Pruning:
    """Apply PROBLEM_RULES in order, then merge GROUP_M variants with the same tile order
    ('same_tile_order') and keep the max_configs best by Target.fill_score ('cap')."""
    configs = list(configs)
    floors = tuple(
        min((getattr(c, a) for c in configs), default=16) for a in ("block_m", "block_n", "block_k")
    )
    target = Target(problem, pass_name, dtype, get_device(device), floors)
    removed: dict[str, tuple[KernelConfig, ...]] = {}
    relaxed = []
    for rule in PROBLEM_RULES:
        kept = [c for c in configs if rule(c, target)]
        if not kept and configs:
            relaxed.append(rule.__name__)
            continue
        removed[rule.__name__] = tuple(c for c in configs if c not in kept)
        configs = kept
    kept = _same_tile_order(configs, target)
    removed["same_tile_order"] = tuple(c for c in configs if c not in kept)
    ranked = sorted(
        kept,
        key=lambda c: (-round(target.fill_score(c), 6), -c.block_m * c.block_n, c.split_k),
    )
    removed["cap"] = tuple(ranked[max_configs:])
    survivors = tuple(c for c in kept if c in ranked[:max_configs])
    return Pruning(survivors, removed, tuple(relaxed))


def search_space(
    problem: ConvProblem,
    pass_name: str,
    dtype: torch.dtype,
    device: DeviceSpec | str,
    max_configs: int = MAX_SURVIVORS,
) -> list[KernelConfig]:
    """The configs worth timing for this problem on this GPU: the pass's space, pruned."""
    survivors = prune(config_space(pass_name), problem, pass_name, dtype, device, max_configs).survivors
    return list(survivors)
