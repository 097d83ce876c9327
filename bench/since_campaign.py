"""Kernel changes since the H200 campaign of 2026-12-04, timed on the GPU at the configs the
campaign timed, beside what it measured for them (the follow-up's item 2, scripts/gpu_followup.sh).

    python bench/since_campaign.py [--out FILE] [--smoke] [--budget-s S]
    python bench/since_campaign.py --fit     the campaign's split-K fits, from its committed timings
    python bench/since_campaign.py --pairs   its dgrad against fprop at the same configs, likewise

Two changes, each with a control that did not change:
- dgrad's zero run. With TAP_BITS a padding row copies zeros instead of a masked dy; in the
  campaign every program copied the same bytes, and dgrad ran up to 3.4 times as long as fprop at
  the same config and GEMM shape where the static main loops are alike (ResNet-50's 7x7 layers,
  most at narrow tiles): the copies queue at the L2 slice that holds those bytes. Now each program
  reads its own segment (kernels.dgrad.ZERO_SEGMENTS). fprop at the same config is the control.
- split-K's sum. The split that arrives last sums the partial tiles; until kernels.common.
  split_groups it read them all one after another, about 0.3 µs per 64x64 fp32 partial (fitted to
  the campaign's timings of one config at 16, 32 and 64 splits), and 64 splits ran slower than 32
  where the wide reduction of a small weight gradient needs them. From 9 splits on, groups of about
  sqrt(split) partials are now summed by their own last split, and the groups' sums by the last
  group. 8 splits keep the one-level sum: the control.

Each case is launched exactly as the custom op launches it (campaign.runners.launch_with_config),
checked against torch in float64 first (a race in the two-level sum would show here), then timed by
CUDA-graph replay over input sets that overflow the L2 (campaign.timing.measure, device view), as
the campaign timed its candidates. Without a GPU, or with --smoke, small shapes run once under
Triton's interpreter: the check runs, the times say nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton_conv is imported

from triton_conv.benchmarking import relative_error, tolerance  # noqa: E402
from triton_conv.campaign.runners import launch_with_config, make_inputs, reference_result  # noqa: E402
from triton_conv.campaign.timing import measure  # noqa: E402
from triton_conv.configs import KernelConfig  # noqa: E402
from triton_conv.kernels.common import split_groups  # noqa: E402
from triton_conv.problem import ConvProblem  # noqa: E402
from triton_conv.timers import in_turn, input_sets  # noqa: E402

CAMPAIGN = Path(__file__).resolve().parent.parent / "notes/campaigns/nvidia-h200-2026-12-04/autotune.json"
# (layer as the campaign names it, N, C, H, W, K, R, stride, pass, tile, splits): campaign configs,
# the most telling first (each case's first launches compile its kernels: a run cut short keeps the
# cases before it). The dgrad rows' controls are fprop's at the same config (campaign: 77.8 µs
# against dgrad's 263.6; 30.3 against 76.0; 105.1 against 193.8); 8 splits are split-K's control.
CASES = [
    ("layer4.1.conv2", 128, 512, 7, 7, 512, 3, 1, "dgrad", (128, 64, 32, 8, 4), (1,)),
    ("layer4.1.conv2", 128, 512, 7, 7, 512, 3, 1, "fprop", (128, 64, 32, 8, 4), (1,)),
    ("layer1.0.conv1", 32, 64, 56, 56, 64, 1, 1, "wgrad", (64, 64, 64, 4, 3), (16, 32, 64)),
    ("layer4.1.conv2", 32, 512, 7, 7, 512, 3, 1, "dgrad", (64, 64, 64, 4, 3), (1,)),
    ("layer3.1.conv2", 128, 256, 14, 14, 256, 3, 1, "dgrad", (64, 64, 32, 4, 4), (1,)),
    ("conv1", 32, 3, 224, 224, 64, 7, 2, "wgrad", (64, 64, 64, 4, 3), (16, 32, 64)),
    ("layer4.1.conv2", 32, 512, 7, 7, 512, 3, 1, "fprop", (64, 64, 64, 4, 3), (1,)),
    ("layer1.0.conv3", 32, 64, 56, 56, 256, 1, 1, "wgrad", (64, 64, 64, 4, 3), (32, 64)),
    ("layer3.0.conv1", 128, 512, 28, 28, 256, 1, 1, "wgrad", (256, 64, 64, 4, 3), (16, 32)),
    ("layer1.0.conv1", 8, 64, 56, 56, 64, 1, 1, "wgrad", (64, 64, 64, 4, 3), (16, 32, 64)),
    ("layer1.0.conv1", 128, 64, 56, 56, 64, 1, 1, "wgrad", (64, 64, 64, 4, 3), (16, 32, 64)),
    ("layer4.1.conv2", 1, 512, 7, 7, 512, 3, 1, "fprop", (64, 64, 64, 4, 3), (8, 16)),
    ("layer4.1.conv2", 1, 512, 7, 7, 512, 3, 1, "dgrad", (64, 64, 64, 4, 3), (8, 16)),
]
# Small shapes for the CPU: one group of splits (3), and three groups of four, the last short (10);
# dgrad unsplit, as the zero run's cases run.
SMOKE = [
    ("smoke", 2, 8, 9, 7, 24, 3, 1, "dgrad", (16, 16, 16, 4, 1), (1,)),
    ("smoke", 2, 8, 9, 7, 24, 3, 1, "wgrad", (16, 16, 16, 4, 1), (3, 10)),
    ("smoke", 2, 8, 9, 7, 24, 3, 1, "fprop", (16, 16, 16, 4, 1), (10,)),
    ("smoke", 2, 8, 9, 7, 24, 3, 1, "dgrad", (16, 16, 16, 4, 1), (10,)),
]


_CONFIG_TEXT = re.compile(r"(\d+)x(\d+)x(\d+) g(\d+) s(\d+) w(\d+) st(\d+)")  # str(KernelConfig)


def campaign_times() -> dict:
    """{(layer, N, pass, config text): microseconds} from the campaign's candidate timings."""
    if not CAMPAIGN.exists():
        return {}
    times = {}
    for row in json.loads(CAMPAIGN.read_text())["rows"]:
        if row.get("layer_set") == "resnet50":
            for config, ms in row["timings"]:
                times[(row["layer"], row["batch"], row["pass"], config)] = ms * 1e3
    return times


