"""The sm_90 main-loop report: what each pass's reduction loop issues per step, read from the machine
code, beside a plain Triton matmul of the same GEMM and tile and beside Inductor's conv templates.

For ResNet-50's 3x3 stride-1, 3x3 stride-2, 1x1 and 7x7-stem layers (bf16, channels_last, N=32) and
each pass, at the configs the package would choose on an H200 (its untuned default and the best
ranked of the pruned search space), every kernel is compiled for sm_90 with no GPU
(triton_conv.compile_check) and its main loop read by triton_conv.sass: instructions per warp by
kind, scaled to one 128x128x64 CTA step (2,048 issue slots in the 512 cycles the tensor cores need
for it), registers, shared memory, spills, wgmma groups and loads kept in flight.

`write_mainloop_report()` (`triton-conv sass-report`) writes notes/autotune/sm90_mainloop-triton<X.Y>.md
for the installed Triton; `check_targets` is what tests/test_mainloop.py holds the kernels to.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton

from .configs import KernelConfig, config_space, default_pass_config
from .devices import get_device
from .layers import resnet50_convs
from .problem import PASSES, ConvProblem
from .pruning import Target, prune

BATCH = 32
DTYPE = torch.bfloat16
TARGET_DEVICE = "H200"
# ResNet-50 v1.5 at 224x224: (label, torchvision name) of the layers the report reads.
LAYERS = (
    ("3x3 s1, 14x14, 256", "layer3.1.conv2"),
    ("3x3 s2, 28x28 -> 14x14, 256", "layer3.0.conv2"),
    ("1x1, 14x14, 1024 -> 256", "layer3.1.conv1"),
    ("7x7 s2 stem, 224x224, 3 -> 64", "conv1"),
)
# A pass's main loop may issue at most this many times what the plain pointer matmul of the same
# GEMM and tile issues per 128x128x64 step (issue 12); fprop and dgrad also below Inductor's template.
LIMITS = {"fprop": 1.25, "dgrad": 1.25, "wgrad": 1.5}
KERNELS = ("triton-conv", "matmul", "matmul TMA", "Inductor")


def triton_version() -> str:
    return ".".join(triton.__version__.split(".")[:2])


def default_path() -> str:
    return os.path.join("notes", "autotune", f"sm90_mainloop-triton{triton_version()}.md")


def layer_problems(batch: int = BATCH) -> list[tuple[str, ConvProblem]]:
    convs = dict(resnet50_convs())
    return [(label, convs[name].with_batch(batch)) for label, name in LAYERS]


def chosen_configs(problem: ConvProblem, pass_name: str, best: int = 1) -> list[tuple[str, KernelConfig]]:
    """The package's untuned default on the target device, then the `best` highest-ranked configs
    of the pruned search space (pruning's own ranking) that differ from it."""
    device = get_device(TARGET_DEVICE)
    default = default_pass_config(
        problem, pass_name, DTYPE, sm_count=device.sm_count, capability=device.compute_capability
    )
    pruning = prune(config_space(pass_name), problem, pass_name, DTYPE, device)
    target = Target(problem, pass_name, DTYPE, device)
    ranked = sorted(
        pruning.survivors,
        key=lambda c: (-round(target.fill_score(c), 6), -c.block_m * c.block_n, c.split_k),
    )
    chosen = [("default", default)]
    chosen += [(f"pruned #{i + 1}", c) for i, c in enumerate(c for c in ranked if c != default)][:best]
    return chosen


def gemm_of(problem: ConvProblem, pass_name: str) -> tuple[int, int, int]:
    """(M, N, K) of one launch's GEMM per group; dgrad's is its largest stride phase."""
    m, n, k = problem.gemm(pass_name)
    if pass_name == "dgrad":
        phase = problem.dgrad_phases()[0]
        return (
            problem.batch * phase.rows.count * phase.cols.count,
            n,
            problem.out_per_group * phase.rows.taps * phase.cols.taps,
        )
    return m, n, k


class Case(NamedTuple):
    layer: str
    pass_name: str
    kernel: str  # one of KERNELS
    choice: str  # "default", "pruned #1", or the peer's own config
    config: tuple  # (BM, BN, BK, warps, stages[, split])
    spec: object  # LaunchSpec, or None when the kernel cannot be built for this case
    note: str = ""


def _meta(shape, dtype=DTYPE):
    return torch.empty(shape, dtype=dtype, device="meta")


def matmul_spec(m: int, n: int, k: int, config: KernelConfig, tma: bool):
    """A plain Triton matmul of (m x k) @ (k x n) at the config's tile, or None when TMA cannot
    describe the operands (rows not a multiple of 16 bytes)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from .kernels.matmul import matmul_kernel, matmul_tma_kernel
    from .launchers.common import LaunchSpec

    blocks = dict(
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m
    )
    c = _meta((m, n))
    if not tma:
        a, b = _meta((m, k)), _meta((k, n))
        args = (a, b, c, m, n, k, k, 1, n, 1, n, 1)
        constexprs = dict(EVEN_K=k % config.block_k == 0, **blocks)
        return LaunchSpec(matmul_kernel, (1, 1, 1), args, constexprs, config.num_warps, config.num_stages)
    if (k * DTYPE.itemsize) % 16:
        return None
    a = TensorDescriptor(_meta((m, k)), [m, k], [k, 1], [config.block_m, config.block_k])
    b = TensorDescriptor(_meta((n, k)), [n, k], [k, 1], [config.block_n, config.block_k])
    args = (a, b, c, m, n, k, n, 1)
    return LaunchSpec(matmul_tma_kernel, (1, 1, 1), args, blocks, config.num_warps, config.num_stages)


def inductor_case(layer: str, problem: ConvProblem, pass_name: str, config: KernelConfig) -> Case:
    """Inductor's template for this pass at its config nearest to `config`'s tile."""
    from . import inductor_peer
    from .compile_check import load_module
    from .launchers.common import LaunchSpec

    if not inductor_peer.has_template(pass_name):
        note = f"torch {torch.__version__} has no Triton template for {pass_name}"
        return Case(layer, pass_name, "Inductor", "—", (), None, note)
    options = inductor_peer.inductor_configs(pass_name, problem, DTYPE)

    def distance(option):
        return sum(
            abs(a.bit_length() - b.bit_length())
            for a, b in zip(option[:3], (config.block_m, config.block_n, config.block_k))
        )

    chosen = min(options, key=distance)
    source, name = inductor_peer.render(pass_name, problem, DTYPE, *chosen[:3])
    module, path = inductor_peer.write_module(source)
    kernel = getattr(load_module(module, path), name)
    shapes = {
        "fprop": (problem.input_shape, problem.weight_shape, problem.output_shape),
        "dgrad": (problem.output_shape, problem.weight_shape, problem.input_shape),
        "wgrad": (problem.input_shape, problem.output_shape, problem.weight_shape),
    }[pass_name]
    spec = LaunchSpec(kernel, (1, 1, 1), tuple(_meta(s) for s in shapes), {}, chosen[3], chosen[4])
    return Case(layer, pass_name, "Inductor", "nearest tile", chosen, spec)


def cases(best: int = 1, batch: int = BATCH) -> list[Case]:
    """Per layer and pass: the package's chosen configs, a plain matmul (pointer loads and TMA) of
    the same GEMM at each of their tiles, and Inductor's template at the tile nearest the default."""
    from .compile_check import example_spec

    found = []
    for layer, problem in layer_problems(batch):
        for pass_name in PASSES:
            configs = chosen_configs(problem, pass_name, best)
            m, n, k = gemm_of(problem, pass_name)
            tiles = []
            for choice, config in configs:
                spec = example_spec(pass_name, DTYPE, config, problem)
                found.append(Case(layer, pass_name, "triton-conv", choice, _config_tuple(config), spec))
                if _config_tuple(config)[:5] not in tiles:
                    tiles.append(_config_tuple(config)[:5])
                    for kernel, tma in (("matmul", False), ("matmul TMA", True)):
                        spec = matmul_spec(m, n, k, config, tma)
                        note = "" if spec is not None else "K rows not 16-byte aligned: no TMA descriptor"
                        found.append(Case(layer, pass_name, kernel, "same tile", tiles[-1], spec, note))
            for choice, config in configs:
                found.append(inductor_case(layer, problem, pass_name, config)._replace(choice=choice))
    return found


def _config_tuple(c: KernelConfig) -> tuple:
    return (c.block_m, c.block_n, c.block_k, c.num_warps, c.num_stages, c.split_k)


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
    kinds = [
        f"{loop.kind_per_reference_step(kind):.0f}"
        for kind in (
            "wgmma",
            "async copy/TMA",
            "address/integer",
            "predicates/selects",
            "barriers/waits",
            "other",
        )
    ]
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
        "  its largest stride phase) at the default's tile, pointer loads (BLOCK_K dividing K unmasked) or",
        "  TMA descriptors. 'x matmul' divides by the pointer matmul's count.",
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
    rows = compile_rows(cases(best), workers)
    path = path or default_path()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    text = render(rows)  # before opening: the provenance asks git whether the tree is clean
    with open(path, "w") as handle:
        handle.write(text)
    return path, check_targets(rows)


if __name__ == "__main__":
    import sys

    written, broken = write_mainloop_report(*sys.argv[1:2])
    print(written)
    print("\n".join(broken) or "all targets hold")
