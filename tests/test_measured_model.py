"""The model against a GPU's own timings (report/measured_model.py): problems read back from the
records, the floor and fraction fitted, cells held out and judged as the published comparison is."""

from __future__ import annotations

import pytest

from triton_conv.layers import resnet50
from triton_conv.model import Terms, predict
from triton_conv.problem import ConvProblem
from triton_conv.report import measured_model as mm

PROBLEMS = [
    ConvProblem.from_shapes((8, 64, 56, 56), (64, 64, 3, 3), padding=1),
    ConvProblem.from_shapes(
        (1, 32, 17, 9), (48, 8, 5, 3), stride=(2, 3), padding=(2, 1), dilation=(1, 2), groups=4
    ),
    ConvProblem.from_sides((2, 16, 7, 7), (16, 16, 3, 3), (2, 2), (1, 1, -1, 0), (1, 1), 1),  # a crop
]


@pytest.mark.parametrize("problem", PROBLEMS, ids=str)
def test_a_records_problem_reads_back_as_itself(problem):
    assert mm.parse_problem(str(problem)) == problem
    assert mm.parse_problem("probe (14x14, 256)") is None and mm.parse_problem(None) is None


FLOOR, ETA = 3e-6, 0.5
BATCHES = (1, 8, 32, 128)


def _records(library="triton-conv", scaled=None, skip_fit=False):
    """Timings the model itself makes with FLOOR and ETA (the pass `scaled` twice as slow)."""
    terms = Terms(call_floor_s=FLOOR, achieved_fraction=ETA)
    records = []
    for layer in resnet50()[:6]:
        for pass_name in ("fprop", "dgrad", "wgrad"):
            if layer.name == "conv1" and pass_name == "dgrad":
                continue
            for n in BATCHES:
                if skip_fit and pass_name == "fprop" and n == mm.FIT_BATCH:
                    continue
                problem = layer.problem.with_batch(n)
                seconds = predict(problem, pass_name, None, "H200 SXM", "bf16", terms=terms).time_s
                records.append({
                    "kind": "pass", "implementation": library, "layer_set": "resnet50", "layer": layer.name,
                    "pass": pass_name, "N": n, "dtype": "bf16", "layout": "channels_last",
                    "problem": str(problem), "seconds": seconds * (2.0 if pass_name == scaled else 1.0),
                    "model": {"device": "H200 SXM"},
                })  # fmt: skip
    return records


def test_timings_the_model_made_are_fitted_back_and_all_within():
    """The floor is the least time read (the model's floor plus the smallest call's roofline), the
    fraction near the one the times were made with, and every held-out cell and ratio within."""
    records = _records()
    (fit,) = mm.fit_libraries(records)
    assert fit.terms.call_floor_s == min(r["seconds"] for r in records) > FLOOR
    assert fit.terms.achieved_fraction == pytest.approx(ETA, rel=0.05)
    row = [c.strip() for c in mm.model_check_table(records).splitlines()[2].strip("|").split("|")]
    assert row[:3] == ["triton-conv", "H200 SXM", "bf16"]
    assert row[6:] == ["18/18 (100%)", "20/20 (100%)", "24/24 (100%)", "62/62 (100%)",
                       "18/18 (100%)", "15/15 (100%)", "18/18 (100%)", "51/51 (100%)"]  # fmt: skip


def test_a_pass_twice_as_slow_as_the_model_misses_its_absolute_times_not_its_ratios():
    """The weight gradient's times doubled: none of them within 1.3x of the model fitted on the
    forward pass, every ratio between its batch sizes still exact; the other passes untouched."""
    (fit,) = mm.fit_libraries(_records(scaled="wgrad"))
    wgrad = [c for c in fit.cells if c.pass_name == "wgrad"]
    assert not any(mm._within(c.predicted / c.seconds) for c in wgrad)
    assert all(mm._within(c.predicted / c.seconds) for c in fit.cells if c.pass_name != "wgrad")
    assert all(map(mm._ratio_ok, fit.ratios()))
    by_batch = mm.model_check_by_batch(_records(scaled="wgrad"))
    assert "1→8" in by_batch and "32→128" in by_batch


def test_no_forward_cell_at_the_fit_batch_no_fit_and_other_records_ignored():
    assert mm.fit_libraries(_records(skip_fit=True)) == []
    others = [{**r, "layer_set": "unet_decoder"} for r in _records()] + [{"kind": "batching", "N": 8}]
    assert mm.fit_libraries(others) == [] and mm.model_check_table(others) == ""
    both = mm.fit_libraries(_records() + _records(library="cudnn"))
    assert [fit.library for fit in both] == ["triton-conv", "cudnn"]
