"""The sm_90 static report: every config of every pass's space compiled for Hopper with no GPU present.

For each pass, dtype and config it records what the compiler made of the kernel (registers, shared
memory, spills, wgmma or not) and what the pruning does with it on an H200, so a config that spills
or falls off wgmma is visibly pruned by a named rule or flagged. Compiled, not measured: these are
resource counts, not times. `write_static_report()` writes notes/autotune/sm90_static-triton<X.Y>.md
for the installed Triton (each version's compiler makes its own code); the work is spread over
worker processes.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import NamedTuple

import torch

from .configs import KernelConfig
from .devices import get_device
from .output_files import check_writable, write_whole
from .problem import PASSES, ConvProblem
from .pruning import Target, budgeted_registers, register_budget, shared_memory, wgmma_on_hopper
from .search_space import config_space
from .tuning_keys import dtype_name

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# A ResNet-50 layer (layer3's 3x3 at 14x14, 256 -> 256, 8 images), channels_last, as a network
# would launch it: channel counts divisible by 16, so the compiler sees a real launch's divisibility.
PROBLEM = ConvProblem.from_shapes((8, 256, 14, 14), (256, 256, 3, 3), padding=1)
TARGET_DEVICE = "H200"  # the sm_90 device whose limits the verdict column applies


def triton_version() -> str:
    import triton

    return ".".join(triton.__version__.split(".")[:2])


def default_path() -> str:
    """One table per Triton version: what a version's compiler makes of the kernels differs."""
    return os.path.join("notes", "autotune", f"sm90_static-triton{triton_version()}.md")


_BY_NAME = {dtype_name(d): d for d in DTYPES}
_CONFIG_TEXT = re.compile(r"\d+x\d+x\d+ g\d+ s\d+ w\d+ st\d+")  # str(KernelConfig)


class StaticRow(NamedTuple):
    pass_name: str
    dtype: str
    config: KernelConfig
    registers: int
    shared_bytes: int
    spill_bytes: int
    local_loads: int
    wgmma: bool
    verdict: str


def space_cases(passes: Iterable[str] = PASSES, dtypes=DTYPES) -> list[tuple[str, str, KernelConfig]]:
    """(pass, dtype name, config) for every config of every pass's space, in report order."""
    return [(p, dtype_name(d), c) for p in passes for d in dtypes for c in config_space(p)]


def build_spec(pass_name: str, dtype: torch.dtype, config: KernelConfig, problem=PROBLEM, capability=90):
    from .compile_check import example_spec

    return example_spec(pass_name, dtype, config, problem, capability=capability)


def verdict(pass_name: str, dtype: torch.dtype, config: KernelConfig, report) -> str:
    """What the pruning does with this config on the target device; 'FLAG' marks what needs a fix
    (a config that does not fit, spills or falls off wgmma and that no rule prunes)."""
    device = get_device(TARGET_DEVICE)
    target = Target(PROBLEM, pass_name, dtype, device)
    limit = device.smem_per_block // 1024
    if not shared_memory(config, target):
        needed = config.shared_bytes(target.element_size, device.compute_capability) // 1024
        return f"pruned on {device.name}: shared_memory ({needed} KiB > {limit})"
    if report.shared_bytes > device.smem_per_block:
        return f"FLAG: compiled to {report.shared_bytes // 1024} KiB shared memory, over {limit} KiB"
    if not report.wgmma:
        if not wgmma_on_hopper(config, target):
            return "pruned on sm_90: wgmma_on_hopper"
        return "FLAG: falls off wgmma"
    if not register_budget(config, target):
        return f"pruned: register_budget ({budgeted_registers(config, target)} > 128 registers)"
    if report.local_loads:
        return f"FLAG: spills {report.spill_bytes} bytes"
    if report.spill_bytes:  # a stack frame that no instruction reads: no local-memory traffic
        return f"ok ({report.spill_bytes}-byte stack frame, no local loads)"
    return "ok"


def compile_cases(cases, workers: int | None = None, capability: int = 90) -> list:
    """CompileReports for (pass, dtype name, config) cases, in order, over `workers` processes that
    import the package uninterpreted (so this works under TRITON_INTERPRET=1 too)."""
    from .compile_check import compile_specs

    specs = [build_spec(p, _BY_NAME[d], c, capability=capability) for p, d, c in cases]
    from .child_processes import usable_cores

    return compile_specs(specs, capability, workers=workers or usable_cores())


