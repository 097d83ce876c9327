"""The model: tiles, waves, a roofline, activation memory, the batching knee. Pure Python.

It explains what batching buys a convolution. The batch folds into the GEMM's M (fprop: N·P·Q rows;
dgrad: N·H·W rows); a launch makes one CTA per output tile; the GPU runs `slots` CTAs at once, so a
launch takes `waves` rounds, and a launch with fewer tiles than slots leaves SMs idle. This module
never imports a kernel or a launcher: it mirrors the launchers' grids from the geometry alone.

The formulas (names as in the fields of `TileStats` and `Prediction`)
--------------------------------------------------------------------
GEMM view, per group (problem.gemm): fprop M=N·P·Q, N=K/g, K=C/g·R·S; dgrad M=N·H·W, N=C/g,
K=K/g·R·S; wgrad M=K/g, N=C/g·R·S, K=N·P·Q.

tiles T = ceil(M/BM) · ceil(N/BN) · split_k · groups, the CTAs of the launch grid. Strided dgrad runs
stride_h·stride_w stride-phase sub-GEMMs in one launch, and the launcher gives every phase the tile
count of the largest (phase 0), so there M is replaced by phases · ceil(N·rows0·cols0 / BM)·BM.
Batching adds tiles in fprop and dgrad; wgrad's tiles do not depend on N (only split_k adds some).

tile efficiency η_tile = M·N·groups / ((T / split_k) · BM · BN): the fraction of the output tiles'
area that holds real outputs (a 14x14 image is 196 rows: two 128-row tiles, 77% used). Split-K tiles
cover the same outputs, so they are divided out. Padding of the reduction to BK is not counted.

CTAs per SM = min(by shared memory, by registers, by threads, the device's CTA limit):
  shared memory per CTA = stages · (BM·BK + BK·BN) · element size (Triton's own pruning rule), plus
    the driver's reservation per CTA (1 KiB on CC >= 8.0); by shared memory = floor(smem per SM /
    that), 0 when the kernel's part exceeds the per-block maximum (the config cannot launch).
  registers per thread, an estimate (a cubin's real count is in `cuobjdump -res-usage`):
    BM·BN / threads (the fp32 accumulator) + (BM + BN)·BK·element size / (4·threads) (one BK step of
    A and B fragments) + REGISTER_OVERHEAD (pointers, offsets, masks, loop state), rounded up to 8,
    capped at the device maximum (255; beyond it the compiler spills). 128x128x64 fp16 with 8 warps:
    64 + 32 + 32 = 128. by registers = floor(regs per SM / (regs per thread · threads)).
  by threads = floor(max threads per SM / (num_warps · 32)).
slots W = SMs · CTAs per SM; waves = ceil(T / W); wave efficiency η_wave = T / (waves · W).
machine_fraction = min(T, W) / W, the share of slots the first wave uses.

FLOPs (`flops`) = 2·N·P·Q·K·(C/g)·R·S for every pass (problem.flops("fprop")): the work TFLOP/s is
quoted against. `work_flops` is what the tiles compute: the same for fprop and wgrad; for dgrad the
sum over stride phases of 2·(N·rows·cols)·(C/g)·(K/g)·taps·g (padding taps included, as the GEMM
does them; stride phases skip the zeros of a zero-stuffed gradient).
Compulsory bytes (`bytes`) = each tensor of the pass read or written once, at the element size:
fprop x, w -> y; dgrad dy, w -> dx; wgrad dy, x -> dw. Split-K adds `splitk_bytes` = 2 · 4 · BM·BN ·
T (each split writes an fp32 partial tile to the workspace, the last split reads them all back).
intensity = flops / bytes (FLOP per compulsory byte).
time_s = max(work_flops / (peak · η_tile · η_wave), (bytes + splitk_bytes) / bandwidth)
         + LAUNCH_OVERHEAD_S (one launch per pass; split-K reduces inside the launch).
  The compute term is waves · (one tile's work at peak / W): each slot runs at 1/W of the peak,
  whether or not the other slots are busy. peak: device.peak_flops(dtype) (fp32 uses TF32 when
  allow_tf32, a type without tensor cores runs at the fp32 FMA rate).
tflops = flops / time_s / 1e12; efficiency = flops / time_s / peak.

Batching: the knee is the smallest N whose tiles fill one wave (T >= W), None when no N does
(wgrad without enough split-K). The speedup S(N) = N · t(1) / t(N): how much faster per image a
batch of N is than N launches of one image.

Memory per image (activation_bytes_per_image; weights, gradients and workspaces are apart):
  training: each convolution's output, once per convolution (count times), at the element size:
    the tensors autograd keeps for the backward pass (the next layer's input, which its wgrad reads).
    A lower bound: eager BatchNorm and ReLU keep their own copies, the input image is not counted.
  inference: the largest input + output of one convolution, the two activations live at once when
    each layer's output replaces its input (residual branches would keep a third alive: not counted).
  max_batch_for_memory: floor((budget - fixed) / per image), fixed = the weights (inference) or
    weights and their gradients (training); optimizer state is the caller's to subtract.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .configs import KernelConfig
from .devices import DeviceSpec, get_device
from .problem import PASSES, ConvProblem

LAUNCH_OVERHEAD_S = 5e-6  # one kernel launch, seconds: the floor of a tiny launch's measured time
REGISTER_OVERHEAD = 32  # registers per thread beyond accumulator and fragments (pointers, masks, loops)
THREADS_PER_WARP = 32
MAX_THREADS_PER_CTA = 1024

_KINDS = {
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "tf32": "fp32",
}  # fmt: skip
_SIZES = {"fp16": 2, "bf16": 2, "fp32": 4}


def dtype_kind(dtype) -> tuple[str, int]:
    """('fp16' | 'bf16' | 'fp32', element size in bytes) for a torch dtype, a name or an element size.

    An element size of 2 means fp16, 4 means fp32.
    """
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        by_size = {2: "fp16", 4: "fp32"}
        if dtype not in by_size:
            raise ValueError(f"element size must be 2 (fp16) or 4 (fp32), got {dtype}")
        return by_size[dtype], dtype
    text = str(dtype).lower()
    text = text[len("torch.") :] if text.startswith("torch.") else text
    if text not in _KINDS:
        raise ValueError(f"dtype must be float16, bfloat16 or float32 (or 2, 4), got {dtype!r}")
    kind = _KINDS[text]
    return kind, _SIZES[kind]


def _check_pass(pass_name: str) -> None:
    if pass_name not in PASSES:
        raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")


# --- one CTA's resources ---------------------------------------------------------------------------
def smem_per_cta(config: KernelConfig, element_size: int) -> int:
    """The kernel's shared memory: `num_stages` buffers of a BM x BK and a BK x BN operand tile."""
    return config.num_stages * (config.block_m + config.block_n) * config.block_k * element_size


