"""The model's choice of config, its named terms and their calibration (triton_conv.model: choice, terms,
network, calibration, and the reduction and input-coverage parts of tiles and roofline).

Expected values are worked out by hand in the comments; the fits are checked by recovering terms from
times the model itself generated, exactly.
"""

import math
import random
from dataclasses import replace

import pytest

from triton_conv.configs import KernelConfig, row_spans
from triton_conv.devices import get_device
from triton_conv.layers import resnet50
from triton_conv.model import (
    CALL_FLOOR_S,
    NO_FLOOR,
    SPLIT_READ_S,
    Terms,
    best_config,
    candidate_configs,
    compulsory_bytes,
    fit_fraction,
    fit_stack,
    layer_time,
    network_cost,
    network_speedup,
    network_time,
    predict,
    reference_config,
    tile_stats,
)
from triton_conv.problem import ConvProblem

H200, V100, T4 = get_device("H200"), get_device("V100"), get_device("T4")
LAYERS = {layer.name: layer.problem for layer in resnet50()}
STEM = LAYERS["conv1"]  # 3 -> 64, 7x7 stride 2 pad 3, 224x224
LAYER3 = LAYERS["layer3.1.conv2"]  # 256 -> 256, 3x3 pad 1, 14x14
STRIDED = LAYERS["layer2.0.conv2"]  # 128 -> 128, 3x3 stride 2 pad 1, 56x56 -> 28x28
DOWN = LAYERS["layer2.0.downsample.0"]  # 256 -> 512, 1x1 stride 2, 56x56 -> 28x28
SMALL = KernelConfig(64, 64, 64, 8, 8, 4, 3)  # 64x64x64, split 8, 4 warps, 3 stages


# --- the reduction as the kernels walk it, and the input they read ----------------------------------
def test_reduction_efficiency_counts_the_padding_to_block_k():
    # fprop walks C per tap in BK blocks; with fewer than 16 channels, each tap row's S·C elements
    # as one run: the stem's 7 taps x 3 channels fill 21 of every 32, a 16-channel 7x7 layer 16 of 32
    stem_tile = KernelConfig(128, 64, 32, 8, 1, 4, 4)
    assert tile_stats(STEM, "fprop", stem_tile, H200).reduction_efficiency == 21 / 32
    sixteen = ConvProblem.from_shapes((1, 16, 56, 56), (64, 16, 7, 7), padding=3)
    assert tile_stats(sixteen, "fprop", stem_tile, H200).reduction_efficiency == 16 / 32
    # the kernel's ROW_SPANS specialisation is what the model assumes; without it (NCHW, or cuDNN
    # 7.6's implicit GEMM) every tap's 3 channels fill 3 of every 32
    assert row_spans(STEM) and not row_spans(sixteen)
    padded = tile_stats(STEM, "fprop", stem_tile, H200, row_spans=False)
    assert padded.reduction_efficiency == 3 / 32
    assert predict(STEM, "fprop", stem_tile, H200, row_spans=False).compute_s == pytest.approx(
        predict(STEM, "fprop", stem_tile, H200).compute_s * 21 / 3, rel=1e-12
    )
    # 9 taps x 256/64 = 36 steps; 8 splits run ceil(36/8) = 5 steps each: 40 steps for 36 -> 0.9
    assert tile_stats(LAYER3, "fprop", SMALL, H200).reduction_efficiency == 36 / 40
    # wgrad walks N·P·Q = 196 pixels: 4 steps of 64 -> 196/256
    wgrad = KernelConfig(64, 64, 64, 8, 1, 4, 3)
    assert tile_stats(LAYER3, "wgrad", wgrad, H200).reduction_efficiency == 196 / 256
    # strided dgrad: 4 phases of 28x28 rows with 1, 2, 2, 4 taps, K/g = 128 -> 2 steps per tap:
    # 2, 4, 4, 8 steps; 3 splits run 1, 2, 2, 3 steps each -> 3, 6, 6, 9: 18 useful of 24
    split3 = KernelConfig(128, 128, 64, 8, 3, 8, 4)
    assert [ph.rows.taps * ph.cols.taps for ph in STRIDED.dgrad_phases()] == [1, 2, 2, 4]
    assert tile_stats(STRIDED, "dgrad", split3, H200).reduction_efficiency == 18 / 24
    assert tile_stats(STRIDED, "dgrad", reference_config("dgrad"), H200).reduction_efficiency == 1.0


