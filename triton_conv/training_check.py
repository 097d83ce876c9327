"""A ResNet-50 training run with torch's Conv2d against the same network converted with convert_model:
the same initial weights, the same fixed synthetic data, SGD, autocast (bf16 by default) and channels_last;
per-step loss, synchronised step times and peak memory of each, written as JSON with provenance.

    python -m triton_conv.training_check --steps 50 --batch 32 --dtype bf16 \
        --out notes/training/<gpu>-resnet50-n32-bf16.json

With --cuda-graph each run's step is captured once and replayed (training_graphs.py), which takes
the host's time per call out of both runs' step times.

`compare(result)` reduces the JSON to the numbers issue 7 asks for: speed ratio (torch step time /
triton-conv step time, target >= 0.9), peak-memory ratio (triton-conv / torch, target <= 1) and the
largest deviation between the two loss curves. On a CPU (TRITON_INTERPRET=1) it runs at a tiny scale
(tests/test_training_check.py's): --width 8 --image 32 --batch 4 --steps 3 --blocks 1,1,1 --classes 10
--dtype fp32. Smaller, the last stage's training-mode BatchNorm sees too few values and amplifies
rounding chaotically (batch 2 with four stages: the losses part by 3% within three steps).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from .training_summary import run_summary, training_step

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
IMPLS = ("torch", "triton-conv")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _git_commit() -> dict:
    from .provenance import git_commit

    commit = git_commit()
    if commit.startswith("unknown"):  # neither git nor $TRITON_CONV_COMMIT: nothing is known
        return {"commit": None, "dirty": None}
    if "(from $" in commit:  # a copy without git: the commit it was made from, its state unknown
        return {"commit": commit.split()[0], "dirty": None}
    return {"commit": commit.split()[0], "dirty": "uncommitted" in commit}


def provenance(device: torch.device) -> dict:
    import triton

    from . import __version__

    cuda = device.type == "cuda"
    return {
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "device": str(device),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "python": sys.version.split()[0],
        "triton_conv": __version__,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        **_git_commit(),
    }


def build_models(args, device: torch.device, blocks: tuple[int, ...]):
    """(torch model, converted copy, convert_model's report): identical weights, channels_last;
    `blocks` per stage as check_args read them from --blocks."""
    from . import convert_model
    from .resnet50 import ResNet50

    torch.manual_seed(args.seed)
    net = ResNet50(args.width, blocks, args.classes).to(device).to(memory_format=torch.channels_last)
    report: list = []
    converted = convert_model(copy.deepcopy(net), report=report)
    return net, converted, report


def fixed_data(args, device: torch.device) -> list:
    generator = torch.Generator().manual_seed(args.seed + 1)
    batches = []
    for _ in range(args.data_batches):
        x = torch.randn(args.batch, 3, args.image, args.image, generator=generator)
        y = torch.randint(0, args.classes, (args.batch,), generator=generator)
        batches.append((x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)))
    return batches


def train(net, data, args, device: torch.device) -> dict:
    """args.steps SGD steps on the fixed batches, in turn; per-step loss and synchronised time."""
    from .launchers.common import launch_counts

    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    dtype = DTYPES[args.dtype]
    net.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    launched_before = dict(launch_counts)
    losses, seconds = [], []
    for step in range(args.steps):
        x, y = data[step % len(data)]
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = training_step(net, optimizer, x, y, dtype)
        _sync(device)
        seconds.append(time.perf_counter() - start)
        losses.append(loss.item())
    timed = seconds[args.warmup :] or seconds
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return run_summary(losses, seconds, timed, args.batch, peak, before, launched_before)


POSITIVE = ("steps", "batch", "width", "image", "classes", "data_batches")


def check_args(args, device: torch.device) -> tuple[int, ...]:
    """The stages' block counts; ValueError naming what cannot run: a count below 1, more stages than
    ResNet-50's four, or a device whose tensors would fall back to torch's convolutions (a CPU
    without TRITON_INTERPRET=1: the check would then time torch against torch and pass)."""
    for name in POSITIVE:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be at least 0, got {args.warmup}")
    if getattr(args, "cuda_graph", False):
        from .training_graphs import GRAPH_WARMUP

        if device.type != "cuda":
            raise ValueError(f"--cuda-graph needs a CUDA device, got {device}")
        if args.steps <= max(args.warmup, GRAPH_WARMUP):
            raise ValueError(
                f"--cuda-graph replays the steps after max(--warmup, {GRAPH_WARMUP}) eager ones: --steps must"
                f" be above {max(args.warmup, GRAPH_WARMUP)}, got {args.steps}"
            )
    try:
        blocks = tuple(int(count) for count in str(args.blocks).split(","))
    except ValueError:
        blocks = ()
    if not 1 <= len(blocks) <= 4 or min(blocks) < 1:
        raise ValueError(
            f"--blocks must be 1 to 4 block counts of at least 1, as 3,4,6,3; got {args.blocks!r}"
        )
    from .runtime import runs_triton

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said here, as the error
        if not runs_triton(torch.empty(0, device=device)):
            raise ValueError(
                f"on {device.type} tensors the converted model falls back to torch's convolutions: the check"
                " would compare torch with itself; on a CPU set TRITON_INTERPRET=1 (before the import)"
            )
    return blocks


def _device(args) -> torch.device:
    return torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )


def run(args) -> dict:
    device = _device(args)
    blocks = check_args(args, device)
    # cuDNN's benchmark mode for the step, as training scripts set it; the caller's setting after.
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = benchmark or device.type == "cuda"
    try:
        return _run(args, device, blocks)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def _run(args, device: torch.device, blocks: tuple[int, ...]) -> dict:
    net, converted, report = build_models(args, device, blocks)
    reference, ours = net.state_dict(), converted.state_dict()
    identical = reference.keys() == ours.keys() and all(torch.equal(reference[k], ours[k]) for k in reference)
    data = fixed_data(args, device)
    result = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "provenance": provenance(device),
        "initial_weights_identical": identical,
        "convert_skipped": [list(item) for item in report],
        "runs": {},
    }
    graphed = getattr(args, "cuda_graph", False)
    for impl, model in (("torch", net), ("triton-conv", converted)):
        try:
            result["runs"][impl] = _steps(model, data, args, device, graphed)
        except Exception as error:  # a capture that fails: the other run's result is still written
            if not graphed:
                raise
            result["runs"][impl] = {"error": f"{type(error).__name__}: {error}"}
    failed = [impl for impl, run_result in result["runs"].items() if "error" in run_result]
    if failed:
        result["comparison"] = {"failed": failed}
        return result
    if not result["runs"]["triton-conv"]["kernel_launches"]:
        raise RuntimeError(
            "no Triton kernel ran in the converted model's steps: nothing of ours was measured"
        )
    result["comparison"] = compare(result)
    return result


def _steps(model, data, args, device: torch.device, graphed: bool) -> dict:
    """train, or (--cuda-graph; the campaign's arguments have no such field) train_graphed."""
    if not graphed:
        return train(model, data, args, device)
    from .training_graphs import train_graphed

    return train_graphed(model, data, args, device, DTYPES[args.dtype])


def compare(result: dict) -> dict:
    """Speed ratio (torch time / triton-conv time), peak-memory ratio (triton-conv / torch, the step's
    own memory above what was allocated before it), and the loss curves' largest deviation."""
    ref, ours = result["runs"]["torch"], result["runs"]["triton-conv"]
    pairs = list(zip(ref["losses"], ours["losses"], strict=True))
    deviation = max(abs(a - b) for a, b in pairs)
    relative = max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs)
    ratio = lambda a, b: a / b if a and b else None
    speed = ratio(ref["median_step_seconds"], ours["median_step_seconds"])
    memory = ratio(ours["peak_step_memory_bytes"], ref["peak_step_memory_bytes"])
    return {
        "speed_ratio": speed,
        "peak_memory_ratio": memory,
        "peak_memory_ratio_absolute": ratio(ours["peak_memory_bytes"], ref["peak_memory_bytes"]),
        "max_loss_deviation": deviation,
        "max_relative_loss_deviation": relative,
        "final_loss": {"torch": ref["losses"][-1], "triton-conv": ours["losses"][-1]},
        "meets_speed_target": speed >= 0.9 if speed is not None else None,
        "meets_memory_target": memory <= 1.0 if memory is not None else None,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m triton_conv.training_check", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="autocast dtype (fp32: none)")
    p.add_argument("--out", help="JSON path (default: print only the comparison)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--blocks", default="3,4,6,3", help="bottleneck blocks per stage, 1 to 4 stages")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the median step time")
    p.add_argument("--data-batches", type=int, default=4, help="fixed batches, used in turn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--cuda-graph", action="store_true",
        help="capture each run's whole step once and replay it (CUDA only): no Python per convolution",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_args(args, _device(args))
    except ValueError as error:  # arguments that cannot run, said before any training
        raise SystemExit(f"training_check: {error}") from None
    result = run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["comparison"], indent=1))
    return 1 if "failed" in result["comparison"] else 0


if __name__ == "__main__":
    sys.exit(main())