def static_rows(passes=PASSES, dtypes=DTYPES, workers: int | None = None) -> list[StaticRow]:
    cases = space_cases(passes, dtypes)
    reports = compile_cases(cases, workers)
    return [
        StaticRow(
            p,
            d,
            c,
            r.registers,
            r.shared_bytes,
            r.spill_bytes,
            r.local_loads,
            r.wgmma,
            verdict(p, _BY_NAME[d], c, r),
        )  # fmt: skip
        for (p, d, c), r in zip(cases, reports, strict=True)
    ]


def _summary(rows: list[StaticRow]) -> list[list]:
    """Per pass and dtype: configs, how many the H200 keeps, what prunes the others, register range."""
    table = []
    for pass_name in PASSES:
        for dtype in (dtype_name(d) for d in DTYPES):
            chosen = [r for r in rows if (r.pass_name, r.dtype) == (pass_name, dtype)]
            if not chosen:
                continue
            kept = [r for r in chosen if r.verdict.startswith("ok")]
            pruned: dict[str, int] = {}
            for r in chosen:
                if not r.verdict.startswith("ok"):
                    reason = r.verdict.split(": ")[1].split(" ")[0]
                    pruned[reason] = pruned.get(reason, 0) + 1
            registers = [r.registers for r in kept] or [0]
            table.append([
                pass_name, dtype, len(chosen), len(kept),
                ", ".join(f"{n} {reason}" for reason, n in pruned.items()) or "—",
                f"{min(registers)}–{max(registers)}", sum(r.wgmma for r in chosen),
                sum(bool(r.spill_bytes) for r in kept),
            ])  # fmt: skip
    return table


def render(rows: list[StaticRow]) -> str:
    from tabulate import tabulate

    from .autotune_markdown import provenance

    prov = provenance(gpu=None)
    device = get_device(TARGET_DEVICE).name
    lines = [
        f"# sm_90 static report, Triton {triton_version()}: every config compiled, not measured",
        "",
        "Each config of each pass's search space (triton_conv/search_space.py) compiled ahead of time for",
        "sm_90 (Hopper) with no GPU present, by `triton_conv.static_report.write_static_report()`",
        "(`triton-conv static-report`). Registers and the stack frame come from `cuobjdump -res-usage`,",
        "wgmma (HGMMA) and local loads (LDL, the mark of a real spill) from the SASS, shared memory from",
        "the compiler's metadata. These are resource counts, not times.",
        "",
        f"- Problem: {PROBLEM}, channels_last; fp32 compiled with TF32 (cuDNN's default).",
        f"- Verdict: what pruning.PROBLEM_RULES do with the config on an {device}. 'ok (8-byte stack",
        "  frame, no local loads)': the compiler reserved a frame that no instruction reads or writes.",
        "  'FLAG' would mark a config that spills or falls off wgmma with no rule pruning it (the tests",
        "  fail on one).",
        f"- Triton {prov['triton']}, torch {prov['torch']}, target sm_90, generated {prov['date']}",
        f"- commit {prov['commit']}",
        "",
        "## Summary",
        "",
        tabulate(
            _summary(rows),
            [
                "pass",
                "dtype",
                "configs",
                f"kept on {device}",
                "pruned by",
                "registers (kept)",
                "wgmma",
                "stack frame (kept)",
            ],
            tablefmt="github",
        ),  # fmt: skip
        "",
    ]
    headers = ["pass", "dtype", "config", "registers", "shared KiB", "spill bytes", "wgmma", "verdict"]
    for pass_name in PASSES:
        chosen = [r for r in rows if r.pass_name == pass_name]
        if not chosen:
            continue
        lines += [f"## {pass_name}", ""]
        table = [
            [r.pass_name, r.dtype, str(r.config), r.registers, f"{r.shared_bytes / 1024:g}",
             r.spill_bytes, "yes" if r.wgmma else "no", r.verdict]
            for r in chosen
        ]  # fmt: skip
        lines += [tabulate(table, headers, tablefmt="github"), ""]
    return "\n".join(lines)


def write_static_report(path: str | None = None, workers: int | None = None, passes=PASSES) -> str:
    """Compile every config of `passes` for sm_90 in fp16, bf16 and fp32 and write the table."""
    path = path or default_path()
    check_writable(path)  # before minutes of compiling
    rows = static_rows(passes, DTYPES, workers)
    write_whole(path, render(rows))
    return path


def listed_cases(path: str) -> set[tuple[str, str, str]]:
    """(pass, dtype, config text) of every row of a written report."""
    found = set()
    with open(path) as handle:
        for line in handle:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 8 and cells[0] in PASSES and _CONFIG_TEXT.fullmatch(cells[2]):
                found.add((cells[0], cells[1], cells[2]))
    return found


if __name__ == "__main__":  # python -m triton_conv.static_report [path]
    print(write_static_report(*sys.argv[1:2]))