def campaign_fits() -> list[dict]:
    """The campaign's weight gradients timed with one tile at three split counts or more: t = a +
    b·(reduction steps per split) + c·split, solved (least squares beyond three) per layer and N.
    c is the last split's serial sum, µs per partial tile; b a CTA's time per BLOCK_K step; a the
    rest (launch, counter memset, prologue, epilogue). Where the tile count times the split exceeds
    a wave, the waves add time that this form does not have, and c takes it up."""
    if not CAMPAIGN.exists():
        return []
    fits = []
    for row in json.loads(CAMPAIGN.read_text())["rows"]:
        if row.get("layer_set") != "resnet50" or row["pass"] != "wgrad":
            continue
        by_tile = {}
        for text, ms in row["timings"]:
            config = KernelConfig(*map(int, _CONFIG_TEXT.fullmatch(text).groups()))
            tile = (config.block_m, config.block_n, config.block_k, config.num_warps, config.num_stages)
            by_tile.setdefault(tile, []).append((config.split_k, ms * 1e3))
        reduction = int(row["gemm"].split("×")[2])
        for tile, timed in by_tile.items():
            if len(timed) < 3:
                continue
            timed.sort()
            steps = -(-reduction // tile[2])
            design = torch.tensor(
                [[1.0, -(-steps // split), split] for split, _ in timed], dtype=torch.float64
            )
            times = torch.tensor([[us] for _, us in timed], dtype=torch.float64)
            a, b, c = torch.linalg.lstsq(design, times).solution.flatten().tolist()
            fits.append({
                "layer": row["layer"], "batch": row["batch"], "gemm": row["gemm"], "tile": tile,
                "timed": timed, "a_us": a, "b_us_per_step": b, "c_us_per_split": c,
            })  # fmt: skip
    return fits


def render_fits(fits: list[dict]) -> str:
    lines = [
        "# the campaign of 2026-12-04 (H200), wgrad: t = a + b·(steps per split) + c·split per layer and N",
        f"{'layer':16s} {'N':>4s} {'GEMM M×N×K':>18s} {'tile':>8s} {'timed (split: us)':34s} "
        f"{'a us':>6s} {'b us':>6s} {'c us':>6s}",
    ]
    for fit in fits:
        timed = " ".join(f"{split}: {us:.1f}" for split, us in fit["timed"])
        lines.append(
            f"{fit['layer']:16s} {fit['batch']:4d} {fit['gemm']:>18s} "
            f"{fit['tile'][0]:>4d}x{fit['tile'][1]:<3d} "
            f"{timed:34s} {fit['a_us']:6.1f} {fit['b_us_per_step']:6.3f} {fit['c_us_per_split']:6.2f}"
        )
    return "\n".join(lines) + "\n"


def padded_share(problem: ConvProblem) -> float:
    """The share of dgrad's (input pixel, tap) pairs, over its stride phases, whose dy pixel lies in
    the padding: the rows that copy the zero run with TAP_BITS."""

    def axis(size, out_size, stride, pad, dil, taps):
        pairs = [(h + pad - r * dil) for h in range(size) for r in range(taps)]
        reached = [p // stride for p in pairs if p % stride == 0]  # a phase's taps: exact rows
        return sum(0 <= p < out_size for p in reached) / len(reached)

    rows = axis(problem.height, problem.out_height, problem.stride[0], problem.pad_top,
                problem.dilation[0], problem.kernel_h)  # fmt: skip
    cols = axis(problem.width, problem.out_width, problem.stride[1], problem.pad_left,
                problem.dilation[1], problem.kernel_w)  # fmt: skip
    return 1.0 - rows * cols


def zero_run_copies(problem: ConvProblem, config: KernelConfig, element_size: int = 2) -> int:
    """Warp-wide copy instructions of a stride-1 dgrad launch that read the zero run: per CTA, tap
    and channel block, the dy tile's BLOCK_M rows move in 16-byte vectors, BLOCK_K·size/16 threads
    to a row, so one warp's copy spans 32 / that many consecutive rows (Triton's blocked layout
    for the tile); it reads the run when any of its rows reads padding at that tap. Rows past the
    GEMM's M are masked off and read nothing."""
    assert problem.stride == (1, 1), "a stride-1 layer: one phase, every tap"
    rows_per_copy = max(1, 32 // max(1, config.block_k * element_size // 16))
    gemm_m = problem.batch * problem.height * problem.width
    rows = torch.arange(-(-gemm_m // config.block_m) * config.block_m)
    h, w = rows % (problem.height * problem.width) // problem.width, rows % problem.width
    copies = 0
    for r in range(problem.kernel_h):
        for s in range(problem.kernel_w):
            p = h + problem.pad_top - r * problem.dilation[0]
            q = w + problem.pad_left - s * problem.dilation[1]
            padded = (rows < gemm_m) & (
                (p < 0) | (p >= problem.out_height) | (q < 0) | (q >= problem.out_width)
            )
            copies += int(padded.view(-1, rows_per_copy).any(1).sum())
    column_tiles = -(-problem.in_per_group // config.block_n)
    channel_blocks = -(-problem.out_per_group // config.block_k)
    return copies * column_tiles * channel_blocks * problem.groups


def campaign_pairs() -> list[dict]:
    """Every config the campaign timed for both fprop and dgrad of one ResNet-50 layer and N whose
    two passes are the same GEMM: stride 1 and as many input as output channels (M = N·H·W, N = C,
    K = C·R·S), with dgrad's share of padding copies. (Elsewhere they differ: a strided layer's
    dgrad rows cover the input, four times fprop's output rows at stride 2, and C != K swaps the
    GEMM's N and K.)"""
    from triton_conv.layers import resnet50_convs

    convs = dict(resnet50_convs())
    times = campaign_times()
    pairs = []
    for (layer, n, pass_name, config), dgrad_us in sorted(times.items()):
        fprop_us = times.get((layer, n, "fprop", config))
        if pass_name != "dgrad" or fprop_us is None:
            continue
        problem = convs[layer].with_batch(n)
        if problem.stride != (1, 1) or problem.in_channels != problem.out_channels:
            continue
        copies = zero_run_copies(problem, KernelConfig(*map(int, _CONFIG_TEXT.fullmatch(config).groups())))
        pairs.append({
            "layer": layer, "batch": n, "config": config, "fprop_us": fprop_us, "dgrad_us": dgrad_us,
            "copies": copies, "excess_us": dgrad_us - fprop_us,
            "ratio": dgrad_us / fprop_us,
            "padded": padded_share(problem) if not problem.is_pointwise else 0.0,
            "filter": f"{problem.kernel_h}x{problem.kernel_w}", "block_n": int(config.split("x")[1]),
        })  # fmt: skip
    return pairs


def pair_medians(pairs: list[dict]) -> dict:
    """{(padded share rounded to 0.1%, BLOCK_N or "all"): (pairs, median dgrad/fprop)}."""
    groups = {}
    for pair in pairs:
        share = round(pair["padded"], 3)
        for key in ((share, "all"), (share, pair["block_n"])):
            groups.setdefault(key, []).append(pair["ratio"])
    return {key: (len(ratios), statistics.median(ratios)) for key, ratios in groups.items()}


def queue_rate(pair: dict, least_excess_us: float = 20.0) -> float | None:
    """Zero-run copies per second of dgrad's excess time (GHz), where the excess is large enough
    to be the queue's and not the timings' noise; else None."""
    if pair["excess_us"] < least_excess_us:
        return None
    return pair["copies"] / pair["excess_us"] / 1e3


def render_pairs(pairs: list[dict]) -> str:
    lines = [
        "# the campaign of 2026-12-04 (H200, bf16, channels_last): dgrad against fprop at the same config,",
        "# stride 1 and C = K (the same GEMM); padded: dgrad's share of (input pixel, tap) pairs that copy",
        "# the zero run instead of dy (one address for every program then)",
        f"{'padded':>6s} {'BLOCK_N':>7s} {'pairs':>5s} {'median dgrad/fprop':>18s}",
    ]
    medians = pair_medians(pairs)
    for share, block_n in sorted(medians, key=lambda key: (key[0], key[1] == "all", str(key[1]).zfill(4))):
        count, median = medians[(share, block_n)]
        lines.append(f"{share:6.1%} {block_n!s:>7s} {count:5d} {median:18.2f}")
    lines += [
        "# run copies: warp-wide copies that read the zero run (zero_run_copies); G/s: of them per",
        "# second of dgrad's time beyond fprop's, where that excess is 20 us or more (a queue's rate)",
        f"{'layer':16s} {'filter':6s} {'N':>4s} {'config':24s} {'padded':>6s} {'fprop us':>9s} "
        f"{'dgrad us':>9s} {'dgrad/fprop':>11s} {'run copies':>10s} {'G/s':>5s}",
    ]
    for pair in sorted(pairs, key=lambda p: (-p["padded"], p["layer"], p["batch"], p["config"])):
        rate = f"{queue_rate(pair):5.2f}" if queue_rate(pair) else f"{'':5s}"
        lines.append(
            f"{pair['layer']:16s} {pair['filter']:6s} {pair['batch']:4d} {pair['config']:24s} "
            f"{pair['padded']:6.1%} {pair['fprop_us']:9.1f} {pair['dgrad_us']:9.1f} {pair['ratio']:11.2f} "
            f"{pair['copies']:10d} {rate}"
        )
    return "\n".join(lines) + "\n"


def run_case(case, dtype, device, on_gpu: bool, before: dict) -> list[dict]:
    layer, n, c, h, w, k, r, stride, pass_name, tile, splits = case
    problem = ConvProblem.from_shapes((n, c, h, w), (k, c, r, r), stride=stride, padding=r // 2)
    tensors = make_inputs(problem, dtype, device)
    want = reference_result(pass_name, problem, tensors)
    sets = input_sets(tensors, partial(make_inputs, problem, dtype, device), device, pass_name)
    rows = []
    block_m, block_n, block_k, warps, stages = tile
    for split in splits:
        config = KernelConfig(block_m, block_n, block_k, 8, split, warps, stages)
        error = relative_error(launch_with_config(pass_name, problem, tensors, config)(), want)
        bind = partial(launch_with_config, pass_name, problem, config=config)
        timed = measure(in_turn(bind, sets), rounds=20, min_round_s=2e-3, on_gpu=on_gpu, eager=False)
        size, groups = split_groups(split)
        rows.append({
            "layer": layer, "batch": n, "pass": pass_name, "config": str(config), "split_k": split,
            "groups": f"{groups}x{size}" if groups > 1 else "1", "relative_error": error,
            "us": timed.seconds * 1e6, "timer": timed.timer,
            "campaign_us": before.get((layer, n, pass_name, str(config))),
        })  # fmt: skip
    return rows


def render(rows: list[dict], where: str) -> str:
    lines = [
        f"# since the campaign (dgrad's zero run, split-K's sum), {where}; torch {torch.__version__}",
        "# groups: groups x splits per group of the two-level sum (1: one split sums them all)",
        f"{'layer':16s} {'N':>4s} {'pass':5s} {'config':24s} {'groups':>6s} {'rel.err':>8s} "
        f"{'us':>9s} {'2026-12-04 us':>13s} {'ratio':>6s}",
    ]
    for row in rows:
        before = row["campaign_us"]
        ratio = f"{before / row['us']:6.2f}" if before and row["us"] > 0 else f"{'—':>6s}"
        before_text = f"{before:13.1f}" if before else f"{'—':>13s}"
        lines.append(
            f"{row['layer']:16s} {row['batch']:4d} {row['pass']:5s} {row['config']:24s} {row['groups']:>6s} "
            f"{row['relative_error']:8.1e} {row['us']:9.1f} {before_text} {ratio}"
        )
    return "\n".join(lines) + "\n"


def _write(out: str, rows: list[dict], notes: list[str], where: str) -> None:
    Path(out).write_text(render(rows, where) + "".join(line + "\n" for line in notes))
    Path(out).with_suffix(".json").write_text(json.dumps(rows, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="also write the table to this file (and its rows as .json beside)")
    parser.add_argument("--smoke", action="store_true", help="small shapes (the CPU's and the tests' run)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no case after this many seconds")
    parser.add_argument("--fit", action="store_true", help="the campaign's split-K fits (no kernel runs)")
    parser.add_argument(
        "--pairs", action="store_true", help="its dgrad against fprop at one config (no runs)"
    )
    args = parser.parse_args(argv)
    if args.fit or args.pairs:
        print(render_fits(campaign_fits()) if args.fit else render_pairs(campaign_pairs()), end="")
        return 0
    on_gpu = torch.cuda.is_available() and not args.smoke
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    before = campaign_times() if on_gpu else {}
    where = torch.cuda.get_device_name() if on_gpu else "CPU interpreter (smoke: times say nothing)"
    start, rows, notes = time.monotonic(), [], []
    for case in CASES if on_gpu else SMOKE:
        if args.budget_s is not None and time.monotonic() - start > args.budget_s:
            notes.append(f"# not run (budget): {case[0]} N={case[1]} {case[8]}")
            continue
        try:
            rows += run_case(case, dtype, device, on_gpu, before)
        except Exception as error:  # one case's failure leaves the others' rows
            notes.append(f"# failed: {case[0]} N={case[1]} {case[8]}: {type(error).__name__}: {error}")
        if args.out:  # after each case, so that a run stopped from outside keeps what it measured
            _write(args.out, rows, notes, where)
    if args.out:
        _write(args.out, rows, notes, where)
    print(render(rows, where) + "".join(line + "\n" for line in notes), end="")
    bound = tolerance("bf16" if on_gpu else "fp32", tf32=False)
    failed = any(line.startswith("# failed") for line in notes)
    return 1 if failed or any(not row["relative_error"] <= bound for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
