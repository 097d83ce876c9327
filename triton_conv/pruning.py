"""Pruning: what cannot win on a given problem and GPU, removed before any timing.

`prune` applies PROBLEM_RULES to a pass's space (search_space.config_space) rule by rule and keeps
at most MAX_SURVIVORS. Every rule is a small function whose docstring is the rule in words; `prune` reports
what each one removed, so a reader can follow why a config was never timed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .arguments import ConvArgumentError
from .configs import (
    MIN_STEPS_PER_SPLIT,
    KernelConfig,
    cdiv,
    output_tiles,
    row_spans,
    wgmma_eligible,
    wgrad_columns,
)
from .devices import DeviceSpec, get_device
from .problem import ConvProblem
from .search_space import config_space
from .tuning_keys import bucket

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
    channels_last: bool = True  # fprop's few-channel walk (configs.row_spans) needs it

    @property
    def element_size(self) -> int:
        return self.dtype.itemsize

    def dims(self) -> tuple[int, int, int]:
        """(rows, columns, the dimension BLOCK_K walks) of one launch's tiles, as the launchers tile:
        dgrad tiles every stride phase as the one with the most rows; fprop and dgrad walk channels per tap;
        wgrad's columns are those of x's zero-padded copy where it reads one (wgrad_columns)."""
        p = self.problem
        m, n, k = p.gemm(self.pass_name)
        if self.pass_name == "fprop":
            return m, n, p.kernel_w * p.in_per_group if row_spans(p, self.channels_last) else p.in_per_group
        if self.pass_name == "dgrad":
            return p.dgrad_launch_rows(), n, p.out_per_group
        return m, wgrad_columns(p, self.element_size), k

    def tiles(self, c: KernelConfig) -> int:
        """Output tiles of one launch (all groups and stride phases), before any split."""
        return output_tiles(self.problem, self.pass_name, c, self.element_size)

    def reduction_steps(self, c: KernelConfig) -> int:
        """BLOCK_K steps of the longest tile's whole reduction (all its taps; dgrad: the phase with the
        most taps)."""
        _, _, walked = self.dims()
        p = self.problem
        if self.pass_name == "fprop":
            taps = p.kernel_h * (1 if row_spans(p, self.channels_last) else p.kernel_w)
        elif self.pass_name == "dgrad":
            taps = p.dgrad_most_taps()
        else:
            taps = 1
        return taps * cdiv(walked, c.block_k)

    def fill_score(self, c: KernelConfig) -> float:
        """Tile efficiency (useful / computed elements) x the fraction of SM-waves busy, one CTA per
        SM: a deliberately crude ranking of which configs keep the most SMs busy with the least
        masked work (triton_conv.model is the model that is reported)."""
        rows, cols, _ = self.dims()
        tiles = self.tiles(c)
        if tiles == 0:
            return 0.0
        sms = self.device.sm_count
        launched = tiles * c.split_k
        tile_eff = rows * cols / (cdiv(rows, c.block_m) * c.block_m * cdiv(cols, c.block_n) * c.block_n)
        return tile_eff * launched / (cdiv(launched, sms) * sms)


def shared_memory(c: KernelConfig, t: Target) -> bool:
    """The operand pipeline (KernelConfig.shared_bytes: num_stages buffers on Hopper, one fewer on
    CC 8.x) fits the GPU's shared memory per block (227 KiB on Hopper, 163 KiB on A100, 99 KiB on an
    RTX 4090): a larger config fails to launch."""
    return c.shared_bytes(t.element_size, t.device.compute_capability) <= t.device.smem_per_block


def operand_registers(c: KernelConfig, element_size: int) -> int:
    """Registers per thread for the fp32 accumulator and one BLOCK_K step of A and B fragments:
    BM x BN / threads + (BM + BN) x BK x bytes / (4 x threads)."""
    threads = 32 * c.num_warps
    return (c.block_m * c.block_n + (c.block_m + c.block_n) * c.block_k * element_size // 4) // threads


def accumulator_registers(c: KernelConfig) -> int:
    """fp32 accumulator registers per thread: BM x BN / threads."""
    return c.block_m * c.block_n // (32 * c.num_warps)


def register_budget(c: KernelConfig, t: Target) -> bool:
    """What a thread must hold takes at most 128 of its 255 registers; the rest holds addresses,
    masks and loop state. With mma.sync (and fp32 anywhere) that is the accumulator plus one BK
    step of operand fragments (operand_registers): the sm_90 compile of wgrad spilled at 160 (fp32,
    BK 64, 4 warps on 128x64) and did not at 128 (fp32 128x128x64, 8 warps). A 16-bit wgmma on
    Hopper reads its operands from shared memory, so there only the accumulator counts (128 for a
    one-warpgroup 128x128 tile, which compiles without spills)."""
    return budgeted_registers(c, t) <= 128


def budgeted_registers(c: KernelConfig, t: Target) -> int:
    """The registers per thread register_budget holds to 128."""
    if t.device.compute_capability[0] == 9 and t.element_size == 2 and wgmma_on_hopper(c, t):
        return accumulator_registers(c)
    return operand_registers(c, t.element_size)


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
    """On Hopper (sm_90) a 16-bit or TF32 dot becomes wgmma only in some configs
    (configs.wgmma_eligible); the others fall back to mma.sync at a fraction of the rate, so they
    are not timed there. float64 has no wgmma either way."""
    if t.device.compute_capability[0] != 9 or t.dtype == torch.float64:
        return True
    return wgmma_eligible(t.dtype, c.block_m, c.num_warps)


def element_loads_take_eight_warps(c: KernelConfig, t: Target) -> bool:
    """When fprop's channels per step are not a multiple of 16 bytes (a 3-channel stem), the
    activations load element by element through registers, and a 4-warp CTA with 128-row tiles
    runs out of them (the stem spilled 176 bytes at 128x64x32, 4 warps, on sm_90): such tiles
    take 8 warps."""
    if t.pass_name != "fprop" or (t.dims()[2] * t.element_size) % 16 == 0:
        return True
    return c.num_warps == 8 or c.block_m < 128


def per_element_taps_stay_narrow(c: KernelConfig, t: Target) -> bool:
    """wgrad column tiles that straddle filter taps (C/g not a multiple of BLOCK_N) test every
    element's padding; wider than 64 columns they ran out of registers (the 3-channel stem spilled
    1,680 bytes at 64x128, 4 warps, with Triton 3.6 on sm_90)."""
    p = t.problem
    if t.pass_name != "wgrad" or p.kernel_h * p.kernel_w == 1 or p.in_per_group % c.block_n == 0:
        return True
    return c.block_n <= 64


PROBLEM_RULES = (
    shared_memory,
    register_budget,
    element_loads_take_eight_warps,
    per_element_taps_stay_narrow,
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
        if cdiv(rows, c.block_m) == 1 or cdiv(cols, c.block_n) == 1:
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
    *,
    channels_last: bool = True,
) -> Pruning:
    """Apply PROBLEM_RULES in order, then merge GROUP_M variants with the same tile order
    ('same_tile_order') and keep the max_configs best by Target.fill_score ('cap')."""
    if isinstance(max_configs, bool) or not isinstance(max_configs, int) or max_configs < 1:
        # 0 kept nothing, and the tuning that timed them failed on an empty list (IndexError)
        raise ConvArgumentError(f"max_configs must be a positive int, got {max_configs!r}")
    configs = list(configs)
    floors = tuple(
        min((getattr(c, a) for c in configs), default=16) for a in ("block_m", "block_n", "block_k")
    )
    target = Target(problem, pass_name, dtype, get_device(device), floors, channels_last)
    removed: dict[str, tuple[KernelConfig, ...]] = {}
    relaxed = []
    for rule in PROBLEM_RULES:
        kept = [c for c in configs if rule(c, target)]
        if not kept and configs:
            relaxed.append(rule.__name__)
            continue
        removed[rule.__name__] = _left_out(configs, kept)
        configs = kept
    kept = _same_tile_order(configs, target)
    removed["same_tile_order"] = _left_out(configs, kept)
    ranked = sorted(
        kept,
        key=lambda c: (-round(target.fill_score(c), 6), -c.block_m * c.block_n, c.split_k),
    )
    removed["cap"] = tuple(ranked[max_configs:])
    capped = set(ranked[:max_configs])
    survivors = tuple(c for c in kept if c in capped)
    return Pruning(survivors, removed, tuple(relaxed))


def _left_out(configs: list, kept: list) -> tuple:
    kept_set = set(kept)  # configs are frozen dataclasses: a set, not a scan of the list per config
    return tuple(c for c in configs if c not in kept_set)


def pruned_space(
    problem: ConvProblem,
    pass_name: str,
    dtype: torch.dtype,
    device: DeviceSpec | str,
    max_configs: int = MAX_SURVIVORS,
    *,
    channels_last: bool = True,
) -> list[KernelConfig]:
    """The configs worth timing for this problem on this GPU: the pass's space, pruned."""
    space = config_space(pass_name)
    survivors = prune(
        space, problem, pass_name, dtype, device, max_configs, channels_last=channels_last
    ).survivors
    return list(survivors)
