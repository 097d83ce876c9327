"""Where a convolution can run: a CUDA device, or the CPU through Triton's interpreter."""

from __future__ import annotations

import os
import warnings

import torch

_warned_fallback = False


def interpreter_active() -> bool:
    """TRITON_INTERPRET=1 must be set before triton_conv (and so @triton.jit) is imported."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def runs_triton(tensor: torch.Tensor) -> bool:
    """True when a tensor on this device runs the Triton kernels (meta tensors: the ops' shape-only
    implementations); warns once when it cannot."""
    global _warned_fallback
    if tensor.device.type in ("cuda", "meta") or (tensor.device.type == "cpu" and interpreter_active()):
        return True
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"triton_conv: {tensor.device.type} tensors fall back to torch's conv2d; set "
            "TRITON_INTERPRET=1 before importing triton_conv to run the Triton kernels on the CPU "
            "(slow, for testing), or move the tensors to a CUDA device",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def fp32_uses_tf32() -> bool:
    """fp32 convolutions use TF32 exactly when cuDNN's convolutions would."""
    conv_settings = getattr(torch.backends.cudnn, "conv", None)
    precision = getattr(conv_settings, "fp32_precision", None)
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)
