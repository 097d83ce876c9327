"""Tiles and waves: how one pass's launch covers the GPU.

GEMM view, per group (problem.gemm): fprop M=N·P·Q, N=K/g, K=C/g·R·S; dgrad M=N·H·W, N=C/g,
K=K/g·R·S; wgrad M=K/g, N=C/g·R·S, K=N·P·Q.

tiles T = ceil(M/BM) · ceil(N/BN) · split_k · groups, the CTAs of the launch grid. Strided dgrad runs
stride_h·stride_w stride-phase sub-GEMMs in one launch, and the launcher gives every phase the tile
count of the largest (phase 0), so there M is replaced by phases · ceil(N·rows0·cols0 / BM)·BM.
wgrad with fewer than 4 channels per group and more than one tap (the 3-channel stem) reads x from a
zero-padded copy with 4 channels per group (configs.tap_channels), so its tiles cover
4·R·S columns, not C/g·R·S: the 7x7 stem's 196, 4 column tiles of 64 where 147 columns make 3.
Batching adds tiles in fprop and dgrad; wgrad's tiles do not depend on N (only split_k adds some).

tile efficiency η_tile = M·N·groups / ((T / split_k) · BM · BN): the fraction of the output tiles'
area that holds real outputs (a 14x14 image is 196 rows: two 128-row tiles, 77% used). Split-K tiles
cover the same outputs, so they are divided out.

reduction efficiency η_k = the useful share of the BK steps a tile runs, as the kernels walk the
reduction: fprop and dgrad walk channels per filter tap (C/g and K/g) in BK blocks, so a 16-channel
layer with BK 32 computes 16 useful channels of every 32 (η_k = 1/2); wgrad walks N·P·Q pixels.
fprop with few channels (configs.row_spans: C/g < 16, one group) walks each tap row's S·C/g
elements as one run instead, as it does in channels_last, the layout the model describes: the
7x7 3-channel stem fills 21 of every 32 (η_k = 21/32), not 3 of every 32. `row_spans=False`
describes a library that pads every tap's channels to its block instead (triton-conv on NCHW, and
cuDNN 7.6's implicit GEMM, whose published fp16 times on 1- and 3-channel layers follow it). The
split-K splits share the steps (steps = taps · ceil(channels / BK), or ceil(N·P·Q / BK)), and the
longest split, ceil(steps / split_k) steps, sets the time:
    η_k = useful reduction / (ceil(steps / split_k) · split_k · BK per tap).

slots W = SMs · CTAs per SM (resources.occupancy); waves = ceil(T / W); wave efficiency
η_wave = T / (waves · W); machine_fraction = min(T, W) / W, the share of slots the first wave uses.

work_flops is what the tiles compute: problem.flops for fprop and wgrad; for dgrad the sum over
stride phases of 2·(N·rows·cols)·(C/g)·(K/g)·taps·g (padding taps included, as the GEMM does them;
stride phases skip the zeros of a zero-stuffed gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..configs import KernelConfig, cdiv, output_tiles
from ..configs import row_spans as walks_row_spans
from ..devices import DeviceSpec, get_device
from ..problem import ConvProblem
from .arguments import check_config, check_problem
from .resources import Occupancy, check_pass, dtype_kind, occupancy


def launch_tiles(problem: ConvProblem, pass_name: str, config: KernelConfig) -> int:
    """The CTAs of the pass's launch grid (as the launchers build it): tiles x stride phases (dgrad)
    x split_k x groups."""
    check_pass(pass_name)
    problem, config = check_problem(problem), check_config(config, optional=False)
    return output_tiles(problem, pass_name, config) * config.split_k


def reduction_efficiency(
    problem: ConvProblem, pass_name: str, config: KernelConfig, *, row_spans: bool = True
) -> float:
    """η_k (module docstring): useful reduction over the BK steps the longest split runs. dgrad weighs
    each stride phase by its rows: a phase's tiles walk K/g once per tap of that phase."""
    check_pass(pass_name)
    if pass_name == "wgrad":
        parts = [(1, 1, problem.gemm("wgrad").k)]  # (rows, taps, walked)
    elif pass_name == "fprop" and row_spans and walks_row_spans(problem):
        parts = [(1, problem.kernel_h, problem.kernel_w * problem.in_per_group)]  # one run per tap row
    elif pass_name == "fprop":
        parts = [(1, problem.kernel_h * problem.kernel_w, problem.in_per_group)]
    else:
        parts = [(ph.rows.count * ph.cols.count, ph.rows.taps * ph.cols.taps, problem.out_per_group)
                 for ph in problem.dgrad_phases()]  # fmt: skip
    split, block = config.split_k, config.block_k
    useful = sum(rows * taps * walked for rows, taps, walked in parts)
    steps = [(rows, taps * cdiv(walked, block)) for rows, taps, walked in parts]  # BK steps of one tile
    executed = sum(rows * cdiv(count, split) * split * block for rows, count in steps)
    return useful / executed if executed else 1.0


