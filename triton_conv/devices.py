"""What the model (triton_conv.model) and config pruning need to know of a GPU: a table, and the live device.

Every figure in `DEVICES` names the document it comes from (`DeviceSpec.source`):

- SM count, per-SM limits (shared memory per SM and per block, registers, threads, resident CTAs):
  the CUDA C++ Programming Guide's table "Technical Specifications per Compute Capability" and the
  architecture whitepapers (which give each product's SM count). "KB" there means KiB.
- Shared memory reserved per CTA: the CUDA C++ Programming Guide, compute capability 8.x and 9.0
  sections (the driver reserves 1 KB per thread block; devices before 8.0 reserve none). The
  per-block maximum already excludes it (228 KB per SM, 227 KB per block on Hopper).
- Peak rates: the vendor datasheet's *dense* figures (datasheets quote tensor rates with 2:4
  sparsity; the dense rate is half). The fp16/bf16 tensor rate is the one with fp32 accumulation,
  which is what the kernels do (it matters on GeForce parts, where fp16 accumulation is twice as fast).
  `None` means the device has no tensor-core path for that type; the model then uses the fp32 FMA rate
  (on Pascal, native fp16 arithmetic runs at 1/64 of fp32, so code computes fp16 data in fp32).
- Memory bandwidth and capacity: the datasheet, in decimal units (1 TB/s = 1e12 bytes/s, 1 GB = 1e9).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from .device_sources import SOURCES

KIB = 1024
GB = 10**9
TB_S = 10**12


@dataclass(frozen=True)
class DeviceSpec:
    """One GPU as the model sees it. Rates are dense peaks; sizes are bytes."""

    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    smem_per_sm: int  # shared memory one SM can give to all its resident CTAs, bytes
    smem_per_block: int  # the most one CTA may use (opt-in maximum), bytes
    smem_reserved_per_cta: int  # shared memory the driver reserves per CTA on top of the kernel's, bytes
    regs_per_sm: int  # 32-bit registers per SM
    max_threads_per_sm: int
    max_ctas_per_sm: int
    fp16_tflops: float | None  # dense tensor-core peak, fp32 accumulation; None: no tensor path
    bf16_tflops: float | None
    tf32_tflops: float | None
    fp32_tflops: float  # non-tensor fp32 FMA peak (2 FLOPs per FMA)
    mem_bandwidth: float  # bytes/s
    mem_bytes: int  # device memory capacity, bytes
    source: str

    max_regs_per_thread: int = 255

    def __post_init__(self):
        # The model divides by counts and rates; a spec built by hand with a zero (or a NaN rate)
        # would give infinite or NaN times far from where it was made, so it is refused here.
        for field in _COUNTS:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DeviceSpec {field} must be a positive integer, got {value!r}")
        reserved = self.smem_reserved_per_cta
        if isinstance(reserved, bool) or not isinstance(reserved, int) or reserved < 0:
            raise ValueError(f"DeviceSpec smem_reserved_per_cta must be an integer >= 0, got {reserved!r}")
        for field in _RATES:
            value = getattr(self, field)
            if value is None and field in _TENSOR_RATES:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                none = " or None" if field in _TENSOR_RATES else ""
                raise ValueError(f"DeviceSpec {field} must be a finite rate above 0{none}, got {value!r}")

    def peak_flops(self, kind: str, allow_tf32: bool = True) -> float:
        """FLOP/s for GEMM operands of `kind` ('fp16', 'bf16' or 'fp32').

        fp32 operands use the TF32 tensor rate when `allow_tf32` (torch.backends.cudnn.allow_tf32
        defaults to True) and the device has one; a type without a tensor path runs at the fp32 rate.
        """
        if kind == "fp16":
            tflops = self.fp16_tflops
        elif kind == "bf16":
            tflops = self.bf16_tflops
        elif kind == "fp32":
            tflops = self.tf32_tflops if allow_tf32 else None
        else:
            raise ValueError(f"kind must be 'fp16', 'bf16' or 'fp32', got {kind!r}")
        return (tflops if tflops is not None else self.fp32_tflops) * 1e12


_COUNTS = (
    "sm_count",
    "smem_per_sm",
    "smem_per_block",
    "regs_per_sm",
    "max_threads_per_sm",
    "max_ctas_per_sm",
    "mem_bytes",
    "max_regs_per_thread",
)
_TENSOR_RATES = ("fp16_tflops", "bf16_tflops", "tf32_tflops")
_RATES = (*_TENSOR_RATES, "fp32_tflops", "mem_bandwidth")

# The per-SM limits of each compute capability, from device_sources.GUIDE: shared memory per SM and per block,
# shared memory the driver reserves per CTA, 32-bit registers, resident threads and CTAs per SM.
_SM_LIMITS: dict[tuple[int, int], tuple[int, int, int, int, int, int]] = {
    (6, 1): (96 * KIB, 48 * KIB, 0, 65536, 2048, 32),
    (7, 0): (96 * KIB, 96 * KIB, 0, 65536, 2048, 32),
    (7, 5): (64 * KIB, 64 * KIB, 0, 65536, 1024, 16),
    (8, 0): (164 * KIB, 163 * KIB, 1 * KIB, 65536, 2048, 32),
    (8, 9): (100 * KIB, 99 * KIB, 1 * KIB, 65536, 1536, 24),
    (9, 0): (228 * KIB, 227 * KIB, 1 * KIB, 65536, 2048, 32),
}

# name, compute capability, SMs, dense TFLOPS (fp16, bf16, tf32 tensor; fp32 FMA), bandwidth, capacity
_ROWS = (
    ("H200 SXM", (9, 0), 132, (989.4, 989.4, 494.7, 66.9), 4.8 * TB_S, 141 * GB),
    ("H100 SXM", (9, 0), 132, (989.4, 989.4, 494.7, 66.9), 3.35 * TB_S, 80 * GB),
    ("A100 SXM 80GB", (8, 0), 108, (312.0, 312.0, 156.0, 19.5), 2.039 * TB_S, 80 * GB),
    ("A100 SXM 40GB", (8, 0), 108, (312.0, 312.0, 156.0, 19.5), 1.555 * TB_S, 40 * GB),
    ("V100 SXM2 16GB", (7, 0), 80, (125.0, None, None, 15.7), 900 * GB, 16 * GB),
    ("V100 SXM2 32GB", (7, 0), 80, (125.0, None, None, 15.7), 900 * GB, 32 * GB),
    ("T4", (7, 5), 40, (65.0, None, None, 8.1), 320 * GB, 16 * GB),
    ("GTX 1050", (6, 1), 5, (None, None, None, 1.8624), 112 * GB, 2 * GB),
    ("GTX 1080 Ti", (6, 1), 28, (None, None, None, 11.339776), 484 * GB, 11 * GB),
    ("RTX 4090", (8, 9), 128, (165.2, 165.2, 82.6, 82.6), 1008 * GB, 24 * GB),
)


def _device(name, compute_capability, sm_count, tflops, mem_bandwidth, mem_bytes) -> DeviceSpec:
    """A row of _ROWS as a DeviceSpec: the per-SM limits are its compute capability's _SM_LIMITS,
    the source its device_sources.SOURCES entry."""
    smem_per_sm, smem_per_block, reserved, regs, threads, ctas = _SM_LIMITS[compute_capability]
    fp16, bf16, tf32, fp32 = tflops
    return DeviceSpec(
        name=name,
        compute_capability=compute_capability,
        sm_count=sm_count,
        smem_per_sm=smem_per_sm,
        smem_per_block=smem_per_block,
        smem_reserved_per_cta=reserved,
        regs_per_sm=regs,
        max_threads_per_sm=threads,
        max_ctas_per_sm=ctas,
        fp16_tflops=fp16,
        bf16_tflops=bf16,
        tf32_tflops=tf32,
        fp32_tflops=fp32,
        mem_bandwidth=mem_bandwidth,
        mem_bytes=mem_bytes,
        source=SOURCES[name],
    )


DEVICES: dict[str, DeviceSpec] = {row[0]: _device(*row) for row in _ROWS}

# Substrings of torch.cuda.get_device_properties(...).name, tried in order, and the table entry each
# one stands for, matched as whole words. A relative with another SM count (a GTX 1050 Ti has 6 SMs,
# a PCIe H100 114) matches too: live_device takes its own SM count and scales the table's peaks.
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    ("h200", "H200 SXM"),
    ("h100", "H100 SXM"),
    ("a100 .*40gb", "A100 SXM 40GB"),
    ("a100", "A100 SXM 80GB"),
    ("v100 .*32gb", "V100 SXM2 32GB"),
    ("v100", "V100 SXM2 16GB"),
    ("t4", "T4"),
    ("gtx 1050", "GTX 1050"),
    ("gtx 1080 ti", "GTX 1080 Ti"),
    ("rtx 4090", "RTX 4090"),
)


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _without_form_factor(normalised: str) -> str:
    """A normalised table name without 'sxm'/'sxm2': every part in the table is the SXM one."""
    return re.sub("sxm2?", "", normalised)


# Short names get_device also accepts (normalised): the SXM parts for H200/H100/A100/V100.
_ALIASES = {
    "h200": "H200 SXM", "h100": "H100 SXM", "a100": "A100 SXM 80GB", "v100": "V100 SXM2 16GB",
    "1080ti": "GTX 1080 Ti", "4090": "RTX 4090",
}  # fmt: skip


def get_device(name: str | DeviceSpec) -> DeviceSpec:
    """The table entry called `name`, compared case-insensitively and ignoring spaces and punctuation.

    'H200', 'H100', 'A100' (80GB) and 'V100' (16GB) name the SXM parts, as does a table name without
    its form factor ('A100 40GB', 'V100 32GB'); a DeviceSpec is returned as it is.
    """
    if isinstance(name, DeviceSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"device must be a name or a DeviceSpec, got {name!r}")
    wanted = _normalise(name)
    wanted = _normalise(_ALIASES.get(wanted, wanted))
    for key, spec in DEVICES.items():
        if _normalise(key) == wanted:
            return spec
    for key, spec in DEVICES.items():  # 'A100 40GB', 'V100 32GB': the form factor left out
        if _without_form_factor(_normalise(key)) == wanted:
            return spec
    raise ValueError(f"unknown device {name!r}; known devices: {', '.join(DEVICES)}")


def match_device_name(torch_name: str) -> DeviceSpec | None:
    """The table entry a name reported by torch (e.g. 'NVIDIA H100 80GB HBM3') stands for, or None."""
    lowered = " ".join(torch_name.lower().replace("-", " ").split())
    for pattern, key in _NAME_PATTERNS:
        if re.search(rf"\b{pattern}\b", lowered):
            return DEVICES[key]
    return None


def live_device(index: int | None = None) -> DeviceSpec | None:
    """The GPU torch sees, or None without one.

    Counts and sizes come from torch.cuda.get_device_properties (attribute names differ between
    torch versions, so each is read with a fallback to the table). Peak rates come from the table
    entry the name matches, scaled by the live SM count over the table's (a PCIe H100 has 114 SMs
    where the SXM part has 132); an unknown GPU raises no error but gets no tensor rates and an fp32
    rate of 128 FMA lanes per SM at the reported clock, a rough stand-in stated in `source`.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    known = match_device_name(props.name)
    sm_count = int(props.multi_processor_count)
    cc = (int(props.major), int(props.minor))

    def read(attr: str, fallback):
        value = getattr(props, attr, None)
        return int(value) if value else fallback

    if known is not None:
        scale = sm_count / known.sm_count
        peaks = {
            key: (None if value is None else value * scale)
            for key, value in (
                ("fp16_tflops", known.fp16_tflops),
                ("bf16_tflops", known.bf16_tflops),
                ("tf32_tflops", known.tf32_tflops),
                ("fp32_tflops", known.fp32_tflops),
            )
        }
        bandwidth = known.mem_bandwidth
        source = (
            f"live: torch.cuda.get_device_properties({index}); peaks and bandwidth from the table entry "
            f"{known.name!r} (peaks scaled by {sm_count}/{known.sm_count} SMs): {known.source}"
        )
        base = known
    else:
        base = DEVICES["H100 SXM" if cc >= (9, 0) else "A100 SXM 80GB" if cc >= (8, 0) else "T4"]
        clock_hz = read("clock_rate", 0) * 1e3  # kHz
        # Double data rate on the bus: memory_clock_rate (kHz) x 2 x bus width (bits) / 8.
        bandwidth = read("memory_clock_rate", 0) * 1e3 * 2 * read("memory_bus_width", 0) / 8
        # CUDA 13 dropped the clocks from its device properties: then the stand-in's rates
        # (its fp32 peak scaled by the SM count, its bandwidth), never a rate of 0.
        fp32 = sm_count * 128 * 2 * clock_hz / 1e12 or base.fp32_tflops * sm_count / base.sm_count
        bandwidth = bandwidth or base.mem_bandwidth
        peaks = {"fp16_tflops": None, "bf16_tflops": None, "tf32_tflops": None, "fp32_tflops": fp32}
        source = (
            f"live: torch.cuda.get_device_properties({index}); {props.name!r} is not in the table: "
            "fp32 peak estimated as SMs x 128 lanes x 2 x clock, no tensor rates, bandwidth from the "
            f"memory clock and bus width (where torch reports no clocks, {base.name}'s per SM and its"
            " bandwidth)"
        )
    reserved = 1 * KIB if cc >= (8, 0) else 0
    return replace(
        base,
        name=props.name,
        compute_capability=cc,
        sm_count=sm_count,
        smem_per_sm=read("shared_memory_per_multiprocessor", base.smem_per_sm),
        smem_per_block=read("shared_memory_per_block_optin", base.smem_per_block),
        smem_reserved_per_cta=read("reserved_shared_memory_per_block", reserved),
        regs_per_sm=read("regs_per_multiprocessor", base.regs_per_sm),
        max_threads_per_sm=read("max_threads_per_multi_processor", base.max_threads_per_sm),
        mem_bandwidth=bandwidth,
        mem_bytes=int(props.total_memory),
        source=source,
        **peaks,
    )
