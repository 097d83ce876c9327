"""bench/campaign_readings.py: what the campaign's committed timings say, as the notes quote them
(split-K's fits, dgrad against fprop at one config), and the counts behind them on hand cases."""

from __future__ import annotations

import statistics

import pytest

from bench import campaign_readings
from triton_conv.configs import KernelConfig
from triton_conv.model import SPLIT_READ_S
from triton_conv.problem import ConvProblem


def test_the_campaign_fits_behind_the_notes():
    """notes/kernels.md (session 44) quotes these: layer1.0.conv1's weight gradient, one output tile,
    0.33 to 0.41 µs per split's partial at every N, 0.28 to 0.33 µs per 64-deep step."""
    fits = {
        fit["batch"]: fit for fit in campaign_readings.campaign_fits() if fit["layer"] == "layer1.0.conv1"
    }
    assert sorted(fits) == [1, 8, 32, 128]
    per_split = [round(fits[n]["c_us_per_split"], 2) for n in (1, 8, 32, 128)]
    assert per_split == [0.33, 0.33, 0.34, 0.41]
    assert all(0.27 < fit["b_us_per_step"] < 0.33 for fit in fits.values())
    assert "layer1.0.conv1" in campaign_readings.render_fits(list(fits.values()))
    # the model's per-read time is these fits' median where one wave holds every split (N <= 32)
    assert statistics.median(per_split[:3]) * 1e-6 == pytest.approx(SPLIT_READ_S, rel=1e-12)


def test_the_campaign_pairs_behind_the_notes():
    """notes/kernels.md (session 45) quotes these: dgrad over fprop at the same config where both
    are one GEMM (stride 1, C = K), by the share of dgrad's copies that read the zero run, the
    medians rising with it; 12 pairs in each group."""
    pairs = campaign_readings.campaign_pairs()
    medians = campaign_readings.pair_medians(pairs)
    shares = {share: round(median, 2) for (share, tile_n), (_, median) in medians.items() if tile_n == "all"}
    assert shares == {0.0: 0.98, 0.024: 0.97, 0.047: 1.01, 0.093: 1.2, 0.181: 1.66}
    assert len(pairs) == 60 and {medians[(share, "all")][0] for share in shares} == {12}
    assert medians[(0.181, 64)] == (6, pytest.approx(2.38, abs=0.005))
    worst = max(pairs, key=lambda pair: pair["ratio"])
    assert (worst["layer"], worst["batch"]) == ("layer4.1.conv2", 128)
    assert worst["config"] == "128x64x32 g8 s1 w8 st4"
    assert round(worst["ratio"], 2) == 3.39 and round(worst["padded"], 3) == 0.181
    assert "median dgrad/fprop" in campaign_readings.render_pairs(pairs)


def test_the_excess_follows_the_copies_that_read_the_zero_run():
    """notes/kernels.md (session 45): at 7x7 and N=128 two configs make the same number of copies
    that read the run and took the same time beyond fprop, though their fprop times differ; the
    config with half the copies took half that: one queue's rate, 3.55 to 3.66 G copies/s."""
    pairs = {
        pair["config"]: pair
        for pair in campaign_readings.campaign_pairs()
        if (pair["layer"], pair["batch"]) == ("layer4.1.conv2", 128)
    }
    wide_m, square, wide_n = (
        pairs[c] for c in ("128x64x32 g8 s1 w8 st4", "64x64x32 g8 s1 w4 st4", "64x128x32 g8 s1 w8 st4")
    )
    assert wide_m["copies"] == square["copies"] == 2 * wide_n["copies"] == 659456
    assert (
        abs(wide_m["excess_us"] - square["excess_us"]) < 0.2
        and abs(wide_m["fprop_us"] - square["fprop_us"]) > 20
    )
    assert [round(campaign_readings.queue_rate(p), 2) for p in (wide_m, square, wide_n)] == [3.55, 3.55, 3.66]


def test_zero_run_copies_counts_warp_copies_with_a_padded_row():
    # 2x2 image, 3x3 filter, pad 1: every pixel pads at every tap but the centre; the 4 rows are one
    # warp's copy at BLOCK_K 64 (bf16: 8 threads to a row), the tile's other 12 rows masked off.
    problem = ConvProblem.from_shapes((1, 64, 2, 2), (64, 64, 3, 3), padding=1)
    assert campaign_readings.zero_run_copies(problem, KernelConfig(16, 64, 64)) == 8
    # Two column tiles and two channel blocks of the reduction: four times as many.
    assert campaign_readings.zero_run_copies(problem, KernelConfig(16, 32, 32)) == 8 * 2 * 2


def test_the_padded_share_counts_each_phase_s_own_taps():
    # 7x7, 3x3, pad 1: per axis 2 of 21 (pixel, tap) pairs read padding, 1 - (19/21)^2 in all.
    assert campaign_readings.padded_share(ConvProblem.from_shapes((1, 8, 7, 7), (8, 8, 3, 3), padding=1)) == (
        pytest.approx(1 - (19 / 21) ** 2)
    )
    # Stride 2 on 8 rows, 3 taps, pad 1: phase 0 (even h) takes tap 1 only, phase 1 taps 0 and 2;
    # of those 12 pairs, h = 7 with tap 0 reads p = 4, past the 4 output rows.
    problem = ConvProblem.from_shapes((1, 8, 8, 8), (8, 8, 3, 3), stride=2, padding=1)
    share = campaign_readings.padded_share(problem)
    assert share == pytest.approx(1 - (11 / 12) ** 2)
