"""Compile every kernel variant a campaign will time, ahead of the timing, on all the CPU cores.

Triton compiles a kernel once per *specialization*: the constexprs, the argument types, which integer
arguments equal 1 or divide by 16, which pointers are 16-byte aligned, num_warps and num_stages. Two
launches with the same specialization share a binary (ResNet-50's layer at N=32 and N=128 often do).

1. Recording: a child process runs each job's launch (a campaign item's runners.launch_with_config,
   a tuning's tuning.pass_runner: compile_child._launch) on meta tensors
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
This module starts them and gathers their answers; their work is in compile_child.py, the launches
and variants in variants.py.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time

from ..child_processes import kill_group, module_child, usable_cores
from .check_process import PACKAGE_ROOT
from .compile_child import _record_here  # noqa: F401 - re-exported: the tests record in-process
from .target import TARGET_H200
from .variants import LaunchJob, Variant


class Child:
    """A child process started now, whose pickled answer `result()` waits for."""

    def __init__(self, mode: str, request: dict):
        self.folder = tempfile.mkdtemp(prefix="triton-conv-precompile-")
        self.paths = {name: os.path.join(self.folder, name) for name in ("in.pickle", "out.pickle", "stderr")}
        with open(self.paths["in.pickle"], "wb") as handle:
            pickle.dump(request, handle)
        env = {**os.environ, "TRITON_INTERPRET": "0", "CUDA_VISIBLE_DEVICES": ""}
        # This package first, as the check's process has it: not whatever the cwd or a relative
        # PYTHONPATH would find from where the campaign was started.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (PACKAGE_ROOT, os.environ.get("PYTHONPATH"))))
        self.started = time.perf_counter()
        try:
            with open(self.paths["stderr"], "wb") as err:  # a file: a full pipe would stall the child
                self.process = subprocess.Popen(
                    module_child("triton_conv.campaign.precompile", mode, self.paths["in.pickle"],
                                 self.paths["out.pickle"]),
                    stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True,
                )  # fmt: skip
        except BaseException:  # no process (EAGAIN, ENOMEM): no folder left behind either
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def stop(self) -> None:
        """Kill the child if it still runs and remove its files (again harmless)."""
        if self.process.poll() is None:
            kill_group(self.process)
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

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
            kill_group(self.process)
            self.process.wait()
            age = time.perf_counter() - self.started
            raise TimeoutError(f"precompile child still running after {age:.0f} s: killed") from None
        finally:
            for path in self.paths.values():
                if os.path.exists(path):
                    os.unlink(path)
            os.rmdir(self.folder)
        return answer["result"], answer["seconds"], wall


def record(jobs: list[LaunchJob], target=TARGET_H200) -> list[Variant]:
    """The distinct kernel variants of `jobs`, recorded in a child process (nothing compiled)."""
    return Child("record", {"jobs": list(jobs), "target": tuple(target)}).result()[0]


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
    children: list[Child] = []
    complete, variants, results, busy, record_s, failures, utilities = None, [], [], [], [], [], None
    try:  # a child that cannot start, or Ctrl-C while waiting: the others are stopped, not orphaned
        for index in range(workers):
            children.append(Child("work", {**request, "index": index}))
        for index, child in enumerate(children):
            # One limit for them all: a child still running once it is spent is killed, not given more.
            left = None if timeout_s is None else max(0.0, timeout_s - (time.perf_counter() - started))
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
    except BaseException:
        for child in children:
            child.stop()
        raise
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


if __name__ == "__main__":  # a child: its work from the package's module, so its answers unpickle there
    from triton_conv.campaign.compile_child import _child_main as child_main

    sys.exit(child_main(sys.argv[1:]))