def test_compute_time_is_the_waves_of_padded_tiles():
    # 64x64x64, 3 stages, fp16 on an H200: smem 3·128·64·2 = 49,152 + 1 KiB -> 233,472 // 50,176 = 4
    # CTAs per SM (registers: 32 + 32 + 32 = 96 x 128 threads -> 5; threads 16): 528 slots.
    # LAYER3 at N=1: ceil(196/64) = 4 x 4 column tiles x 8 splits = 128 tiles, one wave; each runs
    # 5 steps of 2·64·64·64 FLOP at 1/528 of the peak; the finishing split reads the 8 partials of
    # 64x64 fp32 one after another, SPLIT_READ_S each.
    p = predict(LAYER3, "fprop", SMALL, H200, terms=NO_FLOOR)
    assert (p.tiles, p.slots, p.waves) == (128, 528, 1)
    assert p.compute_s == pytest.approx(5 * 2 * 64 * 64 * 64 * 528 / 989.4e12, rel=1e-12)
    assert p.splitk_bytes == 2 * 4 * 64 * 64 * 128
    assert p.memory_s == pytest.approx((1_380_352 + 2 * 4 * 64 * 64 * 128) / 4.8e12, rel=1e-12)
    assert p.roofline_s == max(p.compute_s, p.memory_s)
    assert p.serial_s == pytest.approx(8 * SPLIT_READ_S, rel=1e-12) and SPLIT_READ_S == 0.33e-6
    assert p.time_s == p.ideal_s == p.roofline_s + p.serial_s
    # one level up to 8 splits; beyond, two: ceil(sqrt(s)) per group, its groups, and two more
    for split, reads in ((1, 0), (2, 2), (8, 8), (9, 8), (10, 9), (16, 10), (32, 14), (64, 18), (128, 25)):
        wide = replace(SMALL, block_n=128, split_k=split)
        assert predict(LAYER3, "fprop", wide, H200, terms=NO_FLOOR).serial_s == pytest.approx(
            2 * reads * SPLIT_READ_S, rel=1e-12
        )  # a 64x128 partial is twice the bytes of the 64x64 one timed


def test_input_bytes_count_only_the_pixels_a_window_covers():
    # 1x1 stride 2 reads every other row and column: 256 channels x 28 x 28 of the 56 x 56 input
    x_read, w, y = 256 * 28 * 28, 512 * 256, 512 * 28 * 28
    assert compulsory_bytes(DOWN, "fprop", "fp16") == 2 * (x_read + w + y)
    assert compulsory_bytes(DOWN, "wgrad", "fp16") == 2 * (y + x_read + w)
    assert compulsory_bytes(DOWN, "dgrad", "fp16") == 2 * (y + w + 256 * 56 * 56)  # dx written whole
    # 3x3 stride 2 pad 1 and the 7x7 stride 2 pad 3 stem cover every input pixel
    assert compulsory_bytes(STRIDED, "fprop", "fp32") == 4 * (128 * 56 * 56 + 128 * 128 * 9 + 128 * 28 * 28)
    assert compulsory_bytes(STEM, "fprop", "fp16") == 2 * (3 * 224 * 224 + 64 * 3 * 49 + 64 * 112 * 112)


# --- the choice --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "problem, pass_name, device, dtype",
    [
        (LAYER3, "fprop", H200, "fp16"),
        (LAYER3.with_batch(64), "fprop", H200, "bf16"),
        (STRIDED.with_batch(8), "dgrad", V100, "fp16"),
        (LAYERS["layer4.1.conv2"].with_batch(8), "fprop", V100, "fp16"),
        (DOWN.with_batch(16), "wgrad", T4, "fp32"),
        (STEM.with_batch(4), "fprop", "GTX 1080 Ti", "fp32"),
    ],
)
def test_best_config_is_the_least_predicted_time_of_the_pruned_space(problem, pass_name, device, dtype):
    best = best_config(problem, pass_name, device, dtype)
    candidates = candidate_configs(problem, pass_name, device, dtype)
    assert best in candidates
    chosen = predict(problem, pass_name, best, device, dtype, terms=NO_FLOOR).ideal_s
    for config in candidates:
        assert predict(problem, pass_name, config, device, dtype, terms=NO_FLOOR).ideal_s >= chosen
    # predict(config=None) runs the chosen config, whatever the terms (chosen once, at fraction 1)
    for terms in (NO_FLOOR, Terms(call_floor_s=2e-5, achieved_fraction=0.3)):
        assert predict(problem, pass_name, None, device, dtype, terms=terms).config == best


