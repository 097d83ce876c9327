"""A pytest plugin that counts the kernel variants a test run launches: what a GPU run of the same
tests compiles (each variant once per process, or once in all where Triton's on-disk cache serves).

    TRITON_INTERPRET=1 PYTHONPATH=. python -m pytest tests -p tests.launch_census

writes two files (in TRITON_CONV_CENSUS_DIR, default the working folder) for each process that ran
tests: `launch-census-<pid>.tsv`, a row per test (seconds, launches, variants the process first
launched in that test, node id), and `launch-variants-<pid>.txt`, a line per variant. The distinct
lines of the second over all processes are what notes/README.md sizes the GPU suite with.

A variant is keyed as Triton's JIT specialises a launch: the kernel, its constexprs, warps and
stages, each tensor's dtype and 16-byte alignment, each integer's being 1, a multiple of 16, or past
32 bits, and the type of any other argument. Under the interpreter some constexprs differ from a
GPU's (bf16's upcast, fp32's TF32), so the count is the GPU's to within those.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from triton_conv.launchers import common


def variant_key(spec: common.LaunchSpec) -> tuple:
    def argument(value):
        if isinstance(value, torch.Tensor):
            return (value.dtype, value.data_ptr() % 16 == 0)
        if isinstance(value, int) and not isinstance(value, bool):
            return (int, value == 1, value % 16 == 0, -(2**31) <= value < 2**31)
        return (type(value),)  # bools and floats: by type only, as Triton's JIT keys them

    constexprs = tuple(sorted((name, repr(value)) for name, value in spec.constexprs.items()))
    arguments = tuple(argument(value) for value in spec.args)
    return (spec.kernel.__name__, constexprs, spec.num_warps, spec.num_stages, arguments)


variants: set = set()
_launches = [0]
_rows: list = []


def pytest_configure(config):
    from triton_conv.launchers import dgrad, dgrad_masked, fprop, wgrad

    launch = common.launch

    def counted(spec):
        variants.add(variant_key(spec))
        _launches[0] += 1
        return launch(spec)

    # The launchers import `launch` by name: each module's name is replaced.
    for module in (common, dgrad, dgrad_masked, fprop, wgrad):
        module.launch = counted


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    launches, known, start = _launches[0], len(variants), time.perf_counter()
    yield
    _rows.append((time.perf_counter() - start, _launches[0] - launches, len(variants) - known, item.nodeid))


def pytest_sessionfinish(session):
    if not _rows:
        return
    folder = os.environ.get("TRITON_CONV_CENSUS_DIR", ".")
    with open(os.path.join(folder, f"launch-census-{os.getpid()}.tsv"), "w") as out:
        out.write("seconds\tlaunches\tnew_variants\ttest\n")
        for seconds, launches, new, nodeid in _rows:
            out.write(f"{seconds:.3f}\t{launches}\t{new}\t{nodeid}\n")
    with open(os.path.join(folder, f"launch-variants-{os.getpid()}.txt"), "w") as out:
        out.writelines(f"{key!r}\n" for key in sorted(variants, key=repr))
