"""Compile a launch ahead of time for a GPU that is not here (sm_90, sm_80) and read what the
compiler made of it: registers, shared memory, spills, and whether the dot became wgmma (HGMMA).

The signature and the divisibility hints are derived from the launch's real arguments, the way
Triton's JIT specialises them, so what is checked is what a GPU would run.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .launchers.common import LaunchSpec

_TRITON_TYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.int32: "i32",
    torch.int64: "i64",
}


@dataclass(frozen=True)
class CompileReport:
    kernel: str
    capability: int
    registers: int
    spill_bytes: int  # stack frame bytes: local memory used for spills
    local_loads: int  # LDL instructions in the SASS
    shared_bytes: int
    wgmma: bool  # HGMMA in the SASS (Hopper's warpgroup MMA)
    mma_sync: bool  # HMMA in the SASS (the pre-Hopper tensor-core path)

    @property
    def spills(self) -> bool:
        return self.spill_bytes > 0 or self.local_loads > 0


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _signature(spec: LaunchSpec):
    names = spec.kernel.arg_names
    runtime_names = [n for n in names if n not in spec.constexprs]
    if len(runtime_names) != len(spec.args):
        raise ValueError(f"{spec.kernel.__name__}: {len(spec.args)} args for {len(runtime_names)} params")
    signature, attrs = {}, {}
    for name, value in zip(runtime_names, spec.args):
        index = names.index(name)
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + _TRITON_TYPES[value.dtype]
            aligned = value.device.type == "meta" or value.data_ptr() % 16 == 0
        elif isinstance(value, bool):
            signature[name] = "i1"
            aligned = False
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            aligned = value % 16 == 0
        else:
            raise TypeError(f"{name}: cannot type {value!r} for ahead-of-time compilation")
        if aligned:
            attrs[(index,)] = [["tt.divisibility", 16]]
    for name in spec.constexprs:
        signature[name] = "constexpr"
    return signature, attrs


def compile_spec(spec: LaunchSpec, capability: int = 90) -> CompileReport:
    """Compile `spec` for sm_<capability> with no GPU present and report its resources."""
    signature, attrs = _signature(spec)
    source = ASTSource(spec.kernel, signature, dict(spec.constexprs), attrs)
    compiled = triton.compile(
        source,
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": spec.num_warps, "num_stages": spec.num_stages},
    )
    with tempfile.TemporaryDirectory() as folder:
        cubin = os.path.join(folder, "kernel.cubin")
        with open(cubin, "wb") as handle:
            handle.write(compiled.asm["cubin"])
        usage = subprocess.run(
            [_tool("cuobjdump"), "-res-usage", cubin], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run(
            [_tool("nvdisasm"), "-c", cubin], capture_output=True, text=True, check=True
        ).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if found is None:
        raise RuntimeError(f"cannot read the resource usage of {spec.kernel.__name__}: {usage}")
    return CompileReport(
        kernel=spec.kernel.__name__,
        capability=capability,
        registers=int(found.group(1)),
        spill_bytes=int(found.group(2)),
        local_loads=len(re.findall(r"\bLDL\b", sass)),
        shared_bytes=int(compiled.metadata.shared),
        wgmma="HGMMA" in sass,
        mma_sync=re.search(r"\bHMMA\b", sass) is not None,
    )


def wgmma_eligible(dtype: torch.dtype, block_m: int, num_warps: int) -> bool:
    """Hopper takes the wgmma path for a dot only with whole warpgroups and 64-row multiples."""
    return dtype in (torch.float16, torch.bfloat16, torch.float32) and (
        num_warps % 4 == 0 and block_m % 64 == 0
    )
