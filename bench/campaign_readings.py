"""What the H200 campaign of 2026-12-04 measured, read again without a GPU from its committed
timings (notes/campaigns/nvidia-h200-2026-12-04/autotune.json): bench/since_campaign.py prints
these (--fit, --pairs) and puts the campaign's time beside each of its own.

- campaign_fits: split-K. Where one weight-gradient tile was timed at three split counts or more,
  t = a + b·(steps per split) + c·split, c being the last split's serial sum of the partials.
- campaign_pairs: dgrad against fprop at one config where both are the same GEMM, by the share of
  dgrad's copies that read the zero run, and the count of those copies (zero_run_copies).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import torch

from triton_conv.configs import KernelConfig
from triton_conv.problem import ConvProblem

CAMPAIGN = Path(__file__).resolve().parent.parent / "notes/campaigns/nvidia-h200-2026-12-04/autotune.json"

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
                "timed": timed, "steps": steps, "a_us": a, "b_us_per_step": b, "c_us_per_split": c,
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
        tile = KernelConfig(*map(int, _CONFIG_TEXT.fullmatch(config).groups()))
        pairs.append({
            "layer": layer, "batch": n, "config": config, "fprop_us": fprop_us, "dgrad_us": dgrad_us,
            "copies": zero_run_copies(problem, tile), "excess_us": dgrad_us - fprop_us,
            "ratio": dgrad_us / fprop_us, "padded": padded_share(problem),
            "filter": f"{problem.kernel_h}x{problem.kernel_w}", "block_n": tile.block_n,
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
