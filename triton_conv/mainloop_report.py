"""The sm_90 main-loop report: what each pass's reduction loop issues per step, read from the machine
code, beside a plain Triton matmul of the same GEMM and tile and beside Inductor's conv templates.

For ResNet-50's 3x3 stride-1, 3x3 stride-2, 1x1 and 7x7-stem layers (bf16, channels_last, N=32) and
each pass, at the configs the package would choose on an H200 (its untuned default and the best
ranked of the pruned search space), every kernel is compiled for sm_90 with no GPU
(triton_conv.compile_check) and its main loop read by triton_conv.sass: instructions per warp by
kind, scaled to one 128x128x64 CTA step (2,048 issue slots in the 512 cycles the tensor cores need
for it), registers, shared memory, spills, wgmma groups and loads kept in flight.

The cases (layers, configs, the matmul and Inductor peers) are built in mainloop_cases.py.
`write_mainloop_report()` (`triton-conv sass-report`) writes notes/autotune/sm90_mainloop-triton<X.Y>.md
for the installed Triton; `check_targets` is what tests/test_mainloop.py holds the kernels to.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import triton

from .mainloop_cases import (  # noqa: F401 - LAYERS re-exported: the tests read it here
    BATCH,
    DTYPE,
    LAYERS,
    TARGET_DEVICE,
    Case,
    cases,
)
from .output_files import check_writable, write_whole
from .problem import PASSES
from .sass import KINDS

# A pass's main loop may issue at most this many times what the plain pointer matmul of the same
# GEMM and tile issues per 128x128x64 step (issue 12); fprop and dgrad also below Inductor's template.
LIMITS = {"fprop": 1.25, "dgrad": 1.25, "wgrad": 1.5}


def triton_version() -> str:
    return ".".join(triton.__version__.split(".")[:2])


def default_path() -> str:
    return os.path.join("notes", "autotune", f"sm90_mainloop-triton{triton_version()}.md")


class Row(NamedTuple):
    case: Case
    report: object  # CompileReport or None

    @property
    def per_step(self) -> float | None:
        loop = self.report.loop if self.report is not None else None
        return loop.per_reference_step() if loop is not None else None


def compile_rows(found: list[Case], workers: int = 2) -> list[Row]:
    from .compile_check import compile_specs

    buildable = [c for c in found if c.spec is not None]
    reports = compile_specs([c.spec for c in buildable], 90, workers=workers)
    by_case = dict(zip((id(c) for c in buildable), reports, strict=True))
    return [Row(c, by_case.get(id(c))) for c in found]


def reference(rows: list[Row], row: Row, kernel: str) -> Row | None:
    """The `kernel` row of the same layer and pass (a matmul: also at the same tile)."""
    for other in rows:
        case = other.case
        if (case.layer, case.pass_name, case.kernel) != (row.case.layer, row.case.pass_name, kernel):
            continue
        same = case.choice == row.case.choice if kernel == "Inductor" else case.config == row.case.config[:5]
        if same:
            return other
    return None


def check_targets(rows: list[Row]) -> list[str]:
    """What breaks issue 12's targets, one line each (empty: all hold)."""
    problems = []
    for row in rows:
        case = row.case
        if case.kernel != "triton-conv":
            continue
        where = f"{case.layer} {case.pass_name} {case.choice} {case.config}"
        report, loop = row.report, row.report.loop if row.report is not None else None
        if loop is None:
            problems.append(f"{where}: no HGMMA main loop")
            continue
        if report.spills:
            problems.append(f"{where}: spills ({report.spill_bytes} bytes, {report.local_loads} LDL)")
        matmul = reference(rows, row, "matmul")
        matmul_loop = matmul.report.loop if matmul is not None and matmul.report is not None else None
        # Element-wise operand loads (a 3-channel stem) pass through registers and serialise the
        # matmul's wgmma too; elsewhere one wgmma group must stay in flight.
        serialised = matmul_loop is not None and not matmul_loop.wgmma_in_flight
        if not loop.wgmma_in_flight and not serialised:
            problems.append(
                f"{where}: a wgmma wait inside the loop serialises it (gsb0 {loop.wgmma_in_flight})"
            )
        if matmul is not None and matmul.per_step is not None:
            limit = LIMITS[case.pass_name] * matmul.per_step
            if row.per_step > limit:
                problems.append(f"{where}: {row.per_step:.0f} issued per 128x128x64 step > {limit:.0f}")
        peer = reference(rows, row, "Inductor")
        below = peer is None or peer.per_step is None or row.per_step < peer.per_step
        if case.pass_name != "wgrad" and not below:
            problems.append(f"{where}: {row.per_step:.0f} not below Inductor's {peer.per_step:.0f}")
    return problems


def _config_text(config: tuple) -> str:
    if not config:
        return "—"
    text = f"{config[0]}x{config[1]}x{config[2]} w{config[3]} st{config[4]}"
    return text + (f" s{config[5]}" if len(config) > 5 and config[5] > 1 else "")


