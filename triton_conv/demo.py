"""`triton-conv demo`: one small convolution through the three kernels, each pass's GEMM view, and
the relative error of y, dx and dw against torch in float64; a batch too large for the machine, or
for torch's int64 sizes, ends in one line naming --batch."""

from __future__ import annotations

import torch


def cmd_demo(args) -> int:
    # The largest tensor is the float64 reference's batch x 24 x 14 x 14 output; torch sizes a tensor's
    # bytes in an int64, and a batch past that ended in a traceback from torch (an overflow of the
    # storage size, or a TypeError from 2**63 on), so it is refused before anything is allocated.
    most = (2**63 - 1) // (24 * 14 * 14 * torch.finfo(torch.float64).bits // 8)
    if args.batch > most:
        raise SystemExit(
            f"triton-conv demo: --batch {args.batch}: too large, its tensors would hold more bytes than "
            f"torch can size in an int64 (at most {most}; memory runs out long before that)"
        )
    try:
        return _demo(args.batch)
    except RuntimeError as error:  # a batch too large for this machine, at whichever allocation
        if not _out_of_memory(error):
            raise
        raise SystemExit(f"triton-conv demo: --batch {args.batch}: {str(error).splitlines()[0]}") from None


def _out_of_memory(error: RuntimeError) -> bool:
    """CUDA's allocator raises torch.OutOfMemoryError; the CPU's a plain RuntimeError."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def _demo(batch: int) -> int:
    import triton_conv
    from triton_conv.launchers.common import launch_counts

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    x = torch.randn(batch, 16, 14, 14, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.randn(24, 16, 3, 3, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    b = torch.randn(24, device=device, dtype=dtype)
    problem = triton_conv.ConvProblem.from_shapes(x.shape, w.shape, stride=1, padding=1)
    print(f"problem: {problem}  dtype={dtype}  device={device}")
    for pass_name in ("fprop", "dgrad", "wgrad"):
        gemm = problem.gemm(pass_name)
        print(f"  {pass_name}: GEMM M={gemm.m} N={gemm.n} K={gemm.k} (x{problem.groups} groups)")
    x.requires_grad_()
    w.requires_grad_()
    y = triton_conv.conv2d(x, w, b, padding=1)
    y.backward(torch.ones_like(y))
    ref_x, ref_w = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = torch.nn.functional.conv2d(ref_x, ref_w, b.double(), padding=1)
    ref.backward(torch.ones_like(ref))
    for name, got, want in (("y", y, ref), ("dx", x.grad, ref_x.grad), ("dw", w.grad, ref_w.grad)):
        error = ((got.double() - want).norm() / want.norm()).item()
        print(f"  {name}: relative error against torch (float64) = {error:.2e}")
    print(f"  Triton launches: {dict(launch_counts)}")
    return 0
