"""The model against DeepBench's published cuDNN times per layer, pass and batch size
(notes/published/deepbench_conv.csv, copied from baidu-research/DeepBench with its source on every row):
tables P6 to P8 of notes/batching.md and every row in notes/published/deepbench_vs_model.md.

Per device and dtype: the per-call floor is read off the table (the least time any call took), the
achieved fraction is the one number fitted (calibration.fit_fraction, on the forward pass at N=8: the
pass where cuDNN and the model both run an implicit GEMM), and every other row is held out. Judged: the
absolute time (within a factor of WITHIN), and the ratio t(2N)/t(N) of the same layer and pass at two
batch sizes (within RATIO_TOLERANCE). cuDNN 7.6 ran fp16 on tensor cores (NHWC, implicit GEMM only);
in fp32 it chose among Winograd, FFT and GEMM (the forward pass's choice is in the table). Its implicit
reduction is walked differently by precision, and the model describes each walk with the nearer of
its two (CUDNN_ROW_SPANS): in fp16 every filter tap's channels are padded to a block (row_spans=False:
its times on the 1- and 3-channel layers are what that predicts, 1.6 to 16 times what triton-conv's walk
of whole tap rows would take); in fp32 C·R·S is one reduction, nearer to the walk of tap rows
(row_spans=True), and faster still than it.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..model import NO_FLOOR, Terms, fit_fraction, predict
from ..problem import ConvProblem
from .markdown import table
from .published import PUBLISHED

FIT_BATCH = 8
WITHIN = 1.3  # the target: absolute time within a factor of 1.3
RATIO_TOLERANCE = 0.15  # and the ratio between two batch sizes within 15%
CUDNN_ROW_SPANS = {"fp16": False, "fp32": True}  # how cuDNN 7.6 walks few channels (module docstring)
PASSES = ("fprop", "dgrad", "wgrad")


@dataclass(frozen=True)
class LayerRow:
    device: str
    dtype: str
    application: str
    problem: ConvProblem  # at the row's batch
    pass_name: str
    seconds: float
    algorithm: str  # cuDNN's forward algorithm (fprop rows only)
    source: str  # repository file, sheet


def load_deepbench(path: str | Path = PUBLISHED / "deepbench_conv.csv") -> list[LayerRow]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            g = {
                k: int(r[k])
                for k in ("N", "C", "H", "W", "K", "R", "S", "pad_h", "pad_w", "stride_h", "stride_w")
            }
            problem = ConvProblem.from_shapes(
                (g["N"], g["C"], g["H"], g["W"]),
                (g["K"], g["C"], g["R"], g["S"]),
                stride=(g["stride_h"], g["stride_w"]),
                padding=(g["pad_h"], g["pad_w"]),
            )
            rows.append(
                LayerRow(
                    r["device"],
                    r["dtype"],
                    r["application"],
                    problem,
                    r["pass"],
                    float(r["ms"]) / 1e3,
                    r["algorithm"],
                    f"{r['repository']} {r['file']} @ {r['commit'][:12]}, {r['sheet']}",
                )
            )
    return rows


@dataclass(frozen=True)
class DeviceFit:
    device: str
    dtype: str
    terms: Terms  # the floor read off the table, the achieved fraction fitted
    rows: tuple  # (LayerRow, Prediction with the terms)

    def held_out(self, row: LayerRow) -> bool:
        return not (row.pass_name == "fprop" and row.problem.batch == FIT_BATCH)

    def ratios(self, pass_name: str | None = None) -> list[tuple]:
        """(row at N, row at 2N, measured ratio, predicted ratio) for the layers measured at both; a
        layer that two of DeepBench's sets list is a pair in each, one listed twice in a set once."""
        found = {
            (r.application, r.problem.with_batch(1), r.pass_name, r.problem.batch): (r, p)
            for r, p in self.rows
        }
        pairs = []
        for (application, one, name, n), (row, p) in found.items():
            if (application, one, name, 2 * n) in found and pass_name in (None, name):
                row2, p2 = found[(application, one, name, 2 * n)]
                pairs.append((row, row2, row2.seconds / row.seconds, p2.time_s / p.time_s))
        return pairs