def _row_cells(rows: list[Row], row: Row) -> list:
    case, report = row.case, row.report
    head = [case.layer, case.pass_name, case.kernel, case.choice, _config_text(case.config)]
    if report is None or report.loop is None:
        why = case.note or ("no HGMMA main loop" if report is not None else "not built")
        return head + [why] + [""] * 13
    loop = report.loop
    matmul = reference(rows, row, "matmul")
    ratio = f"{row.per_step / matmul.per_step:.2f}" if matmul is not None and matmul.per_step else "—"
    kinds = [f"{loop.kind_per_reference_step(kind):.0f}" for kind in KINDS]
    in_flight = "—" if loop.wgmma_in_flight is None else str(loop.wgmma_in_flight)
    loads = "—" if loop.loads_in_flight is None else f"{loop.loads_in_flight:g}"
    copies = f"{loop.ldgsts}/{loop.utmaldg}" + (" +A in regs" if loop.a_from_registers else "")
    return head + [
        f"{row.per_step:.0f}", ratio, *kinds, loop.per_warp, report.registers,
        f"{report.shared_bytes / 1024:g}", report.spill_bytes, in_flight, loads, copies,
    ]  # fmt: skip


HEADERS = [
    "layer", "pass", "kernel", "choice", "config", "per 128x128x64 step", "x matmul",
    "wgmma", "async/TMA", "addr/int", "pred/sel", "barriers", "other", "per warp per trip",
    "registers", "shared KiB", "spill bytes", "wgmma in flight", "loads in flight", "LDGSTS/UTMALDG per trip",
]  # fmt: skip


def render(rows: list[Row]) -> str:
    from tabulate import tabulate

    from .autotune_markdown import provenance

    prov = provenance(gpu=None)
    problems = check_targets(rows)
    lines = [
        f"# sm_90 main loops, Triton {triton_version()}: compiled and read, not measured",
        "",
        "Each pass's reduction loop compiled ahead of time for sm_90 with no GPU present and read from",
        "its machine code (`triton-conv sass-report`, triton_conv/mainloop_report.py): the innermost loop",
        "that holds the wgmma (HGMMA) instructions, each instruction counted once per trip by kind",
        "(triton_conv/sass.py). 'per 128x128x64 step' scales a trip to one 128x128x64 step of one CTA:",
        "instructions per warp x warps x 128·128·64 / the trip's multiply-adds. The tensor cores need",
        "512 cycles for that step, in which an SM's four schedulers have 2,048 issue slots.",
        "",
        f"- Layers: ResNet-50 v1.5 at 224x224, N={BATCH}, {str(DTYPE).replace('torch.', '')}, channels_last,",
        f"  as a {TARGET_DEVICE} would run them. 'default' is the package's untuned config on that device,",
        "  'pruned #1' the best-ranked config of the pruned search space (triton_conv.pruning) besides it.",
        "- matmul: a plain Triton matmul (triton_conv/kernels/matmul.py) of the same GEMM (per group; dgrad:",
        "  a stride phase's rows and the K of the phase with the most taps) at the default's tile, pointer",
        "  loads (BLOCK_K dividing K unmasked) or TMA descriptors. 'x matmul' divides by the pointer",
        "  matmul's count.",
        "- Inductor: PyTorch Inductor's own Triton conv template for the pass rendered for the layer",
        "  (triton_conv/inductor_peer.py) at its config nearest each chosen tile (its warps and stages).",
        "- wgmma in flight: N of `WARPGROUP.DEPBAR.LE gsb0, N` in the loop (0 waits for every wgmma);",
        "  loads in flight: async copies issued before the loop / per trip (the pipeline's stages ahead).",
        f"- Targets (issue 12): fprop and dgrad at most {LIMITS['fprop']}x the matmul and below Inductor's",
        f"  template; wgrad at most {LIMITS['wgrad']}x the matmul; wgmma kept in flight (unless the",
        "  matmul's is not either: element-wise loads through registers); no spills.",
        f"- Triton {prov['triton']}, torch {prov['torch']}, target sm_90, generated {prov['date']}",
        f"- commit {prov['commit']}",
        "",
        "## Targets",
        "",
        "All hold." if not problems else "\n".join(f"- {p}" for p in problems),
        "",
    ]
    for pass_name in PASSES:
        chosen = [r for r in rows if r.case.pass_name == pass_name]
        lines += [
            f"## {pass_name}",
            "",
            tabulate([_row_cells(rows, r) for r in chosen], HEADERS, tablefmt="github"),
            "",
        ]
    return "\n".join(lines)


def write_mainloop_report(path: str | None = None, workers: int = 2, best: int = 1) -> tuple[str, list[str]]:
    """Compile, read and write the report; returns (path, the targets it breaks)."""
    if best < 0:
        raise ValueError(f"best must be 0 or more, got {best}")
    path = path or default_path()
    check_writable(path)  # before the compiling
    rows = compile_rows(cases(best), workers)
    write_whole(path, render(rows))
    return path, check_targets(rows)


if __name__ == "__main__":
    import sys

    written, broken = write_mainloop_report(*sys.argv[1:2])
    print(written)
    print("\n".join(broken) or "all targets hold")