def work_flops(problem: ConvProblem, pass_name: str) -> int:
    """FLOPs the tiles compute (see the module docstring): dgrad sums its stride phases' GEMMs."""
    check_pass(pass_name)
    problem = check_problem(problem)
    if pass_name != "dgrad":
        return problem.flops(pass_name)
    total = 0
    for phase in problem.dgrad_phases():
        taps = phase.rows.taps * phase.cols.taps
        rows = problem.batch * phase.rows.count * phase.cols.count
        total += 2 * rows * problem.in_per_group * problem.out_per_group * taps
    return total * problem.groups


@dataclass(frozen=True)
class TileStats:
    """How one pass's launch covers the GPU."""

    pass_name: str
    batch: int
    gemm_m: int  # per group (problem.gemm)
    gemm_n: int
    gemm_k: int
    groups: int
    block_m: int
    block_n: int
    split_k: int
    tiles: int  # CTAs of the launch
    ctas_per_sm: int
    limited_by: str
    slots: int  # CTAs the GPU runs at once
    waves: int
    tile_efficiency: float
    wave_efficiency: float
    occupancy: Occupancy
    reduction_efficiency: float = 1.0

    @property
    def machine_fraction(self) -> float:
        """The share of the slots the first wave occupies (4 tiles on 132 slots: 3%)."""
        return min(self.tiles, self.slots) / self.slots

    @property
    def fills_wave(self) -> bool:
        return self.tiles >= self.slots


def tile_stats(
    problem: ConvProblem,
    pass_name: str,
    config: KernelConfig,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    row_spans: bool = True,
) -> TileStats:
    """Tiles, slots, waves and both efficiencies of one pass (row_spans: how fprop walks few
    channels, module docstring). Raises ValueError if the config cannot run on the device (its shared
    memory exceeds the per-block maximum)."""
    check_pass(pass_name)
    problem, config = check_problem(problem), check_config(config, optional=False)
    device = get_device(device)
    _, size = dtype_kind(dtype)
    occ = occupancy(config, size, device)
    if occ.ctas_per_sm == 0:
        raise ValueError(
            f"config {config} cannot run on {device.name}: {occ.smem_per_cta} bytes of shared memory "
            f"(at most {device.smem_per_block}), {config.num_warps} warps, "
            f"{occ.regs_per_thread} registers per thread"
        )
    gemm = problem.gemm(pass_name)
    tiles = launch_tiles(problem, pass_name, config)
    slots = device.sm_count * occ.ctas_per_sm
    waves = cdiv(tiles, slots)
    useful = gemm.m * gemm.n * problem.groups
    capacity = (tiles // config.split_k) * config.block_m * config.block_n
    return TileStats(
        pass_name=pass_name,
        batch=problem.batch,
        gemm_m=gemm.m,
        gemm_n=gemm.n,
        gemm_k=gemm.k,
        groups=problem.groups,
        block_m=config.block_m,
        block_n=config.block_n,
        split_k=config.split_k,
        tiles=tiles,
        ctas_per_sm=occ.ctas_per_sm,
        limited_by=occ.limited_by,
        slots=slots,
        waves=waves,
        tile_efficiency=useful / capacity if capacity else 0.0,
        wave_efficiency=tiles / (waves * slots) if waves else 0.0,
        occupancy=occ,
        reduction_efficiency=reduction_efficiency(problem, pass_name, config, row_spans=row_spans),
    )
