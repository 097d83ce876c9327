"""The tuning key: the GEMM view of a problem, with the growing dimension bucketed, so that the tuned
config is looked up by what it depends on and a new batch or image size often hits the same entry.
"""

from __future__ import annotations

import torch

from .problem import ConvProblem
from .runtime import fp32_uses_tf32


def bucket(size: int) -> int:
    """The power of two at or above `size` (0 stays 0): the tuning key's pixel dimension."""
    return 0 if size <= 0 else 1 << (size - 1).bit_length()


_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES[dtype]


def tuning_key(problem: ConvProblem, pass_name: str, dtype: torch.dtype, channels_last: bool) -> str:
    """What the tuned config depends on: the pass's GEMM per group with its pixel dimension (M for
    fprop and dgrad, the reduction for wgrad) bucketed to a power of two, the filter, stride,
    dilation, groups, dtype (fp32 reads 'tf32' when the kernels use TF32, a different kernel: as
    torch's convolution of the call would, runtime.fp32_uses_tf32) and layout. Batch and image size
    enter only through that bucket, so a new image size does not always mean a new search. Example:
    'fprop fp16 nhwc M~4096 N=64 K=576 RxS=3x3 stride=1x1 dil=1x1 g=1' (~: bucketed)."""
    m, n, k = problem.gemm(pass_name)
    kind = "tf32" if dtype == torch.float32 and fp32_uses_tf32() else dtype_name(dtype)
    m_text, k_text = (f"M={m}", f"K~{bucket(k)}") if pass_name == "wgrad" else (f"M~{bucket(m)}", f"K={k}")
    return (
        f"{pass_name} {kind} {'nhwc' if channels_last else 'nchw'} {m_text} N={n} {k_text} "
        f"RxS={problem.kernel_h}x{problem.kernel_w} stride={problem.stride[0]}x{problem.stride[1]} "
        f"dil={problem.dilation[0]}x{problem.dilation[1]} g={problem.groups}"
    )
