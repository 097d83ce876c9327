"""The time of one call: a roofline over the tiles and waves, plus the per-call floor and split-K's
serial sum of partial tiles.

FLOPs (`flops`) = 2·N·P·Q·K·(C/g)·R·S for every pass (problem.flops("fprop")): the work TFLOP/s is
quoted against; `work_flops` (tiles.py) is what the tiles compute.
Compulsory bytes (`bytes`) = each tensor of the pass read or written once, at the element size:
fprop x, w -> y; dgrad dy, w -> dx; wgrad dy, x -> dw; of x only the pixels some filter window
covers (a 1x1 stride-2 convolution reads a quarter of its input; dgrad writes all of dx).
Split-K adds `splitk_bytes` = 2 · 4 · BM·BN · T (each split writes an fp32 partial tile to the
workspace, the last split reads them all back).
intensity = flops / bytes (FLOP per compulsory byte).

compute_s = work_flops / (peak · η_tile · η_k · η_wave) (tiles.py): waves · (one tile's BK steps at
  peak / W), each slot running at 1/W of the peak whether or not the other slots are busy.
  peak: device.peak_flops(dtype) (fp32 uses TF32 when allow_tf32, a type without tensor cores runs
  at the fp32 FMA rate).
memory_s = (bytes + splitk_bytes) / bandwidth.
serial_s = split-K's serial sum: the split that finishes a tile reads its partial tiles one after
  another (split_sum.split_sum_reads: split_k of them up to 8 splits, about 2·sqrt(split_k) + 2 in
  two levels beyond), each read a round trip that no other CTA's work hides, SPLIT_READ_S per
  64x64 fp32 partial (16 KiB) and in proportion to a partial's bytes. It is a latency, measured as
  one, so the achieved fraction does not scale it.
time_s = call_floor_s + max(compute_s, memory_s) / achieved_fraction + serial_s   (terms.py names
  the floor and the fraction).
tflops = flops / time_s / 1e12; efficiency = flops / time_s / peak. Both count the conventional
  FLOPs (the forward's, as benchmarks quote every pass), so a strided dgrad, whose stride phases
  skip the products that meet padding, can show an efficiency above 1 (a 4x4 stride-2 kernel padded
  by 3 on an 8x8 input computes 256 of every 576 conventional products).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

from ..configs import KernelConfig
from ..devices import DeviceSpec, get_device
from ..problem import ConvProblem
from ..split_sum import split_sum_reads
from .arguments import check_config, check_flag, check_problem
from .resources import check_pass, dtype_kind, smem_per_cta
from .terms import DEFAULT_TERMS, Terms
from .tiles import TileStats, tile_stats, work_flops

# Seconds for the finishing split to read one 64x64 fp32 partial tile: the campaign of 2026-12-04
# (H200) timed layer1.0.conv1's weight gradient in one 64x64 tile at 2 to 64 splits and N = 1 to
# 128, and t = a + b·(steps per split) + c·split fits c = 0.33, 0.33, 0.34 and 0.41 µs
# (`python bench/since_campaign.py --fit`; the lowest three, where one wave holds every split).
# No other device was timed: the same seconds are assumed on every one.
SPLIT_READ_S = 0.33e-6
_TIMED_PARTIAL_ELEMENTS = 64 * 64


def split_sum_s(config: KernelConfig) -> float:
    """serial_s of the module docstring: the finishing split's partial reads, one after another."""
    config = check_config(config, optional=False)
    reads = split_sum_reads(config.split_k)
    return reads * SPLIT_READ_S * config.block_m * config.block_n / _TIMED_PARTIAL_ELEMENTS


