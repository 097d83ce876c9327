"""One CTA's resources, and how many CTAs of a config one SM holds.

CTAs per SM = min(by shared memory, by registers, by threads, the device's CTA limit):
  shared memory per CTA = buffers · (BM·BK + BK·BN) · element size, plus the driver's reservation
    per CTA (1 KiB on CC >= 8.0); by shared memory = floor(smem per SM / that), 0 when the kernel's
    part exceeds the per-block maximum (the config cannot launch). `buffers` is what Triton's
    software pipeliner allocates for `num_stages` stages (`KernelConfig.shared_bytes`): on Hopper (CC 9.x,
    wgmma) num_stages, one per stage; on CC 8.x (cp.async feeding mma.sync) num_stages - 1, the
    stage being computed reads the buffer the next load will refill. Compiled for sm_90 (Triton
    3.9) every config of the search space allocates exactly num_stages buffers (notes/autotune's
    static report; wgrad's TMA adds 8 bytes of barrier per stage); for sm_80 (Triton 3.6 and 3.9)
    128x128x64 with 3 stages allocates 64 KiB in fp16, not 96. Below CC 8.0 the model keeps
    num_stages buffers: it describes a pipelined tensor-core kernel there, which Triton does not
    make (for sm_75 it allocates one buffer and emits no HMMA).
  registers per thread, an estimate (a cubin's real count is in `cuobjdump -res-usage`): the
    fp32 accumulator + the operand fragments the warps hold + REGISTER_OVERHEAD, rounded up to 8,
    capped at the device maximum (255; beyond it the compiler spills).
    - accumulator: BM·BN / threads, one register per fp32 output element.
    - fragments, mma.sync (CC 8.x, Hopper without wgmma, and the model's kernel below CC 8.0):
      each warp loads from shared memory
      (ldmatrix) the A rows and B columns of its own part of the tile, for a whole BK step:
      (warp_m + warp_n)·BK·element size / (4·32). A warp's part is Triton's split of the warps
      over the tile (`mma_warp_tile`), so A is held by every warp column and B by every warp row:
      more than the CTA's (BM + BN)·BK divided by threads, which the model counted before.
    - fragments, wgmma (CC 9.x, whole warpgroups, BM a multiple of 64): a 16-bit dot reads both
      operands from shared memory, none (the reasoning of pruning.budgeted_registers); a TF32 dot
      compiles to up to 142 more registers than the same config in fp16 (median 73): its operands
      pass through registers, counted as the CTA's (BM + BN)·BK·4 bytes divided among the threads.
    - REGISTER_OVERHEAD = 48: what the SASS keeps beside the accumulator and the fragments: the
      cp.async source pointers (64-bit, one per 16-byte copy of the stage being filled), the
      im2col row offsets and padding masks, the shared-memory stage addresses, loop counters.
    Against every config of the search space compiled with the static report's problem
    (tests/test_model_registers.py), |estimate - compiled|: sm_80 fp16 median 10, max 60 (Triton
    3.9, low on average by 5) and median 16, max 44 (Triton 3.6, high by 13); sm_90 16-bit median
    16, max 79 (low by 23), TF32 median 31, max 94 (Triton 3.6 and 3.9 alike). 128x128x64 fp16 with
    8 warps (warps 4x2, each 32x64): 64 + (32 + 64)·64·2/128 + 48 = 208 on sm_80 (compiled 164 to
    222); on sm_90 (wgmma) 64 + 48 = 112 (compiled 116 to 128). Below CC 8.0 Triton makes no
    tensor-core kernel; for sm_75 its fp32 FMA kernel of 128x128x32, 8 warps, takes 254 (208 here).
    by registers = floor(regs per SM / (regs per thread · threads)).
  by threads = floor(max threads per SM / (num_warps · 32)).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..configs import KernelConfig
from ..devices import DeviceSpec, get_device
from ..problem import PASSES
from .arguments import check_config, check_count

REGISTER_OVERHEAD = 48  # registers per thread beyond accumulator and fragments (pointers, masks, loops)
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

    An element size of 2 means fp16, 4 means fp32; 'tf32' names fp32 operands (whether they run on
    the TF32 tensor path is `allow_tf32`'s to say).
    """
    if isinstance(dtype, numbers.Integral) and not isinstance(dtype, bool):  # NumPy's ints too
        dtype = int(dtype)
        by_size = {2: "fp16", 4: "fp32"}
        if dtype not in by_size:
            raise ValueError(f"element size must be 2 (fp16) or 4 (fp32), got {dtype}")
        return by_size[dtype], dtype
    text = str(dtype).lower()
    text = text[len("torch.") :] if text.startswith("torch.") else text
    if text not in _KINDS:
        raise ValueError(
            f"dtype must be fp16, bf16, fp32 or tf32 (or torch's names, or sizes 2, 4), got {dtype!r}"
        )
    kind = _KINDS[text]
    return kind, _SIZES[kind]


