"""The search space: generated from axis lists and shape rules; pruned per problem by named rules;
the tuning key. Each rule is shown to remove what it should and to keep what it should."""

from __future__ import annotations

import itertools

import pytest
import torch

from triton_conv.configs import (
    KernelConfig,
    default_config,
    default_pass_config,
    tap_channels,
    wgmma_eligible,
    wgrad_columns,
)
from triton_conv.devices import get_device
from triton_conv.mainloop_cases import gemm_of
from triton_conv.model import launch_tiles
from triton_conv.problem import PASSES, ConvProblem
from triton_conv.pruning import (
    MAX_SURVIVORS,
    PROBLEM_RULES,
    Target,
    operand_registers,
    prune,
    pruned_space,
    register_budget,
    shared_memory,
    split_keeps_work,
    split_only_when_idle,
    split_within_two_waves,
    tile_fits_problem,
    wgmma_on_hopper,
)
from triton_conv.search_space import (
    SHAPE_RULES,
    SPACES,
    accumulator_per_thread,
    config_space,
    pipeline_depth,
    tile_area,
)
from triton_conv.tuning_keys import bucket, tuning_key

H200 = get_device("H200")


def conv(c, h, w, k, r, stride=1, pad=0, batch=1, groups=1):
    return ConvProblem.from_shapes((batch, c, h, w), (k, c // groups, r, r), stride, pad, groups=groups)


def cfg(bm=64, bn=64, bk=32, warps=4, stages=4, group_m=8, split=1):
    return KernelConfig(bm, bn, bk, group_m, split, warps, stages)


SMALL = conv(256, 14, 14, 256, 3, pad=1)  # 196 rows: few tiles at N=1
BIG = conv(64, 56, 56, 64, 3, pad=1, batch=64)  # 200704 rows: thousands of tiles


# --- the space ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pass_name", PASSES)
def test_space_is_the_filtered_product(pass_name):
    raw = [c for sub in SPACES[pass_name] for c in sub.product()]
    expected = list(dict.fromkeys(c for c in raw if all(rule(c) for rule in SHAPE_RULES)))
    assert list(config_space(pass_name)) == expected
    assert 10 <= len(expected) <= 56  # small enough to compile for sm_90 and run under the interpreter
    assert any(c.split_k > 1 for c in expected)  # every pass can fill an idle GPU by splitting
    assert any(c.split_k == 1 for c in expected)


def test_wgrad_searches_group_m_and_deep_splits():
    space = config_space("wgrad")
    assert {c.group_m for c in space} == {1, 8}
    assert max(c.split_k for c in space) == 64
    assert {c.group_m for c in config_space("fprop")} == {8}


def test_shape_rules_each_remove_something_from_the_raw_product():
    raw = [c for p in PASSES for sub in SPACES[p] for c in sub.product()]
    for rule in SHAPE_RULES:
        assert any(not rule(c) for c in raw), f"{rule.__name__} removes nothing: drop it or its axis"


def test_tile_area():
    assert tile_area(cfg(64, 64)) and tile_area(cfg(128, 128)) and tile_area(cfg(64, 256))
    assert not tile_area(cfg(128, 256)) and not tile_area(cfg(32, 64)) and not tile_area(cfg(16, 16))


def test_accumulator_per_thread():
    assert accumulator_per_thread(cfg(64, 64, warps=4))  # 32 registers
    assert accumulator_per_thread(cfg(128, 128, warps=8))  # 64
    assert accumulator_per_thread(cfg(128, 128, warps=4))  # 128: one Hopper warpgroup (wgmma)
    assert accumulator_per_thread(cfg(256, 64, warps=4))  # 128
    assert not accumulator_per_thread(cfg(128, 256, warps=4))  # 256: no room for anything else
    assert not accumulator_per_thread(cfg(64, 64, warps=8))  # 16: too little work per warp


def test_pipeline_depth():
    assert pipeline_depth(cfg(bk=32, stages=4)) and pipeline_depth(cfg(bk=64, stages=3))
    assert not pipeline_depth(cfg(bk=32, stages=3)) and not pipeline_depth(cfg(bk=64, stages=4))
    assert not pipeline_depth(cfg(bk=16, stages=4))


# --- the problem rules --------------------------------------------------------------------------------
def target(problem, pass_name="fprop", dtype=torch.float16, device=H200, floors=(64, 64, 32)):
    return Target(problem, pass_name, dtype, get_device(device), floors)


def test_shared_memory_rule():
    big_fp32 = cfg(128, 128, 64, warps=8, stages=3)  # one buffer: (128x64 + 64x128) x 4 bytes = 64 KiB
    assert big_fp32.shared_bytes(4) == big_fp32.shared_bytes(4, (9, 0)) == 3 * 64 * 1024
    assert big_fp32.shared_bytes(4, (8, 0)) == 2 * 64 * 1024  # sm_80's cp.async ring: stages - 1
    assert shared_memory(big_fp32, target(SMALL, dtype=torch.float32))  # H200: 192 of 227 KiB
    assert shared_memory(big_fp32, target(SMALL, dtype=torch.float32, device="A100"))  # 128 of 163
    deeper = cfg(128, 128, 64, warps=8, stages=4)  # 3 buffers on an A100: 192 KiB
    assert not shared_memory(deeper, target(SMALL, dtype=torch.float32, device="A100"))
    assert not shared_memory(
        cfg(64, 256, 64, warps=8, stages=3), target(SMALL, dtype=torch.float16, device="T4")
    )
    pruning = prune(config_space("fprop"), BIG, "fprop", torch.float32, "RTX 4090")
    assert pruning.removed["shared_memory"]
    assert all(c.shared_bytes(4, (8, 9)) > 99 * 1024 for c in pruning.removed["shared_memory"])
    assert all(c.shared_bytes(4, (8, 9)) <= 99 * 1024 for c in pruning.survivors)
    assert any(c.shared_bytes(4) > 99 * 1024 for c in pruning.survivors)  # a buffer less than Hopper's


def test_register_budget_rule():
    assert operand_registers(cfg(128, 64, 64, warps=4, stages=3), 4) == 64 + 96
    fp32 = target(SMALL, dtype=torch.float32)
    assert not register_budget(cfg(128, 64, 64, warps=4, stages=3), fp32)  # 160: spilled on sm_90
    assert not register_budget(cfg(64, 128, 64, warps=4, stages=3, split=4), fp32)
    assert register_budget(cfg(128, 128, 64, warps=8, stages=3), fp32)  # 128: did not
    assert register_budget(cfg(128, 64, 32, warps=4), fp32)  # BK 32: 112
    assert register_budget(cfg(128, 64, 64, warps=4, stages=3), target(SMALL))  # fp16: 112
    removed = prune(config_space("wgrad"), SMALL.with_batch(32), "wgrad", torch.float32, H200).removed
    assert removed["register_budget"]
    assert all(operand_registers(c, 4) > 128 for c in removed["register_budget"])
    # A Hopper wgmma reads 16-bit operands from shared memory: only the accumulator counts there...
    one_warpgroup = cfg(128, 128, 64, warps=4, stages=3)
    assert register_budget(one_warpgroup, target(SMALL))
    assert not prune(config_space("wgrad"), SMALL.with_batch(32), "wgrad", torch.float16, H200).removed[
        "register_budget"
    ]
    # ... but mma.sync (A100) holds a step's fragments too: 128 + 64 registers
    assert not register_budget(one_warpgroup, target(SMALL, device="A100"))
    assert not register_budget(one_warpgroup, target(SMALL, dtype=torch.float32))


def test_tile_fits_problem_rule():
    forty_rows = conv(16, 5, 8, 48, 1)  # fprop GEMM 40 x 48, 16 channels per tap
    t = target(forty_rows)
    assert tile_fits_problem(cfg(64, 64, 32), t)  # the smallest blocks available stay
    assert not tile_fits_problem(cfg(128, 64, 32), t)  # BM=128 when M is 40
    assert not tile_fits_problem(cfg(64, 128, 32), t)  # BN=128 when N is 48
    assert not tile_fits_problem(cfg(64, 64, 64), t)  # BK=64 when a tap has 16 channels
    assert tile_fits_problem(cfg(128, 64, 64), target(BIG))  # 200704 rows, 64 channels: fits
    assert not tile_fits_problem(cfg(128, 128, 64), target(BIG))  # but 64 output channels
    # wgrad: rows are output channels (64), BLOCK_K walks N·P·Q (large)
    assert not tile_fits_problem(cfg(128, 64, 64), target(BIG, "wgrad"))
    assert tile_fits_problem(cfg(64, 128, 64), target(BIG, "wgrad"))


def test_split_only_when_idle_rule():
    split = cfg(64, 64, 64, stages=3, split=4)
    assert target(SMALL).tiles(split) == 4 * 4 < H200.sm_count
    assert split_only_when_idle(split, target(SMALL))
    assert not split_only_when_idle(split, target(BIG))  # 3136 x 1 tiles already fill 132 SMs
    assert split_only_when_idle(cfg(), target(BIG))  # no split: never removed
    assert all(c.split_k == 1 for c in pruned_space(BIG, "fprop", torch.float16, H200))
    assert any(c.split_k > 1 for c in pruned_space(SMALL, "fprop", torch.float16, H200))


def test_split_within_two_waves_rule():
    t = target(SMALL)  # 16 tiles of 64x64
    assert split_within_two_waves(cfg(bk=64, stages=3, split=16), t)  # 256 <= 264
    assert not split_within_two_waves(cfg(bk=64, stages=3, split=32), t)  # 512 CTAs
    assert not split_within_two_waves(cfg(bk=64, stages=3, split=16), target(SMALL, device="A100"))


def test_split_keeps_work_rule():
    t = target(SMALL)  # fprop reduction: 9 taps x 256/64 channel blocks = 36 steps
    assert t.reduction_steps(cfg(bk=64, stages=3)) == 36
    assert split_keeps_work(cfg(bk=64, stages=3, split=8), t)  # 4.5 steps per split
    assert not split_keeps_work(cfg(bk=64, stages=3, split=16), t)  # 2.25
    one_image = target(SMALL, "wgrad")  # wgrad reduction: 196 pixels = 4 steps of 64
    assert not split_keeps_work(cfg(bk=64, stages=3, split=2), one_image)
    assert split_keeps_work(cfg(bk=64, stages=3, split=2), target(SMALL.with_batch(8), "wgrad"))


def test_dgrad_split_rule_counts_the_longest_stride_phase():
    """A 3x3 stride-2 conv's dgrad phases have 1, 2, 2 and 4 taps: the phase of 4 is the launch's
    longest reduction (phase 0, the one with the most rows, has 1), so a split is judged on it."""
    layer2_conv2 = ConvProblem.from_shapes((1, 128, 56, 56), (128, 128, 3, 3), stride=2, padding=1)
    taps = [phase.rows.taps * phase.cols.taps for phase in layer2_conv2.dgrad_phases()]
    assert taps == [1, 2, 2, 4] and layer2_conv2.dgrad_most_taps() == 4
    assert layer2_conv2.dgrad_launch_rows() == 28 * 28
    t = target(layer2_conv2, "dgrad")
    assert t.reduction_steps(cfg(bk=64, stages=3)) == 4 * 128 // 64
    assert split_keeps_work(cfg(bk=64, stages=3, split=2), t)  # 4 steps per split in the longest phase
    assert not split_keeps_work(cfg(bk=64, stages=3, split=4), t)
    assert gemm_of(layer2_conv2, "dgrad") == (28 * 28, 128, 4 * 128)  # the main-loop report's matmul


def test_dgrad_tiles_fit_one_stride_phase_not_every_input_pixel():
    """dgrad of a stride-2 conv is four stride-phase GEMMs (stride_phases.py), each over about a
    quarter of the input pixels: a tile is sized on one phase's rows (8x8 = 64 here), not on all
    N·H·W = 256 input pixels, where a 128-row tile would compute 64 masked rows in every phase."""
    layer = conv(64, 16, 16, 64, 3, stride=2, pad=1)
    assert layer.dgrad_launch_rows() == 64 and layer.batch * layer.height * layer.width == 256
    t = target(layer, "dgrad", torch.bfloat16)
    assert t.dims()[0] == 64
    assert not tile_fits_problem(cfg(128, 64, 64, stages=3), t)
    assert any(c.block_m == 128 for c in config_space("dgrad"))  # so the rule has a tile to remove
    pruning = prune(config_space("dgrad"), layer, "dgrad", torch.bfloat16, H200)
    assert pruning.survivors and all(c.block_m == 64 for c in pruning.survivors)


def test_wgmma_rule_on_hopper_only():
    falls_off = [cfg(32, 64, warps=4), cfg(64, 64, warps=2)]
    for c in falls_off:
        assert not wgmma_on_hopper(c, target(SMALL, dtype=torch.float16))
        assert not wgmma_on_hopper(c, target(SMALL, dtype=torch.float32))  # TF32 takes wgmma too
        assert wgmma_on_hopper(c, target(SMALL, dtype=torch.float64))  # no tensor-core path to lose
        assert wgmma_on_hopper(c, target(SMALL, device="A100"))  # no wgmma on sm_80 at all
    assert wgmma_on_hopper(cfg(64, 64, warps=4), target(SMALL))
    pruning = prune([cfg(64, 64), *falls_off], SMALL, "fprop", torch.float16, H200)
    assert pruning.removed["wgmma_on_hopper"] == tuple(falls_off)
    assert pruning.survivors == (cfg(64, 64),)


@pytest.mark.parametrize("bm,warps", list(itertools.product((16, 32, 64, 128, 256), (1, 2, 4, 8, 16))))
def test_wgmma_rule_matches_compile_check(bm, warps):
    c = KernelConfig(bm, 64, 32, num_warps=warps)
    assert wgmma_on_hopper(c, target(SMALL)) == wgmma_eligible(torch.float16, bm, warps)


def test_same_tile_order_merges_group_m_variants():
    one_column = conv(64, 14, 14, 64, 1)  # wgrad 64 x 64: one tile each way
    pruning = prune(config_space("wgrad"), one_column.with_batch(32), "wgrad", torch.float16, H200)
    merged = pruning.removed["same_tile_order"]
    assert merged and all(c.group_m == 1 for c in merged)  # the default GROUP_M stays
    many = conv(512, 7, 7, 512, 3, pad=1, batch=32)  # wgrad 512 x 4608: GROUP_M changes the order
    kept = prune(config_space("wgrad"), many, "wgrad", torch.float16, H200)
    assert not kept.removed["same_tile_order"]
    assert {c.group_m for c in kept.survivors} == {1, 8}


def test_cap_keeps_the_best_filled():
    pruning = prune(config_space("wgrad"), SMALL.with_batch(128), "wgrad", torch.float16, H200, max_configs=5)
    assert len(pruning.survivors) == 5 and pruning.removed["cap"]
    t = Target(SMALL.with_batch(128), "wgrad", torch.float16, H200)
    assert min(map(t.fill_score, pruning.survivors)) >= max(map(t.fill_score, pruning.removed["cap"]))
    assert len(pruned_space(SMALL.with_batch(128), "wgrad", torch.float16, H200)) <= MAX_SURVIVORS


@pytest.mark.parametrize("max_configs", [0, -1, 1.5, "2", True])
def test_a_cap_of_no_configs_is_refused_by_name(max_configs):
    """0 or fewer kept nothing, and the tuning that timed the survivors failed on an empty ranking
    (IndexError); a float or string failed as a slice index."""
    with pytest.raises(RuntimeError, match="max_configs must be a positive int"):
        pruned_space(SMALL, "fprop", torch.float16, H200, max_configs)


def test_every_config_removed_once_and_rules_named():
    pruning = prune(config_space("fprop"), SMALL, "fprop", torch.float32, "T4")
    removed = [c for configs in pruning.removed.values() for c in configs]
    assert len(removed) == len(set(removed))
    assert set(removed) | set(pruning.survivors) == set(config_space("fprop"))
    assert list(pruning.removed)[: len(PROBLEM_RULES)] == [r.__name__ for r in PROBLEM_RULES]


def test_a_rule_that_would_remove_everything_is_relaxed():
    off_wgmma = [cfg(32, 128, warps=4)]
    pruning = prune(off_wgmma, SMALL, "fprop", torch.float16, H200)
    assert pruning.survivors == tuple(off_wgmma) and pruning.relaxed == ("wgmma_on_hopper",)
    assert prune(off_wgmma, SMALL, "fprop", torch.float16, "A100").relaxed == ()


@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("problem", [SMALL, BIG, conv(8, 9, 11, 12, 3, stride=2, pad=1, groups=2)], ids=str)
def test_target_tiles_match_the_model_and_the_launchers(pass_name, problem):
    for c in config_space(pass_name):
        assert Target(problem, pass_name, torch.float16, H200).tiles(c) * c.split_k == launch_tiles(
            problem, pass_name, c
        )


# --- the key --------------------------------------------------------------------------------------------
def test_bucket():
    assert [bucket(n) for n in (0, 1, 2, 3, 4, 5, 196, 256, 257)] == [0, 1, 2, 4, 4, 8, 256, 256, 512]


def test_key_buckets_the_growing_dimension():
    a = conv(64, 56, 56, 64, 3, pad=1)  # 3136 rows -> 4096
    b = conv(64, 60, 60, 64, 3, pad=1)  # 3600 rows -> 4096: a new image size, no new search
    assert tuning_key(a, "fprop", torch.float16, True) == tuning_key(b, "fprop", torch.float16, True)
    assert "M~4096" in tuning_key(a, "fprop", torch.float16, True)
    assert tuning_key(a, "fprop", torch.float16, True) != tuning_key(
        a.with_batch(2), "fprop", torch.float16, True
    )
    # wgrad: M (output channels) is exact, the reduction N·P·Q is bucketed
    assert tuning_key(a, "wgrad", torch.float16, True) == tuning_key(b, "wgrad", torch.float16, True)
    assert "M=64" in tuning_key(a, "wgrad", torch.float16, True)


def test_key_names_tf32_apart_from_ieee_fp32(set_tf32):
    keys = set()
    for allow in (True, False):
        set_tf32(allow)
        keys.add(tuning_key(SMALL, "fprop", torch.float32, True).split()[1])
    assert keys == {"tf32", "fp32"}


def test_key_separates_what_changes_the_kernel():
    base = conv(64, 56, 56, 64, 3, pad=1)
    key = tuning_key(base, "fprop", torch.float16, True)
    assert key == "fprop fp16 nhwc M~4096 N=64 K=576 RxS=3x3 stride=1x1 dil=1x1 g=1"
    others = [
        tuning_key(base, "dgrad", torch.float16, True),
        tuning_key(base, "fprop", torch.bfloat16, True),
        tuning_key(base, "fprop", torch.float16, False),
        tuning_key(conv(64, 112, 112, 64, 3, stride=2, pad=1), "fprop", torch.float16, True),
        tuning_key(
            ConvProblem.from_shapes((1, 64, 60, 60), (64, 64, 3, 3), dilation=2), "fprop", torch.float16, True
        ),
        tuning_key(conv(64, 56, 56, 64, 3, pad=1, groups=2), "fprop", torch.float16, True),
        tuning_key(conv(64, 56, 56, 128, 3, pad=1), "fprop", torch.float16, True),
    ]
    assert len({key, *others}) == len(others) + 1


def test_key_tells_the_dilation_of_each_axis_apart():
    """A dilation on the width alone changes the kernel's tap offsets on that axis only: the key
    must name each axis's dilation, or the two layers share one tuned config. Same padding, so the
    pixel buckets agree and the dilation is the only field that can tell them apart."""
    for pass_name in PASSES:
        keys = {}
        for dilation in ((1, 1), (1, 2), (2, 1), (2, 2)):
            layer = ConvProblem.from_shapes((1, 64, 56, 56), (64, 64, 3, 3), padding=2, dilation=dilation)
            keys[dilation] = tuning_key(layer, pass_name, torch.float16, True)
            assert f"dil={dilation[0]}x{dilation[1]}" in keys[dilation], keys[dilation]
        assert len(set(keys.values())) == len(keys), keys
        # The pixel buckets agree: dil= alone tells the keys apart.
        without_dilation = {
            " ".join(f for f in key.split() if not f.startswith("dil=")) for key in keys.values()
        }
        assert len(without_dilation) == 1, keys


# --- KernelConfig and the defaults ---------------------------------------------------------------------
def test_config_dict_round_trip():
    for c in config_space("wgrad"):
        assert KernelConfig.from_dict(c.as_dict()) == c
    with pytest.raises(ValueError, match="exactly the fields"):
        KernelConfig.from_dict({"block_m": 64})


def test_default_config_unchanged():
    from triton_conv.problem import GemmShape

    assert default_config(GemmShape(8192, 256, 2304), 2) == KernelConfig(128, 128, 64, 8, 1, 8, 3)
    assert default_config(GemmShape(100, 10, 9), 4) == KernelConfig(64, 16, 16, 8, 1, 4, 3)


def test_default_pass_config_splits_wgrad_only_with_sms():
    eight = conv(64, 56, 56, 64, 3, pad=1, batch=8)  # wgrad: 64 x 576 output, 25088-pixel reduction
    assert default_pass_config(eight, "wgrad", torch.float16, sm_count=132).split_k > 1
    assert default_pass_config(eight, "wgrad", torch.float16, sm_count=1).split_k == 1
    assert default_pass_config(SMALL, "fprop", torch.float16) == default_config(SMALL.gemm("fprop"), 2)


# --- Hopper's defaults and the rules the sm_90 main-loop report and compiles gave ------------------
HOPPER = (9, 0)
RESNET_3X3 = conv(256, 14, 14, 256, 3, pad=1, batch=32)
STEM = conv(3, 224, 224, 64, 7, stride=2, pad=3, batch=32)


def test_hopper_defaults_use_one_warpgroup():
    hopper = default_pass_config(RESNET_3X3, "fprop", torch.bfloat16, capability=HOPPER)
    assert hopper == KernelConfig(128, 128, 64, 8, 1, 4, 3)
    for elsewhere in (None, (8, 0)):  # mma.sync holds operand fragments too: two warpgroups
        assert default_pass_config(RESNET_3X3, "fprop", torch.bfloat16, capability=elsewhere).num_warps == 8
    assert default_pass_config(RESNET_3X3, "fprop", torch.float32, capability=HOPPER).num_warps == 8
    # wgrad: as tall as the output channels allow, BLOCK_N dividing C (one tap per column tile)
    wgrad = default_pass_config(RESNET_3X3, "wgrad", torch.bfloat16, capability=HOPPER)
    assert (wgrad.block_m, wgrad.block_n, wgrad.num_warps) == (256, 64, 4) and wgrad.split_k > 1
    stem = default_pass_config(STEM, "wgrad", torch.bfloat16, capability=HOPPER)
    assert (stem.block_m, stem.block_n) == (64, 64)  # 3 channels: per-element taps, narrow tiles


def test_an_nchw_stem_is_ruled_on_the_walk_it_runs():
    """Row spans need NHWC x and KRSC w (launchers/fprop.py); in NCHW the stem's kernel walks its 3
    channels once per each of the 49 taps, and the default and the pruning count that walk."""
    nchw = default_pass_config(STEM, "fprop", torch.bfloat16, capability=HOPPER, channels_last=False)
    assert nchw.block_k == 16
    steps = Target(STEM, "fprop", torch.bfloat16, H200, channels_last=False).reduction_steps(cfg(bk=16))
    assert steps == 49 and Target(STEM, "fprop", torch.bfloat16, H200).reduction_steps(cfg(bk=16)) == 7 * 2
    split = cfg(bk=32, split=8)  # 49 steps of 3 channels can be split 8 ways; 7 runs of 21 cannot
    assert split_keeps_work(split, Target(STEM, "fprop", torch.float16, H200, channels_last=False))
    assert not split_keeps_work(split, Target(STEM, "fprop", torch.float16, H200))


def test_stem_walks_tap_rows():
    """fprop on 3 channels walks each tap row's S·C = 21 elements: BLOCK_K 32, 8 warps."""
    stem = default_pass_config(STEM, "fprop", torch.bfloat16, capability=HOPPER)
    assert (stem.block_k, stem.num_warps) == (32, 8)
    pruning = prune(config_space("fprop"), STEM, "fprop", torch.bfloat16, H200)
    removed = pruning.removed["element_loads_take_eight_warps"]
    assert removed and all(c.block_m == 128 and c.num_warps == 4 for c in removed)
    assert all(c.num_warps == 8 or c.block_m < 128 for c in pruning.survivors)
    aligned = prune(config_space("fprop"), RESNET_3X3, "fprop", torch.bfloat16, H200)
    assert not aligned.removed["element_loads_take_eight_warps"]


@pytest.mark.parametrize(("kernel_h", "kernel_w", "block_k"), [(3, 7, 32), (7, 3, 16)])
def test_a_non_square_stem_walks_rows_of_its_kernel_width(kernel_h, kernel_w, block_k):
    """A tap row of a 3-channel channels_last stem is one run of S·C elements, kernel width x
    channels (configs.row_spans): a 3x7 filter walks runs of 21 (BLOCK_K 32), a 7x3 runs of 9
    (BLOCK_K 16), in 3 and 7 tap rows. A square stem cannot tell S·C from R·C."""
    stem = ConvProblem.from_shapes(
        (32, 3, 224, 224), (64, 3, kernel_h, kernel_w), stride=2, padding=(kernel_h // 2, kernel_w // 2)
    )
    run = kernel_w * 3
    default = default_pass_config(stem, "fprop", torch.bfloat16, capability=HOPPER)
    assert default.block_k == block_k and default.num_warps == 8  # runs of 9 or 21: not 16-byte vectors
    t = Target(stem, "fprop", torch.bfloat16, H200)
    assert t.dims()[2] == run
    assert t.reduction_steps(cfg(bk=16)) == kernel_h * -(-run // 16)  # tap rows x BLOCK_K steps per run


def test_per_element_taps_stay_narrow():
    pruning = prune(config_space("wgrad"), STEM, "wgrad", torch.bfloat16, H200)
    assert pruning.removed["per_element_taps_stay_narrow"]
    assert all(c.block_n <= 64 for c in pruning.survivors)
    assert any(c.split_k > 1 for c in pruning.survivors)  # the stem's few tiles can still split
    one_tap = prune(config_space("wgrad"), RESNET_3X3, "wgrad", torch.bfloat16, H200)
    assert not one_tap.removed["per_element_taps_stay_narrow"]


def test_wgrad_pads_few_channels_per_group_depthwise_included():
    """tap_channels: a copy of x with 4 channels per group for C/g below 4 (a tap's channels become
    one vector), depthwise layers (one channel per group) and 1- and 3-channel stems included: in
    the tuned 64x64 tiles, x itself issues more and spills (notes/kernels.md, "Found on the way");
    no copy for 4 channels or more, or a 1x1 filter."""

    def layer(c, size, groups, k=None, stride=1, r=3):
        weight = (k or c, c // groups, r, r)
        shape = (32, c, size, size)
        return ConvProblem.from_shapes(shape, weight, stride=stride, padding=r // 2, groups=groups)

    depthwise = [
        layer(32, 112, 32), layer(96, 112, 96, stride=2), layer(144, 56, 144), layer(576, 14, 576),
        layer(32, 56, 32, k=512),  # a channel multiplier of 16
    ]  # fmt: skip
    stems = (layer(3, 224, 1, k=64, stride=2, r=7), layer(1, 224, 1, k=64, stride=2, r=7))
    for problem in (*depthwise, layer(144, 56, 72), layer(96, 112, 48, stride=2), *stems):
        for size in (2, 4):
            assert tap_channels(problem, size) == 4, problem
            assert wgrad_columns(problem, size) == 4 * problem.kernel_h * problem.kernel_w
    for problem in (layer(64, 56, 16), layer(32, 56, 32, r=1)):  # 4 channels per group; one tap
        for size in (2, 4):
            assert tap_channels(problem, size) == 0, problem
            assert wgrad_columns(problem, size) == problem.in_per_group * problem.kernel_h * problem.kernel_w
