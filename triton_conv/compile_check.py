"""Compile a launch ahead of time for a GPU that is not here (sm_90, sm_80) and read what the
compiler made of it: registers, shared memory, spills, and whether the dot became wgmma (HGMMA).

The signature and the divisibility hints are derived from the launch's real arguments, the way
Triton's JIT specialises them, so what is checked is what a GPU would run.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .launchers.common import LaunchSpec
from .runtime import interpreter_active

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


def describe(spec: LaunchSpec, capability: int = 90) -> dict:
    """A picklable description of what to compile: the kernel by module and name, the signature
    and divisibility hints that Triton's JIT would derive from the launch's real arguments."""
    function = spec.kernel.fn
    names = spec.kernel.arg_names
    runtime_names = [n for n in names if n not in spec.constexprs]
    if len(runtime_names) != len(spec.args):
        raise ValueError(f"{function.__name__}: {len(spec.args)} args for {len(runtime_names)} params")
    values = dict(zip(runtime_names, spec.args))
    constexprs = dict(spec.constexprs)
    if "UPCAST" in constexprs:
        constexprs["UPCAST"] = False  # the interpreter's bf16 workaround: a GPU never runs it
    signature, attrs = {}, {}
    for index, name in enumerate(names):  # ASTSource reads the signature by position
        value = values.get(name)
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + _TRITON_TYPES[value.dtype]
            aligned = value.device.type == "meta" or value.data_ptr() % 16 == 0
        elif isinstance(value, bool):
            signature[name] = "i1"
            aligned = False
        elif isinstance(value, int) and value == 1:
            # As the JIT does: an int argument equal to 1 becomes a compile-time constant.
            signature[name] = "constexpr"
            constexprs[name] = 1
            continue
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            aligned = value % 16 == 0
        else:
            raise TypeError(f"{name}: cannot type {value!r} for ahead-of-time compilation")
        if aligned:
            attrs[(index,)] = [["tt.divisibility", 16]]
    return {
        "module": function.__module__,
        "name": function.__name__,
        "signature": signature,
        "attrs": attrs,
        "constexprs": constexprs,
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "capability": capability,
    }


def _compile_here(job: dict) -> CompileReport:
    kernel = getattr(importlib.import_module(job["module"]), job["name"])
    source = ASTSource(kernel, job["signature"], job["constexprs"], job["attrs"])
    compiled = triton.compile(
        source,
        target=GPUTarget("cuda", job["capability"], 32),
        options={"num_warps": job["num_warps"], "num_stages": job["num_stages"]},
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
        raise RuntimeError(f"cannot read the resource usage of {job['name']}: {usage}")
    return CompileReport(
        kernel=job["name"],
        capability=job["capability"],
        registers=int(found.group(1)),
        spill_bytes=int(found.group(2)),
        local_loads=len(re.findall(r"\bLDL\b", sass)),
        shared_bytes=int(compiled.metadata.shared),
        wgmma="HGMMA" in sass,
        mma_sync=re.search(r"\bHMMA\b", sass) is not None,
    )


def compile_specs(specs: list[LaunchSpec], capability: int = 90) -> list[CompileReport]:
    """Compile each launch for sm_<capability> with no GPU present and report its resources.

    Under TRITON_INTERPRET=1 the kernels in this process are interpreted functions, which cannot
    be compiled, so the jobs go to one child process that imports the package uninterpreted.
    """
    jobs = [describe(spec, capability) for spec in specs]
    if not interpreter_active():
        return [_compile_here(job) for job in jobs]
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "triton_conv.compile_check"],
        input=pickle.dumps(jobs),
        capture_output=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"compiling in a child process failed:\n{done.stderr.decode()[-4000:]}")
    return pickle.loads(done.stdout)


def compile_spec(spec: LaunchSpec, capability: int = 90) -> CompileReport:
    return compile_specs([spec], capability)[0]


def example_spec(
    pass_name: str, dtype: torch.dtype, config, problem, *, force_int64: bool = False
) -> LaunchSpec:
    """The launch a GPU would run for `problem`, on channels_last meta tensors (with a bias), with
    the flags a GPU run gets: TF32 for fp32 as cuDNN's default, no interpreter bf16 upcast."""

    def make(shape):
        return torch.empty(shape, dtype=dtype, device="meta").to(memory_format=torch.channels_last)

    x, w, y = make(problem.input_shape), make(problem.weight_shape), make(problem.output_shape)
    bias = torch.empty(problem.out_channels, dtype=dtype, device="meta")
    if pass_name == "fprop":
        from .launchers.fprop import fprop_spec

        spec = fprop_spec(x, w, bias, y, problem, config, force_int64)
    elif pass_name == "dgrad":
        from .launchers.dgrad import dgrad_spec

        spec = dgrad_spec(y, w, x, problem, config, force_int64)
    elif pass_name == "wgrad":
        from .launchers.wgrad import wgrad_spec

        spec = wgrad_spec(y, x, w, bias, problem, config, force_int64)
    elif pass_name == "dgrad_masked":  # the benchmark baseline of the stride-phase dgrad
        from .launchers.dgrad_masked import dgrad_masked_spec

        spec = dgrad_masked_spec(y, w, x, problem, config, force_int64)
    else:
        raise ValueError(f"pass_name must be fprop, dgrad, wgrad or dgrad_masked, got {pass_name!r}")
    constexprs = dict(spec.constexprs)
    constexprs["INPUT_PRECISION"] = "tf32" if dtype == torch.float32 else "ieee"
    constexprs["UPCAST"] = False
    return spec._replace(constexprs=constexprs)


def wgmma_eligible(dtype: torch.dtype, block_m: int, num_warps: int) -> bool:
    """Hopper takes the wgmma path for a dot only with whole warpgroups and 64-row multiples."""
    return dtype in (torch.float16, torch.bfloat16, torch.float32) and (
        num_warps % 4 == 0 and block_m % 64 == 0
    )


if __name__ == "__main__":  # the child process of compile_specs: jobs in on stdin, reports out
    # Import the module by name so the reports unpickle as triton_conv.compile_check.CompileReport.
    from triton_conv.compile_check import _compile_here as compile_job

    reports = [compile_job(job) for job in pickle.loads(sys.stdin.buffer.read())]
    sys.stdout.buffer.write(pickle.dumps(reports))
