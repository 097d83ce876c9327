"""bench/since_campaign.py at the CPU's small scale: each split count's result checked against
torch, the two-level sum's groups named, and the campaign's times found for the configs it timed."""

from __future__ import annotations

import json

import pytest

from bench import campaign_readings, since_campaign
from triton_conv.kernels.common import split_counters, split_groups

pytestmark = pytest.mark.interpreter


def test_the_smoke_run_checks_every_split_count_and_writes_its_rows(tmp_path):
    out = tmp_path / "split.txt"
    assert since_campaign.main(["--smoke", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [(row["pass"], row["split_k"], row["groups"]) for row in rows] == [
        ("dgrad", 1, "1"), ("wgrad", 3, "1"), ("wgrad", 10, "3x4"),
        ("fprop", 10, "3x4"), ("dgrad", 10, "3x4"),
    ]  # fmt: skip
    assert all(row["relative_error"] < 1e-5 for row in rows)
    assert "groups" in out.read_text().splitlines()[3] and "fit us" in out.read_text().splitlines()[3]


def test_a_spent_budget_starts_no_case_and_says_so(tmp_path):
    out = tmp_path / "split.txt"
    assert since_campaign.main(["--smoke", "--budget-s", "0", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text()) == []
    assert out.read_text().count("# not run (budget): smoke N=2") == len(since_campaign.SMOKE)


def test_the_campaign_times_are_found_by_the_configs_text():
    times = campaign_readings.campaign_times()
    for layer, n, *_, pass_name, tile, splits in since_campaign.CASES:
        for split in splits:
            block_m, block_n, block_k, warps, stages = tile
            text = f"{block_m}x{block_n}x{block_k} g8 s{split} w{warps} st{stages}"
            assert (layer, n, pass_name, text) in times, (layer, n, pass_name, text)
    assert round(times[("layer1.0.conv1", 32, "wgrad", "64x64x64 g8 s32 w4 st3")], 1) == 34.6


def test_the_fit_predicts_the_two_level_sum_for_the_cases_it_fitted():
    """Every weight-gradient case the campaign fitted gets the fit's time with the two-level sum's
    reads: layer1.0.conv1 at N = 32, 34.6 µs measured at 32 splits, about 28 predicted (notes/
    kernels.md, session 44), and at 8 splits or fewer (one-level) exactly the fit's own form."""
    fits = {(fit["layer"], fit["batch"], fit["tile"]): fit for fit in campaign_readings.campaign_fits()}
    covered = [case for case in since_campaign.CASES if (case[0], case[1], case[9]) in fits]
    assert {(case[0], case[1]) for case in covered} >= {("layer1.0.conv1", n) for n in (8, 32, 128)}
    assert all(case[8] == "wgrad" for case in covered)
    fit = fits[("layer1.0.conv1", 32, (64, 64, 64, 4, 3))]
    assert fit["steps"] == 32 * 56 * 56 // 64  # N·P·Q in 64-deep steps
    assert 27 < since_campaign.fitted_us(fit, 32) < 29
    one_level = fit["a_us"] + fit["b_us_per_step"] * -(-1568 // 8) + fit["c_us_per_split"] * 8
    assert since_campaign.fitted_us(fit, 8) == pytest.approx(one_level, rel=1e-12)
    assert since_campaign.fitted_us(None, 32) is None


@pytest.mark.parametrize("split_k", [1, 2, 4, 7, 8, 9, 10, 16, 31, 32, 64, 100, 128, 132])
def test_split_groups_cover_every_split_once_and_shorten_the_serial_sum(split_k):
    size, groups = split_groups(split_k)
    assert (groups - 1) * size < split_k <= groups * size  # every split in one group, none empty
    serial = size + groups + 2 if groups > 1 else split_k  # reads by the last split; its second step as 2
    assert serial < split_k or groups == 1
    assert (groups == 1) == (split_k <= 8)
    assert split_counters(split_k) == (1 if groups == 1 else groups + 1)