def fit_device(rows: list[LayerRow]) -> DeviceFit:
    """One device and dtype: floor = the least measured time, η fitted on the fprop rows at FIT_BATCH."""
    (device, dtype), floor = {(r.device, r.dtype) for r in rows}.pop(), min(r.seconds for r in rows)
    spans = CUDNN_ROW_SPANS[dtype]
    ideal = [
        predict(
            r.problem, r.pass_name, None, device, dtype, allow_tf32=False, terms=NO_FLOOR, row_spans=spans
        )
        for r in rows
    ]
    fitted = [(r.seconds, floor + p.serial_s, p.roofline_s) for r, p in zip(rows, ideal, strict=True)
              if r.pass_name == "fprop" and r.problem.batch == FIT_BATCH]  # fmt: skip
    terms = Terms(call_floor_s=floor, achieved_fraction=fit_fraction(fitted))
    predicted = [predict(r.problem, r.pass_name, p.config, device, dtype, allow_tf32=False, terms=terms,
                         row_spans=spans) for r, p in zip(rows, ideal, strict=True)]  # fmt: skip
    return DeviceFit(device, dtype, terms, tuple(zip(rows, predicted, strict=True)))


def fit_all(rows: list[LayerRow]) -> list[DeviceFit]:
    keys = list(dict.fromkeys((r.device, r.dtype) for r in rows))
    return [fit_device([r for r in rows if (r.device, r.dtype) == key]) for key in keys]


def _within(ratio: float) -> bool:
    return 1 / WITHIN <= ratio <= WITHIN


def absolute_share(fit: DeviceFit, pass_name: str | None = None, held_out: bool = True) -> tuple[int, int]:
    chosen = [
        (r, p) for r, p in fit.rows if pass_name in (None, r.pass_name) and (fit.held_out(r) or not held_out)
    ]
    return sum(_within(p.time_s / r.seconds) for r, p in chosen), len(chosen)


def ratio_share(fit: DeviceFit, pass_name: str | None = None) -> tuple[int, int]:
    pairs = fit.ratios(pass_name)
    return sum(abs(model / measured - 1) <= RATIO_TOLERANCE for *_, measured, model in pairs), len(pairs)


def _cell(share: tuple[int, int]) -> str:
    hits, total = share
    return f"{hits}/{total} ({hits / total:.1%})" if total else "—"


def layer_summary_table(fits) -> str:
    """P6: per device and dtype: the floor read, the fraction fitted, and the shares within target."""
    rows = []
    for fit in fits:
        median = statistics.median(p.time_s / r.seconds for r, p in fit.rows)
        rows.append([fit.device, fit.dtype, fit.terms.call_floor_s * 1e6, fit.terms.achieved_fraction, median,
                     *(_cell(absolute_share(fit, name)) for name in (*PASSES, None)),
                     *(_cell(ratio_share(fit, name)) for name in (*PASSES, None))])  # fmt: skip
    headers = ["device", "dtype", "floor µs", "η fitted", "median model/pub.",
               *(f"within 1.3×: {name}" for name in (*PASSES, "all")),
               *(f"ratio ±15%: {name}" for name in (*PASSES, "all"))]  # fmt: skip
    return table(headers, rows)


