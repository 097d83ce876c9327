"""Compile a launch ahead of time for a GPU that is not here (sm_90, sm_80) and read what the
compiler made of it: registers, shared memory, spills, and whether the dot became wgmma (HGMMA).

The signature and the divisibility hints are derived from the launch's real arguments, the way
Triton's JIT specialises them, so what is checked is what a GPU would run.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pickle
import re
import subprocess
import sys
import tempfile
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.tools.tensor_descriptor import TensorDescriptor

from .child_processes import kill_group, module_child, usable_cores
from .launchers.common import LaunchSpec
from .runtime import interpreter_active
from .sass import LoopStats, analyse

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
    loop: LoopStats | None = None  # the main loop's instructions (sass.analyse), when it has HGMMA

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
        if isinstance(value, TensorDescriptor):  # a host-built TMA descriptor, typed as the JIT types it
            block = ", ".join(str(size) for size in value.block_shape)
            signature[name] = f"tensordesc<{_TRITON_TYPES[value.base.dtype]}[{block}]>"
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
        "path": None if function.__module__.startswith("triton_conv.") else inspect.getsourcefile(function),
        "name": function.__name__,
        "signature": signature,
        "attrs": attrs,
        "constexprs": constexprs,
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "capability": capability,
    }


def load_module(name: str, path: str | None):
    """A module by name, or from a file outside the package (a rendered Inductor template)."""
    if path is None:
        return importlib.import_module(name)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _compile_here(job: dict) -> CompileReport:
    kernel = getattr(load_module(job["module"], job.get("path")), job["name"])
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
        loop=analyse(sass, job["num_warps"]),
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    """Kill the workers still running and reap them all (as campaign.precompile's Child.stop)."""
    for proc in procs:
        kill_group(proc)
    for proc in procs:
        proc.wait()


def compile_specs(specs: list[LaunchSpec], capability: int = 90, workers: int = 1) -> list[CompileReport]:
    """Compile each launch for sm_<capability> with no GPU present and report its resources.

    With workers > 1 the jobs are spread over that many child processes. Under TRITON_INTERPRET=1
    the kernels in this process are interpreted functions, which cannot be compiled, so the jobs
    always go to child processes that import the package uninterpreted. Triton's own cache keeps
    what was compiled before: only changed kernels are compiled again. The workers do not outlive
    this call: an exception here (Ctrl-C's KeyboardInterrupt too) kills and reaps them, and on Linux
    the kernel stops them when this process dies (child_processes.py).
    """
    jobs = [describe(spec, capability) for spec in specs]
    workers = max(1, min(workers, len(jobs), usable_cores()))  # more would only thrash, each importing torch
    if workers == 1 and not interpreter_active():
        return [_compile_here(job) for job in jobs]
    # The children import this package from where this process did, whatever their working folder.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": path}
    chunks = [jobs[i::workers] for i in range(workers)]
    procs: list[subprocess.Popen] = []

    def finish(proc, chunk):  # every worker gets its jobs at once: they compile in parallel
        out, err = proc.communicate(pickle.dumps(chunk))
        if proc.returncode != 0:
            raise RuntimeError(f"compiling in a child process failed:\n{err.decode()[-4000:]}")
        return pickle.loads(out)

    pool = ThreadPoolExecutor(workers)
    try:  # any exception here (a worker's failure, Ctrl-C, a Popen that fails): the others are stopped too
        for _ in chunks:
            procs.append(
                subprocess.Popen(
                    module_child("triton_conv.compile_check"),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                )  # fmt: skip
            )
        futures = [pool.submit(finish, proc, chunk) for proc, chunk in zip(procs, chunks)]
        wait(futures, return_when=FIRST_EXCEPTION)  # a worker that fails stops the others now
        for future in futures:
            if future.done():
                future.result()
        results = [future.result() for future in futures]
    finally:
        _stop(procs)  # after a success they have all exited: nothing to do
        pool.shutdown(wait=True)  # prompt: a killed worker's communicate returns at once
    ordered: list = [None] * len(jobs)
    for i, reports in enumerate(results):
        ordered[i::workers] = reports
    return ordered


def example_spec(
    pass_name: str, dtype: torch.dtype, config, problem, *, force_int64: bool = False, capability: int = 90
) -> LaunchSpec:
    """The launch a GPU of `capability` would run for `problem`, on channels_last meta tensors (with
    a bias), with the flags a GPU run gets: TF32 for fp32 as cuDNN's default, no interpreter bf16
    upcast, TMA descriptors from sm_90 on."""

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

        spec = wgrad_spec(y, x, w, bias, problem, config, force_int64, tma=capability >= 90)
    elif pass_name == "dgrad_masked":  # the benchmark baseline of the stride-phase dgrad
        from .launchers.dgrad_masked import dgrad_masked_spec

        spec = dgrad_masked_spec(y, w, x, problem, config, force_int64)
    else:
        raise ValueError(f"pass_name must be fprop, dgrad, wgrad or dgrad_masked, got {pass_name!r}")
    constexprs = dict(spec.constexprs)
    constexprs["INPUT_PRECISION"] = "tf32" if dtype == torch.float32 else "ieee"
    constexprs["UPCAST"] = False
    return spec._replace(constexprs=constexprs)


if __name__ == "__main__":  # a worker of compile_specs: jobs in on stdin, reports out
    # Import the module by name so the reports unpickle as triton_conv.compile_check.CompileReport.
    from triton_conv.compile_check import _compile_here as compile_job

    reports = [compile_job(job) for job in pickle.loads(sys.stdin.buffer.read())]
    sys.stdout.buffer.write(pickle.dumps(reports))