def registers_per_thread(config: KernelConfig, element_size: int, max_regs: int = 255) -> int:
    """The register estimate (see the module docstring), rounded up to 8 and capped at `max_regs`."""
    threads = config.num_warps * THREADS_PER_WARP
    accumulator = math.ceil(config.block_m * config.block_n / threads)
    fragments = math.ceil((config.block_m + config.block_n) * config.block_k * element_size / (4 * threads))
    regs = accumulator + fragments + REGISTER_OVERHEAD
    return min(max_regs, -(-regs // 8) * 8)


@dataclass(frozen=True)
class Occupancy:
    """Resident CTAs of one config on one SM, and what limits them."""

    ctas_per_sm: int
    limited_by: str  # "shared memory", "registers", "threads" or "CTA limit"
    smem_per_cta: int  # the kernel's shared memory, bytes (the driver's reservation not included)
    regs_per_thread: int
    by_smem: int
    by_regs: int
    by_threads: int
    by_cta_limit: int


def occupancy(config: KernelConfig, element_size: int, device: DeviceSpec | str) -> Occupancy:
    """CTAs per SM = min(shared memory, registers, threads, the CTA limit); 0 when the config cannot run."""
    device = get_device(device)
    smem = smem_per_cta(config, element_size)
    threads = config.num_warps * THREADS_PER_WARP
    regs = registers_per_thread(config, element_size, device.max_regs_per_thread)
    if smem > device.smem_per_block:
        by_smem = 0
    else:
        by_smem = device.smem_per_sm // (smem + device.smem_reserved_per_cta)
    by_regs = device.regs_per_sm // (regs * threads)
    by_threads = device.max_threads_per_sm // threads if threads <= MAX_THREADS_PER_CTA else 0
    limits = {
        "shared memory": by_smem,
        "registers": by_regs,
        "threads": by_threads,
        "CTA limit": device.max_ctas_per_sm,
    }
    limited_by = min(limits, key=limits.get)  # the first of equal limits, in this order
    return Occupancy(
        limits[limited_by], limited_by, smem, regs, by_smem, by_regs, by_threads, device.max_ctas_per_sm
    )


# --- tiles and waves --------------------------------------------------------------------------------
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def launch_tiles(problem: ConvProblem, pass_name: str, config: KernelConfig) -> int:
    """The CTAs of the pass's launch grid (as the launchers build it): tiles x split_k x groups."""
    _check_pass(pass_name)
    gemm = problem.gemm(pass_name)
    if pass_name == "dgrad" and problem.stride != (1, 1):
        # One launch covers all stride phases, each given the largest phase's (phase 0's) row tiles.
        phase0 = problem.dgrad_phases()[0]
        rows = problem.batch * phase0.rows.count * phase0.cols.count
        row_tiles = _cdiv(rows, config.block_m) * problem.stride[0] * problem.stride[1]
    else:
        row_tiles = _cdiv(gemm.m, config.block_m)
    return row_tiles * _cdiv(gemm.n, config.block_n) * config.split_k * problem.groups


def work_flops(problem: ConvProblem, pass_name: str) -> int:
    """FLOPs the tiles compute (see the module docstring): dgrad sums its stride phases' GEMMs."""
    _check_pass(pass_name)
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

    @property
    def machine_fraction(self) -> float:
        """The share of the slots the first wave occupies (4 tiles on 132 slots: 3%)."""
        return min(self.tiles, self.slots) / self.slots

    @property
    def fills_wave(self) -> bool:
        return self.tiles >= self.slots


def tile_stats(
    problem: ConvProblem, pass_name: str, config: KernelConfig, device: DeviceSpec | str, dtype="fp16"
) -> TileStats:
    """Tiles, slots, waves and both efficiencies of one pass. Raises ValueError if the config cannot
    run on the device (its shared memory exceeds the per-block maximum)."""
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
    waves = _cdiv(tiles, slots)
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
    )


# --- the roofline -------------------------------------------------------------------------------------
def compulsory_bytes(problem: ConvProblem, pass_name: str, dtype="fp16") -> int:
    """Each tensor the pass reads or writes, once: fprop x, w -> y; dgrad dy, w -> dx; wgrad dy, x -> dw."""
    _check_pass(pass_name)
    _, size = dtype_kind(dtype)
    x, w, y = (math.prod(s) for s in (problem.input_shape, problem.weight_shape, problem.output_shape))
    return size * {"fprop": x + w + y, "dgrad": y + w + x, "wgrad": y + x + w}[pass_name]


@dataclass(frozen=True)
class Prediction:
    """The model's time for one pass of one problem with one config on one device."""

    stats: TileStats
    dtype: str  # "fp16", "bf16" or "fp32"
    flops: int  # 2·N·P·Q·K·(C/g)·R·S
    work_flops: int  # what the tiles compute (dgrad: its stride phases)
    bytes: int  # compulsory
    splitk_bytes: int  # the split-K workspace round trip
    intensity: float  # flops / bytes
    peak_flops: float  # FLOP/s
    compute_s: float
    memory_s: float
    launch_s: float
    time_s: float
    tflops: float  # flops / time_s / 1e12
    efficiency: float  # of the peak
    bound: str  # "compute" or "memory"

    # The tile statistics, under the names of the design card (prediction.tiles, .waves, ...).
    _STATS_NAMES = frozenset(
        ("gemm_m", "gemm_n", "gemm_k", "tiles", "ctas_per_sm", "slots", "waves",
         "tile_efficiency", "wave_efficiency")
    )  # fmt: skip

    def __getattr__(self, name):
        if name in Prediction._STATS_NAMES:
            return getattr(self.stats, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def time_per_image_s(self) -> float:
        return self.time_s / self.stats.batch


def default_model_config(
    problem: ConvProblem | None,
    pass_name: str = "fprop",
    dtype="fp16",
    device: DeviceSpec | str | None = None,
    split_k: int = 1,
) -> KernelConfig:
    """The config predictions use when no tuned one is known: 128x128 tiles, BK 64 for 2-byte types
    (32 for fp32, the same 32 KiB per stage), 4 stages, 8 warps, GROUP_M 8, no split-K.

    One fixed, common tile (Triton's and CUTLASS's usual large tile) keeps predictions comparable
    across layers and reproduces the design card's worked example; `problem` and `pass_name` do not
    change it. With a device, a config whose shared memory exceeds the per-block maximum is shrunk:
    stages down to 2 first, then BK down to 16 (T4: 2 stages; GTX 1050: 2 stages and BK 32 in fp16).
    """
    if pass_name not in PASSES:
        raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")
    _, size = dtype_kind(dtype)
    block_k, stages = (64 if size <= 2 else 32), 4
    config = KernelConfig(128, 128, block_k, 8, split_k, 8, stages)
    if device is None:
        return config
    device = get_device(device)
    while smem_per_cta(config, size) > device.smem_per_block:
        if stages > 2:
            stages -= 1
        elif block_k > 16:
            block_k //= 2
        else:  # pragma: no cover - every device in the table fits 128x128x16 in 2 stages
            raise ValueError(f"no 128x128 config fits {device.name}'s shared memory")
        config = KernelConfig(128, 128, block_k, 8, split_k, 8, stages)
    return config


def predict(
    problem: ConvProblem,
    pass_name: str,
    config: KernelConfig | None,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    allow_tf32: bool = True,
    launch_overhead_s: float = LAUNCH_OVERHEAD_S,
) -> Prediction:
    """The roofline time of one pass (formulas in the module docstring); config None: the default.

    `launch_overhead_s=0` isolates the tile and wave effects from the fixed cost of a launch.
    """
    device = get_device(device)
    kind, size = dtype_kind(dtype)
    if config is None:
        config = default_model_config(problem, pass_name, dtype, device)
    stats = tile_stats(problem, pass_name, config, device, dtype)
    flops = problem.flops("fprop")
    work = work_flops(problem, pass_name)
    nbytes = compulsory_bytes(problem, pass_name, dtype)
    splitk_bytes = 2 * 4 * config.block_m * config.block_n * stats.tiles if config.split_k > 1 else 0
    peak = device.peak_flops(kind, allow_tf32)
    efficiency = stats.tile_efficiency * stats.wave_efficiency
    compute_s = work / (peak * efficiency) if work else 0.0
    memory_s = (nbytes + splitk_bytes) / device.mem_bandwidth
    time_s = max(compute_s, memory_s) + launch_overhead_s
    return Prediction(
        stats=stats,
        dtype=kind,
        flops=flops,
        work_flops=work,
        bytes=nbytes,
        splitk_bytes=splitk_bytes,
        intensity=flops / nbytes if nbytes else 0.0,
        peak_flops=peak,
        compute_s=compute_s,
        memory_s=memory_s,
        launch_s=launch_overhead_s,
        time_s=time_s,
        tflops=flops / time_s / 1e12,
        efficiency=flops / time_s / peak,
        bound="compute" if compute_s >= memory_s else "memory",
    )


# --- batching -------------------------------------------------------------------------------------------
def batching_knee(
    problem: ConvProblem,
    pass_name: str,
    config: KernelConfig | None,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    max_batch: int = 1 << 20,
) -> int | None:
    """The smallest batch whose tiles fill one wave (tiles >= slots); None if none up to max_batch.

    `problem`'s own batch is ignored. Tiles never shrink as N grows, so a bisection finds it.
    """
    device = get_device(device)
    if config is None:
        config = default_model_config(problem, pass_name, dtype, device)

    def fills(n: int) -> bool:
        return tile_stats(problem.with_batch(n), pass_name, config, device, dtype).fills_wave

    if fills(1):
        return 1
    if not fills(max_batch):
        return None
    lo, hi = 1, max_batch  # fills(lo) is False, fills(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fills(mid) else (mid, hi)
    return hi


def batching_speedup(
    problem: ConvProblem,
    pass_name: str,
    batch: int,
    config: KernelConfig | None,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    launch_overhead_s: float = LAUNCH_OVERHEAD_S,
) -> float:
    """S(N) = N · t(1) / t(N): per-image speed of a batch of N over one image at a time."""
    device = get_device(device)
    if config is None:
        config = default_model_config(problem, pass_name, dtype, device)
    one, many = (
        predict(problem.with_batch(n), pass_name, config, device, dtype, launch_overhead_s=launch_overhead_s)
        for n in (1, batch)
    )
    return batch * one.time_s / many.time_s


# --- whole layer sets -------------------------------------------------------------------------------
def _passes(pass_name) -> tuple[str, ...]:
    names = (pass_name,) if isinstance(pass_name, str) else tuple(pass_name)
    for name in names:
        _check_pass(name)
    return names


def network_time(
    layers: Iterable[tuple[str, ConvProblem, int]],
    pass_name,
    batch: int,
    device: DeviceSpec | str,
    dtype="fp16",
    config: KernelConfig | None = None,
    *,
    launch_overhead_s: float = LAUNCH_OVERHEAD_S,
) -> float:
    """Σ count · time_s over the layers (name, problem at N=1, count) and the pass(es), at `batch`.

    `pass_name` is one pass or several (("fprop", "dgrad", "wgrad") for a training step).
    """
    device = get_device(device)
    total = 0.0
    for _, problem, count in layers:
        for name in _passes(pass_name):
            prediction = predict(
                problem.with_batch(batch), name, config, device, dtype, launch_overhead_s=launch_overhead_s
            )
            total += count * prediction.time_s
    return total


def network_speedup(
    layers,
    pass_name,
    batch: int,
    device: DeviceSpec | str,
    dtype="fp16",
    config: KernelConfig | None = None,
    *,
    launch_overhead_s: float = LAUNCH_OVERHEAD_S,
) -> float:
    """S(N) for a whole layer set: N · T(1) / T(N) with T the summed layer times."""
    layers = list(layers)
    one, many = (
        network_time(layers, pass_name, n, device, dtype, config, launch_overhead_s=launch_overhead_s)
        for n in (1, batch)
    )
    return batch * one / many


# --- memory ---------------------------------------------------------------------------------------------
def _elements(problem: ConvProblem) -> tuple[int, int, int]:
    """Input, weight and output elements of one image (batch 1)."""
    one = problem.with_batch(1)
    return tuple(math.prod(s) for s in (one.input_shape, one.weight_shape, one.output_shape))


def activation_bytes_per_image(
    layers: Iterable[tuple[str, ConvProblem, int]], dtype="fp16", training: bool = True
) -> int:
    """Training: Σ count · output (kept for backward); inference: max over layers of input + output."""
    _, size = dtype_kind(dtype)
    layers = list(layers)
    if training:
        return size * sum(count * _elements(problem)[2] for _, problem, count in layers)
    return size * max((_elements(p)[0] + _elements(p)[2] for _, p, _ in layers), default=0)


def activation_bytes(layers, batch: int, dtype="fp16", training: bool = True) -> int:
    """Activation memory of a batch: linear in N (batch x per image)."""
    return batch * activation_bytes_per_image(layers, dtype, training)


def weight_bytes(layers: Iterable[tuple[str, ConvProblem, int]], dtype="fp16") -> int:
    _, size = dtype_kind(dtype)
    return size * sum(count * _elements(problem)[1] for _, problem, count in layers)


def max_batch_for_memory(
    layers,
    budget_bytes: int,
    training: bool = True,
    dtype="fp16",
    *,
    include_weights: bool = True,
) -> int:
    """The largest N whose activations (and weights, and in training their gradients) fit the budget;
    0 when not even one image fits."""
    layers = list(layers)
    per_image = activation_bytes_per_image(layers, dtype, training)
    fixed = weight_bytes(layers, dtype) * (2 if training else 1) if include_weights else 0
    if per_image <= 0:
        raise ValueError("the layers have no activations")
    return max(0, (budget_bytes - fixed) // per_image)