def test_small_batches_choose_what_fills_the_gpu():
    # The 7x7, 512-channel 3x3 layer on a V100: the fixed 128x128 tile makes ceil(392/128) x 4
    # = 16 tiles at N=8 and 7 x 4 = 28 at N=16, one wave of 80 slots either way (102 µs at each); the
    # chosen configs split the reduction or shrink the tile, so the time grows with the batch as
    # cuDNN's did (47 -> 71 µs).
    layer = LAYERS["layer4.1.conv2"]
    fixed = [
        predict(layer.with_batch(n), "fprop", reference_config("fprop", "fp16", V100), V100) for n in (8, 16)
    ]
    chosen = [predict(layer.with_batch(n), "fprop", None, V100) for n in (8, 16)]
    assert [f.tiles for f in fixed] == [16, 28] and [f.waves for f in fixed] == [1, 1]
    assert fixed[0].time_s == pytest.approx(fixed[1].time_s)
    assert chosen[0].time_s < fixed[0].time_s / 2 and chosen[1].time_s < 0.6 * fixed[1].time_s
    assert 1.5 < chosen[1].time_s / chosen[0].time_s < 2.0
    assert chosen[0].tiles > fixed[0].tiles


@pytest.mark.parametrize(
    "device", ["H200", "A100 40GB", "A100 80GB", "V100", "T4", "RTX 4090", "GTX 1080 Ti"]
)
def test_a_larger_batch_never_takes_less_time_but_where_a_split_was_barred(device):
    """t(N) >= t(N-1) for every ResNet-50 layer and pass, fp16 and fp32, N up to 8. A larger batch
    may run a config the tuner bars at the smaller one (pruning.split_keeps_work: each split keeps
    MIN_STEPS_PER_SPLIT BLOCK_K steps of a reduction that grows with N in wgrad): only there may the
    time fall, and on the H200 nowhere. Without split-K's serial sum
    the H200's fell 9 times (layer1.0.conv1's weight gradient: 7.0 µs at N=2, 6.4 at N=3,
    32 splits of 5 steps each priced as if their partials summed for free)."""
    falls = []
    for dtype in ("fp16", "fp32"):
        for layer in resnet50():
            for pass_name in ("fprop", "dgrad", "wgrad"):
                before = predict(layer.problem.with_batch(1), pass_name, None, device, dtype)
                for n in range(2, 9):
                    now = predict(layer.problem.with_batch(n), pass_name, None, device, dtype)
                    if now.time_s < before.time_s * (1 - 1e-12):
                        smaller = candidate_configs(layer.problem.with_batch(n - 1), pass_name, device, dtype)
                        falls.append((layer.name, pass_name, dtype, n, now.config not in smaller))
                    before = now
    assert [fall for fall in falls if not fall[-1]] == []
    if device == "H200":
        assert falls == []


# --- the terms ---------------------------------------------------------------------------------------
def test_terms_enter_a_call_as_floor_plus_roofline_over_fraction():
    ideal = predict(LAYER3, "fprop", SMALL, H200, terms=NO_FLOOR)
    real = predict(LAYER3, "fprop", SMALL, H200, terms=Terms(call_floor_s=7e-6, achieved_fraction=0.25))
    # the serial sum is a latency: the fraction does not scale it
    assert ideal.serial_s > 0
    assert real.time_s == pytest.approx(7e-6 + ideal.roofline_s / 0.25 + ideal.serial_s, rel=1e-12)
    assert (real.floor_s, real.achieved_fraction) == (7e-6, 0.25)
    assert predict(LAYER3, "fprop", SMALL, H200).time_s == pytest.approx(CALL_FLOOR_S + ideal.ideal_s)
    assert (
        layer_time(LAYER3, "fprop", H200, batch=8)
        == predict(LAYER3.with_batch(8), "fprop", None, H200).time_s
    )
    for bad in ({"call_floor_s": -1e-6}, {"achieved_fraction": 0.0}):
        with pytest.raises(ValueError):
            Terms(**bad)


