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
from triton_conv.split_sum import split_sum_reads  # noqa: E402
from triton_conv.timers import in_turn, input_sets  # noqa: E402

if __package__ in (None, ""):  # run as a script (python bench/since_campaign.py): bench/ is on the path
    from campaign_readings import campaign_fits, campaign_pairs, campaign_times, render_fits, render_pairs
else:
    from .campaign_readings import campaign_fits, campaign_pairs, campaign_times, render_fits, render_pairs

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


def fitted_us(fit: dict | None, split: int) -> float | None:
    """What the campaign's fit of this weight gradient's tile (campaign_readings.campaign_fits: t = a +
    b·steps per split + c·split, with one partial read per split then) says the two-level sum takes
    now: a + b·steps per split + c·split_sum_reads(split). The prediction this run checks; the model
    (triton_conv.model) charges the same reads."""
    if fit is None:
        return None
    steps_per_split = -(-fit["steps"] // split)
    return (
        fit["a_us"] + fit["b_us_per_step"] * steps_per_split + fit["c_us_per_split"] * split_sum_reads(split)
    )


def run_case(case, dtype, device, on_gpu: bool, before: dict, fits: dict | None = None) -> list[dict]:
    layer, n, c, h, w, k, r, stride, pass_name, tile, splits = case
    problem = ConvProblem.from_shapes((n, c, h, w), (k, c, r, r), stride=stride, padding=r // 2)
    fit = (fits or {}).get((layer, n, tile)) if pass_name == "wgrad" else None
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
            "fit_us": fitted_us(fit, split),
        })  # fmt: skip
    return rows


def render(rows: list[dict], where: str) -> str:
    lines = [
        f"# since the campaign (dgrad's zero run, split-K's sum), {where}; torch {torch.__version__}",
        "# groups: groups x splits per group of the two-level sum (1: one split sums them all)",
        "# fit us: the campaign's fit with the two-level sum's reads (fitted_us): what this run checks",
        f"{'layer':16s} {'N':>4s} {'pass':5s} {'config':24s} {'groups':>6s} {'rel.err':>8s} "
        f"{'us':>9s} {'2026-12-04 us':>13s} {'ratio':>6s} {'fit us':>7s}",
    ]
    for row in rows:
        before = row["campaign_us"]
        ratio = f"{before / row['us']:6.2f}" if before and row["us"] > 0 else f"{'—':>6s}"
        before_text = f"{before:13.1f}" if before else f"{'—':>13s}"
        fit_text = f"{row['fit_us']:7.1f}" if row.get("fit_us") is not None else f"{'—':>7s}"
        lines.append(
            f"{row['layer']:16s} {row['batch']:4d} {row['pass']:5s} {row['config']:24s} {row['groups']:>6s} "
            f"{row['relative_error']:8.1e} {row['us']:9.1f} {before_text} {ratio} {fit_text}"
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
    fits = {(fit["layer"], fit["batch"], fit["tile"]): fit for fit in campaign_fits()} if on_gpu else {}
    where = torch.cuda.get_device_name() if on_gpu else "CPU interpreter (smoke: times say nothing)"
    start, rows, notes = time.monotonic(), [], []
    for case in CASES if on_gpu else SMOKE:
        if args.budget_s is not None and time.monotonic() - start > args.budget_s:
            notes.append(f"# not run (budget): {case[0]} N={case[1]} {case[8]}")
            continue
        try:
            rows += run_case(case, dtype, device, on_gpu, before, fits)
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
