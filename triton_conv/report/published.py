"""The model against published ResNet-50 v1.5 inference throughput (notes/published/resnet50_inference.csv,
copied from NVIDIA's DeepLearningExamples READMEs with its source on every row): tables P1-P5 of
notes/batching.md.

Each published table (one GPU, one precision, one software stack, throughput at N = 1..256) is fitted on
two batch sizes, FIT_BATCHES, by calibration.fit_stack (a stack overhead and an achieved fraction), and
judged on every other batch size it lists: the error of S(N) = N·T(1)/T(N), predicted against
published (T(N) = N / throughput). Both compositions of terms.py are judged, serial and overlapped.
The convolutions are the 53 of ResNet-50 v1.5 at 224x224, inference (fprop), in the configs the model
picks; precision FP16/mixed is the model's fp16, FP32 is fp32 without TF32, TF32 is fp32 with it.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..layers import get_layer_set
from ..model import DEFAULT_TERMS, fit_stack, network_time
from .markdown import table

PUBLISHED = Path(__file__).resolve().parents[2] / "notes" / "published"
FIT_BATCHES = (1, 128)
TOLERANCE = 0.15  # the target: S(N) within 15%
FAMILIES = (  # (substring of the stack, family), first match wins
    ("Triton Inference Server, ONNX", "Triton server, ONNX Runtime-TensorRT"),
    ("Triton Inference Server, TF-TRT", "Triton server, TF-TRT"),
    ("Paddle-TRT", "Paddle-TRT"),
    ("XLA", "TensorFlow + XLA"),
    ("TensorFlow", "TensorFlow"),
    ("PyTorch", "PyTorch"),
    ("MXNet", "MXNet"),
    ("PaddlePaddle", "PaddlePaddle"),
)


@dataclass(frozen=True)
class InferenceTable:
    """One published table: throughput by batch size for one GPU, precision and stack."""

    number: int  # its order in the CSV, from 1
    repository: str
    file: str
    commit: str
    title: str
    device: str  # a triton_conv.devices entry
    precision: str  # "fp16", "fp32" or "tf32"
    stack: str
    images_per_s: dict = field(default_factory=dict)  # batch -> images/s

    @property
    def dtype(self) -> str:
        return "fp16" if self.precision == "fp16" else "fp32"

    @property
    def allow_tf32(self) -> bool:
        return self.precision == "tf32"

    @property
    def family(self) -> str:
        return next(name for key, name in FAMILIES if key in self.stack)

    def seconds(self, batch: int) -> float:
        """T(N): seconds per batch of N, from the published throughput."""
        return batch / self.images_per_s[batch]

    def speedup(self, batch: int) -> float:
        return self.images_per_s[batch] / self.images_per_s[1]


def load_inference_tables(path: str | Path = PUBLISHED / "resnet50_inference.csv") -> list[InferenceTable]:
    tables: dict[tuple, InferenceTable] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["file"], row["table"], row["stack"])
            if key not in tables:
                fields = ("repository", "file", "commit", "device", "precision", "stack")
                tables[key] = InferenceTable(
                    len(tables) + 1, title=row["table"], **{k: row[k] for k in fields}
                )
            tables[key].images_per_s[int(row["batch"])] = float(row["images_per_s"])
    return list(tables.values())


@dataclass(frozen=True)
class StackComparison:
    table: InferenceTable
    serial: object  # the fitted Terms
    overlapped: object
    errors: dict  # composition -> {batch: predicted S(N) / published S(N) - 1}, held-out batches


def _time(t: InferenceTable, batch: int, terms) -> float:
    layers = get_layer_set("resnet50")
    return network_time(layers, "fprop", batch, t.device, t.dtype, terms=terms, allow_tf32=t.allow_tf32)


def compare(t: InferenceTable) -> StackComparison:
    layers = get_layer_set("resnet50")
    measured = {n: t.seconds(n) for n in FIT_BATCHES}
    terms = {
        name: fit_stack(
            layers, "fprop", t.device, t.dtype, measured, overlapped=overlapped, allow_tf32=t.allow_tf32
        )  # fmt: skip
        for name, overlapped in (("serial", False), ("overlapped", True))
    }
    errors = {}
    for name, fitted in terms.items():
        one = _time(t, 1, fitted)
        errors[name] = {
            n: (n * one / _time(t, n, fitted)) / t.speedup(n) - 1
            for n in sorted(t.images_per_s)
            if n not in FIT_BATCHES
        }
    return StackComparison(t, terms["serial"], terms["overlapped"], errors)


def _share(errors) -> tuple[int, int]:
    return sum(abs(e) <= TOLERANCE for e in errors), len(errors)


def _fraction(hits: int, total: int) -> str:
    return f"{hits} of {total} ({hits / total:.1%})" if total else "—"


def summary(comparisons) -> dict:
    """Held-out pairs within TOLERANCE, per composition: {composition: (hits, total)}."""
    return {
        name: _share([e for c in comparisons for e in c.errors[name].values()])
        for name in ("serial", "overlapped")
    }


def stack_table(comparisons) -> str:
    """P1: one row per published table: the fit, T(1) and S(32) published and predicted."""
    rows = []
    for c in comparisons:
        t = c.table
        ideal_one = _time(t, 1, DEFAULT_TERMS)
        ideal_s32 = 32 * ideal_one / _time(t, 32, DEFAULT_TERMS)
        fitted_s32 = 32 * _time(t, 1, c.serial) / _time(t, 32, c.serial)
        serial, overlapped = (_share(c.errors[name].values()) for name in ("serial", "overlapped"))
        rows.append(
            [
                t.number,
                t.device,
                t.precision,
                t.family,
                c.serial.achieved_fraction,
                c.serial.stack_overhead_s * 1e3,
                t.seconds(1) * 1e3,
                ideal_one * 1e3,
                t.speedup(32),
                ideal_s32,
                fitted_s32,
                f"{serial[0]}/{serial[1]}",
                f"{overlapped[0]}/{overlapped[1]}",
            ]
        )
    headers = ["#", "device", "prec.", "stack", "η fitted", "stack ms", "T(1) pub. ms", "T(1) model ms",
               "S(32) pub.", "S(32) model", "S(32) fitted", "within 15% serial", "overlapped"]  # fmt: skip
    return table(headers, rows)


def error_table(comparisons, composition: str) -> str:
    """P2/P3: the error of S(N), predicted over published, at every held-out batch of every table."""
    batches = sorted({n for c in comparisons for n in c.errors[composition]})
    rows = []
    for c in comparisons:
        errors = c.errors[composition]
        rows.append([c.table.number, c.table.device, c.table.precision, c.table.family]
                    + [f"{errors[n]:+.0%}" if n in errors else "" for n in batches])  # fmt: skip
    return table(["#", "device", "prec.", "stack"] + [f"N={n}" for n in batches], rows)


def family_table(comparisons) -> str:
    """P4: held-out S(N) within 15%, and the median |error|, by stack family and composition."""
    families = list(dict.fromkeys(c.table.family for c in comparisons))
    rows = []
    for family in [*families, "all"]:
        chosen = [c for c in comparisons if family in ("all", c.table.family)]
        row = [family, len(chosen)]
        for name in ("serial", "overlapped"):
            errors = [e for c in chosen for e in c.errors[name].values()]
            row += [_fraction(*_share(errors)), statistics.median(abs(e) for e in errors)]
        rows.append(row)
    headers = ["stack", "tables", "serial: within 15%", "serial: median |error|", "overlapped: within 15%",
               "overlapped: median |error|"]  # fmt: skip
    return table(headers, rows)


def seed_table(comparisons) -> str:
    """P5: S(32) by GPU and precision: the range the stacks publish, and the model's (uncalibrated)."""
    groups: dict[tuple, list] = {}
    for c in comparisons:
        groups.setdefault((c.table.device, c.table.precision), []).append(c.table)
    rows = []
    for (device, precision), tables in groups.items():
        speedups = sorted((t.speedup(32), t.family) for t in tables)
        ideal = 32 * _time(tables[0], 1, DEFAULT_TERMS) / _time(tables[0], 32, DEFAULT_TERMS)
        rows.append([device, precision, len(tables), speedups[0][0], speedups[0][1], speedups[-1][0],
                     speedups[-1][1], ideal])  # fmt: skip
    headers = ["device", "prec.", "tables", "least S(32)", "by", "largest S(32)", "by", "model S(32)"]
    return table(headers, rows)


def sources(comparisons) -> str:
    """Where each table comes from (repository, file, commit, the README's heading, the stack)."""
    rows = [
        [c.table.number, c.table.repository, c.table.file, c.table.commit[:12], c.table.title, c.table.stack]
        for c in comparisons
    ]
    return table(["#", "repository", "file", "commit", "table", "stack as published"], rows)
