"""The model against a GPU's own timings of ResNet-50's layers (a campaign's or bench/'s records):
tables of batching.md's measured section, the same test the published per-layer comparison makes
(published_layers.py) on measurements whose device, library versions and timer are known.

Per library (triton-conv, cuDNN), dtype and layout: the per-call floor is read off the timings (the
least time any call took), one achieved fraction is fitted (calibration.fit_fraction) on the
forward pass at FIT_BATCH, and every other cell is held out. The model picks its own config for
each cell (choice.best_config: what a tuner of this package's config space would run), for cuDNN
too, whose kernels it does not know; fewer than 16 channels are walked as whole tap rows
(row_spans, as this package's channels_last kernels do). Judged: the absolute time within a factor
of WITHIN, and the ratio between consecutive measured batch sizes of one layer and pass within
RATIO_TOLERANCE.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass

from ..model import NO_FLOOR, Terms, fit_fraction, predict
from ..problem import ConvProblem
from .markdown import table
from .published_layers import PASSES, RATIO_TOLERANCE, WITHIN

FIT_BATCH = 32
LAYER_SET = "resnet50"
LIBRARIES = ("triton-conv", "cudnn")

_PROBLEM = re.compile(
    r"N=(\d+) C=(\d+) H=(\d+) W=(\d+) K=(\d+) R=(\d+) S=(\d+) stride=\((\d+), (\d+)\) "
    r"pad\(t,l,b,r\)=\((-?\d+), (-?\d+), (-?\d+), (-?\d+)\) dilation=\((\d+), (\d+)\) groups=(\d+)"
)


def parse_problem(text: str) -> ConvProblem | None:
    """The ConvProblem whose str() is `text` (a timing record's "problem"); None for another form."""
    match = _PROBLEM.fullmatch(text or "")
    if match is None:
        return None
    n, c, h, w, k, r, s, sh, sw, top, left, bottom, right, dh, dw, g = (int(v) for v in match.groups())
    return ConvProblem.from_sides((n, c, h, w), (k, c // g, r, s), (sh, sw), (top, left, bottom, right),
                                  (dh, dw), g)  # fmt: skip


@dataclass(frozen=True)
class Cell:
    layer: str
    pass_name: str
    problem: ConvProblem  # at the cell's batch
    seconds: float  # measured
    predicted: float  # with the library's fitted terms

    @property
    def held_out(self) -> bool:
        return not (self.pass_name == "fprop" and self.problem.batch == FIT_BATCH)


@dataclass(frozen=True)
class LibraryFit:
    library: str
    device: str  # the model's device (the records' model.device)
    dtype: str
    layout: str
    terms: Terms
    cells: tuple[Cell, ...]

    def ratios(self, pass_name: str | None = None) -> list[tuple[Cell, Cell]]:
        """Pairs of one layer and pass at consecutive measured batch sizes."""
        by_layer = defaultdict(list)
        for cell in self.cells:
            if pass_name in (None, cell.pass_name):
                by_layer[(cell.layer, cell.pass_name)].append(cell)
        pairs = []
        for cells in by_layer.values():
            cells.sort(key=lambda cell: cell.problem.batch)
            pairs += list(zip(cells, cells[1:]))
        return pairs


def _records(records) -> dict:
    """{(library, device, dtype, layout): [record]} of the layer set's conv2d passes."""
    grouped = defaultdict(list)
    for r in records:
        if r.get("kind") != "pass" or r.get("transposed") or r.get("layer_set") != LAYER_SET:
            continue
        device = (r.get("model") or {}).get("device")
        if (
            r.get("implementation") in LIBRARIES
            and device
            and r.get("seconds")
            and parse_problem(r.get("problem"))
        ):
            grouped[(r["implementation"], device, r["dtype"], r.get("layout"))].append(r)
    return grouped


def fit_library(key: tuple, records: list[dict]) -> LibraryFit | None:
    """The floor read, the fraction fitted at FIT_BATCH and every cell predicted; None without a
    forward cell at FIT_BATCH to fit on."""
    library, device, dtype, layout = key
    problems = [parse_problem(r["problem"]) for r in records]
    ideal = [predict(p, r["pass"], None, device, dtype, terms=NO_FLOOR) for p, r in zip(problems, records)]
    floor = min(r["seconds"] for r in records)
    fitted = [(r["seconds"], floor + i.serial_s, i.roofline_s) for r, p, i in zip(records, problems, ideal)
              if r["pass"] == "fprop" and p.batch == FIT_BATCH]  # fmt: skip
    if not fitted:
        return None
    terms = Terms(call_floor_s=floor, achieved_fraction=fit_fraction(fitted))
    cells = tuple(
        Cell(
            r["layer"],
            r["pass"],
            p,
            r["seconds"],
            predict(p, r["pass"], i.config, device, dtype, terms=terms).time_s,
        )
        for r, p, i in zip(records, problems, ideal)
    )
    return LibraryFit(library, device, dtype, layout, terms, cells)


def fit_libraries(records) -> list[LibraryFit]:
    fits = [fit_library(key, rows) for key, rows in _records(records).items()]
    return [fit for fit in fits if fit is not None]


def _within(ratio: float) -> bool:
    return 1 / WITHIN <= ratio <= WITHIN


def _share(hits: list[bool]) -> str:
    return f"{sum(hits)}/{len(hits)} ({sum(hits) / len(hits):.0%})" if hits else "—"


def _ratio_ok(pair: tuple[Cell, Cell]) -> bool:
    first, second = pair
    return abs((second.predicted / first.predicted) / (second.seconds / first.seconds) - 1) <= RATIO_TOLERANCE


def model_check_table(records) -> str:
    """Per library: the floor read, the fraction fitted, the median model/measured time of the held-out
    cells, and the shares within the targets, per pass and in all. Empty without such records."""
    rows = []
    for fit in fit_libraries(records):
        held = [cell for cell in fit.cells if cell.held_out]
        absolute = [
            _share([_within(c.predicted / c.seconds) for c in held if name in (None, c.pass_name)])
            for name in (*PASSES, None)
        ]
        ratio = [_share([_ratio_ok(pair) for pair in fit.ratios(name)]) for name in (*PASSES, None)]
        median = statistics.median(c.predicted / c.seconds for c in held)
        rows.append([fit.library, fit.device, fit.dtype, fit.terms.call_floor_s * 1e6,
                     fit.terms.achieved_fraction, median, *absolute, *ratio])  # fmt: skip
    if not rows:
        return ""
    headers = ["library", "model's device", "dtype", "floor µs", "η fitted", "median model/measured",
               *(f"within {WITHIN}×: {name or 'all'}" for name in (*PASSES, None)),
               *(f"ratio ±{RATIO_TOLERANCE:.0%}: {name or 'all'}" for name in (*PASSES, None))]  # fmt: skip
    return table(headers, rows, ".3g")


def model_check_by_batch(records) -> str:
    """Where the held-out cells miss: per library and batch size, the median model/measured time and
    the share within WITHIN; per step between consecutive batch sizes, the median ratio error and the
    share within RATIO_TOLERANCE."""
    rows = []
    for fit in fit_libraries(records):
        batches = sorted({c.problem.batch for c in fit.cells})
        for n in batches:
            cells = [c for c in fit.cells if c.problem.batch == n and c.held_out]
            quotients = [c.predicted / c.seconds for c in cells]
            steps = [pair for pair in fit.ratios() if pair[0].problem.batch == n]
            errors = [(b.predicted / a.predicted) / (b.seconds / a.seconds) - 1 for a, b in steps]
            rows.append([
                fit.library, fit.dtype, n,
                statistics.median(quotients) if quotients else None, _share(list(map(_within, quotients))),
                f"{n}→{steps[0][1].problem.batch}" if steps else "—",
                f"{statistics.median(errors):+.0%}" if errors else "—", _share(list(map(_ratio_ok, steps))),
            ])  # fmt: skip
    if not rows:
        return ""
    headers = ["library", "dtype", "N", "median model/measured", f"within {WITHIN}×", "step",
               "median ratio error", f"ratio ±{RATIO_TOLERANCE:.0%}"]  # fmt: skip
    return table(headers, rows, ".2f")
