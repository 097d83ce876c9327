"""Where the host's time goes in a converted ResNet-50 training step: torch.profiler's table (CPU
time per op, the CUDA kernels' time) and cProfile's (the Python functions, ours and Triton's) of a
few steps, after warm-up steps that compile and choose every config.

    python bench/profile_step.py [--batch 32] [--steps 3] [--warmup 3] [--dtype bf16] [--out FILE]

The network, data, SGD and autocast are training_check's (its other options pass through: --width,
--image, --blocks, --classes). On the GPU the table answers what the campaign's host timings only
bound (notes/batching.md, "Host time per call"): how much of a pass's 97-166 µs of host time
is the op's Python, the dispatcher, autograd, and Triton's launch (JITFunction.run, its binder, the
driver call). Without a GPU it runs the Triton kernels in the interpreter at the training check's
tiny scale (set here), where the times are the interpreter's and only the counts mean anything.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton_conv is imported

from triton_conv import training_check  # noqa: E402
from triton_conv.launchers import common  # noqa: E402
from triton_conv.training_summary import training_step  # noqa: E402

# The CPU's default: training_check's tiny network, one step of each (the interpreter under cProfile
# is slow: a minute for three)
TINY = ["--width", "8", "--image", "32", "--batch", "4", "--blocks", "1,1,1", "--classes", "10",
        "--dtype", "fp32", "--steps", "1", "--warmup", "1"]  # fmt: skip


def _arguments(argv):
    parser = training_check.parser()
    parser.prog, parser.description = "python bench/profile_step.py", __doc__.split("\n\n")[0]
    parser.set_defaults(steps=3)
    parser.add_argument("--rows", type=int, default=40, help="rows of each table")
    # Without a GPU the tiny network first; the caller's options after it override it.
    return parser.parse_args(list(argv) if torch.cuda.is_available() else [*TINY, *argv])


def main(argv=None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    device = training_check._device(args)
    blocks = training_check.check_args(args, device)
    _, model, _ = training_check.build_models(args, device, blocks)
    data = training_check.fixed_data(args, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    dtype = training_check.DTYPES[args.dtype]
    model.train()

    def step(index):
        x, y = data[index % len(data)]
        optimizer.zero_grad(set_to_none=True)
        training_step(model, optimizer, x, y, dtype)

    def steps():
        for index in range(args.steps):
            step(index)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for index in range(args.warmup):
        step(index)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        steps()
    launched = dict(common.launch_counts)
    python = cProfile.Profile()
    python.enable()
    steps()
    python.disable()
    launches = {  # by name, those that ran (launch_counts also holds earlier launches of the process)
        name: count - launched.get(name, 0)
        for name, count in sorted(common.launch_counts.items())
        if count != launched.get(name, 0)
    }

    out = io.StringIO()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter)"
    commit = training_check._git_commit()["commit"]
    out.write(f"# {where}; torch {torch.__version__}; {args.steps} steps of N={args.batch} {args.dtype}, "
              f"after {args.warmup} warm-up steps; commit {commit}\n")  # fmt: skip
    out.write(f"# kernel launches in the cProfile'd steps: {launches}\n\n")
    out.write("## torch.profiler, by self CPU time\n\n")
    out.write(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if device.type == "cuda":
        out.write("\n\n## torch.profiler, by CUDA time\n\n")
        out.write(profile.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows))
    for order in ("tottime", "cumulative"):
        out.write(f"\n\n## cProfile, by {order}\n\n")
        pstats.Stats(python, stream=out).sort_stats(order).print_stats(args.rows)
    text = out.getvalue()
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