def test_network_time_decomposes_into_calls_and_rooflines():
    layers = resnet50()
    cost = network_cost(layers, "fprop", 32, H200)
    assert cost.calls == 53
    per_layer = sum(
        layer.count * predict(layer.problem.with_batch(32), "fprop", None, H200).roofline_s
        for layer in layers
    )
    assert cost.roofline_s == pytest.approx(per_layer, rel=1e-12)
    serial = sum(
        layer.count * predict(layer.problem.with_batch(32), "fprop", None, H200).serial_s for layer in layers
    )
    assert cost.serial_s == pytest.approx(serial, rel=1e-12)
    # training: 53 convolutions x 3 passes, but the stem's input needs no dgrad
    assert network_cost(layers, ("fprop", "dgrad", "wgrad"), 2, T4).calls == 53 * 3 - 1
    assert network_cost(layers, ("fprop", "dgrad", "wgrad"), 2, T4, input_dgrad=True).calls == 53 * 3
    terms = Terms(call_floor_s=4e-6, achieved_fraction=0.4, stack_overhead_s=3e-3)
    expected = 3e-3 + 53 * 4e-6 + cost.roofline_s / 0.4 + cost.serial_s
    assert network_time(layers, "fprop", 32, H200, terms=terms) == pytest.approx(expected, rel=1e-12)
    overlapped = Terms(4e-6, 0.4, 3e-3, overlapped=True)
    assert network_time(layers, "fprop", 32, H200, terms=overlapped) == pytest.approx(
        max(3e-3, 53 * 4e-6 + cost.roofline_s / 0.4 + cost.serial_s), rel=1e-12
    )
    assert network_speedup(layers, "fprop", 1, H200) == 1.0
    # a stack overhead that dwarfs the GPU's work makes N images cost about as much as one
    slow_stack = Terms(stack_overhead_s=1.0)
    assert network_speedup(layers, "fprop", 8, H200, terms=slow_stack) == pytest.approx(8, rel=1e-3)


# --- calibration -------------------------------------------------------------------------------------
def _times(terms, device, dtype, batches=(1, 32, 128)):
    return {n: network_time(resnet50(), "fprop", n, device, dtype, terms=terms) for n in batches}


@pytest.mark.parametrize("device, dtype", [(V100, "fp16"), (T4, "fp32"), ("A100 SXM 40GB", "fp32")])
def test_fit_stack_recovers_the_terms_that_made_the_times(device, dtype):
    truth = Terms(call_floor_s=CALL_FLOOR_S, achieved_fraction=0.31, stack_overhead_s=2.5e-3)
    times = _times(truth, device, dtype)
    fitted = fit_stack(resnet50(), "fprop", device, dtype, {1: times[1], 128: times[128]})
    assert fitted.achieved_fraction == pytest.approx(0.31, rel=1e-9)
    assert fitted.stack_overhead_s == pytest.approx(2.5e-3, rel=1e-9)
    predicted = network_time(resnet50(), "fprop", 32, device, dtype, terms=fitted)
    assert predicted == pytest.approx(times[32], rel=1e-9)  # and the rest of the curve follows
    # overlapped: the stack's 20 ms exceed the GPU's time at N=1, the GPU's time sets N=128
    truth = Terms(CALL_FLOOR_S, 0.2, 20e-3, overlapped=True)
    times = _times(truth, device, dtype)
    assert times[1] == 20e-3 < times[128]
    fitted = fit_stack(resnet50(), "fprop", device, dtype, {1: times[1], 128: times[128]}, overlapped=True)
    assert (fitted.achieved_fraction, fitted.stack_overhead_s, fitted.overlapped) == (
        pytest.approx(0.2, rel=1e-9), 20e-3, True
    )  # fmt: skip


