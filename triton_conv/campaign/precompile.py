"""Compile every kernel variant a campaign will time, ahead of the timing, on all the CPU cores.

Triton compiles a kernel once per *specialization*: the constexprs, the argument types, which integer
arguments equal 1 or divide by 16, which pointers are 16-byte aligned, num_warps and num_stages. Two
launches with the same specialization share a binary (ResNet-50's layer at N=32 and N=128 often do).

1. Recording: a child process runs each job's launch (runners.launch_with_config) on meta tensors
   through Triton's real JIT, with a `jit_cache_hook` that records the launch's specialization and
   stops it before compiling or launching. Identical specializations collapse into one `Variant`.
   No GPU is needed: a compile-only driver names the target, and the meta tensors stand for the
   target GPU's where a launcher asks what the GPU can do (target.py).
2. Compiling: `record_and_compile(jobs, workers)` starts one worker per core; each records all the
   jobs (a few ms each, so every worker finds the same variants in the same order), takes its share
   of them (longest first onto the least loaded, the same split in every worker) and `preload`s it
   (JITFunction.preload: Triton's own compile of a recorded specialization) into Triton's on-disk
   cache. The campaign's own process then finds each variant there on its first launch
   (knobs.compilation.listener reports a cache hit, which the campaign counts). `record(jobs)` alone
   is the dry run's.

The children run with TRITON_INTERPRET=0 (an interpreted kernel cannot be compiled) and never touch
the GPU: target.CompileOnlyDriver answers Triton's questions about the device with the target given.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from ..problem import ConvProblem
from .target import TARGET_H200, meta_as_target, use_compile_only_driver


@dataclass(frozen=True)
class LaunchJob:
    """One launch the campaign will make: a pass of a problem with a config, bf16 etc., channels_last
    (a transposed convolution's pass of its view: runners.launch_with_config)."""

    pass_name: str
    problem: ConvProblem
    config: object  # KernelConfig
    dtype: str
    transposed: bool = False


@dataclass(frozen=True)
class Variant:
    """One kernel binary: the kernel (module, name) and Triton's specialization of it."""

    module: str
    kernel: str
    key: str  # Triton's in-memory cache key of the specialization
    specialization: str  # JSON that JITFunction.preload takes
    jobs: int  # how many of the recorded launches use it

    @property
    def pass_name(self) -> str:
        return self.kernel.removesuffix("_kernel")

    @property
    def short_key(self) -> str:
        """16 hex digits of the specialization key's sha256: its name in compile.json."""
        return hashlib.sha256(f"{self.module}.{self.kernel} {self.key}".encode()).hexdigest()[:16]


# --- in the children --------------------------------------------------------------------------------
def _record_here(jobs: list[LaunchJob], target) -> list[Variant]:
    import torch
    from triton import knobs

    from ..benchmarking import DTYPES
    from .runners import launch_with_config, make_inputs

    use_compile_only_driver(target)
    found: dict[tuple, list] = {}

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        entry = found.setdefault((fn.module, fn.name, str(key)), [compile["specialization_data"], 0])
        entry[1] += 1
        return True  # recorded: neither compile nor launch

    knobs.runtime.jit_cache_hook = hook
    try:
        with meta_as_target(target), torch.no_grad():
            for job in jobs:
                tensors = make_inputs(job.problem, DTYPES[job.dtype], "meta", job.transposed)
                launch = launch_with_config(
                    job.pass_name, job.problem, tensors, job.config, transposed=job.transposed
                )
                launch()
    finally:
        knobs.runtime.jit_cache_hook = None
    return [Variant(m, n, k, data, count) for (m, n, k), (data, count) in found.items()]


def _host_code(compiled) -> tuple[float | None, str | None]:
    """Build the host-side C code a first launch would build, into Triton's cache: (seconds, error).

    Triton 3.6 compiles a C launcher per kernel signature (and, once, its CUDA utilities) with the
    system's C compiler on a process's first launch: a second or more each, in the campaign's own
    process, one after the other, if nobody built them ahead. Later Tritons launch through one
    generic launcher and build nothing per signature (None). Loading what was built needs the CUDA
    driver library: where it is missing (a CPU-only machine) the error is returned and nothing lost."""
    from triton.backends.nvidia import driver

    if not hasattr(driver, "make_launcher"):  # one generic launcher: nothing per signature
        return None, None
    started = time.perf_counter()
    try:
        driver.CudaLauncher(compiled.src, compiled.metadata)
    except Exception as failure:
        return None, f"{type(failure).__name__}: {failure}"[:300]
    return time.perf_counter() - started, None


def _compile_here(variants: list[Variant], target) -> list[dict]:
    from triton import knobs

    use_compile_only_driver(target)
    hits: list[bool] = []
    knobs.compilation.listener = lambda **kw: hits.append(bool(kw.get("cache_hit")))
    results = []
    for variant in variants:
        kernel = getattr(importlib.import_module(variant.module), variant.kernel)
        start = time.perf_counter()
        hits.clear()
        launcher_s = launcher_error = None
        try:
            compiled = kernel.preload(variant.specialization)
            error = None
            seconds = time.perf_counter() - start
            launcher_s, launcher_error = _host_code(compiled)
        except Exception as failure:  # the check step will see the config fail and drop it
            error = f"{type(failure).__name__}: {failure}"[:500]
            seconds = time.perf_counter() - start
        results.append({
            "kernel": variant.kernel, "key": variant.short_key, "seconds": seconds,
            "cache_hit": bool(hits and hits[-1]), "error": error, "pid": os.getpid(),
            "launcher_s": launcher_s, "launcher_error": launcher_error,
        })  # fmt: skip
    return results


def _work_here(request: dict) -> dict:
    """A compile worker: record every job, compile this worker's share of the variants."""
    started = time.perf_counter()
    variants = _record_here(request["jobs"], request["target"])
    recorded = time.perf_counter() - started
    split = shares(variants, request["workers"])
    mine = split[request["index"]] if request["index"] < len(split) else []
    utilities = None
    if request["index"] == 0:  # Triton's CUDA utilities, built once per machine on first use
        started_utils = time.perf_counter()
        try:
            from triton.backends.nvidia.driver import CudaUtils

            CudaUtils()
            utilities = f"built in {time.perf_counter() - started_utils:.1f} s"
        except Exception as failure:
            utilities = f"not built: {type(failure).__name__}: {failure}"[:300]
    return {
        "utilities": utilities,
        "variants": variants if request["index"] == 0 else mine,
        "complete": request["index"] == 0,
        "results": _compile_here(mine, request["target"]),
        "record_s": recorded,
    }


def _child_main(argv: list[str]) -> int:
    mode, in_path, out_path = argv
    with open(in_path, "rb") as handle:
        request = pickle.load(handle)
    started = time.perf_counter()
    work = {
        "record": lambda: _record_here(request["jobs"], request["target"]),
        "work": lambda: _work_here(request),
    }
    result = work[mode]()
    with open(out_path, "wb") as handle:
        pickle.dump({"result": result, "seconds": time.perf_counter() - started}, handle)
    return 0


# --- in the campaign's process ---------------------------------------------------------------------
class Child:
    """A child process started now, whose pickled answer `result()` waits for."""

    def __init__(self, mode: str, request: dict):
        self.folder = tempfile.mkdtemp(prefix="triton-conv-precompile-")
        self.paths = {name: os.path.join(self.folder, name) for name in ("in.pickle", "out.pickle", "stderr")}
        with open(self.paths["in.pickle"], "wb") as handle:
            pickle.dump(request, handle)
        env = {**os.environ, "TRITON_INTERPRET": "0", "CUDA_VISIBLE_DEVICES": ""}
        self.started = time.perf_counter()
        with open(self.paths["stderr"], "wb") as err:  # a file: a full pipe would stall the child
            self.process = subprocess.Popen(
                [sys.executable, "-m", "triton_conv.campaign.precompile", mode, self.paths["in.pickle"],
                 self.paths["out.pickle"]],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
            )  # fmt: skip

    def result(self, timeout_s: float | None = None) -> tuple[object, float, float]:
        """(the child's answer, seconds it worked, seconds since it started). A child still running
        after `timeout_s` is killed and TimeoutError raised."""
        try:
            self.process.wait(timeout=timeout_s)
            wall = time.perf_counter() - self.started
            with open(self.paths["stderr"], "rb") as handle:
                err = handle.read().decode(errors="replace")
            if self.process.returncode != 0:
                raise RuntimeError(f"precompile child failed ({self.process.returncode}):\n{err[-3000:]}")
            with open(self.paths["out.pickle"], "rb") as handle:
                answer = pickle.load(handle)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise TimeoutError(f"precompile child still running after {timeout_s:.0f} s: killed") from None
        finally:
            for path in self.paths.values():
                if os.path.exists(path):
                    os.unlink(path)
            os.rmdir(self.folder)
        return answer["result"], answer["seconds"], wall


def record(jobs: list[LaunchJob], target=TARGET_H200) -> list[Variant]:
    """The distinct kernel variants of `jobs`, recorded in a child process (nothing compiled)."""
    return Child("record", {"jobs": list(jobs), "target": tuple(target)}).result()[0]


def usable_cores(cgroup: str = "/sys/fs/cgroup") -> int:
    """The cores this process may use: os.cpu_count() counts the host's, where a container or a
    CPU affinity may allow fewer (one compile worker per host core would then thrash, each importing
    torch). The fewest of the machine's, the affinity's and the cgroup's CPU quota (v2 cpu.max, v1
    cfs_quota_us / cfs_period_us)."""
    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            with open(os.path.join(cgroup, quota_file)) as handle:
                fields = handle.read().split()
            if period_file is not None:
                with open(os.path.join(cgroup, period_file)) as handle:
                    fields += handle.read().split()
            quota, period = int(fields[0]), int(fields[1])  # 'max' (no quota) raises: skipped
        except (OSError, ValueError, IndexError):
            continue
        if quota > 0 and period > 0:
            counts.append(max(1, quota // period))
    return max(1, min(counts))


# Relative compile cost by kernel, for spreading the work evenly (wgrad's bias-gradient dot and
# split-K reduction make it the heaviest; costs.py holds the absolute seconds).
WEIGHT = {"fprop": 1.0, "dgrad": 1.0, "wgrad": 2.0}


def shares(variants: list[Variant], workers: int) -> list[list[Variant]]:
    """Longest-first onto the least-loaded worker (LPT), by WEIGHT."""
    loads = [[0.0, []] for _ in range(max(1, workers))]
    for variant in sorted(variants, key=lambda v: -WEIGHT.get(v.pass_name, 1.0)):
        least = min(loads, key=lambda load: load[0])
        least[0] += WEIGHT.get(variant.pass_name, 1.0)
        least[1].append(variant)
    return [share for _, share in loads if share]


def record_and_compile(
    jobs: list[LaunchJob], workers: int | None = None, target=TARGET_H200, timeout_s: float | None = None
):
    """(variants, report): every job recorded and every variant compiled into Triton's cache by
    `workers` processes (default: usable_cores()). The report holds each variant's compile seconds and
    whether Triton found it cached already, the workers' busy seconds, the wall time, and the
    workers that failed or ran past `timeout_s` (killed: their variants compile on first launch)."""
    workers = max(1, workers or usable_cores())
    started = time.perf_counter()
    request = {"jobs": list(jobs), "target": tuple(target), "workers": workers}
    children = [Child("work", {**request, "index": index}) for index in range(workers)]
    complete, variants, results, busy, record_s, failures, utilities = None, [], [], [], [], [], None
    for index, child in enumerate(children):
        left = None if timeout_s is None else max(1.0, timeout_s - (time.perf_counter() - started))
        try:
            answer, seconds, _ = child.result(left)
        except (TimeoutError, RuntimeError) as failure:
            failures.append(f"worker {index}: {failure}"[:1000])
            continue
        if answer["complete"]:
            complete = answer["variants"]
        else:
            variants += answer["variants"]
        results += answer["results"]
        utilities = answer["utilities"] or utilities
        busy.append(round(seconds, 2))
        record_s.append(round(answer["record_s"], 2))
    wall = time.perf_counter() - started
    variants = complete if complete is not None else variants  # without worker 0: the shares compiled
    return variants, {
        "results": results,
        "workers": workers,
        "wall_s": wall,
        "worker_s": busy,
        "failures": failures,
        "cuda_utilities": utilities,
        "record_s": record_s,
    }


def variants_json(variants: list[Variant]) -> list[dict]:
    """Each variant's kernel, short key and how many recorded launches share it (for compile.json)."""
    return [{"kernel": v.kernel, "key": v.short_key, "launches": v.jobs} for v in variants]


if __name__ == "__main__":  # a child: run it from the package's module so its answers unpickle there
    from triton_conv.campaign.precompile import _child_main as child_main

    sys.exit(child_main(sys.argv[1:]))