@functools.lru_cache(maxsize=4096)
def _covered(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Input rows (or columns) in [0, size) that at least one of the `out` windows reads."""
    return len(
        {o * stride - pad + k * dilation for o in range(out) for k in range(kernel)} & set(range(size))
    )


def read_input_elements(problem: ConvProblem) -> int:
    """Elements of x some window covers: N · C · covered rows · covered columns."""
    rows = _covered(problem.height, problem.out_height, problem.kernel_h, problem.stride[0], problem.pad_top,
                    problem.dilation[0])  # fmt: skip
    cols = _covered(problem.width, problem.out_width, problem.kernel_w, problem.stride[1], problem.pad_left,
                    problem.dilation[1])  # fmt: skip
    return problem.batch * problem.in_channels * rows * cols


def compulsory_bytes(problem: ConvProblem, pass_name: str, dtype="fp16") -> int:
    """Each tensor the pass reads or writes, once: fprop x, w -> y; dgrad dy, w -> dx; wgrad dy, x -> dw
    (x: the covered pixels only; dx: all of it)."""
    check_pass(pass_name)
    problem = check_problem(problem)
    _, size = dtype_kind(dtype)
    x, w, y = (math.prod(s) for s in (problem.input_shape, problem.weight_shape, problem.output_shape))
    read = read_input_elements(problem)
    return size * {"fprop": read + w + y, "dgrad": y + w + x, "wgrad": y + read + w}[pass_name]


@dataclass(frozen=True)
class Prediction:
    """The model's time for one pass of one problem with one config on one device."""

    stats: TileStats
    config: KernelConfig
    dtype: str  # "fp16", "bf16" or "fp32"
    flops: int  # 2·N·P·Q·K·(C/g)·R·S
    work_flops: int  # what the tiles compute (dgrad: its stride phases)
    bytes: int  # compulsory
    splitk_bytes: int  # the split-K workspace round trip
    intensity: float  # flops / bytes
    peak_flops: float  # FLOP/s
    compute_s: float  # at the datasheet peak (achieved fraction 1)
    memory_s: float  # at the datasheet bandwidth
    floor_s: float  # the per-call floor
    achieved_fraction: float
    serial_s: float  # split-K's serial sum of the partial tiles (a latency: not scaled)
    time_s: float  # floor_s + max(compute_s, memory_s) / achieved_fraction + serial_s
    tflops: float  # flops / time_s / 1e12
    efficiency: float  # conventional FLOP/s over the peak (above 1 where work_flops < flops)
    bound: str  # "compute" or "memory"

    # The tile statistics, under the names of the design card (prediction.tiles, .waves, ...).
    _STATS_NAMES = frozenset(
        ("gemm_m", "gemm_n", "gemm_k", "tiles", "ctas_per_sm", "slots", "waves",
         "tile_efficiency", "wave_efficiency", "reduction_efficiency")
    )  # fmt: skip

    def __getattr__(self, name):
        if name in Prediction._STATS_NAMES:
            return getattr(self.stats, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def roofline_s(self) -> float:
        """max(compute_s, memory_s): what the achieved fraction scales."""
        return max(self.compute_s, self.memory_s)

    @property
    def ideal_s(self) -> float:
        """roofline_s + serial_s: the time at achieved fraction 1 without the floor, which the
        config choice ranks by (choice.py)."""
        return self.roofline_s + self.serial_s

    @property
    def time_per_image_s(self) -> float:
        return self.time_s / self.stats.batch


def fit_shared_memory(config: KernelConfig, element_size: int, device: DeviceSpec | str) -> KernelConfig:
    """`config`, with fewer stages (down to 2), then a smaller BK (down to 16), until its shared
    memory fits the device's per-block maximum; raises ValueError when even that does not fit."""
    device = get_device(device)
    while smem_per_cta(config, element_size, device.compute_capability) > device.smem_per_block:
        if config.num_stages > 2:
            config = replace(config, num_stages=config.num_stages - 1)
        elif config.block_k > 16:
            config = replace(config, block_k=config.block_k // 2)
        else:
            raise ValueError(f"{config} does not fit {device.name}'s shared memory")
    return config


def reference_config(
    pass_name: str = "fprop", dtype="fp16", device: DeviceSpec | str | None = None, split_k: int = 1
) -> KernelConfig:
    """The design card's fixed tile: 128x128, BK 64 for 2-byte types (32 for fp32, the same 32 KiB
    per stage), 4 stages, 8 warps, GROUP_M 8. The batching knee and the worked example are stated for
    it; predictions choose their config (choice.best_config) unless given one.

    With a device, a config whose shared memory exceeds the per-block maximum is shrunk
    (fit_shared_memory: T4 2 stages; GTX 1050 2 stages and BK 32 in fp16).
    """
    check_pass(pass_name)
    _, size = dtype_kind(dtype)
    config = KernelConfig(128, 128, 64 if size <= 2 else 32, 8, split_k, 8, 4)
    return config if device is None else fit_shared_memory(config, size, device)


def predict_config(
    problem: ConvProblem,
    pass_name: str,
    config: KernelConfig,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    allow_tf32: bool = True,
    terms: Terms = DEFAULT_TERMS,
    row_spans: bool = True,
) -> Prediction:
    """The time of one pass with `config` (formulas in the module docstring); `terms` the floor and
    achieved fraction (terms.py; its stack overhead is a network's, not a call's); `row_spans` how
    fprop walks few channels (tiles.py). choice.predict is the same with the config an autotuner
    would pick when none is given."""
    problem, config = check_problem(problem), check_config(config, optional=False)
    allow_tf32, row_spans = check_flag(allow_tf32, "allow_tf32"), check_flag(row_spans, "row_spans")
    if not isinstance(terms, Terms):
        raise TypeError(f"terms must be a Terms, got {terms!r}")
    device = get_device(device)
    kind, size = dtype_kind(dtype)
    stats = tile_stats(problem, pass_name, config, device, dtype, row_spans=row_spans)
    flops = problem.flops("fprop")
    work = work_flops(problem, pass_name)
    nbytes = compulsory_bytes(problem, pass_name, dtype)
    splitk_bytes = 2 * 4 * config.block_m * config.block_n * stats.tiles if config.split_k > 1 else 0
    peak = device.peak_flops(kind, allow_tf32)
    efficiency = stats.tile_efficiency * stats.reduction_efficiency * stats.wave_efficiency
    compute_s = work / (peak * efficiency) if work else 0.0
    memory_s = (nbytes + splitk_bytes) / device.mem_bandwidth
    serial_s = split_sum_s(config)
    time_s = terms.call_floor_s + max(compute_s, memory_s) / terms.achieved_fraction + serial_s
    return Prediction(
        stats=stats,
        config=config,
        dtype=kind,
        flops=flops,
        work_flops=work,
        bytes=nbytes,
        splitk_bytes=splitk_bytes,
        intensity=flops / nbytes if nbytes else 0.0,
        peak_flops=peak,
        compute_s=compute_s,
        memory_s=memory_s,
        floor_s=terms.call_floor_s,
        achieved_fraction=terms.achieved_fraction,
        serial_s=serial_s,
        time_s=time_s,
        tflops=flops / time_s / 1e12,
        efficiency=flops / time_s / peak,
        bound="compute" if compute_s >= memory_s else "memory",
    )