# cuDNN's forward algorithms by family; DeepBench's V100 and T4 sheets spell one "LICIT_PRECOMP_GEMM"
ALGORITHM_FAMILIES = {
    "GEMM": ("IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "LICIT_PRECOMP_GEMM"),
    "Winograd": ("WINOGRAD", "WINOGRAD_NONFUSED"),
    "FFT": ("FFT", "FFT_TILING"),
}


def _filter_kind(p: ConvProblem) -> str:
    return "1x1" if p.kernel_h * p.kernel_w == 1 else "RxS"


def _miss_cell(ratios: list[float]) -> str:
    """Median model/published time and the rows within WITHIN: which way a group misses, and how often."""
    if not ratios:
        return "—"
    return f"{statistics.median(ratios):.2f} ({sum(map(_within, ratios))}/{len(ratios)})"


def miss_table(fits) -> str:
    """P8: the held-out rows of each device and dtype grouped by pass and filter size, and the forward
    rows by the algorithm family cuDNN chose: where the single fitted fraction is too fast or too slow."""
    groups = [(name, kind) for name in PASSES for kind in ("1x1", "RxS")]
    rows = []
    for fit in fits:
        held = [(r, p.time_s / r.seconds) for r, p in fit.rows if fit.held_out(r)]
        by_group = [[q for r, q in held if (r.pass_name, _filter_kind(r.problem)) == g] for g in groups]
        by_algorithm = [[q for r, q in held if r.pass_name == "fprop" and r.algorithm in members]
                        for members in ALGORITHM_FAMILIES.values()]  # fmt: skip
        rows.append([fit.device, fit.dtype, *map(_miss_cell, by_group), *map(_miss_cell, by_algorithm)])
    headers = ["device", "dtype", *(f"{name} {kind}" for name, kind in groups),
               *(f"fprop, cuDNN {family}" for family in ALGORITHM_FAMILIES)]  # fmt: skip
    return table(headers, rows)


def _layer_text(p: ConvProblem) -> str:
    return f"{p.in_channels}→{p.out_channels} {p.kernel_h}x{p.kernel_w}/{p.stride[0]} at {p.height}x{p.width}"


def pair_rows(fit: DeviceFit, pass_name: str | None = None, application: str | None = None) -> list[list]:
    rows, predicted = [], dict(fit.rows)
    for row, row2, measured, model in fit.ratios(pass_name):
        if application not in (None, row.application):
            continue
        p, p2 = predicted[row], predicted[row2]
        rows.append(
            [
                row.application,
                _layer_text(row.problem),
                row.pass_name,
                f"{row.problem.batch}→{row2.problem.batch}",
                row.seconds * 1e6,
                p.time_s * 1e6,
                row2.seconds * 1e6,
                p2.time_s * 1e6,
                f"{measured:.2f}",
                f"{model:.2f}",
                f"{model / measured - 1:+.0%}",
                row.algorithm or "—",
            ]
        )
    return rows


PAIR_HEADERS = ["set", "layer (C→K RxS/stride at HxW)", "pass", "N", "pub. µs", "model µs", "pub. µs 2N",
                "model µs 2N", "pub. ratio", "model ratio", "ratio error", "cuDNN fwd algorithm"]  # fmt: skip


def resnet_table(fits) -> str:
    """P7: DeepBench's ResNet layers, forward, fp16 (tensor cores): both batch sizes, published and model."""
    rows = [
        [fit.device, *row] for fit in fits if fit.dtype == "fp16" for row in pair_rows(fit, "fprop", "Resnet")
    ]
    return table(["device", *PAIR_HEADERS], rows, floatfmt=".1f")


def every_row(fits) -> str:
    """The whole comparison, one table per device and dtype (notes/published/deepbench_vs_model.md)."""
    parts = []
    for fit in fits:
        source = fit.rows[0][0].source
        pairs = pair_rows(fit)
        paired = {id(row) for pair in fit.ratios() for row in pair[:2]}
        single = [[r.application, _layer_text(r.problem), r.pass_name, r.problem.batch, r.seconds * 1e6,
                   p.time_s * 1e6, p.time_s / r.seconds, str(p.config)]
                  for r, p in fit.rows if id(r) not in paired]  # fmt: skip
        text = f"## {fit.device}, {fit.dtype}\n\nSource: {source}. Terms: {fit.terms}.\n\n"
        text += table(PAIR_HEADERS, pairs, floatfmt=".2f")
        if single:
            headers = ["set", "layer", "pass", "N", "pub. µs", "model µs", "model/pub.", "config"]
            text += f"\n\nMeasured at one batch size only:\n\n{table(headers, single)}"
        parts.append(text)
    return "\n\n".join(parts)