def test_fit_stack_takes_at_most_two_batch_sizes():
    times = _times(Terms(stack_overhead_s=1e-3), H200, "fp16")
    one = fit_stack(resnet50(), "fprop", H200, "fp16", {32: times[32]})  # one batch: the overhead alone
    assert (one.achieved_fraction, one.stack_overhead_s) == (1.0, pytest.approx(1e-3, rel=1e-9))
    with pytest.raises(ValueError, match="one or two"):
        fit_stack(resnet50(), "fprop", H200, "fp16", times)
    with pytest.raises(ValueError, match="must grow"):
        fit_stack(resnet50(), "fprop", H200, "fp16", {1: 2e-3, 128: 1e-3})
    # a training step's serial sums grow by 12.5 µs from N=1 to 2 on the H200: a time that grows by
    # less leaves nothing for the work (it was refused as 'times too far apart for a float')
    training = ("fprop", "dgrad", "wgrad")
    growth = (network_cost(resnet50(), training, 2, H200).serial_s
              - network_cost(resnet50(), training, 1, H200).serial_s)  # fmt: skip
    assert growth > 1e-5
    with pytest.raises(ValueError, match="no more than the model's split-K serial sums alone"):
        fit_stack(resnet50(), training, H200, "fp16", {1: 1e-2, 2: 1e-2 + growth / 2})
    fitted = fit_stack(resnet50(), training, H200, "fp16", {1: 1e-2, 2: 1e-2 + 2 * growth})
    assert fitted.achieved_fraction > 1  # returned as found; `predict --fit` refuses it


def test_fit_fraction_recovers_the_fraction():
    # per-call times made with floor 12 µs and η = 0.37 from rooflines spread over three decades
    rooflines = [10 ** (-6 + 3 * i / 20) for i in range(21)]
    points = [(12e-6 + r / 0.37, 12e-6, r) for r in rooflines]
    assert fit_fraction(points) == pytest.approx(0.37, rel=1e-6)
    # a measured time twice the model's everywhere, without floor: η halves
    assert fit_fraction([(2 * r, 0.0, r) for r in rooflines]) == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError):
        fit_fraction([])
    assert math.isfinite(fit_fraction([(1e-3, 1e-5, 1e-4)]))


def test_fit_fraction_does_not_depend_on_the_order_of_the_points():
    """The fit is the same whatever the order of its points and whichever Python sums them: with a
    plain sum, reversing the points (or Python 3.12's summation) moved the last digits of the fraction
    and a row of notes/published/deepbench_vs_model.md differed between CI's two legs."""
    rng = random.Random(7)
    for _ in range(5):
        points = [
            (rng.uniform(1e-5, 1e-2), rng.uniform(1e-6, 3e-5), rng.uniform(1e-6, 1e-2)) for _ in range(40)
        ]
        assert fit_fraction(points) == fit_fraction(points[::-1]) == fit_fraction(sorted(points))


def test_predict_command_prints_the_ideal_and_the_fitted_curve(capsys):
    from triton_conv.cli import main

    args = ["predict", "--device", "V100", "--layers", "quantization_probes", "--batch", "1", "8", "32"]
    assert main([*args, "--fit", "1=0.0128", "32=0.0200"]) == 0
    out = capsys.readouterr().out
    assert "PREDICTED by the model (not measured)" in out and "calibrated on [1, 32]" in out
    rows = {
        tuple(line.split()[:2]): [float(cell) for cell in line.split()[1:]]
        for line in out.splitlines()
        if line.split()[:1] in (["ideal"], ["calibrated"]) and len(line.split()) == 6  # memory GB last
    }
    # the fit reproduces its two points: 12.8 ms at N=1, 20.0 ms at N=32 (S(32) = 32·12.8/20 = 20.48)
    assert rows[("calibrated", "1")][1] == pytest.approx(12.8, abs=1e-3)
    assert rows[("calibrated", "32")][1:4] == pytest.approx([20.0, 1600, 20.48], abs=1e-2)
    ideal = network_time(quantization_layers(), "fprop", 8, V100)
    assert rows[("ideal", "8")][1] == pytest.approx(ideal * 1e3, abs=1e-3)


def quantization_layers():
    from triton_conv.layers import quantization_probes

    return quantization_probes()
