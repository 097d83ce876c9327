"""Host overhead per call of triton_conv.conv2d: what Python costs beside the kernel.

    python bench/host_overhead.py [--calls 2000] [--rounds 7] [--dtype fp16] [--stub]

At batch size 1 a small convolution's kernel runs for a few microseconds, so the host path (argument
checks, autocast, the custom-op dispatch, the config choice, the launcher, Triton's own launch) can
be most of the time a layer takes. This script prints microseconds per call, median of `rounds`
rounds of `calls` calls each, for:

  conv2d forward            triton_conv.conv2d under torch.no_grad()
  conv2d forward+backward   conv2d(x, w, b) then autograd backward (three custom ops, two launches
                            more; autograd's own graph work included)
  op: fprop, dgrad, wgrad   each pass's custom op called directly (what a campaign's host_seconds
                            times per call: the dispatcher, the checks, the config, the launcher)
  bare launcher             launchers.fprop.conv2d_fprop with a fixed config (allocation, the
                            per-shape launch cache, the launch)
  launch only (GPU)         the Triton kernel call alone, with arguments built beforehand
  compiled kernel's runner  the same launch through the compiled kernel's runner, every parameter
                            in order (launchers.common.positional_arguments): the JIT's argument
                            binding and cache lookup left out
  empty Triton kernel, torch op   the fixed cost of one launch of each, for scale
  kernel (GPU)              the kernel's device time (CUDA events over many launches), for scale

Without a GPU (or with --stub) the Triton launch is stubbed out (the kernel's `__getitem__`
returns a no-op), so the numbers are the package's own host work on this CPU; TRITON_INTERPRET=1 is
set so that CPU tensors take the Triton path. On a GPU the launches are real: a loop of host calls
is timed without synchronising inside it (the kernels queue up behind), then synchronised once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

GPU = torch.cuda.is_available()
if not GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton_conv is imported

import triton  # noqa: E402

import triton_conv  # noqa: E402
from triton_conv.autograd import conv2d_op, input_grad_op, weight_grad_op  # noqa: E402
from triton_conv.configs import default_config  # noqa: E402
from triton_conv.kernels.dgrad import dgrad_kernel  # noqa: E402
from triton_conv.kernels.fprop import fprop_kernel  # noqa: E402
from triton_conv.kernels.wgrad import wgrad_kernel  # noqa: E402
from triton_conv.launchers.common import positional_arguments  # noqa: E402
from triton_conv.launchers.fprop import conv2d_fprop  # noqa: E402
from triton_conv.problem import ConvProblem  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@triton.jit
def empty_kernel(pointer):
    pass


def stub_launches() -> None:
    """Make every triton-conv kernel launch a no-op (the host path still runs in full)."""

    def no_launch(self, grid):
        return lambda *args, **kwargs: None

    for kernel in (fprop_kernel, dgrad_kernel, wgrad_kernel):
        type(kernel).__getitem__ = no_launch


def per_call_us(fn, calls: int, rounds: int, sync) -> float:
    """Median over rounds of (wall time of `calls` calls, then one sync) / calls, in microseconds."""
    for _ in range(min(calls, 50)):
        fn()
    sync()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def kernel_us(fn, calls: int) -> float:
    """Device time per launch by CUDA events around `calls` back-to-back launches."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--shape", default="1,64,56,56,64,3", help="N,C,H,W,K,R (padding R//2)")
    parser.add_argument("--stub", action="store_true", help="stub the Triton launch on a GPU too")
    args = parser.parse_args(argv)

    stubbed = args.stub or not GPU
    if stubbed:
        stub_launches()
    device = "cuda" if GPU else "cpu"
    dtype = DTYPES[args.dtype]
    n, c, h, w, k, r = (int(v) for v in args.shape.split(","))
    cl = torch.channels_last
    x = torch.randn(n, c, h, w, device=device, dtype=dtype).contiguous(memory_format=cl)
    weight = torch.randn(k, c, r, r, device=device, dtype=dtype).contiguous(memory_format=cl)
    bias = torch.randn(k, device=device, dtype=dtype)
    problem = ConvProblem.from_shapes(x.shape, weight.shape, padding=r // 2)
    config = default_config(problem.gemm("fprop"), x.element_size())
    sync = torch.cuda.synchronize if GPU else (lambda: None)

    xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    dy = torch.randn(problem.output_shape, device=device, dtype=dtype).contiguous(memory_format=cl)

    def forward():
        with torch.no_grad():
            triton_conv.conv2d(x, weight, bias, padding=r // 2)

    def forward_backward():
        y = triton_conv.conv2d(xg, wg, bg, padding=r // 2)
        torch.autograd.grad(y, (xg, wg, bg), dy)  # no accumulation into .grad

    def launcher():
        conv2d_fprop(x, weight, bias, problem, config)

    geometry = (list(problem.stride), list(problem.pads), list(problem.dilation), problem.groups)
    rows = [
        ("conv2d forward", forward),
        ("conv2d forward+backward", forward_backward),
        ("op: fprop", lambda: conv2d_op(x, weight, None, *geometry)),
        ("op: dgrad", lambda: input_grad_op(dy, x, weight, *geometry)),
        ("op: wgrad", lambda: weight_grad_op(dy, x, weight, *geometry, False)),
        ("bare launcher (fprop)", launcher),
    ]
    if GPU and not stubbed:
        y = conv2d_fprop(x, weight, bias, problem, config)
        from triton_conv.launchers.fprop import fprop_spec

        spec = fprop_spec(x, weight, bias, y, problem, config)

        def launch_only():
            spec.kernel[spec.grid](
                *spec.args, **spec.constexprs, num_warps=spec.num_warps, num_stages=spec.num_stages
            )

        rows.append(("launch only (prepared args)", launch_only))
        # What the JIT's argument binding and cache lookup cost: the compiled kernel's own runner,
        # every parameter in the kernel's order (what a launch path that kept it could call).
        options = dict(grid=spec.grid, num_warps=spec.num_warps, num_stages=spec.num_stages)
        compiled = spec.kernel.warmup(*spec.args, **spec.constexprs, **options)
        compiled = compiled.result() if hasattr(compiled, "result") else compiled
        run_compiled, arguments = compiled[spec.grid], positional_arguments(spec)
        rows.append(("compiled kernel's runner", lambda: run_compiled(*arguments)))
        rows.append(("empty Triton kernel", lambda: empty_kernel[(1,)](y)))
        rows.append(("torch op (bias.neg())", lambda: torch.neg(bias)))

    where = torch.cuda.get_device_name() if GPU else "CPU"
    print(
        f"# host overhead, {where}, launch {'stubbed' if stubbed else 'real'}; torch {torch.__version__}, "
        f"python {sys.version.split()[0]}; {args.dtype} channels_last "
        f"x{tuple(x.shape)} w{tuple(weight.shape)}"
    )
    print(f"# median of {args.rounds} rounds x {args.calls} calls, microseconds per call")
    for name, fn in rows:
        print(f"{name:32s} {per_call_us(fn, args.calls, args.rounds, sync):9.2f} us")
    if GPU and not stubbed:
        print(f"{'kernel (device, fprop)':32s} {kernel_us(launcher, args.calls):9.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