def check_pass(pass_name: str) -> None:
    if not isinstance(pass_name, str):  # a list reached a cache's key as "unhashable type: 'list'"
        raise TypeError(f"pass_name must be one of {PASSES}, got {pass_name!r}")
    if pass_name not in PASSES:
        raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")


def smem_per_cta(config: KernelConfig, element_size: int, capability: tuple[int, int] | None = None) -> int:
    """The kernel's shared memory: the buffers Triton's pipeliner keeps of a BM x BK and a BK x BN
    operand tile (KernelConfig.shared_bytes), the bytes the pruning's shared_memory rule checks."""
    config, element_size = _checked(config, element_size)
    return config.shared_bytes(element_size, capability)


def _checked(config, element_size) -> tuple[KernelConfig, int]:
    return check_config(config, optional=False), check_count(element_size, "element_size", 1, 8)


def runs_wgmma(config: KernelConfig, capability) -> bool:
    """Hopper runs the dot as wgmma with whole warpgroups and BM a multiple of 64 (16-bit or TF32)."""
    return (
        capability is not None
        and capability[0] == 9
        and config.num_warps % 4 == 0
        and config.block_m % 64 == 0
    )


def operands_in_shared_memory(config: KernelConfig, element_size: int, capability) -> bool:
    """A 16-bit dot that Hopper runs as wgmma: its operands stay in shared memory, so they take
    no registers (pruning.budgeted_registers)."""
    return element_size == 2 and runs_wgmma(config, capability)


def mma_warp_tile(config: KernelConfig) -> tuple[int, int]:
    """The rows and columns of the output tile one warp computes with mma.sync: Triton's split of
    the warps (warpsPerTileV2) doubles the warps along M while the tile has at least as many
    16-row slices per warp row as 16-column slices per warp column (and rows are left), else along N."""
    rows = cols = 1
    while rows * cols < config.num_warps:
        if config.block_m // 16 // rows >= config.block_n // 16 // cols and rows < config.block_m // 16:
            rows *= 2
        else:
            cols *= 2
    return config.block_m // rows, config.block_n // cols


def registers_per_thread(
    config: KernelConfig, element_size: int, max_regs: int = 255, capability: tuple[int, int] | None = None
) -> int:
    """The register estimate (see the module docstring), rounded up to 8 and capped at `max_regs`."""
    config, element_size = _checked(config, element_size)
    threads = config.num_warps * THREADS_PER_WARP
    accumulator = math.ceil(config.block_m * config.block_n / threads)
    if operands_in_shared_memory(config, element_size, capability):
        fragments = 0
    elif runs_wgmma(config, capability):  # TF32: operands split by rows among the threads
        fragments = math.ceil(
            (config.block_m + config.block_n) * config.block_k * element_size / (4 * threads)
        )
    else:
        warp_m, warp_n = mma_warp_tile(config)
        fragments = math.ceil((warp_m + warp_n) * config.block_k * element_size / (4 * THREADS_PER_WARP))
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
    smem = smem_per_cta(config, element_size, device.compute_capability)
    threads = config.num_warps * THREADS_PER_WARP
    regs = registers_per_thread(config, element_size, device.max_regs_per_thread, device.compute_capability)
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
